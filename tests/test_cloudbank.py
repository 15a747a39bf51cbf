"""Real cloud layers: the transmission/airlight/shadow model explains real pairs and composites onto clear ground."""
from pathlib import Path

import numpy as np
import pytest

from cloudrm import cloudbank, datasets, io, metrics, synth


def _ground(seed=0, size=96):
    return synth.demo_scene(seed, size) * 0.6   # linear units, like 0.2 reflectance x gain


def test_estimate_recovers_a_known_layer():
    rng = np.random.default_rng(1)
    clear = _ground()
    t = np.clip(0.5 + 0.5 * synth.fractal_noise(rng, 96, 96, beta=3.5), 0, 1)
    a = np.array([2.2, 2.3, 2.5], np.float32)
    cloudy = cloudbank.apply(clear, t, np.ones_like(t), a)
    lay = cloudbank.estimate(cloudy, clear, smooth=0)
    assert lay.fit_psnr > 35
    thick = t < 0.6
    assert np.abs(lay.transmission.astype(np.float32)[thick] - t[thick]).mean() < 0.05


def test_shadow_is_a_darkening_not_a_cloud():
    clear = _ground(2)
    s = np.ones((96, 96), np.float32)
    s[20:60, 30:70] = 0.5
    lay = cloudbank.estimate(clear * s[None], clear, smooth=0)
    assert lay.shade[40, 50] == pytest.approx(0.5, abs=0.05)
    assert lay.transmission[40, 50] == pytest.approx(1.0, abs=0.02)


def test_bluish_shadow_keeps_its_path_colour():
    # real shadows keep the path radiance and sky light: Y = X s + P (1 - s), bluish rather than grey
    clear = _ground(5) + 0.3
    s = np.ones((96, 96), np.float32)
    s[10:70, 20:80] = 0.3
    path = np.array([0.04, 0.12, 0.22], np.float32)
    cloudy = cloudbank.apply(clear, np.ones_like(s), s, np.array([2.4, 2.4, 2.5], np.float32), path)
    lay = cloudbank.estimate(cloudy, clear, smooth=0)
    assert np.allclose(lay.shadow_path, path, atol=0.02)
    assert lay.shade[40, 50] == pytest.approx(0.3, abs=0.05)
    assert lay.fit_psnr > 40
    # a grey (multiplicative) fit of the same shadow would leave the blue cast unexplained
    grey = cloudbank.apply(clear, np.ones_like(s), s, np.array([2.4, 2.4, 2.5], np.float32), np.zeros(3))
    assert metrics.psnr(io.tone(cloudy), io.tone(grey), quantise=False) < lay.fit_psnr - 10


def test_procedural_shadows_are_bluish():
    grey = np.full((3, 96, 96), 0.5, np.float32)
    cfg = synth.CloudConfig(p_thick=1.0, p_haze=0.0, p_shadow=1.0, coverage=(0.2, 0.25), shadow_darkness=(0.7, 0.7))
    for seed in range(3):
        cloudy, _ = synth.add_clouds(grey, np.random.default_rng(seed), cfg)
        shadow = cloudy[0] < 0.4          # darkened red, away from the bright cloud
        assert shadow.mean() > 0.01
        r, b = cloudy[0][shadow].mean(), cloudy[2][shadow].mean()
        assert b > r + 0.03, (seed, r, b)


def test_composite_keeps_shape_and_saturates_thick_cores():
    rng = np.random.default_rng(0)
    clear = _ground(3, 128)
    t = np.ones((128, 128), np.float16)
    t[30:90, 30:90] = 0.0
    bank = cloudbank.CloudBank([cloudbank.CloudLayer("box", t, np.ones_like(t), np.array([2.5, 2.5, 2.6], np.float32))])
    cloudy, mask = bank.composite(clear, rng)
    assert cloudy.shape == clear.shape and mask.shape == (128, 128)
    shown = np.clip(cloudy, 0, 1)
    assert (shown.min(0) > 0.99).mean() > 0.1      # opaque, saturated (display 1.0) cores are in the bank
    assert 0.1 < mask.mean() < 0.5


