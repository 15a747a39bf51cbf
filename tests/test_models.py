"""Model structure: DiffCR's size against the paper, decoupled conditioning, date fusion, Pixel-CR."""
from __future__ import annotations

import torch

from cloudrm.models.diffcr_unet import DiffCRUNet
from cloudrm.models.pixel_cr import PixelCR


def test_diffcr_width64_matches_paper_size():
    """Paper: 22.91 M params / 45.86 GMACs at width 64 (3 dates, 256 px); ours within 10 %."""
    from torch.utils.flop_counter import FlopCounterMode

    net = DiffCRUNet(width=64)
    params = sum(p.numel() for p in net.parameters()) / 1e6
    assert abs(params - 22.91) / 22.91 < 0.1
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        net(torch.rand(1, 3, 256, 256), torch.tensor([0.5]), dates=torch.rand(1, 3, 3, 256, 256))
    gmacs = fc.get_total_flops() / 2e9
    assert abs(gmacs - 45.86) / 45.86 < 0.1


def test_zero_init_residuals_and_condition_path():
    net = DiffCRUNet(width=8)
    assert all((b.beta == 0).all() and (b.gamma == 0).all() for lv in net.enc for b in lv)
    dates = torch.rand(2, 3, 3, 32, 32)
    cond = net.encode_condition(dates)
    assert [c.shape[1] for c in cond] == [8, 16, 32, 64]


def test_mean_fusion_serves_any_number_of_dates():
    net = DiffCRUNet(width=8).eval()
    d = torch.rand(1, 1, 3, 32, 32)
    one = net.encode_condition(d)
    three = net.encode_condition(d.repeat(1, 3, 1, 1, 1))        # the same date three times
    for a, b in zip(one, three):
        assert torch.allclose(a, b, atol=1e-5)
    padded = torch.cat([d, torch.zeros(1, 2, 3, 32, 32)], 1)      # training pads to 3 dates + n_dates
    for a, b in zip(one, net.encode_condition(padded, torch.tensor([1]))):
        assert torch.allclose(a, b, atol=1e-5)


def test_gated_fusion_starts_as_the_mean_and_can_select_a_date():
    mean = DiffCRUNet(width=8).eval()
    gated = DiffCRUNet(width=8, fusion="gated").eval()
    missing, unexpected = gated.load_state_dict(mean.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("cond_gate.") for k in missing)
    dates = torch.rand(2, 3, 3, 32, 32)
    n = torch.tensor([3, 2])
    with torch.no_grad():
        for a, b in zip(mean.encode_condition(dates, n), gated.encode_condition(dates, n)):
            assert torch.allclose(a, b, atol=1e-5)                   # zero-initialised gates = the mean
        # a trained gate: per pixel, the softmax of each date's score weights that date's features
        torch.manual_seed(0)
        torch.nn.init.normal_(gated.cond_gate[0].weight, std=0.5)
        f = gated.cond_levels[0](gated.cond_stem(dates[:1].flatten(0, 1)))
        w = torch.softmax(gated.cond_gate[0](f), dim=0)             # (3 dates, 1, H, W)
        fused = gated.encode_condition(dates[:1])[0]
    assert (w - 1 / 3).abs().max() > 0.1                          # not the mean any more
    assert torch.allclose(fused[0], (f * w).sum(0), atol=1e-5)
    assert not torch.allclose(fused[0], f.mean(0), atol=1e-3)


def test_pixel_cr_any_size_and_attention():
    net = PixelCR(dim=16, stem_dims=(8, 16), depths=(2, 2), heads=2, window=4).eval()
    with torch.no_grad():
        out, maps = net(torch.rand(1, 3, 50, 77))
    assert out.shape == (1, 3, 50, 77)
    assert len(maps) == 2 and all(0 <= m.min() and m.max() <= 1 for m in maps)
    cloud = PixelCR.cloud_map(maps, (50, 77))
    assert cloud.shape == (1, 1, 50, 77)


def test_save_load_roundtrip(tmp_path):
    net = DiffCRUNet(width=8)
    net.save_pretrained(tmp_path / "unet")
    assert (tmp_path / "unet" / "diffusion_pytorch_model.safetensors").exists()
    back = DiffCRUNet.from_pretrained(tmp_path / "unet")
    for (k, a), (_, b) in zip(net.state_dict().items(), back.state_dict().items()):
        assert torch.equal(a, b), k
