"""Shared fixtures. Real data comes from CLOUDRM_DATA (CI: ../shared/data); tests that need it skip cleanly."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

REPO = Path(__file__).resolve().parent.parent
_default = REPO.parent / "shared" / "data"
DATA = Path(os.environ.get("CLOUDRM_DATA", _default))


def need(*parts: str) -> Path:
    """Path under the data root, or skip the test with a reason."""
    p = DATA.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"real data not available: {p} (set CLOUDRM_DATA)")
    return p


@pytest.fixture
def data_root() -> Path:
    return need()


@pytest.fixture
def rgb_png(tmp_path):
    """A 64x64 RGB PNG with a smooth pattern."""
    from cloudrm import io

    def make(name="img.png", size=64, seed=0):
        rng = np.random.default_rng(seed)
        img = np.clip(rng.random((3, 1, 1)) * 0.5 + np.linspace(0, 0.5, size)[None, None, :]
                      + np.linspace(0, 0.3, size)[None, :, None], 0, 1).astype(np.float32)
        p = tmp_path / name
        io.write_image(p, img)
        return p
    return make


@pytest.fixture
def s2_geotiff(tmp_path):
    """A 4-band uint16 Sentinel-2-like GeoTIFF (reflectance x 10000, EPSG:32633, nodata 0)."""
    import rasterio
    from rasterio.transform import from_origin

    def make(name="s2.tif", size=96, seed=0, nodata_block=True, crs="EPSG:32633", dtype="uint16"):
        rng = np.random.default_rng(seed)
        data = (rng.random((4, size, size)) * 2500 + 300).astype(dtype)
        if nodata_block:
            data[:, :8, :8] = 0
        p = tmp_path / name
        profile = dict(driver="GTiff", width=size, height=size, count=4, dtype=dtype, crs=crs,
                       transform=from_origin(500000, 5000000, 10, 10), nodata=0)
        with rasterio.open(p, "w", **profile) as dst:
            dst.write(data)
            for i, n in enumerate(["B04", "B03", "B02", "B08"], 1):
                dst.set_band_description(i, n)
        return p
    return make
