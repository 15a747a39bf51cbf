"""Reflectance survives the display mapping: bright ground is not clipped and a clear scene round-trips."""
import numpy as np
import pytest

from cloudrm import api, io


def test_tone_is_identity_below_the_knee_and_invertible():
    x = np.linspace(0, io.TONE_WHITE, 1000, dtype=np.float32)
    d = io.tone(x)
    assert np.all(np.diff(d) > 0), "strictly increasing up to white: no two reflectances share a display value"
    below = x <= io.TONE_KNEE
    assert np.allclose(d[below], x[below])
    assert np.allclose(io.untone(d), x, rtol=1e-4, atol=1e-5)
    # continuous slope at the knee (no visible kink in the true-colour stretch)
    eps = 1e-3
    slope = (io.tone(np.float32(io.TONE_KNEE + eps)) - io.TONE_KNEE) / eps
    assert slope == pytest.approx(1.0, abs=0.02)


def test_bright_ground_is_not_saturated():
    # sand / snow / roofs at 0.5-0.8 reflectance stay distinct (the old x3 clip made them all 1.0)
    d = io.tone(np.array([0.4, 0.5, 0.6, 0.8]) * io.REFLECTANCE_GAIN)
    assert d.max() < 0.99 and np.all(np.diff(d) > 0.01)


def test_clear_uint16_scene_round_trips_within_one_percent(tmp_path):
    rasterio = pytest.importorskip("rasterio")
    from rasterio.transform import from_origin

    rng = np.random.default_rng(0)
    refl = rng.uniform(0.01, 0.8, size=(4, 64, 64))
    dn = np.round(refl * 10000).astype("uint16")
    src = tmp_path / "clear.tif"
    prof = {"driver": "GTiff", "count": 4, "height": 64, "width": 64, "dtype": "uint16",
            "crs": "EPSG:32633", "transform": from_origin(500000, 4000000, 10, 10)}
    with rasterio.open(src, "w", **prof) as dst:
        dst.write(dn)
        for i, b in enumerate(io.SENTINEL2_RGBN, 1):
            dst.set_band_description(i, b)
    out = tmp_path / "out.tif"
    api.remove_clouds([str(src)], str(out), method="identity")
    with rasterio.open(out) as r:
        back = r.read().astype(np.float64) / 10000
    c = back.shape[0]
    rel = np.abs(back - dn[:c] / 10000) / (dn[:c] / 10000)
    assert rel.max() < 0.01, f"worst relative error {rel.max():.4f}"


def test_output_says_which_bands_were_modelled(tmp_path):
    rasterio = pytest.importorskip("rasterio")
    src = tmp_path / "s2.tif"
    prof = {"driver": "GTiff", "count": 4, "height": 32, "width": 32, "dtype": "uint16"}
    with rasterio.open(src, "w", **prof) as dst:
        dst.write(np.full((4, 32, 32), 1200, "uint16"))
        for i, b in enumerate(io.SENTINEL2_RGBN, 1):
            dst.set_band_description(i, b)
    out = tmp_path / "out.tif"
    api.remove_clouds([str(src)], str(out), method="identity")
    with rasterio.open(out) as r:
        tags = r.tags()
        assert r.count == 3 and r.descriptions == ("B04", "B03", "B02")
    assert tags["CLOUDRM_BANDS_MODELLED"] == "B04,B03,B02" and tags["CLOUDRM_BANDS_DROPPED"] == "B08"


def test_sentinel2_geotiff_picks_the_sen2_weights(tmp_path):
    from cloudrm import dates

    rasterio = pytest.importorskip("rasterio")
    src = tmp_path / "s2.tif"
    with rasterio.open(src, "w", driver="GTiff", count=4, height=16, width=16, dtype="uint16") as dst:
        dst.write(np.full((4, 16, 16), 900, "uint16"))
    png = tmp_path / "x.png"
    io.write_image(png, np.zeros((3, 16, 16), np.float32))
    assert dates.is_sentinel2(src) and not dates.is_sentinel2(png)


def test_output_path_that_is_a_folder_is_refused_by_the_python_api(tmp_path):
    from cloudrm.errors import CloudRMError

    (tmp_path / "out.png").mkdir()
    img = tmp_path / "in.png"
    io.write_image(img, np.full((3, 32, 32), 0.5, np.float32))
    with pytest.raises(CloudRMError, match="is a folder"):
        api.remove_clouds([str(img)], str(tmp_path / "out.png"), method="identity")
