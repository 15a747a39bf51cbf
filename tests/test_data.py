"""Datasets on the real layouts, the split helper, augmentation, the synthetic cloud generator, samples."""
from __future__ import annotations

import numpy as np

from cloudrm import datasets, synth
from cloudrm.datasets import Source, TrainMixture

from conftest import need


def test_rice_layout_and_split():
    root = need("RICE1")
    assert datasets.detect_layout(root) == "rice"
    pairs = datasets.rice_pairs(root)
    assert len(pairs) == 74
    names = [n for n, _, _ in pairs]
    train, val = datasets.split_names(names, 0.2)
    assert set(train) | set(val) == set(names) and not set(train) & set(val)
    assert 8 <= len(val) <= 22
    # deterministic and order-independent
    assert datasets.split_names(list(reversed(names)), 0.2)[1] == list(reversed(val))


def test_scene_layout():
    root = need("Sen2_MTC_New_fig")
    assert datasets.detect_layout(root) == "scenes"
    items = list(datasets.iter_eval_items(root))
    assert len(items) == 3
    assert items[0]["dates"].shape == (3, 3, 256, 256) and items[0]["target"].shape == (3, 256, 256)


def test_sen2mtc_layout(s2_geotiff, tmp_path):
    base = tmp_path / "mtc" / "Sen2_MTC" / "T01ABC_R001"
    (base / "cloud").mkdir(parents=True)
    (base / "cloudless").mkdir()
    for i in range(3):
        (base / "cloud" / f"T01ABC_R001_0_{i}.tif").write_bytes(s2_geotiff(f"c{i}.tif", seed=i).read_bytes())
    (base / "cloudless" / "T01ABC_R001_0.tif").write_bytes(s2_geotiff("clear.tif", seed=9).read_bytes())
    (tmp_path / "mtc" / "test.txt").write_text("T01ABC_R001\n")
    root = tmp_path / "mtc"
    assert datasets.detect_layout(root) == "sen2mtc"
    items = list(datasets.iter_eval_items(root))
    assert len(items) == 1 and items[0]["dates"].shape == (3, 3, 96, 96)


def test_augment_is_consistent():
    rng = np.random.default_rng(0)
    a = rng.random((3, 64, 64)).astype(np.float32)
    out_a, out_b = datasets.augment([a, a.copy()], np.random.default_rng(1), crop=32)
    assert out_a.shape == (3, 32, 32)
    np.testing.assert_array_equal(out_a, out_b)


def test_synthetic_clouds_deterministic_and_masked():
    clear = synth.demo_scene(0, 128)
    d1, m1 = synth.multi_temporal(clear, 3, np.random.default_rng(5))
    d2, m2 = synth.multi_temporal(clear, 3, np.random.default_rng(5))
    np.testing.assert_array_equal(d1, d2)
    assert d1.shape == (3, 3, 128, 128) and m1.shape == (3, 128, 128)
    assert 0 <= d1.min() and d1.max() <= 1 and 0 <= m1.min() and m1.max() <= 1
    # where the mask says "clear", the date is the (radiometrically jittered) ground; where cloudy, it differs
    diff = np.abs(d1[0] - clear).mean(0)
    assert m1[0].max() > 0.05
    clear_px, cloudy_px = m1[0] < 0.01, m1[0] > 0.9
    assert clear_px.any() and cloudy_px.any()          # seed 5: date 1 is partly cloudy, so both are checked
    assert diff[cloudy_px].mean() > diff[clear_px].mean()


def test_all_dates_cloudy_option():
    """``p_all_dates``: every date of a stack is cloudy (as in a real 3-date cloudy series); by default a later
    date may come out (almost) clear."""
    clear = synth.demo_scene(1, 64)

    def least_cloudy(cfg):
        return min(synth.multi_temporal(clear, 3, np.random.default_rng(s), cfg)[1].mean((1, 2)).min()
                   for s in range(12))

    assert least_cloudy(synth.CloudConfig()) < 0.02
    assert least_cloudy(synth.CloudConfig(p_all_dates=1.0)) > 0.04
    # off by default, and off keeps the generator's random stream
    d0 = synth.multi_temporal(clear, 3, np.random.default_rng(3))[0]
    np.testing.assert_array_equal(d0, synth.multi_temporal(clear, 3, np.random.default_rng(3),
                                                           synth.CloudConfig(p_all_dates=0.0))[0])



def test_cloud_free_stacks_option():
    """``p_clear``: a stack without any cloud (one date: the clear image itself; several: its date changes), so a
    model learns to leave clear ground as it is; off by default, and off keeps the random stream."""
    clear = synth.demo_scene(2, 64)
    one, m1 = synth.multi_temporal(clear, 1, np.random.default_rng(0), synth.CloudConfig(p_clear=1.0))
    np.testing.assert_allclose(one[0], clear, atol=1e-6)
    assert m1.max() == 0
    three, m3 = synth.multi_temporal(clear, 3, np.random.default_rng(0), synth.CloudConfig(p_clear=1.0))
    assert m3.max() == 0 and all(0 < np.abs(d - clear).mean() < 0.05 for d in three)   # date changes only
    d0 = synth.multi_temporal(clear, 3, np.random.default_rng(4))[0]
    np.testing.assert_array_equal(d0, synth.multi_temporal(clear, 3, np.random.default_rng(4),
                                                           synth.CloudConfig(p_clear=0.0))[0])
    assert synth.multi_temporal(clear, 1, np.random.default_rng(0))[1].max() > 0.05          # default: cloudy

