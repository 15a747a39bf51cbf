"""Whole scenes (windowed GeoTIFF tiles, seams, georeferencing, bounded memory) and batches (accelerate)."""
from __future__ import annotations

import os
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

import cloudrm
from cloudrm import api, io, scene, synth
from cloudrm.cli import main as cli_main
from cloudrm.errors import CloudRMError, InputError
from cloudrm.methods.base import Method
from cloudrm.tiling import tile_starts

from conftest import REPO

ENV = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))


def write_tif(path, data, *, crs="EPSG:32633", origin=(500000, 5000000), res=10, nodata=0, names=None):
    import rasterio
    from rasterio.transform import from_origin

    c, h, w = data.shape
    prof = dict(driver="GTiff", width=w, height=h, count=c, dtype=str(data.dtype), crs=crs,
                transform=from_origin(*origin, res, res), nodata=nodata, compress="deflate")
    if h >= 256 and w >= 256:
        prof.update(tiled=True, blockxsize=256, blockysize=256)
    with rasterio.open(path, "w", **prof) as dst:
        dst.write(data)
        for i, n in enumerate(names or ["B04", "B03", "B02", "B08"][:c], 1):
            dst.set_band_description(i, n)
    return Path(path)


def s2_dates(tmp, h, w, n=3, nodata_block=True, seed=0):
    """n uint16 reflectance x10000 dates of one place (4 bands), with a nodata block in the first."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = 700 + 450 * np.sin(xx / 97.0) * np.cos(yy / 61.0)
    paths = []
    for d in range(n):
        data = np.stack([base + 150 * b + rng.normal(0, 60, (h, w)) for b in range(4)]).clip(1, 9000)
        data = data.astype(np.uint16)
        if nodata_block and d == 0:
            data[:, 100:300, 200:520] = 0
        paths.append(write_tif(tmp / f"t{d}.tif", data))
    return paths


def read(path):
    import rasterio

    with rasterio.open(path) as src:
        return src.read(), src.profile, src.descriptions, src.block_shapes


@pytest.fixture(scope="module")
def pixel_cr(tiny_weights) -> str:
    """A tiny randomly initialised Pixel-CR (conftest): a deterministic, convolution-like method."""
    return str(tiny_weights["pixel-cr"])


# ----------------------------------------------------------------------------------------------- seams
def test_seams_tiled_equals_untiled_without_steps(tmp_path, pixel_cr):
    """512x512: tiles of 256 (overlap 32) through the whole-scene path vs one untiled call."""
    rng = np.random.default_rng(1)
    clear = synth.demo_scene(3, 512)
    cloudy, _ = synth.add_clouds(clear, rng)
    src = write_tif(tmp_path / "s.tif", np.round(np.clip(cloudy, 0, 1) * 255).astype(np.uint8), nodata=None,
                    names=["B04", "B03", "B02"])
    m = cloudrm.load_method("pixel-cr", pixel_cr)
    untiled = m([io.to_display(io.read_image(src))]).image
    res = api.remove_clouds([src], tmp_path / "o.tif", method="pixel-cr", weights=pixel_cr, tile=256, overlap=32)
    assert res.info["scene"] and res.info["tiles"] == 9 and res.info["preview_step"] == 1
    tiled = res.image
    assert tiled.shape == untiled.shape == (3, 512, 512)
    assert np.abs(tiled - untiled).mean() < 2 / 255
    # the written file is the same image, quantised
    written = read(tmp_path / "o.tif")[0].astype(np.float32) / 255
    assert np.abs(written - tiled).max() <= 0.5 / 255 + 1e-6
    # in-memory tiling (run_method) and the windowed path blend identically
    mem = api.run_method(m, io.to_display(io.read_image(src))[None], tile=256, overlap=32).image
    np.testing.assert_allclose(mem, tiled, atol=1e-6)

    starts = tile_starts(512, 256, 32)
    edges = sorted({s for s in starts if s > 0} | {s + 256 for s in starts if s + 256 < 512})
    for axis in (1, 2):  # rows, then columns
        g = np.abs(np.diff(tiled, axis=axis)).mean(axis=(0, 3 - axis))   # g[k]: between k and k+1
        g_ref = np.abs(np.diff(untiled, axis=axis)).mean(axis=(0, 3 - axis))
        at = np.array([k - 1 for k in edges])
        elsewhere = np.delete(g, at).mean()
        assert g[at].mean() <= elsewhere * 1.05 + 1e-4, (axis, g[at], elsewhere)
        assert np.all(g[at] <= g_ref[at] + 0.5 / 255), (axis, g[at], g_ref[at])


# ----------------------------------------------------------------------------------------------- georeferencing
@pytest.mark.slow
def test_cli_scene_median_keeps_georeferencing_and_nodata(tmp_path):
    dates = s2_dates(tmp_path, 1300, 1500)
    out = tmp_path / "out.tif"
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "cloudrm", "remove", *map(str, dates), "-o", str(out),
                        "--tile", "512", "--overlap", "32", "--method", "median"],
                       capture_output=True, text=True, cwd=REPO, env=ENV, timeout=120)
    assert r.returncode == 0, r.stderr
    got, prof, desc, blocks = read(out)
    _, src_prof, _, _ = read(dates[0])
    assert (prof["crs"], prof["transform"], prof["width"], prof["height"]) == \
        (src_prof["crs"], src_prof["transform"], 1500, 1300)
    assert prof["dtype"] == "uint16" and prof["nodata"] == 0 and prof["count"] == 3
    assert prof["compress"] == "deflate" and prof["tiled"] and blocks[0] == (256, 256)
    assert desc == ("B04", "B03", "B02")
    raw = np.stack([read(p)[0][:3].astype(np.float64) for p in dates])
    valid = np.all(raw != 0, axis=(0, 1))
    assert (got[:, ~valid] == 0).all() and (got[:, valid] > 0).all()      # nodata stays nodata, only there
    disp = np.clip(raw / 10000 * io.REFLECTANCE_GAIN, 0, 1)
    want = np.round(np.median(disp, 0) / io.REFLECTANCE_GAIN * 10000)
    assert np.abs(got.astype(np.float64) - want)[:, valid].max() <= 1     # uint16 x10000 in -> out
    assert not list(tmp_path.glob(".*.part"))
    print(f"1500x1300 median CLI: {time.perf_counter() - t0:.1f} s")


@pytest.mark.parametrize("kind", ["crs", "size", "transform"])
def test_dates_must_share_grid(tmp_path, kind, capsys):
    a = s2_dates(tmp_path, 300, 700, n=1, nodata_block=False)[0]
    data = read(a)[0]
    if kind == "crs":
        b = write_tif(tmp_path / "b.tif", data, crs="EPSG:32632")
    elif kind == "size":
        b = write_tif(tmp_path / "b.tif", data[:, :, :600])
    else:
        b = write_tif(tmp_path / "b.tif", data, origin=(500010, 5000000))
    out = tmp_path / "o.tif"
    with pytest.raises(InputError, match={"crs": "CRS EPSG:32632", "size": "600x300", "transform": "origin"}[kind]):
        api.remove_clouds([a, b], out, method="median", tile=256)
    assert cli_main(["remove", str(a), str(b), "-o", str(out), "--method", "median", "--tile", "256"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: date 2 (b.tif)") and "Traceback" not in err[0]
    assert not out.exists() and not list(tmp_path.glob(".*.part"))


def test_scene_equals_in_memory_path(tmp_path):
    """The windowed scene path blends exactly like the in-memory tiled path and writes the same file."""
    from dataclasses import replace

    dates = s2_dates(tmp_path, 600, 700)
    rasters = api.read_dates(dates)
    for method in ("identity", "median"):
        mem = api.remove_clouds(dates, None, method=method, tile=256, overlap=32)   # no output: in memory
        untiled = api.remove_clouds(dates, None, method=method, tile=1024)
        np.testing.assert_allclose(mem.image, untiled.image, atol=1e-6)          # pixel-wise: tiles vanish
        for ext in (".tif", ".png"):
            a, b = tmp_path / f"scene_{method}{ext}", tmp_path / f"mem_{method}{ext}"
            res = api.remove_clouds(dates, a, method=method, tile=256, overlap=32)
            assert res.info.get("scene") and not mem.info.get("scene")
            valid = np.logical_and.reduce([r.valid for r in rasters])
            np.testing.assert_array_equal(res.image[:, valid], mem.image[:, valid])
            like = replace(rasters[0], bands=rasters[0].bands[:3])
            io.write_image(b, mem.image, like=like, valid=valid)
            if ext == ".tif":
                np.testing.assert_array_equal(read(a)[0], read(b)[0])
            else:  # PNG has no nodata: only the filled (invalid) pixels may differ
                pa, pb = (io.read_image(x).data for x in (a, b))
                np.testing.assert_array_equal(pa[:, valid], pb[:, valid])



def test_scene_cover_note_is_the_whole_scenes(tmp_path):
    """The note on ground no date shows counts every tile, not the first one only."""
    data = np.full((4, 600, 700), 900, np.uint16)
    data[:3, :, :350] = 9000                          # the left half is opaque white (reflectance 0.9)
    path = write_tif(tmp_path / "half.tif", data)
    scene_res = api.remove_clouds([path], tmp_path / "o.tif", method="identity", tile=256, overlap=32)
    memory = api.remove_clouds([path], None, method="identity", tile=256, overlap=32)   # in-memory tiles
    assert scene_res.info.get("scene") and memory.info["tiles"] > 1
    for res in (scene_res, memory):
        assert res.info["white_fraction"] == pytest.approx(0.5, abs=0.05)
        assert [n for n in res.info["notes"] if "white on every date" in n] == [
            f"{res.info['white_fraction']:.0%} of the image is white on every date (opaque cloud or snow): no "
            "method can see the ground there, what it paints there is a guess"]

@pytest.mark.slow
def test_scene_memory_is_bounded(tmp_path):
    """A tall scene: peak Python/numpy allocation stays far below one float copy of the output."""
    h, w = 8000, 500
    data = np.full((4, h, w), 1200, np.uint16) + np.arange(w, dtype=np.uint16)[None, None]
    src = write_tif(tmp_path / "tall.tif", data)
    api.remove_clouds([src], tmp_path / "warm.tif", method="identity", tile=256, overlap=32)  # imports, caches
    tracemalloc.start()
    try:
        res = api.remove_clouds([src], tmp_path / "o.tif", method="identity", tile=256, overlap=32)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    full_float_output = 3 * h * w * 4                                    # 48 MB; the float input: 64 MB
    assert peak < 0.5 * full_float_output, (peak, full_float_output)
    assert res.info["preview_step"] == 8 and res.image.shape == (3, 1000, 63)
    assert (read(tmp_path / "o.tif")[0] == data[:3]).all()


class _Boom(Method):
    name = "boom"

    def __init__(self):
        super().__init__()
        self.calls = 0

    def run(self, dates, *, generator, progress, **opts):
        self.calls += 1
        if self.calls == 3:
            raise RuntimeError("boom")
        return dates[0].numpy(), {}


class _Noisy(Method):
    """Stochastic: output = first date + seeded noise; records each tile's generator seed."""
    name = "noisy"
    stochastic = True

    def __init__(self):
        super().__init__()
        self.seeds = []

    def run(self, dates, *, generator, progress, **opts):
        self.seeds.append(generator.initial_seed())
        noise = torch.rand(dates.shape[1:], generator=generator) * 0.01
        return (dates[0] + noise).clamp(0, 1).numpy(), {}


