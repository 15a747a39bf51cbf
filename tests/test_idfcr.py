"""IDF-CR's latent stage: the method on tiny random parts, INR (Algorithm 3), the frozen prior, the train chain."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cloudrm import weights
from cloudrm.errors import ConfigError, WeightsError

from conftest import tiny_idfcr_parts

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "cloudrm" / "training" / "configs"


@pytest.fixture(scope="module")
def method(tiny_idfcr):
    from cloudrm.methods.idfcr import IDFCR

    return IDFCR(str(tiny_idfcr))


def _image(h, w, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.stack([0.3 + 0.4 * xx, 0.2 + 0.5 * yy, 0.5 - 0.2 * xx * yy])
    return np.clip(base + 0.05 * rng.standard_normal((3, h, w)), 0, 1).astype(np.float32)


@pytest.mark.parametrize("h,w", [(256, 256), (250, 333)])
def test_runs_any_size_and_crops_back(method, h, w):
    res = method([_image(h, w)], steps=3, seed=0)
    assert res.image.shape == (3, h, w) and res.image.dtype == np.float32
    assert 0 <= res.image.min() and res.image.max() <= 1 and np.isfinite(res.image).all()
    assert res.maps["cloud"].shape == (h, w)
    assert res.info["method"] == "idf-cr" and res.info["sampler"] == "ddpm" and res.info["steps"] == 3


def test_defaults_and_class_contract(method):
    assert method.name == "idf-cr" and method.max_dates == 1 and method.stochastic
    assert method.default_sampler == "ddpm" and method.default_steps == 50
    assert method.settings(None, None, None) == {"sampler": "ddpm", "steps": 50}


def test_seeded(method):
    x = [_image(64, 96, seed=3)]
    a = method(x, steps=4, seed=7).image
    b = method(x, steps=4, seed=7).image
    c = method(x, steps=4, seed=8).image
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 1e-4
    for sampler in ("ddim", "dpmpp"):
        np.testing.assert_array_equal(method(x, sampler=sampler, steps=3, seed=1).image,
                                      method(x, sampler=sampler, steps=3, seed=1).image)


def test_inr_selects_controlnet_k(method):
    x = [_image(64, 64, seed=1)]
    outs = {}
    for k in (1, 2, 3):
        outs[k] = method(x, steps=3, seed=0, inr=k).image
        assert method.controlnet is method.controlnets[k]
        assert method.controlnet.config._name_or_path.endswith(f"controlnet_k{k}")
    assert np.abs(outs[1] - outs[2]).max() > 1e-5 and np.abs(outs[2] - outs[3]).max() > 1e-5
    np.testing.assert_array_equal(method(x, steps=3, seed=0).image, outs[3])  # default K = 3
    with pytest.raises(ConfigError):
        method(x, steps=3, inr=4)
    with pytest.raises(ConfigError):
        method.get_controlnet(0)


def test_step_gmacs(method):
    g = method.step_gmacs([_image(64, 64)])
    assert g > 0
    assert method.step_gmacs([_image(128, 128)]) == pytest.approx(4 * g, rel=0.05)


def test_color_fix_keeps_reference_low_frequencies():
    from cloudrm.pipelines.idfcr import color_fix, gaussian_lowpass

    yy, xx = torch.meshgrid(torch.linspace(0, 1, 48), torch.linspace(0, 1, 40), indexing="ij")
    ref = torch.stack([0.3 + 0.3 * xx, 0.2 + 0.4 * yy, 0.5 - 0.2 * xx * yy])[None]  # smooth
    # a colour cast is a low frequency: removed
    out = color_fix(ref + 0.1, ref, sigma=3.0)
    np.testing.assert_allclose(out.numpy(), ref.numpy(), atol=1e-5)
    # detail (high frequencies) of the output is kept
    detail = torch.zeros_like(ref)
    detail[..., ::2, :] = 0.1
    out = color_fix((ref * 0.5 + detail), ref, sigma=3.0)
    hp = lambda v: v - gaussian_lowpass(v, 3.0)  # noqa: E731
    assert torch.corrcoef(torch.stack([hp(out).flatten(), hp(detail).flatten()]))[0, 1] > 0.95
    assert (gaussian_lowpass(out, 6.0) - gaussian_lowpass(ref, 6.0)).abs().mean() < 0.02
    assert torch.equal(color_fix(ref, ref * 0.3, sigma=0), ref)


def test_color_fix_modes(method, monkeypatch):
    """residual: y_pcr + D(z0) - D(E(y_pcr)) is exactly y_pcr when the diffusion returns its condition;
    lowpass keeps y_pcr's low frequencies only; none is D(z0); an unknown mode is a ConfigError."""
    from cloudrm import sampling
    from cloudrm.pipelines import idfcr as M

    monkeypatch.setattr(sampling, "sample", lambda model_fn, sched, noise, **kw: M.encode(method.vae, PADDED[0]))
    x = torch.from_numpy(_image(48, 40))[None]
    from cloudrm.models.blocks import pad_to_multiple

    PADDED = [pad_to_multiple(x, M.vae_factor(method.vae) * M.unet_multiple(method.prior))[0]]
    outs = {m: M.idfcr_sample(method.vae, method.prior, method.get_controlnet(3), x, steps=2, fix_color=m,
                              generator=torch.Generator().manual_seed(0)) for m in M.COLOR_FIX_MODES}
    assert torch.allclose(outs["residual"], x, atol=1e-5)
    plain = M.decode(method.vae, M.encode(method.vae, PADDED[0]))[..., :48, :40]
    assert torch.allclose(outs["none"], plain, atol=1e-6)
    assert not torch.allclose(outs["lowpass"], x, atol=1e-3)
    assert M.color_fix_mode(True) == "lowpass" and M.color_fix_mode(False) == "none"
    with pytest.raises(ConfigError):
        M.color_fix_mode("wavelet")


