"""The I/O layer on real GeoTIFFs, a generated Sentinel-2-like file, and bad inputs."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cloudrm import io
from cloudrm.errors import ConfigError, InputError

from conftest import need


def test_real_geotiffs_read_with_georeferencing():
    p1 = need("geotiff", "import-tiff-test1.tiff")
    r = io.read_image(p1)
    assert r.data.shape == (1, 72, 84) and r.is_geo and r.dtype == "uint16"
    assert np.isfinite(r.data).all() and r.scale == 10000.0
    p2 = need("geotiff", "import-tiff-test2.tiff")
    with pytest.raises(InputError, match="--bands"):
        io.read_image(p2, min_side=1)          # 5 bands, no descriptions: must ask for --bands
    r2 = io.read_image(p2, bands="1,2,3", min_side=1)
    assert r2.data.shape == (3, 17, 11) and r2.dtype == "float32" and r2.is_geo
    assert r2.profile["crs"].to_epsg() == 4326


def test_real_geotiff_too_small_for_methods_is_readable_error():
    p2 = need("geotiff", "import-tiff-test2.tiff")
    # 17x11: a side under 16 px -> refused with a clear message (it is still a valid GeoTIFF)
    with pytest.raises(InputError, match="at least 16"):
        io.read_image(p2, bands="1,2,3")


def test_sentinel2_geotiff_roundtrip(s2_geotiff, tmp_path):
    src = s2_geotiff()
    r = io.read_image(src)
    assert r.bands == ("B04", "B03", "B02", "B08")
    assert r.scale == 10000 and r.gain == io.REFLECTANCE_GAIN
    assert not r.valid[:8, :8].any() and r.valid[8:, 8:].all()
    disp = io.to_display(r)
    assert disp.min() >= 0 and disp.max() <= 1 and (disp[:, :8, :8] == 0).all()
    out = tmp_path / "out.tif"
    io.write_image(out, disp[:3], like=r)
    import rasterio

    with rasterio.open(src) as a, rasterio.open(out) as b:
        assert b.crs == a.crs and b.transform == a.transform and (b.width, b.height) == (a.width, a.height)
        assert b.dtypes[0] == "uint16" and b.nodata == 0 and b.count == 3
        assert b.descriptions == ("B04", "B03", "B02")
        va, vb = a.read([1, 2, 3]).astype(int), b.read().astype(int)
    # unsaturated pixels round-trip within one DN step of the 8-bit-free float path; nodata stays nodata
    ok = (va * io.REFLECTANCE_GAIN / 10000 < 1) & (va > 0)
    assert np.abs(va[ok] - vb[ok]).max() <= 1
    assert (vb[:, :8, :8] == 0).all()


def test_band_selection_by_name_and_index(s2_geotiff):
    src = s2_geotiff()
    a = io.read_image(src, bands="B02,B03,B04")
    b = io.read_image(src, bands=[3, 2, 1])
    np.testing.assert_array_equal(a.data, b.data)
    with pytest.raises(InputError, match="band 7"):
        io.read_image(src, bands="7,2,1")


def test_image_modes(tmp_path):
    rng = np.random.default_rng(0)
    rgb = (rng.random((32, 40, 3)) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(rgb).convert("RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(rgb).convert("L").save(tmp_path / "gray.png")
    Image.fromarray(rgb).convert("P").save(tmp_path / "pal.png")
    Image.fromarray((rng.random((32, 40)) * 65535).astype(np.uint16)).save(tmp_path / "g16.png")
    Image.fromarray(rgb).save(tmp_path / "rgb.jpg", quality=95)
    r = io.read_image(tmp_path / "rgb.png")
    np.testing.assert_allclose(r.data, rgb.transpose(2, 0, 1) / 255, atol=1e-6)
    ra = io.read_image(tmp_path / "rgba.png")
    assert ra.data.shape == (3, 32, 40) and "alpha channel ignored" in ra.notes
    assert io.read_image(tmp_path / "gray.png").data.shape == (1, 32, 40)
    assert io.read_image(tmp_path / "pal.png").data.shape == (3, 32, 40)
    g16 = io.read_image(tmp_path / "g16.png")
    assert g16.dtype == "uint16" and g16.data.max() <= 1 and g16.data.max() > 0.9
    assert io.read_image(tmp_path / "rgb.jpg").data.shape == (3, 32, 40)


@pytest.mark.parametrize("kind", ["empty", "truncated", "text", "tiny", "missing", "folder", "ext"])
def test_bad_inputs_raise_one_line(tmp_path, kind):
    p = tmp_path / "bad.png"
    if kind == "empty":
        p.write_bytes(b"")
    elif kind == "truncated":
        Image.fromarray(np.zeros((64, 64, 3), np.uint8) + 77).save(p)
        p.write_bytes(p.read_bytes()[:60])
    elif kind == "text":
        p.write_text("this is not an image\n" * 10)
    elif kind == "tiny":
        Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(p)
    elif kind == "folder":
        p.mkdir()
    elif kind == "ext":
        p = tmp_path / "bad.gif"
        p.write_bytes(b"GIF89a")
    with pytest.raises(InputError) as ei:
        io.read_image(p)
    assert "\n" not in str(ei.value) and str(p.name) in str(ei.value)


def test_nan_and_inf_geotiff_are_masked(tmp_path):
    import rasterio
    from rasterio.transform import from_origin

    data = np.random.default_rng(0).random((3, 32, 32)).astype(np.float32) * 0.3
    data[0, 0, 0] = np.nan
    data[1, 5, 5] = np.inf
    p = tmp_path / "nan.tif"
    with rasterio.open(p, "w", driver="GTiff", width=32, height=32, count=3, dtype="float32",
                       crs="EPSG:4326", transform=from_origin(0, 0, 1, 1)) as dst:
        dst.write(data)
    r = io.read_image(p)
    assert np.isfinite(r.data).all() and not r.valid[0, 0] and not r.valid[5, 5] and r.valid.sum() == 32 * 32 - 2


def test_all_nodata_geotiff_refused(s2_geotiff, tmp_path):
    import rasterio

    p = s2_geotiff()
    with rasterio.open(p, "r+") as dst:
        dst.write(np.zeros((4, 96, 96), np.uint16))
    with pytest.raises(InputError, match="nodata"):
        io.read_image(p)


def test_thirteen_band_tiff_needs_bands(tmp_path):
    import rasterio

    p = tmp_path / "s2_13.tif"
    with rasterio.open(p, "w", driver="GTiff", width=32, height=32, count=13, dtype="uint16") as dst:
        dst.write(np.full((13, 32, 32), 1000, np.uint16))
    with pytest.raises(InputError, match="--bands"):
        io.read_image(p)
    assert io.read_image(p, bands="4,3,2").data.shape == (3, 32, 32)
    with rasterio.open(p, "r+") as dst:       # descriptions naming the bands are enough
        for i in range(1, 14):
            dst.set_band_description(i, f"B{i:02d}")
    r = io.read_image(p)
    assert r.bands == ("B04", "B03", "B02")


def test_write_is_atomic_and_validates(tmp_path):
    img = np.zeros((3, 20, 20), np.float32)
    with pytest.raises(ConfigError, match="does not exist"):
        io.write_image(tmp_path / "nope" / "x.png", img)
    with pytest.raises(ConfigError, match="unsupported output"):
        io.write_image(tmp_path / "x.bmp", img)
    out = io.write_image(tmp_path / "x.png", img)
    assert out.exists() and not list(tmp_path.glob("*.part"))


def test_decompression_bomb_refused(tmp_path, monkeypatch):
    from PIL import Image as PILImage

    monkeypatch.setattr(io, "MAX_PIXELS", 100 * 100)
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", PILImage.MAX_IMAGE_PIXELS)  # restored after the test
    p = tmp_path / "big.png"
    Image.fromarray(np.zeros((200, 200, 3), np.uint8)).save(p)
    with pytest.raises(InputError, match="large"):
        io.read_image(p)


def test_probe_size_reads_headers_only(tmp_path):
    """PNG and TIFF sizes from the header; a file that is not an image gives None (the reader explains later)."""
    from PIL import Image

    Image.new("RGB", (37, 21)).save(tmp_path / "a.png")
    io.write_image(tmp_path / "b.tif", np.zeros((3, 19, 23), np.float32))
    (tmp_path / "c.png").write_text("not an image")
    assert io.probe_size(tmp_path / "a.png") == (37, 21)
    assert io.probe_size(tmp_path / "b.tif") == (23, 19)
    assert io.probe_size(tmp_path / "c.png") is None
    assert io.probe_size(tmp_path / "missing.png") is None