def test_failures_leave_no_output_and_tiles_share_the_seed(tmp_path):
    dates = s2_dates(tmp_path, 300, 600, n=1)
    out = tmp_path / "o.tif"
    with pytest.raises(RuntimeError, match="boom"):
        scene.process_scene(_Boom(), dates, out, tile=128, overlap=16)
    assert not out.exists() and not list(tmp_path.glob(".*.part"))
    blank = write_tif(tmp_path / "blank.tif", np.zeros((4, 300, 600), np.uint16))
    with pytest.raises(InputError, match="every pixel is nodata"):
        scene.process_scene(cloudrm.load_method("median"), [dates[0], blank], out, tile=128, overlap=16)
    assert not out.exists() and not list(tmp_path.glob(".*.part"))

    m = _Noisy()
    unc = tmp_path / "u.tif"
    calls = []
    res = scene.process_scene(m, dates, out, tile=128, overlap=16, seed=7, samples=2, uncertainty=unc,
                              progress=lambda i, n: calls.append((i, n)))
    assert res.info["tiles_run"] >= 10 and set(m.seeds) == {7, 8}       # every tile: seed, seed+1
    n = res.info["tiles"]
    assert calls == [(i, n) for i in range(1, n + 1)]                    # progress over tiles
    u, uprof, udesc, _ = read(unc)
    assert u.shape == (1, 300, 600) and uprof["dtype"] == "float32" and udesc == ("uncertainty",)
    assert 0 < float(np.nanmean(u)) < 0.01 and np.isnan(u[0, 100:300, 200:520]).all()   # nodata: NaN


