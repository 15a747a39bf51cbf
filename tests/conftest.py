"""Shared fixtures. Real data comes from CLOUDRM_DATA (CI: ../shared/data); tests that need it skip cleanly.

Tiny untrained models (seconds to build, enough to exercise every code path): :func:`build_tiny_weights`
(pixel-cr and diffcr weights folders) and :func:`build_tiny_idfcr` (a whole IDF-CR folder), each also a
session fixture. Tests marked ``slow`` (training, notebooks, the browser, full-size real data) can be skipped
with ``-m "not slow"``; CI runs them all.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

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


# ----------------------------------------------------------------------------------------------- tiny models
RGB = ["B04", "B03", "B02"]


def build_tiny_weights(root: Path) -> dict[str, Path]:
    """Untrained tiny weights folders: ``{"diffcr": root/diffcr, "pixel-cr": root/pixel-cr}`` (the latter an
    idf-cr folder with only ``pixel_cr/``, which is all pixel-cr reads). Seeded: the same weights every time."""
    from cloudrm import weights
    from cloudrm.models.diffcr_unet import DiffCRUNet
    from cloudrm.models.pixel_cr import PixelCR

    torch.manual_seed(0)
    DiffCRUNet(width=8).save_pretrained(root / "diffcr" / "unet")
    weights.write_meta(root / "diffcr", {"method": "diffcr", "variant": "tiny", "bands": RGB})
    torch.manual_seed(0)
    PixelCR(dim=16, stem_dims=(8, 16), depths=(2,), heads=2).save_pretrained(root / "pixel-cr" / "pixel_cr")
    weights.write_meta(root / "pixel-cr", {"method": "idf-cr", "variant": "tiny", "bands": RGB})
    return {"diffcr": root / "diffcr", "pixel-cr": root / "pixel-cr"}


def tiny_idfcr_parts(seed: int = 0):
    """(Pixel-CR, VAE f=4, prior with cross-attention, {K: ControlNet}) at toy sizes; the ControlNets differ."""
    from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel

    from cloudrm.models.pixel_cr import PixelCR

    torch.manual_seed(seed)
    pcr = PixelCR(dim=16, stem_dims=(8,), depths=(1,), heads=2, window=4, mlp_ratio=2.0)
    vae = AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
                        block_out_channels=(8, 16, 16), layers_per_block=1, latent_channels=4, norm_num_groups=8,
                        mid_block_add_attention=False, scaling_factor=1.5, shift_factor=0.1)
    prior = UNet2DConditionModel(sample_size=16, in_channels=4, out_channels=4,
                                 down_block_types=("DownBlock2D",) * 3, up_block_types=("UpBlock2D",) * 3,
                                 mid_block_type="UNetMidBlock2D", block_out_channels=(8, 16, 16), layers_per_block=1,
                                 norm_num_groups=8, cross_attention_dim=8)
    nets = {}
    for k in (1, 2, 3):
        cn = ControlNetModel.from_unet(prior, conditioning_embedding_out_channels=(8,), conditioning_channels=4)
        with torch.no_grad():  # a trained ControlNet has non-zero zero-convs: make the three differ
            for p in cn.parameters():
                p.add_(0.05 * torch.randn_like(p))
        nets[k] = cn
    return pcr, vae, prior, nets


def build_tiny_idfcr(folder: Path, seed: int = 0) -> Path:
    """A complete untrained IDF-CR weights folder (pixel_cr, vae, prior, controlnet_k1..3, cloudrm.json)."""
    from cloudrm import weights

    pcr, vae, prior, nets = tiny_idfcr_parts(seed)
    pcr.save_pretrained(str(folder / "pixel_cr"))
    vae.save_pretrained(str(folder / "vae"))
    prior.save_pretrained(str(folder / "prior"))
    for k, cn in nets.items():
        cn.save_pretrained(str(folder / f"controlnet_k{k}"))
    weights.write_meta(folder, {"method": "idf-cr", "variant": "test", "bands": RGB, "components": {}})
    return folder


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> dict[str, Path]:
    """Tiny pixel-cr and diffcr weights folders (read-only: copy one before changing it)."""
    return build_tiny_weights(tmp_path_factory.mktemp("tiny_weights"))


@pytest.fixture(scope="session")
def tiny_idfcr(tmp_path_factory) -> Path:
    """A tiny IDF-CR weights folder (read-only: copy it before changing it)."""
    return build_tiny_idfcr(tmp_path_factory.mktemp("idfcr") / "w")


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
