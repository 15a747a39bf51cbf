"""The sampler layer: schedule, the meaning of the noise-level input, samplers, seeding."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from cloudrm import sampling
from cloudrm.errors import ConfigError
from cloudrm.pipelines.diffcr import TRAIN_STEPS, diffcr_sample, train_alphas_cumprod
from cloudrm.models.diffcr_unet import DiffCRUNet


def test_sigmoid_schedule_shape():
    ac = sampling.sigmoid_alphas_cumprod(2000)
    assert ac.shape == (2000,) and np.all(np.diff(ac) < 0)
    assert 0.99 < ac[0] < 1 and ac[-1] < 1e-3
    betas = sampling.betas_from_alphas_cumprod(ac)
    assert betas.max() <= 0.999 + 1e-12
    np.testing.assert_allclose(np.cumprod(1 - betas), ac, rtol=1e-10)


def test_noise_level_means_alpha_bar_in_training_and_every_sampler():
    """The network input is alpha_bar in (0,1): training draws it inside [alpha_bar_t, alpha_bar_{t-1}],
    and every sampler feeds alpha_bar_t for its integer timestep t, never the step index."""
    ac = torch.as_tensor(train_alphas_cumprod())
    lv = sampling.training_noise_level(ac, 10_000, torch.Generator().manual_seed(0))
    assert lv.min() > 0 and lv.max() <= 1
    seen: dict[str, list[float]] = {}

    class Spy(DiffCRUNet):
        def forward(self, y_t, alpha_bar, cond=None, dates=None, n_dates=None):
            seen.setdefault(self.name, []).extend(alpha_bar.flatten().tolist())
            return super().forward(y_t, alpha_bar, cond, dates, n_dates)

    net = Spy(width=8).eval()
    dates = torch.rand(1, 2, 3, 32, 32)
    for sampler in sampling.SAMPLERS:
        for steps in (1, 5):
            net.name = f"{sampler}-{steps}"
            diffcr_sample(net, dates, sampler=sampler, steps=steps, generator=torch.Generator().manual_seed(0))
            vals = seen[net.name]
            assert len(vals) == steps
            assert all(0 < v < 1 for v in vals), (sampler, vals)
            # each value is exactly alpha_bar at some training timestep (a value training also draws near)
            assert all(np.isclose(ac.numpy(), v, rtol=1e-6).any() for v in vals)
    # the 1-step mode uses the highest noise level
    assert seen["dpmpp-1"][0] == pytest.approx(float(ac[TRAIN_STEPS - 1]), rel=1e-6)


def test_samplers_are_seeded():
    net = DiffCRUNet(width=8).eval()
    dates = torch.rand(1, 1, 3, 32, 32)
    for s in sampling.SAMPLERS:
        a = diffcr_sample(net, dates, sampler=s, steps=4, generator=torch.Generator().manual_seed(1))
        b = diffcr_sample(net, dates, sampler=s, steps=4, generator=torch.Generator().manual_seed(1))
        c = diffcr_sample(net, dates, sampler=s, steps=4, generator=torch.Generator().manual_seed(2))
        assert torch.equal(a, b) and not torch.equal(a, c)
        assert a.shape == (1, 3, 32, 32) and 0 <= a.min() and a.max() <= 1


def test_odd_sizes_are_padded_and_cropped():
    net = DiffCRUNet(width=8).eval()
    out = diffcr_sample(net, torch.rand(1, 3, 3, 25, 33), steps=2, generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, 3, 25, 33)


@pytest.mark.parametrize("sampler,steps", [("euler", 5), ("dpmpp", 0), ("ddim", 51)])
def test_bad_sampler_settings(sampler, steps):
    with pytest.raises(ConfigError):
        sampling.check_sampler(sampler, steps)


def test_epsilon_prediction_scheduler_recovers_x0():
    """With an oracle epsilon the shared loop returns the clean latent (checks the IDF-CR path of the layer)."""
    gen = torch.Generator().manual_seed(0)
    x0 = torch.rand(1, 4, 8, 8) * 2 - 1
    for s in ("ddim", "dpmpp"):
        sched = sampling.make_scheduler(s, prediction_type="epsilon")
        ac = sched.alphas_cumprod

        def oracle(x_t, t):
            a = ac[int(t)]
            return (x_t - a.sqrt() * x0) / (1 - a).sqrt()

        out = sampling.sample(oracle, sched, torch.randn(1, 4, 8, 8, generator=gen), steps=20, generator=gen)
        assert torch.allclose(out, x0, atol=2e-2), s


@pytest.mark.parametrize("sampler", ["dpmpp", "ddim", "ddpm"])
def test_strength_starts_from_the_noised_init(sampler):
    """SDEdit start: strength s runs the last round(steps*s) steps from init noised to that level; a model that
    always predicts init (x0 prediction) then returns init; strength 1 ignores init."""
    init = torch.rand(1, 3, 8, 8) * 2 - 1
    noise = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    calls = []

    def model_fn(x, t):
        calls.append(int(t))
        return init

    sched = sampling.make_scheduler(sampler, prediction_type="sample")
    out = sampling.sample(model_fn, sched, noise, steps=20, generator=torch.Generator().manual_seed(1),
                          init=init, strength=0.3)
    assert len(calls) == 6 and calls[0] < 400  # the last 6 of 20 timesteps over 1000
    assert torch.allclose(out, init, atol=1e-3)
    calls.clear()
    sampling.sample(model_fn, sampling.make_scheduler(sampler, prediction_type="sample"), noise, steps=20,
                    generator=torch.Generator().manual_seed(1), init=init, strength=1.0)
    assert len(calls) == 20 and calls[0] > 900


def test_single_date_strength_starts_one_date_from_the_one_step_estimate():
    """single_date_strength s: one date runs 1 + round(steps*s) network evaluations, the first at the highest
    noise level (the one-step x0) and the rest over the last part of the schedule; stacks of 2+ dates ignore it."""
    levels: list[float] = []

    class Spy(DiffCRUNet):
        def forward(self, y_t, alpha_bar, cond=None, dates=None, n_dates=None):
            levels.append(float(alpha_bar.flatten()[0]))
            return super().forward(y_t, alpha_bar, cond, dates, n_dates)

    net = Spy(width=8).eval()
    ac = train_alphas_cumprod()
    one = torch.rand(1, 1, 3, 32, 32)
    gen = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    a = diffcr_sample(net, one, steps=20, generator=gen(), single_date_strength=0.3)
    assert len(levels) == 1 + 6
    assert levels[0] == pytest.approx(float(ac[TRAIN_STEPS - 1]), rel=1e-6)
    assert min(levels[1:]) > 0.2 and levels[1] > ac[TRAIN_STEPS // 2]  # only the low-noise end of the schedule
    b = diffcr_sample(net, one, steps=20, generator=gen(), single_date_strength=0.3)
    full = diffcr_sample(net, one, steps=20, generator=gen())
    assert torch.equal(a, b) and not torch.equal(a, full)
    levels.clear()
    stack = torch.rand(1, 3, 3, 32, 32)
    s = diffcr_sample(net, stack, steps=20, generator=gen(), single_date_strength=0.3)
    assert len(levels) == 20 and torch.equal(s, diffcr_sample(net, stack, steps=20, generator=gen()))


def test_single_date_strength_comes_from_the_weights_folder(tiny_weights, tmp_path):
    import shutil

    from cloudrm import load_method, weights
    from cloudrm.errors import WeightsError

    date = [np.random.default_rng(0).random((3, 32, 32)).astype(np.float32)]
    plain = load_method("diffcr", weights=str(tiny_weights["diffcr"]))(date, steps=10).image
    for value, ok in ((0.5, True), (1.5, False), (0.0, False)):
        w = tmp_path / f"w{value}"
        shutil.copytree(tiny_weights["diffcr"], w)
        weights.write_meta(w, dict(weights.read_meta(w), single_date_strength=value))
        if ok:
            out = load_method("diffcr", weights=str(w))(date, steps=10).image
            assert out.shape == plain.shape and not np.array_equal(out, plain)
        else:
            with pytest.raises(WeightsError, match="single_date_strength must be in") as e:
                load_method("diffcr", weights=str(w))
            assert "\n" not in str(e.value)
