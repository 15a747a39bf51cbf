"""The app's public API through gradio_client against an in-process launch on 127.0.0.1.

Covers the /remove_clouds contract (bit-exact with cloudrm.api.remove_clouds, i.e. `python -m cloudrm remove`),
the deep methods via tiny untrained weights folders, every user error as a one-line AppError with the app staying
up, and 8 concurrent jobs without cross-talk.
"""
from __future__ import annotations

import os

for _k, _v in {"HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_DISABLE_TELEMETRY": "1"}.items():
    os.environ.setdefault(_k, _v)

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from app_helpers import read_png, running_app, tiny_weights, write_png  # noqa: E402

from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

METRIC_KEYS = ["psnr", "ssim", "rmse", "niqe", "brisque", "seconds"]


@pytest.fixture(scope="module")
def server():
    with running_app() as (app, url):
        yield app, url


@pytest.fixture(scope="module")
def client(server):
    return Client(server[1], verbose=False, analytics_enabled=False)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_weights(tmp_path_factory.mktemp("weights"))


def _predict(client, images, method="identity", **kw):
    return client.predict(images=[handle_file(str(p)) for p in images], method=method, api_name="/remove_clouds", **kw)


def test_api_lists_one_public_endpoint(client):
    info = client.view_api(return_format="dict", print_info=False)
    assert list(info["named_endpoints"]) == ["/remove_clouds"]
    params = [p["parameter_name"] for p in info["named_endpoints"]["/remove_clouds"]["parameters"]]
    assert params == ["images", "method", "weights", "sampler", "steps", "inr", "seed", "reference"]
    assert not info["unnamed_endpoints"]


@pytest.mark.parametrize("method", ["identity", "median"])
def test_matches_cli_bit_exact(client, tmp_path, method):
    from cloudrm.api import remove_clouds

    dates = [write_png(tmp_path / f"d{i}.png", seed=i) for i in range(3)]
    ref = write_png(tmp_path / "ref.png", seed=10)
    out, met = _predict(client, dates, method, reference=handle_file(str(ref)))
    expected = tmp_path / "cli.png"
    res = remove_clouds([str(p) for p in dates], expected, method=method)
    assert np.array_equal(read_png(out), read_png(expected))
    assert list(met) == METRIC_KEYS
    from cloudrm import io, metrics
    want = metrics.evaluate(res.image, io.to_display(io.read_image(ref)))
    for k in ("psnr", "ssim", "rmse"):
        assert met[k] == pytest.approx(want[k], rel=1e-9)
    assert met["seconds"] >= 0


def test_no_reference_gives_null_reference_metrics(client, tmp_path):
    out, met = _predict(client, [write_png(tmp_path / "a.png", seed=3)], "median", seed=5)
    assert met["psnr"] is None and met["ssim"] is None and met["rmse"] is None
    assert read_png(out).shape == (64, 64, 3)


@pytest.mark.parametrize("method,kw", [("pixel-cr", {}), ("diffcr", {"steps": 2, "sampler": "ddim", "seed": 7})])
def test_deep_methods_with_weights_folder(client, tmp_path, tiny, method, kw):
    from cloudrm.api import remove_clouds

    dates = [write_png(tmp_path / f"d{i}.png", seed=20 + i) for i in range(2)]
    out, met = _predict(client, dates, method, weights=str(tiny[method]), **kw)
    expected = tmp_path / "cli.png"
    remove_clouds([str(p) for p in dates], expected, method=method, weights=str(tiny[method]), **kw)
    got, want = read_png(out).astype(int), read_png(expected).astype(int)
    assert got.shape == want.shape == (64, 64, 3)
    assert np.abs(got - want).max() <= 1
    assert met["seconds"] > 0


def _text_as_png(tmp_path):
    p = tmp_path / "notes.png"
    p.write_text("this is a text file, not an image\n")
    return p


def _text_file(tmp_path):
    p = tmp_path / "notes.txt"
    p.write_text("plain text\n")
    return p


