"""Methods through the public API with tiny untrained weights folders (no training in tests)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import cloudrm
from cloudrm import weights
from cloudrm.errors import ConfigError, InputError, WeightsError

from conftest import REPO


def test_identity_and_median():
    rng = np.random.default_rng(0)
    d = [rng.random((3, 32, 32), dtype=np.float32) for _ in range(3)]
    res = cloudrm.load_method("identity")(d)
    np.testing.assert_array_equal(res.image, d[0])
    med = cloudrm.load_method("median")(d)
    np.testing.assert_allclose(med.image, np.median(np.stack(d), 0), atol=1e-6)
    assert cloudrm.load_method("median") is cloudrm.load_method("median")     # cached



def test_white_on_every_date_is_noted():
    """Ground that no date shows gets one note with its fraction; white on one date only, bright colour or a
    little white gets none."""
    from cloudrm.dates import cover_note, white_fraction

    ground = np.full((3, 40, 40), 0.3, np.float32)
    a, b = ground.copy(), ground.copy()
    a[:, :30] = 0.95                                 # rows 0-29 white on the first date
    b[:, 10:] = 0.97                                 # rows 10-39 white on the second
    assert white_fraction(np.stack([a, b])) == pytest.approx(0.5)   # rows 10-29 on both
    yellow = ground.copy()
    yellow[:2] = 0.95                                # bright, but not white
    assert white_fraction(yellow[None]) == 0
    assert cover_note(0.09) is None and "50%" in cover_note(0.5) and "whole image" in cover_note(1.0)
    m = cloudrm.load_method("median")
    assert any("50% of the image is white on every date" in n for n in m([a, b]).info["notes"])
    res = m([a, ground])
    assert res.info["white_fraction"] == 0 and not any("white" in n for n in res.info["notes"])
    one = cloudrm.load_method("identity")([np.full((3, 32, 32), 1.0, np.float32)])
    assert one.info["white_fraction"] == 1 and "no method can see the ground" in one.info["notes"][0]

def test_diffcr_seeds_dates_and_uncertainty(tiny_weights):
    m = cloudrm.load_method("diffcr", str(tiny_weights["diffcr"]))
    rng = np.random.default_rng(0)
    d = [rng.random((3, 40, 56), dtype=np.float32) for _ in range(3)]
    a = m(d, steps=3, seed=1)
    b = m(d, steps=3, seed=1)
    np.testing.assert_array_equal(a.image, b.image)
    assert a.image.shape == (3, 40, 56) and a.info["sampler"] == "dpmpp" and a.info["steps"] == 3
    for n in (1, 2):
        assert m(d[:n], steps=1).image.shape == (3, 40, 56)
    u = m(d, steps=2, seed=1, samples=3)
    assert u.maps["uncertainty"].shape == (40, 56) and u.maps["uncertainty"].max() > 0
    np.testing.assert_array_equal(u.image, m(d, steps=2, seed=1).image)   # the output is the --seed sample
    assert m(d).info["steps"] == 20                                        # the method's default


def test_pixel_cr_returns_cloud_map(tiny_weights):
    m = cloudrm.load_method("pixel-cr", str(tiny_weights["pixel-cr"]))
    d = np.random.default_rng(0).random((3, 50, 70), dtype=np.float32)
    res = m([d, d])
    assert res.image.shape == (3, 50, 70) and res.maps["cloud"].shape == (50, 70)
    assert any("first" in n for n in res.info["notes"])


def test_api_errors(tiny_weights, tmp_path):
    m = cloudrm.load_method("median")
    good = np.zeros((3, 32, 32), np.float32)
    with pytest.raises(InputError):
        m([])
    with pytest.raises(InputError):
        m([good] * 4)
    with pytest.raises(InputError):
        m([good, np.zeros((3, 32, 40), np.float32)])
    with pytest.raises(InputError):
        m([np.zeros((3, 8, 8), np.float32)])
    with pytest.raises(ConfigError):
        m([good], steps=0)
    with pytest.raises(ConfigError):
        m([good], sampler="euler")
    with pytest.raises(ConfigError):
        cloudrm.load_method("magic")
    with pytest.raises(WeightsError):
        cloudrm.load_method("diffcr", str(tiny_weights["pixel-cr"]))           # weights of another method
    bad = tmp_path / "broken"
    (bad / "unet").mkdir(parents=True)
    (bad / "unet" / "config.json").write_text((tiny_weights["diffcr"] / "unet" / "config.json").read_text())
    (bad / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"\x00" * 100)
    weights.write_meta(bad, {"method": "diffcr"})
    with pytest.raises(WeightsError, match="safetensors"):
        cloudrm.load_method("diffcr", str(bad))


def test_hub_weights_offline_is_one_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsError) as ei:
        weights.resolve("diffcr", "someone/cloudrm-weights@main")
    assert "\n" not in str(ei.value)


def test_bench_json(tmp_path, tiny_weights):
    out = tmp_path / "b.json"
    r = subprocess.run([sys.executable, "-m", "cloudrm", "bench", "--methods", "median,diffcr", "--size", "64",
                        "--dates", "2", "--steps", "2", "--repeats", "1", "--weights", str(tiny_weights["diffcr"]),
                        "--json", str(out)], capture_output=True, text=True, cwd=REPO, timeout=300,
                       env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    assert res["reference_gflops"] > 0
    rows = {x["method"]: x for x in res["results"]}
    for k in ("method", "size", "dates", "steps", "sampler", "seconds_median", "params", "gmacs", "gmacs_total",
              "peak_rss_mb"):
        assert k in rows["diffcr"], k
    assert rows["diffcr"]["params"] > 0 and rows["diffcr"]["gmacs_total"] > rows["diffcr"]["gmacs"] > 0


def test_weights_summary_table_reads_every_bundled_folder(tmp_path, monkeypatch):
    """The README/app weights table comes from each folder's cloudrm.json: numbers, shared parts, bad JSON."""
    root = tmp_path / "weights"
    monkeypatch.setattr(weights, "BUNDLED", root)
    assert "No bundled weights" in weights.summary_table()
    weights.write_meta(root / "idfcr" / "rice2", {"method": "idf-cr", "components": {"vae": {
        "trained_steps": 1500, "train_minutes": 42.5, "validation": {"psnr": 31.25, "val_seconds": 9.0},
        "training_data": {"clear": ["AID"], "crop": 128}}}})
    weights.write_meta(root / "idfcr" / "rice1", {"method": "idf-cr", "components": {"vae": {"folder": "../rice2"}}})
    weights.write_meta(root / "idfcr" / "sen2", {"method": "idf-cr", "components": {"pixel_cr": {
        "trained_steps": 900, "averaged_from": [{"share": 0.6, "training_data": {"scenes": ["S2"], "crop": 128}},
                                                {"share": 0.4, "training_data": {"clear": ["AID"]}}]}}})
    (root / "diffcr" / "sen2").mkdir(parents=True)
    (root / "diffcr" / "sen2" / "cloudrm.json").write_text("{not json")
    table = weights.summary_table()
    assert "| idfcr/rice2 (idf-cr) | vae | AID (128 px crops) | 1500 steps, 42.5 min |" in table
    assert "psnr 31.25" in table and "val_seconds" not in table
    assert "shared: ../rice2/vae" in table
    assert "| idfcr/sen2 (idf-cr) | pixel_cr | mean of 60% S2 (128 px crops); 40% AID | 900 steps |" in table
    assert "diffcr/sen2" in table and "not valid JSON" in table


