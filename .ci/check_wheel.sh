#!/usr/bin/env bash
# The package as a user gets it: build the wheel, install it into a fresh virtual environment and remove clouds
# from a held-out RICE2 image in a folder outside the repository, offline, with the bundled weights.
# Usage: .ci/check_wheel.sh [PYTHON]   (PYTHON: an environment that already has the dependencies; default python)
# The fresh environment reuses that environment's packages through a .pth file, so pip resolves every
# dependency as already satisfied (no download, no --no-deps) and installs only cloudrm itself.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${1:-python}"
export HF_HUB_OFFLINE=1
DATA="$(cd "${CLOUDRM_DATA:-../shared/data}" 2>/dev/null && pwd || echo /nonexistent)"
WORK="$(mktemp -d)"
REPO="$(pwd)"
trap 'rm -rf "$WORK" "$REPO/build" "$REPO/cloudrm.egg-info"' EXIT
rm -rf build cloudrm.egg-info   # setuptools never removes stale files from build/lib: start clean

"$PY" -m pip wheel -q --no-deps -w "$WORK/dist" .
WHEEL="$(ls "$WORK"/dist/cloudrm-*.whl)"
"$PY" -m venv "$WORK/venv"
"$PY" -c 'import site, sys; print("\n".join(site.getsitepackages()))' \
  > "$("$WORK/venv/bin/python" -c 'import site; print(site.getsitepackages()[0])')/_deps_from_ci_venv.pth"
"$WORK/venv/bin/python" -m pip install -q "$WHEEL"

mkdir "$WORK/away" && cd "$WORK/away"   # outside the checkout: nothing can come from the repository
"$WORK/venv/bin/python" - <<'EOF'
import importlib, pkgutil, sys
from pathlib import Path
import cloudrm
root = Path(cloudrm.__file__).parent
assert str(root).startswith(sys.prefix), f"cloudrm imported from {root}, not from the fresh environment"
mods = [m.name for m in pkgutil.walk_packages([str(root)], "cloudrm.") if not m.name.endswith("__main__")]
for m in mods:
    importlib.import_module(m)
from cloudrm import weights
assert all(weights.variants_present(m) for m in weights.VARIANTS), "bundled weights missing from the wheel"
print(f"wheel: {len(mods)} modules import from {root}")
EOF
test -x "$WORK/venv/bin/cloudrm"

if [ -d "$DATA/RICE2" ]; then
  # the first image of the project's RICE2 validation split (never trained on)
  "$WORK/venv/bin/python" -c "
import shutil, sys; from cloudrm.datasets import VAL_FRACTION, rice_pairs, split_names
pairs = rice_pairs(sys.argv[1]); _, val = split_names([n for n, _, _ in pairs], VAL_FRACTION['RICE2'])
_, cloudy, clear = next(p for p in pairs if p[0] == sorted(val)[0])
shutil.copy(cloudy, 'cloudy.png'); shutil.copy(clear, 'clear.png')" "$DATA/RICE2"
else
  echo "no RICE2 under $DATA: using a built-in synthetic sample"
  "$WORK/venv/bin/python" -c "
from cloudrm.samples import list_samples; import shutil
s = next(s for s in list_samples() if s.reference); shutil.copy(s.dates[0], 'cloudy.png'); shutil.copy(s.reference, 'clear.png')"
fi
"$WORK/venv/bin/cloudrm" remove cloudy.png -o identity.png --method identity
"$WORK/venv/bin/cloudrm" remove cloudy.png -o pixel-cr.png --method pixel-cr
"$WORK/venv/bin/python" - <<'EOF'
from cloudrm import io, metrics
ref = io.to_display(io.read_image("clear.png"))
psnr = {m: metrics.psnr(ref, io.to_display(io.read_image(f"{m}.png"))) for m in ("identity", "pixel-cr")}
print("wheel: held-out image, PSNR " + ", ".join(f"{m} {v:.2f} dB" for m, v in psnr.items()))
assert psnr["pixel-cr"] > psnr["identity"] + 1, psnr
EOF
