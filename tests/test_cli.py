"""The CLI contract: remove / eval / samples / errors (exit 2, one `error:` line, no traceback)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import REPO, need


def run(*args, cwd=None):
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "cloudrm", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd or REPO, env=env, timeout=300)


def test_eval_identity_matches_independent_skimage(tmp_path):
    """`eval --method identity` on RICE1 = skimage PSNR computed straight from the uint8 files."""
    from skimage.metrics import peak_signal_noise_ratio

    root = need("RICE1")
    out = tmp_path / "id.json"
    r = run("eval", "--method", "identity", "--data", root, "--layout", "rice", "--json", out)
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    ref = []
    for name in sorted(p.stem for p in (root / "cloud").glob("*.png")):
        a = np.asarray(Image.open(root / "label" / f"{name}.png").convert("RGB"), dtype=np.float64) / 255
        b = np.asarray(Image.open(root / "cloud" / f"{name}.png").convert("RGB"), dtype=np.float64) / 255
        ref.append(peak_signal_noise_ratio(a, b, data_range=1))
    assert res["n"] == len(ref) == 74
    assert res["psnr"] == pytest.approx(np.mean(ref), abs=1e-4)
    for k in ("method", "dataset", "ssim", "rmse", "niqe", "brisque", "lpips", "seconds_per_image", "per_image"):
        assert k in res
    assert res["lpips"] is None and res["dataset"] == "RICE1" and res["per_image"][0]["name"]


def test_remove_identity_geotiff_keeps_georeferencing(s2_geotiff, tmp_path):
    import rasterio

    src = s2_geotiff()
    out = tmp_path / "out.tif"
    r = run("remove", src, "-o", out, "--method", "identity")
    assert r.returncode == 0, r.stderr
    with rasterio.open(src) as a, rasterio.open(out) as b:
        assert (b.crs, b.transform, b.width, b.height) == (a.crs, a.transform, a.width, a.height)
        assert b.count == 3 and b.dtypes[0] == "uint16"


def test_remove_median_png(rgb_png, tmp_path):
    paths = [rgb_png(f"d{i}.png", seed=i) for i in range(3)]
    out = tmp_path / "m.png"
    r = run("remove", *paths, "-o", out, "--method", "median")
    assert r.returncode == 0, r.stderr
    got = np.asarray(Image.open(out))
    ims = np.stack([np.asarray(Image.open(p)) for p in paths]).astype(np.float32) / 255
    want = np.round(np.clip(np.median(ims, 0), 0, 1) * 255).astype(np.uint8)
    assert np.abs(got.astype(int) - want).max() <= 1


def test_samples_lists_groups(tmp_path):
    env_root = need()
    r = subprocess.run([sys.executable, "-m", "cloudrm", "samples"], capture_output=True, text=True, cwd=REPO,
                       env=dict(os.environ, CLOUDRM_DATA=str(env_root), HF_HUB_OFFLINE="1",
                                CLOUDRM_CACHE=str(tmp_path)))
    assert r.returncode == 0, r.stderr
    for g in ("RICE1", "RICE2", "Sentinel-2", "built-in", "data root"):
        assert g in r.stdout


def _bad(tmp_path, rgb_png, kind):
    good = rgb_png("good.png")
    out = tmp_path / "o.png"
    if kind == "missing":
        return ["remove", tmp_path / "nope.png", "-o", out]
    if kind == "text":
        p = tmp_path / "t.png"
        p.write_text("hello")
        return ["remove", p, "-o", out]
    if kind == "empty":
        p = tmp_path / "e.png"
        p.write_bytes(b"")
        return ["remove", p, "-o", out]
    if kind == "tiny":
        p = tmp_path / "one.png"
        Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(p)
        return ["remove", p, "-o", out]
    if kind == "sizes":
        p = tmp_path / "small.png"
        Image.fromarray(np.zeros((32, 48, 3), np.uint8)).save(p)
        return ["remove", good, p, "-o", out, "--method", "median"]
    if kind == "four_dates":
        return ["remove", good, good, good, good, "-o", out]
    if kind == "no_dates":
        return ["remove", "-o", out]
    if kind == "method":
        return ["remove", good, "-o", out, "--method", "magic"]
    if kind == "sampler":
        return ["remove", good, "-o", out, "--sampler", "euler"]
    if kind == "steps0":
        return ["remove", good, "-o", out, "--steps", "0"]
    if kind == "steps51":
        return ["remove", good, "-o", out, "--steps", "51"]
    if kind == "k4":
        return ["remove", good, "-o", out, "--inr", "4"]
    if kind == "outdir":
        return ["remove", good, "-o", tmp_path / "no" / "o.png"]
    if kind == "outext":
        return ["remove", good, "-o", tmp_path / "o.bmp"]
    if kind == "weights":
        return ["remove", good, "-o", out, "--method", "diffcr", "--weights", tmp_path / "noweights"]
    if kind == "evaldata":
        return ["eval", "--method", "identity", "--data", tmp_path / "nodata"]
    if kind == "outfolder":  # -o naming an existing folder (with an image suffix, so only the folder is wrong)
        (tmp_path / "dir.png").mkdir()
        return ["remove", good, "-o", tmp_path / "dir.png"]
    if kind == "seed_huge":
        return ["remove", good, "-o", out, "--seed", str(2**70)]
    if kind == "seed_negative":
        return ["remove", good, "-o", out, "--seed", "-1"]
    if kind == "unc_same":
        return ["remove", good, "-o", out, "--method", "diffcr", "--samples", "2", "--uncertainty", out]
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["missing", "text", "empty", "tiny", "sizes", "four_dates", "no_dates", "method",
                                  "sampler", "steps0", "steps51", "k4", "outdir", "outext", "weights", "evaldata",
                                  "outfolder", "seed_huge", "seed_negative", "unc_same"])
def test_user_errors_exit_2_with_one_line(tmp_path, rgb_png, kind):
    r = run(*_bad(tmp_path, rgb_png, kind))
    assert r.returncode == 2, (kind, r.stdout, r.stderr)
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), r.stderr
    assert "Traceback" not in r.stderr
    assert not list(tmp_path.glob("o.*")) and not list(tmp_path.rglob(".*.part"))
    if kind == "outfolder":
        assert not list((tmp_path / "dir.png").iterdir())
    if kind.startswith("seed"):
        assert "0..4294967295" in last


def test_sigterm_mid_scene_leaves_no_part_files(tmp_path, s2_geotiff):
    """SIGTERM while a tiled scene is being written: exit 143 with one line, no output, no hidden .part file."""
    import signal
    import time

    src = s2_geotiff("big.tif", size=1536, nodata_block=False)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "cloudrm", "remove", str(src), "-o", str(out_dir / "o.tif"),
                             "--method", "diffcr", "--steps", "20"], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None and not list(out_dir.glob(".*.part")):
            time.sleep(0.2)
        assert list(out_dir.glob(".*.part")), "the scene writer never started"
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1] == "error: terminated" and "Traceback" not in err
    assert list(out_dir.iterdir()) == []


def test_eval_record_stores_scores_in_cloudrm_json(tmp_path, tiny_weights):
    """`eval --record` puts the scores into the weights folder's cloudrm.json "eval" list (what the app's About
    tab shows), replacing an older entry for the same method, data and settings."""
    import shutil

    root = need("RICE1")
    w = tmp_path / "w"
    shutil.copytree(tiny_weights["pixel-cr"], w)
    out = tmp_path / "e.json"
    for _ in range(2):
        r = run("eval", "--method", "pixel-cr", "--weights", w, "--data", root, "--layout", "rice", "--limit", "2",
                "--json", out, "--record")
        assert r.returncode == 0, r.stderr
    entries = json.loads((w / "cloudrm.json").read_text())["eval"]
    res = json.loads(out.read_text())
    assert len(entries) == 1 and entries[0]["method"] == "pixel-cr" and entries[0]["n"] == 2
    assert entries[0]["psnr"] == pytest.approx(res["psnr"], abs=1e-4)
    assert entries[0]["command"].startswith("python -m cloudrm eval --method pixel-cr")