def test_weights_spec_for_a_variant_choice(monkeypatch):
    """The app's variant menu: the method's own variant, else the closest (rice1 <-> rice2), else its default."""
    from cloudrm import weights

    assert weights.spec_for("pixel-cr", "rice1") == "rice1"
    assert weights.spec_for("pixel-cr", "rice2") is None            # the default variant: no spec
    assert weights.spec_for("pixel-cr", "sen2") == "sen2"            # trained on real Sentinel-2 clouds
    assert weights.spec_for("diffcr", "rice1") == "rice2"            # no rice1 DiffCR: the closest
    assert weights.spec_for("diffcr", "owner/repo@v1") == "owner/repo@v1"
    assert weights.spec_for("median", "rice1") is None
    monkeypatch.setattr(weights, "variants_present", lambda m: ["rice1"])
    assert weights.spec_for("pixel-cr", None) == "rice1"             # default missing: what is there


def test_bundled_provenance_names_no_home_directory():
    """Committed cloudrm.json files say ``~/`` for paths in the trainer's home (write_meta's rule)."""
    import re

    files = sorted(weights.BUNDLED.rglob("cloudrm.json"))
    assert files
    for f in files:
        assert not re.search(r'"(/root|/home/[^/"]+|/Users/[^/"]+)/', f.read_text()), f