def test_corrupt_or_missing_weights_name_the_file(tiny_idfcr, tmp_path):
    from cloudrm.methods.idfcr import IDFCR

    bad = tmp_path / "bad"
    shutil.copytree(tiny_idfcr, bad)
    (bad / "prior" / "diffusion_pytorch_model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(WeightsError) as e:
        IDFCR(str(bad))
    msg = str(e.value)
    assert "prior" in msg and "diffusion_pytorch_model.safetensors" in msg and "\n" not in msg

    bad2 = tmp_path / "bad2"
    shutil.copytree(tiny_idfcr, bad2)
    shutil.rmtree(bad2 / "controlnet_k2")
    m = IDFCR(str(bad2))
    m([_image(32, 32)], steps=2, inr=1)
    with pytest.raises(WeightsError, match="controlnet_k2"):
        m([_image(32, 32)], steps=2, inr=2)

    mismatch = tmp_path / "mismatch"  # a ControlNet from another prior
    shutil.copytree(tiny_idfcr, mismatch)
    from diffusers import ControlNetModel, UNet2DConditionModel

    wrong = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, down_block_types=("DownBlock2D",) * 2,
                                 up_block_types=("UpBlock2D",) * 2, mid_block_type="UNetMidBlock2D",
                                 block_out_channels=(8, 8), layers_per_block=1, norm_num_groups=8)
    shutil.rmtree(mismatch / "controlnet_k3")
    ControlNetModel.from_unet(wrong, conditioning_embedding_out_channels=(8,), conditioning_channels=4) \
        .save_pretrained(str(mismatch / "controlnet_k3"))
    with pytest.raises(WeightsError, match="controlnet_k3: does not match the prior"):
        IDFCR(str(mismatch))([_image(32, 32)], steps=2)

    other = tmp_path / "other"
    shutil.copytree(tiny_idfcr, other)
    weights.write_meta(other, {"method": "diffcr"})
    with pytest.raises(WeightsError, match="diffcr"):
        IDFCR(str(other))


