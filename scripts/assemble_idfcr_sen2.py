"""Assemble the idf-cr ``sen2`` weights folder from a trained Pixel-CR export plus rice2's latent parts.

    python scripts/assemble_idfcr_sen2.py ~/.cache/cloudrm/export/idfcr/sen2

The Pixel-CR stage is trained on real Sentinel-2 clouds (configs/pixel-cr-sen2.json). The latent stage (VAE,
prior, ControlNets K=1..3) is rice2's, shared by reference ({"folder": "../rice2"}): it was not retrained on
Sentinel-2 (no CPU time for it this round), so with the residual colour fix it only adds high-frequency
detail on top of the Sentinel-2 Pixel-CR output. The sampling strength is lower than rice2's for that reason.
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from cloudrm import weights

SHARED = ("vae", "prior", "controlnet_k1", "controlnet_k2", "controlnet_k3")


def main(src: str) -> int:
    src_dir, dst = Path(src).expanduser(), weights.BUNDLED / "idfcr" / "sen2"
    meta = weights.read_meta(src_dir)
    if "pixel_cr" not in meta.get("components", {}):
        print(f"error: {src_dir}: no pixel_cr export", file=sys.stderr)
        return 2
    shutil.rmtree(dst / "pixel_cr", ignore_errors=True)
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copytree(src_dir / "pixel_cr", dst / "pixel_cr")
    rice2 = weights.read_meta(weights.BUNDLED / "idfcr" / "rice2")
    old = weights.read_meta(dst)
    meta.update({k: rice2[k] for k in ("color_fix", "color_fix_sigma")})
    meta["strength"] = old.get("strength", 0.5)
    meta["sampling_choice"] = old.get("sampling_choice", "latent stage shared with rice2 (not retrained on "
                                                         "Sentinel-2); strength chosen on the S2 validation regions")
    for name in SHARED:
        meta["components"][name] = {"folder": "../rice2",
                                    "note": "rice2's part, shared: not retrained on Sentinel-2"}
    meta["eval"] = old.get("eval", [])
    (dst / "cloudrm.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"assembled {dst}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1] if len(sys.argv) > 1 else "~/.cache/cloudrm/export/idfcr/sen2"))
