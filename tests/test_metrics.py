"""Reference metrics against skimage on real files (the convention every table in the README uses)."""
from __future__ import annotations

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from cloudrm import io, metrics

from conftest import need


def test_psnr_ssim_match_skimage_on_rice():
    root = need("RICE1")
    cloudy = io.to_display(io.read_image(root / "cloud" / "10.png"))
    label = io.to_display(io.read_image(root / "label" / "10.png"))
    ref = label.transpose(1, 2, 0).astype(np.float64)
    out = cloudy.transpose(1, 2, 0).astype(np.float64)
    assert metrics.psnr(label, cloudy) == pytest.approx(peak_signal_noise_ratio(ref, out, data_range=1), abs=1e-5)
    assert metrics.ssim(label, cloudy) == pytest.approx(structural_similarity(
        ref, out, data_range=1, channel_axis=-1, gaussian_weights=True, sigma=1.5, use_sample_covariance=False), abs=1e-6)
    assert metrics.rmse(label, cloudy) == pytest.approx(np.sqrt(np.mean((ref - out) ** 2)), abs=1e-7)


def test_output_is_quantised_before_scoring():
    ref = np.full((3, 32, 32), 0.5)
    out = ref + 0.001                      # rounds to the same uint8 level as 0.5
    assert metrics.psnr(ref, out) == pytest.approx(metrics.psnr(ref, np.round(ref * 255) / 255))


def test_sam_and_shapes():
    a = np.random.default_rng(0).random((4, 16, 16))
    assert metrics.sam(a, a) < 0.5        # quantisation only
    with pytest.raises(ValueError):
        metrics.psnr(a, a[:, :8])


def test_evaluate_keys_and_unavailable_lpips():
    a = np.random.default_rng(0).random((3, 200, 200))
    res = metrics.evaluate(a, a)
    assert set(res) == {"psnr", "ssim", "rmse", "niqe", "brisque"}
    assert metrics.lpips(a, a) is None
    assert metrics.evaluate(a)["psnr"] is None


def test_report_is_json_safe():
    """The app's metrics dict: an exact copy gets the PSNR cap, no reference gives None; seconds rounded."""
    import json

    rng = np.random.default_rng(0)
    img = (np.round(rng.random((3, 64, 64)) * 255) / 255).astype(np.float32)  # on the uint8 grid: an exact copy
    r = metrics.report(img, img, 1.234567)
    assert list(r) == ["psnr", "ssim", "rmse", "niqe", "brisque", "seconds"]
    assert r["psnr"] == metrics.PSNR_CAP and r["ssim"] == pytest.approx(1.0) and r["seconds"] == 1.2346
    json.dumps(r, allow_nan=False)
    r = metrics.report(np.concatenate([img, img[:1]]), None)  # 4 bands: scored on RGB
    assert r["psnr"] is None and r["rmse"] is None and r["seconds"] is None