def test_region_names():
    assert cloudbank.region("ROIs1970_fall_136_p311") == "ROIs1970_fall_136"
    assert cloudbank.region("4287") == "4287"
    assert datasets.s2_is_validation("ROIs1970_fall_148_p521")
    assert not datasets.s2_is_validation("ROIs1970_fall_136_p311")


def test_real_pairs_are_explained_better_than_by_the_clear_date(data_root):
    pairs = data_root / "SEN12MS-CR" / "pairs"
    if not pairs.is_dir():
        pytest.skip("SEN12MS-CR pairs not in the data folder")
    folders = sorted(p for p in pairs.iterdir() if p.is_dir())[:6]
    for d in folders:
        cloudy, clear, mask = cloudbank.read_pair(d)
        lay = cloudbank.estimate(cloudy, clear, mask, name=d.name)
        ident = metrics.psnr(io.tone(cloudy), io.tone(clear), quantise=False)
        assert lay.fit_psnr > ident + 1.0, (d.name, lay.fit_psnr, ident)


def test_multi_temporal_with_bank_gives_distinct_dates():
    rng = np.random.default_rng(0)
    clear = _ground(4, 64)
    t = np.ones((64, 64), np.float16)
    t[:32] = 0.2
    bank = cloudbank.CloudBank([cloudbank.CloudLayer("half", t, np.ones_like(t), np.array([2.4, 2.4, 2.5], np.float32))])
    dates, masks = synth.multi_temporal(clear, 3, rng, bank=bank, p_bank=1.0, to_display=io.tone)
    assert dates.shape == (3, 3, 64, 64) and masks.shape == (3, 64, 64)
    assert dates.min() >= 0 and dates.max() <= 1
    assert not np.allclose(dates[0], dates[1])


@pytest.fixture
def data_root():
    root = datasets.data_root()
    if root is None:
        pytest.skip("CLOUDRM_DATA not set")
    return Path(root)


def _write_pair(folder: Path, cloudy: np.ndarray, clear: np.ndarray) -> None:
    folder.mkdir(parents=True)
    io.write_image(folder / "cloudy_0.png", cloudy)
    io.write_image(folder / "clear.png", clear)


def test_a_pair_whose_clear_date_is_whiter_is_not_learnt_from(tmp_path):
    """Snow on the 'clear' date is ground change, not cloud: the pair is left out of the training pairs and of
    the bank, while a cloudy pair of the same ground is kept."""
    ground = np.clip(_ground(5, 64), 0, 1)
    t = np.ones((64, 64), np.float32)
    t[8:40, 8:40] = 0.1
    cloudy = np.clip(cloudbank.apply(ground, t, np.ones_like(t), np.array([0.97, 0.97, 0.98])), 0, 1)
    snow = np.full_like(ground, 0.95)
    assert cloudbank.teaches_removal(cloudy, ground)
    assert cloudbank.whitened(ground, snow) > cloudbank.MAX_WHITENED and not cloudbank.teaches_removal(ground, snow)
    root = tmp_path / "scenes"
    _write_pair(root / "cumulus_p1", cloudy, ground)
    _write_pair(root / "snow_p1", ground, snow)
    assert not any(datasets.s2_is_validation(n) for n in ("cumulus_p1", "snow_p1"))
    bank = cloudbank.CloudBank.from_folders([root])
    assert [lay.name for lay in bank.layers] == ["cumulus_p1"]
    ds = datasets.TrainMixture(tmp_path, datasets.Source(scenes=("scenes",)), crop=32, bank=bank)
    assert len(ds.pairs) == 1 and np.abs(ds.pairs[0][1] / 255 - ground).max() < 0.01


def test_the_snow_pairs_of_sen12ms_cr_are_the_ones_left_out(data_root):
    pairs = data_root / "SEN12MS-CR" / "pairs"
    if not pairs.is_dir():
        pytest.skip("SEN12MS-CR pairs not in the data folder")
    left_out = []
    for d in sorted(p for p in pairs.iterdir() if p.is_dir()):
        cloudy, clear, _ = cloudbank.read_pair(d)
        if not cloudbank.teaches_removal(io.tone(cloudy), io.tone(clear)):
            left_out.append(d.name)
    assert left_out == ["ROIs1158_spring_26_p100", "ROIs1158_spring_26_p500", "ROIs1158_spring_26_p840"]