def test_hub_stable_diffusion_parts_offline_is_one_line(tiny_idfcr, tmp_path, monkeypatch):
    """The paper-scale path: vae/prior named by a hub id (from_pretrained); offline -> one-line WeightsError."""
    from cloudrm.methods.idfcr import IDFCR

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub = tmp_path / "hub"
    shutil.copytree(tiny_idfcr, hub)
    shutil.rmtree(hub / "vae")
    shutil.rmtree(hub / "prior")
    meta = weights.read_meta(hub)
    meta["components"] = {"vae": {"hub": "stabilityai/stable-diffusion-2-1-base", "subfolder": "vae"},
                          "prior": {"hub": "stabilityai/stable-diffusion-2-1-base", "subfolder": "unet"}}
    weights.write_meta(hub, meta)
    with pytest.raises(WeightsError) as e:
        IDFCR(str(hub))
    assert "stabilityai/stable-diffusion-2-1-base" in str(e.value) and "\n" not in str(e.value)


def test_parts_shared_with_another_variant_folder(tiny_idfcr, tmp_path):
    """rice1 may use rice2's VAE and prior: {"folder": "../rice2"} in cloudrm.json; same output as a full copy."""
    from cloudrm.methods.idfcr import IDFCR

    full = tmp_path / "rice2"
    shutil.copytree(tiny_idfcr, full)
    thin = tmp_path / "rice1"
    thin.mkdir()
    for part in ("pixel_cr", "controlnet_k1", "controlnet_k2"):
        shutil.copytree(full / part, thin / part)
    meta = weights.read_meta(full)
    meta["components"] = {part: {"folder": "../rice2"} for part in ("vae", "prior", "controlnet_k3")}
    weights.write_meta(thin, meta)
    x = _image(64, 64)
    a = IDFCR(str(full))(x[None], steps=3, seed=1).image
    b = IDFCR(str(thin))(x[None], steps=3, seed=1).image
    assert np.array_equal(a, b)
    shutil.rmtree(full / "vae")
    with pytest.raises(WeightsError) as e:
        IDFCR(str(thin))
    assert "vae" in str(e.value) and "\n" not in str(e.value)


def test_text_context_for_cross_attention_unets():
    from diffusers import UNet2DConditionModel

    from cloudrm.pipelines.idfcr import text_context

    _, _, prior, _ = tiny_idfcr_parts()
    assert text_context(prior, 2) is None
    sd_like = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(8, 16),
                                   down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                   up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), layers_per_block=1,
                                   norm_num_groups=8, cross_attention_dim=12, attention_head_dim=4)
    ctx = text_context(sd_like, 2)
    assert ctx.shape == (2, 1, 12)
    sd_like(torch.zeros(2, 4, 8, 8), torch.tensor([3, 4]), encoder_hidden_states=ctx)


# ----------------------------------------------------------------------------------------------- INR
def test_inr_k_passes_k_steps_and_noise_chain():
    """Algorithm 3: K optimiser steps per batch; pass k+1's target noise is pass k's prediction (before its
    step); z0, condition and t fixed; the prediction is computed in the same forward as the loss."""
    from cloudrm.pipelines.idfcr import controlled_eps, make_scheduler
    from cloudrm.training.tasks.idfcr import inr_passes, q_sample

    _, _, prior, nets = tiny_idfcr_parts()
    prior.requires_grad_(False)
    cn = nets[1]
    opt = torch.optim.SGD(cn.parameters(), lr=0.05)
    ac = make_scheduler("ddpm").alphas_cumprod.float()
    z0, cond = torch.randn(2, 4, 16, 16), torch.randn(2, 4, 16, 16)
    t = torch.tensor([100, 700])
    eps0 = torch.randn_like(z0)
    calls, steps = [], []

    def eps_model(z_t, t_, c):
        calls.append((z_t.detach().clone(), t_.clone(), c))
        return controlled_eps(prior, cn, z_t, t_, c)

    def step(loss):
        loss.backward()
        opt.step()
        opt.zero_grad()
        steps.append({k: v.detach().clone() for k, v in cn.state_dict().items()})

    for k in (1, 2, 3):
        calls.clear()
        steps.clear()
        trace: list = []
        losses = inr_passes(eps_model, z0, cond, t, eps0, k, step, ac, trace)
        assert len(losses) == k and len(steps) == k and len(calls) == k and len(trace) == k
        torch.testing.assert_close(trace[0]["target"], eps0)
        for i in range(k - 1):
            torch.testing.assert_close(trace[i + 1]["target"], trace[i]["pred"])
            # the next pass's input is f(z0, previous prediction)
            torch.testing.assert_close(calls[i + 1][0], q_sample(z0, t, trace[i]["pred"], ac))
        for z_t, t_, c in calls:
            assert torch.equal(t_, t) and c is cond
        # every pass took its own step: the parameters changed between passes
        for a, b in zip(steps, steps[1:]):
            assert any(not torch.equal(a[n], b[n]) for n in a)