def test_shadow_only_option():
    """``p_shadow_only``: a date darkened by a shadow whose cloud is outside the frame (nothing brighter than the
    ground, procedural or real layer); off by default, and off keeps the random stream."""
    from cloudrm.cloudbank import CloudBank, CloudLayer

    clear = np.full((3, 64, 64), 0.5, np.float32)
    cfg = synth.CloudConfig(p_shadow_only=1.0, shadow_darkness=(0.8, 0.8))   # haze on, as by default
    for seed in range(8):
        one, m = synth.multi_temporal(clear, 1, np.random.default_rng(seed), cfg)
        assert one.max() <= 0.5 + 1e-6 and one.min() < 0.35 and m.max() > 0.3   # darker only: a shadow alone
        assert (m > 0.1).mean() < 0.6                # with ground beside it to compare with
    shade = np.ones((64, 64), np.float32)
    shade[20:40, 20:40] = 0.3
    layer = CloudLayer(name="x", transmission=np.full((64, 64), 0.2, np.float32), shade=shade,
                       airlight=np.full(3, 1.1, np.float32))
    no_shadow = CloudLayer(name="y", transmission=np.full((64, 64), 0.2, np.float32), shade=np.ones((64, 64)),
                           airlight=np.full(3, 1.1, np.float32))
    bank = CloudBank([no_shadow, layer])
    for seed in range(4):  # shadow-only draws take the layer that has a shadow
        lin, mb = bank.composite(clear, np.random.default_rng(seed), shadow_only=True)
        assert lin.max() <= 0.5 + 1e-6 and lin.min() < 0.35 and mb.max() > 0.3
    bank = CloudBank([layer])
    assert bank.composite(clear, np.random.default_rng(0))[0].max() > 0.8        # with its cloud: bright
    d0 = synth.multi_temporal(clear, 3, np.random.default_rng(4))[0]
    np.testing.assert_array_equal(d0, synth.multi_temporal(clear, 3, np.random.default_rng(4),
                                                           synth.CloudConfig(p_shadow_only=0.0))[0])


def test_generator_components():
    rng = np.random.default_rng(0)
    clear = np.full((3, 64, 64), 0.3, np.float32)
    thick, m = synth.add_clouds(clear, rng, synth.CloudConfig(p_thick=1, p_haze=0, p_shadow=0), coverage=0.5)
    assert thick[:, m > 0.99].mean() > 0.8             # opaque clouds are bright
    haze, mh = synth.add_clouds(clear, np.random.default_rng(1), synth.CloudConfig(p_thick=0, p_haze=1))
    assert haze.mean() > clear.mean() and mh.max() > 0.1
    shadow, ms = synth.add_clouds(clear, np.random.default_rng(2),
                                  synth.CloudConfig(p_thick=1, p_haze=0, p_shadow=1, shadow_darkness=(0.8, 0.8)),
                                  coverage=0.2)
    assert shadow.min() < 0.15                          # some ground darkened by a shadow


def test_training_mixture(data_root):
    need("RICE1")
    need("AID")
    ds = TrainMixture(data_root, Source(rice=("RICE1",), clear=("RICE1/label",)), crop=64, p_real=0.5,
                      dates=(1, 3), length=20)
    seen = set()
    for i in range(8):
        it = ds[i]
        assert it["dates"].shape == (3, 3, 64, 64) and it["target"].shape == (3, 64, 64)
        assert it["mask"].shape == (64, 64) and 1 <= it["n_dates"] <= 3
        assert (it["dates"][it["n_dates"]:] == 0).all()
        seen.add(it["n_dates"])
    a, b = ds[3], ds[3]
    assert (a["dates"] == b["dates"]).all()            # deterministic per (seed, epoch, index)


def test_real_cloud_mask_marks_differences():
    label = np.zeros((3, 16, 16), np.float32)
    cloudy = label.copy()
    cloudy[:, :, :8] = 0.8
    m = datasets.real_cloud_mask(cloudy, label)
    assert m[:, :8].all() and not m[:, 8:].any()


def test_sample_registry_offline(monkeypatch, tmp_path):
    from cloudrm import samples

    monkeypatch.setenv("CLOUDRM_CACHE", str(tmp_path))
    monkeypatch.delenv("CLOUDRM_DATA", raising=False)
    monkeypatch.setenv("CLOUDRM_SAMPLES_REPO", "cloudrm/does-not-exist")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    found = samples.list_samples()
    # without data or hub: the committed real Sentinel-2 samples, 1-date and 3-date
    assert {s.group for s in found} == {"Sentinel-2"}
    assert all(s.source.startswith("built-in") for s in found)
    assert any("unavailable" in n for n in samples.notices())
    assert {len(s.dates) for s in found} == {1, 3}


def test_synthetic_samples_remain_the_fallback(monkeypatch, tmp_path):
    from cloudrm import samples

    monkeypatch.setenv("CLOUDRM_CACHE", str(tmp_path))
    monkeypatch.setattr(samples, "ASSET_SAMPLES", tmp_path / "absent")
    found = samples.builtin_samples()
    assert {s.group for s in found} == {"RICE1", "RICE2", "Sentinel-2"}
    assert all(s.source == "built-in" for s in found)
    assert len(next(s for s in found if s.group == "Sentinel-2").dates) == 3