# ----------------------------------------------------------------------------------------------- batches
def _batch_inputs(tmp):
    """A folder of scenes: two multi-date GeoTIFF scene folders, a PNG scene folder and a single image."""
    from PIL import Image

    root = tmp / "scenes"
    for name, (h, w) in {"alpha": (300, 520), "beta": (200, 200)}.items():
        (root / name).mkdir(parents=True)
        for p in s2_dates(root / name, h, w, n=2, seed=len(name)):
            p.rename(p.with_name(f"cloudy_{p.name}"))
        write_tif(root / name / "clear.tif", np.full((4, h, w), 500, np.uint16))   # a reference: ignored
    (root / "gamma").mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray((rng.random((48, 64, 3)) * 255).astype(np.uint8)).save(root / "gamma" / f"d{i}.png")
    Image.fromarray((rng.random((40, 40, 3)) * 255).astype(np.uint8)).save(root / "single.png")
    return root


def test_batch_folder_list_resume_and_failures(tmp_path, capsys):
    root = _batch_inputs(tmp_path)
    out = tmp_path / "out"
    assert cli_main(["remove", "--batch", str(root), "-o", str(out), "--method", "median", "--tile", "256"]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["alpha.tif", "beta.tif", "gamma.png", "single.png"]
    text = capsys.readouterr().out
    assert "4 written" in text
    # equal to the one-scene command
    one = tmp_path / "alpha.tif"
    assert cli_main(["remove", *map(str, sorted((root / "alpha").glob("cloudy_*"))), "-o", str(one),
                     "--method", "median", "--tile", "256"]) == 0
    np.testing.assert_array_equal(read(one)[0], read(out / "alpha.tif")[0])
    # resume: finished outputs are skipped
    (out / "beta.tif").unlink()
    before = (out / "alpha.tif").stat().st_mtime_ns
    assert cli_main(["remove", "--batch", str(root), "-o", str(out), "--method", "median", "--tile", "256"]) == 0
    text = capsys.readouterr().out
    assert "1 written, 3 skipped" in text and (out / "alpha.tif").stat().st_mtime_ns == before
    # a list file with a bad scene: reported on one line, the rest goes on, exit 2
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    lst = tmp_path / "list.txt"
    lst.write_text(f"# scenes\n{root / 'single.png'}\n\n{bad}\n"
                   + " ".join(str(p) for p in sorted((root / "gamma").glob("*.png"))) + "\n")
    out2 = tmp_path / "out2"
    assert cli_main(["remove", "--batch", str(lst), "-o", str(out2), "--method", "median"]) == 2
    cap = capsys.readouterr()
    assert sorted(p.name for p in out2.iterdir()) == ["d0.png", "single.png"]
    failed = [line for line in cap.err.splitlines() if line.startswith("failed")]
    assert len(failed) == 1 and "bad" in failed[0] and "Traceback" not in cap.err
    assert cap.err.strip().splitlines()[-1].startswith("error: 1 of 3")
    assert not list(out2.glob(".*.part"))


@pytest.mark.slow
def test_batch_two_processes_equals_one(tmp_path):
    root = _batch_inputs(tmp_path)
    one, two = tmp_path / "one", tmp_path / "two"
    assert cli_main(["remove", "--batch", str(root), "-o", str(one), "--method", "median", "--tile", "256"]) == 0
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "-m", "cloudrm", "remove", "--batch", str(root), "-o", str(two), "--method", "median", "--tile", "256"]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=ENV, timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "[0/2]" in r.stdout and "[1/2]" in r.stdout                  # both processes took a share
    assert "4 written" in r.stdout
    for p in sorted(one.iterdir()):
        assert (two / p.name).read_bytes() == p.read_bytes(), p.name
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())