def test_controlnet_task_step_freezes_prior(tiny_idfcr, tmp_path):
    """The task's train_step: K optimiser steps per batch, only the ControlNet changes (prior, VAE and
    Pixel-CR frozen); a second run folder is needed per K."""
    from accelerate import Accelerator

    from cloudrm.training.tasks.idfcr import ControlNetTask
    from cloudrm.training.config import TrainConfig

    def cfg(k, run):
        return TrainConfig(task="controlnet", variant="test", data_root=str(tmp_path), run_dir=str(tmp_path / run),
                           export_dir=str(tmp_path / "exp"), model={"conditioning_embedding_out_channels": [8]},
                           task_options={"inr": k, "components": str(tiny_idfcr)})

    task = ControlNetTask(cfg(3, "run3"))
    model = task.build_model()
    frozen = {n: {k: v.clone() for k, v in m.state_dict().items()} for n, m in task.frozen.items()}
    assert all(not p.requires_grad for m in task.frozen.values() for p in m.parameters())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    n_steps = []
    orig = opt.step
    opt.step = lambda *a, **kw: (n_steps.append(1), orig(*a, **kw))[1]
    acc = Accelerator(cpu=True)
    batch = {"dates": torch.rand(2, 3, 3, 32, 32), "target": torch.rand(2, 3, 32, 32)}
    loss = task.train_step(model, batch, opt, acc, list(model.parameters()), 1.0)
    assert np.isfinite(loss) and len(n_steps) == 3
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    for n, m in task.frozen.items():
        for k, v in m.state_dict().items():
            assert torch.equal(frozen[n][k], v), f"{n}.{k} changed"
    with pytest.raises(ConfigError, match="K=3"):
        ControlNetTask(cfg(1, "run3"))
    # a common start for every K: init_from + task_options.init_subfolder
    c = cfg(2, "run2")
    c.task_options["init_subfolder"] = "controlnet_k1"
    t2 = ControlNetTask(c)
    m2 = t2.build_model()
    done = t2.load_init(m2, tiny_idfcr)
    assert set(done) == {"step", "seconds", "best"} and done["best"] == -1.0
    from diffusers import ControlNetModel
    k1 = ControlNetModel.from_pretrained(str(tiny_idfcr / "controlnet_k1")).state_dict()
    assert all(torch.equal(v, k1[k]) for k, v in m2.state_dict().items())
    with pytest.raises(ConfigError):
        ControlNetTask(cfg(4, "run4"))


