"""Shared helpers for the app tests: environment, a free port, an in-process launch, small test images."""
from __future__ import annotations

import os

for _k, _v in {"HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_DISABLE_TELEMETRY": "1"}.items():
    os.environ.setdefault(_k, _v)

import socket  # noqa: E402
import sys  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_app():
    """A fresh demo from app.build_demo(), launched in-process on 127.0.0.1; yields (app module, url)."""
    import app

    demo = app.build_demo()
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True,
                            quiet=True, **app.LAUNCH_KWARGS)
    try:
        yield app, url
    finally:
        demo.close()


def write_png(path: Path, seed: int = 0, size: int | tuple[int, int] = 64) -> Path:
    """A distinct, smooth-plus-noise RGB PNG (width x height = size)."""
    from cloudrm import io

    w, h = (size, size) if isinstance(size, int) else size
    rng = np.random.default_rng(seed)
    base = rng.random((3, 1, 1)) * 0.6 + np.linspace(0, 0.3, w)[None, None, :] + np.linspace(0, 0.1, h)[None, :, None]
    img = np.clip(base + rng.normal(0, 0.05, (3, h, w)), 0, 1).astype(np.float32)
    io.write_image(path, img)
    return path


def read_png(path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im).copy()


def tiny_weights(root: Path) -> dict[str, Path]:
    """Untrained, tiny weights folders for pixel-cr and diffcr (enough to exercise the code paths)."""
    from cloudrm import weights
    from cloudrm.models.diffcr_unet import DiffCRUNet
    from cloudrm.models.pixel_cr import PixelCR

    out = {}
    d = root / "diffcr_tiny"
    DiffCRUNet(width=8).save_pretrained(str(d / "unet"))
    weights.write_meta(d, {"method": "diffcr", "variant": "test", "bands": ["B04", "B03", "B02"]})
    out["diffcr"] = d
    p = root / "pixelcr_tiny"
    PixelCR(dim=16, stem_dims=(8, 16), depths=(2,), heads=2).save_pretrained(str(p / "pixel_cr"))
    weights.write_meta(p, {"method": "idf-cr", "variant": "test", "bands": ["B04", "B03", "B02"]})
    out["pixel-cr"] = p
    return out