def test_batch_errors_before_work(tmp_path, capsys):
    root = _batch_inputs(tmp_path)
    for argv, msg in [(["--batch", str(tmp_path / "nope")], "not found"),
                      (["--batch", str(root), "--method", "magic"], "unknown method"),
                      (["--batch", str(root), "--steps", "0"], "steps"),
                      (["x.png", "--batch", str(root)], "not both")]:
        assert cli_main(["remove", *argv, "-o", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("error: ") and msg in err[-1], err
    assert not (tmp_path / "o").exists()
    from cloudrm.batch import read_scenes

    empty = tmp_path / "empty.txt"
    empty.write_text("\n# nothing\n")
    with pytest.raises(CloudRMError, match="no scenes"):
        read_scenes(empty)


def test_batch_list_names_are_unique(tmp_path):
    from cloudrm.batch import read_scenes

    for d in ("a", "b"):
        (tmp_path / d).mkdir()
    lst = tmp_path / "l.txt"
    lst.write_text("a/t1.tif a/t2.tif\n'b/t1.tif'\n/abs/c/x.png\n")
    scenes = read_scenes(lst)
    assert [sc.name for sc in scenes] == ["a_t1", "b_t1", "x"]
    assert scenes[0].dates == (str(tmp_path / "a" / "t1.tif"), str(tmp_path / "a" / "t2.tif"))
    assert scenes[2].dates == ("/abs/c/x.png",)
    assert [sc.output(tmp_path).name for sc in scenes] == ["a_t1.tif", "b_t1.tif", "x.png"]