def test_autoencoder_decoder_only_keeps_the_latent_space(tiny_idfcr, tmp_path):
    """``task_options.train: "decoder"``: the encoder (and so the prior's latent space and scaling) stays
    exactly as in ``init_from``; only the decoder learns."""
    from accelerate import Accelerator

    from cloudrm.training.tasks.idfcr import AutoencoderTask
    from cloudrm.training.config import TrainConfig

    def cfg(**opts):
        return TrainConfig(task="autoencoder", variant="test", data_root=str(tmp_path), run_dir=str(tmp_path / "r"),
                           export_dir=str(tmp_path / "exp"), init_from=opts.pop("init_from", str(tiny_idfcr)),
                           model={"block_out_channels": [8, 16, 16], "norm_num_groups": 8,
                                  "mid_block_add_attention": False},
                           task_options=opts)

    task = AutoencoderTask(cfg(train="decoder"))
    model = task.build_model()  # a resumed run stops here (its weights come from the checkpoint)
    assert model.vae.config.scaling_factor == 1.5 and model.vae.config.shift_factor == pytest.approx(0.1)
    task.load_init(model, tiny_idfcr)
    vae = model.vae
    assert not any(p.requires_grad for p in vae.encoder.parameters())
    assert not any(p.requires_grad for p in vae.quant_conv.parameters())
    assert all(p.requires_grad for p in vae.decoder.parameters())
    before = {k: v.clone() for k, v in vae.state_dict().items()}
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-2)
    loss = task.train_step(model, {"target": torch.rand(2, 3, 32, 32)}, opt, Accelerator(cpu=True), params, 1.0)
    assert np.isfinite(loss)
    after = vae.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith(("encoder.", "quant_conv.")))
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("decoder."))
    out = task.export_model(model)
    assert out.config.scaling_factor == 1.5 and out.config.shift_factor == pytest.approx(0.1)
    assert task.extra_meta(out)["trained_part"] == "decoder"
    with pytest.raises(ConfigError, match="init_from"):
        AutoencoderTask(cfg(train="decoder", init_from=None)).build_model()
    with pytest.raises(ConfigError, match="train"):
        AutoencoderTask(cfg(train="encoder")).build_model()


# ----------------------------------------------------------------------------------------------- the chain
@pytest.mark.slow
def test_train_chain_smoke(tmp_path):
    """``cloudrm train`` autoencoder -> prior -> controlnet with the smoke configs (2 steps each, all into one
    weights folder), then the method runs on what they exported."""
    from conftest import need

    root = need("RICE1")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CLOUDRM_DATA": str(root.parent), "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": str(REPO)}
    exp = tmp_path / "exp"
    from cloudrm.models.pixel_cr import PixelCR  # the controlnet task needs a (frozen) Pixel-CR in the folder

    torch.manual_seed(0)
    PixelCR(dim=16, stem_dims=(8,), depths=(1,), heads=2, window=4).save_pretrained(str(exp / "pixel_cr"))
    # the CLI's own entry point, three times in one interpreter (one import of torch/diffusers instead of three)
    calls = []
    for task in ("autoencoder", "prior", "controlnet"):
        argv = ["train", task, "--config", str(CONFIGS / f"{task}-rice2-smoke.json"), "--stop-at-step", "2",
                "--run-dir", str(tmp_path / f"run-{task}"), "--export-dir", str(exp)]
        calls.append(argv + (["--inr", "2"] if task == "controlnet" else []))
    code = ("import sys; from cloudrm.cli import main\n"
            f"for argv in {calls!r}:\n"
            "    rc = main(argv)\n"
            "    if rc: sys.exit(rc)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=str(REPO),
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith('{"') and '"step"' not in line]
    assert len(results) == 3 and all(r["psnr"] > 0 for r in results)
    meta = weights.read_meta(exp)
    assert meta["method"] == "idf-cr"
    assert set(meta["components"]) >= {"vae", "prior", "controlnet_k2"}
    assert meta["components"]["controlnet_k2"]["inr"] == 2
    vae_cfg = json.loads((exp / "vae" / "config.json").read_text())
    assert vae_cfg["scaling_factor"] == pytest.approx(meta["components"]["vae"]["latent_scaling_factor"])
    from cloudrm.methods.idfcr import IDFCR

    res = IDFCR(str(exp))([_image(40, 56)], steps=2, inr=2)
    assert res.image.shape == (3, 40, 56)