ERROR_CASES = {
    "no input": (lambda t: [], None, "no input image"),
    "four dates": (lambda t: [write_png(t / f"d{i}.png", seed=i) for i in range(4)], None, "1 to 3"),
    "different sizes": (lambda t: [write_png(t / "a.png", 1), write_png(t / "b.png", 2, size=48)], None, "same size"),
    "text renamed png": (lambda t: [_text_as_png(t)], None, "not a readable image"),
    "text file": (lambda t: [_text_file(t)], None, "Invalid file type"),
    "1x1 image": (lambda t: [write_png(t / "px.png", 1, size=1)], None, "at least 16 px"),
    "reference of another size": (lambda t: [write_png(t / "a.png", 1)], lambda t: write_png(t / "r.png", 2, size=(64, 32)),
                                  "reference"),
    "larger than the limit": (lambda t: [write_png(t / "big.png", 1, size=(1100, 20))], None, "1024"),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_user_errors_are_one_line_and_app_stays_up(client, tmp_path, case):
    make_dates, make_ref, needle = ERROR_CASES[case]
    kw = {"reference": handle_file(str(make_ref(tmp_path)))} if make_ref else {}
    with pytest.raises(AppError) as exc:
        _predict(client, make_dates(tmp_path), "median", **kw)
    msg = exc.value.message if getattr(exc.value, "message", None) else str(exc.value)
    assert "\n" not in msg.strip() and needle in msg, msg
    assert str(tmp_path) not in msg  # no server paths, only the file names
    # the next request works
    good = write_png(tmp_path / "good.png", seed=99)
    out, _ = _predict(client, [good], "identity")
    assert np.array_equal(read_png(out), read_png(good))


def test_bad_options_are_errors(client, tmp_path):
    img = write_png(tmp_path / "a.png", seed=1)
    with pytest.raises(AppError, match="unknown method"):
        _predict(client, [img], "nope")
    with pytest.raises(AppError, match="steps"):
        _predict(client, [img], "identity", steps=51)


def test_eight_concurrent_jobs_no_cross_talk(client, tmp_path):
    from gradio_client.utils import QueueError

    images = [write_png(tmp_path / f"c{i}.png", seed=100 + i) for i in range(8)]
    jobs = [client.submit(images=[handle_file(str(p))], method="identity", seed=i, api_name="/remove_clouds")
            for i, p in enumerate(images)]
    done = 0
    for p, job in zip(images, jobs):
        try:
            out, met = job.result(timeout=60)
        except (QueueError, AppError) as exc:
            assert "queue is full" in str(exc).lower(), exc
            continue
        assert np.array_equal(read_png(out), read_png(p))
        assert list(met) == METRIC_KEYS
        done += 1
    assert done >= 1


def test_ui_compare_geotiff_maps_and_downloads(server, tmp_path, tiny, s2_geotiff):
    """The private multi-method event, called directly: GeoTIFF in -> georeferenced GeoTIFF download,
    an uncertainty map for DiffCR with several seeds, captions and the metrics table."""
    import rasterio

    app = server[0]
    tif = s2_geotiff("s2.tif", size=64)
    gallery, radio, slider, maps, df, downloads, notes, state = app.compare(
        [str(tif)], None, ["diffcr", "median"], "ddim", 2, "ddpm", 50, 3, str(tiny["diffcr"]), 0, 3, "", None)
    assert [c for _, c in gallery][0] == "cloudy date 1"
    assert gallery[1][1].startswith("median") and gallery[2][1].startswith("diffcr · ddim 2 steps")
    assert list(df["method"]) == ["median", "diffcr"] and set(df["PSNR (dB)"]) == {"-"}
    assert radio["choices"] == ["median", "diffcr"] and slider[1] == state["outputs"][radio["value"]]
    assert maps["visible"] and any("uncertainty" in c for _, c in maps["value"])
    out_tif = next(p for p in downloads if p.endswith("_diffcr.tif"))
    with rasterio.open(out_tif) as a, rasterio.open(tif) as b:
        assert a.crs == b.crs and a.transform == b.transform and a.count == 3 and a.dtypes[0] == "uint16"
    assert any(p.endswith("_uncertainty.tif") for p in downloads)
    assert "B04, B03, B02" in notes


def test_ui_compare_band_choice(server, tmp_path):
    """A 6-band GeoTIFF without band names needs the Bands setting; the error says where to set it."""
    import gradio as gr
    import rasterio
    from rasterio.transform import from_origin

    app = server[0]
    p = tmp_path / "six.tif"
    data = (np.random.default_rng(0).random((6, 32, 32)) * 3000).astype("uint16")
    with rasterio.open(p, "w", driver="GTiff", width=32, height=32, count=6, dtype="uint16", crs="EPSG:32633",
                       transform=from_origin(500000, 5000000, 10, 10)) as dst:
        dst.write(data)
    args = (None, ["identity"], "dpmpp", 20, "ddpm", 50, 3, "default", 0, 0)
    with pytest.raises(gr.Error, match="Advanced settings"):
        app.compare([str(p)], *args, "", None)
    _, _, _, _, df, downloads, notes, _ = app.compare([str(p)], *args, "4,3,2", None)
    assert list(df["method"]) == ["identity"] and any(d.endswith(".tif") for d in downloads)
