"""Built-in samples: real SEN12MS-CR clouds with attribution, listed by `cloudrm samples --json`."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from cloudrm import io, samples

ROOT = Path(__file__).resolve().parents[1]


def test_builtin_samples_are_real_sentinel2_with_attribution():
    found = samples.builtin_samples()
    assert 4 <= len(found) <= 8
    assert (samples.ASSET_SAMPLES / "ATTRIBUTION.md").read_text().count("CC-BY 4.0") >= 1
    assert {len(s.dates) for s in found} == {1, 3}
    for s in found:
        assert s.variant == "sen2" and "SEN12MS-CR" in s.source
        r = io.read_image(s.dates[0])
        assert r.bands[:3] == ("B04", "B03", "B02") and r.scale == 10000
        ref = io.to_display(io.to_rgb(io.read_image(s.reference)))
        first = io.to_display(io.to_rgb(r))
        assert np.abs(first - ref).mean() > 0.01, f"{s.name}: the cloudy date equals the reference"


def test_manifest_is_what_make_samples_writes():
    """The committed manifest lists make_samples' choice, in order, with the notes it gives each sample."""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import make_samples
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    recs = json.loads((samples.ASSET_SAMPLES / "samples.json").read_text())
    assert [r["name"] for r in recs] == [name for _, name, _ in make_samples.CHOICE]
    for r in recs:
        for note in make_samples.EXTRA_NOTES.get(r["name"], []):
            assert note in r["notes"], r["name"]
    assert set(make_samples.EXTRA_NOTES) <= {r["name"] for r in recs}


def test_samples_json(tmp_path):
    out = tmp_path / "s.json"
    proc = subprocess.run([sys.executable, "-m", "cloudrm", "samples", "--json", str(out)], cwd=ROOT,
                          capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr
    recs = json.loads(out.read_text())
    assert recs and all({"name", "group", "dates", "reference", "source", "variant"} <= set(r) for r in recs)
    assert all(Path(d).is_file() for r in recs for d in r["dates"])


def test_samples_json_bad_folder(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "cloudrm", "samples", "--json", str(tmp_path / "no" / "s.json")],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith("error:")
    assert "Traceback" not in proc.stderr
