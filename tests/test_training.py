"""The one accelerate training loop: a few steps, checkpoint + resume, export, 2 processes on CPU (gloo)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, need

CONFIGS = REPO / "cloudrm" / "training" / "configs"


def _env():
    return dict(os.environ, CLOUDRM_DATA=str(need()), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")


def _train(task, cfg, run_dir, export_dir, stop, launcher=(), extra=()):
    """Run ``cloudrm train`` to step ``stop``; ``cfg`` is a shipped config's name or a path (an absolute path wins)."""
    cmd = [*launcher, "-m", "cloudrm", "train", task, "--config", str(CONFIGS / cfg), "--stop-at-step", str(stop),
           "--run-dir", str(run_dir), "--export-dir", str(export_dir), *extra]
    if not launcher:
        cmd = [sys.executable, *cmd]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=_env(), timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


@pytest.mark.slow
@pytest.mark.parametrize("task,cfg,sub", [("pixel-cr", "pixel-cr-smoke.json", "pixel_cr"),
                                          ("diffcr", "diffcr-smoke.json", "unet")])
def test_train_resume_export(tmp_path, task, cfg, sub):
    need("RICE1")
    run_dir, exp = tmp_path / "run", tmp_path / "exp"
    _train(task, cfg, run_dir, exp, 2)
    assert (run_dir / "checkpoint-2").is_dir()
    r = _train(task, cfg, run_dir, exp, 4)
    assert "resumed from" in r.stdout + r.stderr
    log = json.loads((run_dir / "log.json").read_text())
    assert [e["step"] for e in log if "loss" in e] == [1, 2, 3, 4]
    assert (run_dir / "loss_curve.png").exists()
    meta = json.loads((exp / "cloudrm.json").read_text())
    assert meta["components"][sub]["trained_steps"] == 4 and "validation" in meta["components"][sub]
    assert (exp / sub / "diffusion_pytorch_model.safetensors").exists()


@pytest.mark.slow
def test_resume_with_other_validation_data_ships_again(tmp_path):
    """A best score measured on other validation data is not comparable: after the config's ``val`` changes, the
    resumed run's first validation exports (here the new group is every pair of a folder, ``pairs:``)."""
    need("RICE1")
    run_dir, exp = tmp_path / "run", tmp_path / "exp"
    _train("pixel-cr", "pixel-cr-smoke.json", run_dir, exp, 4)
    state = json.loads((run_dir / "checkpoint-4" / "cloudrm_state.json").read_text())
    state["best"] = 99.0  # whatever the old validation scored, no new score would beat it
    (run_dir / "checkpoint-4" / "cloudrm_state.json").write_text(json.dumps(state))
    base = json.loads((CONFIGS / "pixel-cr-smoke.json").read_text())
    cfg = tmp_path / "other-val.json"
    cfg.write_text(json.dumps({**base, "data": {**base["data"], "val": ["pairs:RICE1"], "val_limit": 3}}))
    _train("pixel-cr", cfg, run_dir, exp, 8)
    meta = json.loads((exp / "cloudrm.json").read_text())["components"]["pixel_cr"]
    assert meta["trained_steps"] == 8 and meta["validation"]["pairs:RICE1_n"] == 3


@pytest.mark.slow
def test_validation_below_a_floor_never_ships(tmp_path):
    """``val_floor``: a validation under any floor is not exported, however high its mean (e.g. a fine-tune for
    saturated clouds must keep its RICE2 score); the same run without the floor exports."""
    need("RICE1")
    base = json.loads((CONFIGS / "pixel-cr-smoke.json").read_text())
    for name, floor, ships in (("floored", {"psnr": 999.0}, False), ("free", {}, True)):
        cfg = tmp_path / f"{name}.json"
        cfg.write_text(json.dumps({**base, "val_floor": floor}))
        exp = tmp_path / f"exp-{name}"
        r = _train("pixel-cr", cfg, tmp_path / f"run-{name}", exp, 2)  # an absolute cfg path replaces CONFIGS
        assert "val_psnr" in r.stdout + r.stderr                 # it validated either way
        assert (exp / "cloudrm.json").exists() == ships


@pytest.mark.slow
def test_init_from_weights_same_or_other_variant(tmp_path):
    """init_from (no checkpoint yet): the same variant's weights continue their step count; another variant's
    (e.g. sen2 -> rice2) start a new run from them, recorded in the metadata. bf16 autocast on the CPU."""
    need("RICE1")
    exp = tmp_path / "exp"
    _train("pixel-cr", "pixel-cr-smoke.json", tmp_path / "run0", exp, 2)
    base = json.loads((CONFIGS / "pixel-cr-smoke.json").read_text())
    variant = base["variant"]
    for name, var, stop, steps in (("same", variant, 3, [3]), ("other", "other", 2, [1, 2])):
        cfg = tmp_path / f"{name}.json"
        cfg.write_text(json.dumps({**base, "variant": var, "init_from": str(exp)}))
        out = tmp_path / f"exp-{name}"
        r = _train("pixel-cr", cfg, tmp_path / f"run-{name}", out, stop, extra=("--mixed-precision", "bf16"))
        assert "starting from weights" in r.stdout + r.stderr
        log = json.loads((tmp_path / f"run-{name}" / "log.json").read_text())
        assert [e["step"] for e in log if "loss" in e] == steps
        meta = json.loads((out / "cloudrm.json").read_text())["components"]["pixel_cr"]
        assert meta["trained_steps"] == stop and meta["mixed_precision"] == "bf16"
        assert ("initialised_from" in meta) == (name == "other")


def test_lr_mult_gives_a_prefix_its_own_learning_rate():
    from cloudrm.errors import ConfigError
    from cloudrm.models.diffcr_unet import DiffCRUNet
    from cloudrm.training.config import TrainConfig
    from cloudrm.training.loop import _param_groups

    net = DiffCRUNet(width=8, fusion="gated")
    groups = _param_groups(net, TrainConfig(lr=1e-4, lr_mult={"cond_gate.": 10}))
    assert [g["lr"] for g in groups] == [1e-4, pytest.approx(1e-3)]
    gate = {id(p) for p in net.cond_gate.parameters()}
    assert {id(p) for p in groups[1]["params"]} == gate
    assert sum(len(g["params"]) for g in groups) == len(list(net.parameters()))
    assert len(_param_groups(net, TrainConfig(lr=1e-4))) == 1
    with pytest.raises(ConfigError, match="cond_gates"):
        _param_groups(net, TrainConfig(lr_mult={"cond_gates.": 10}))


@pytest.mark.slow
def test_gated_fusion_fine_tunes_from_mean_weights(tmp_path):
    """DiffCR weights with mean date fusion initialise a ``fusion: gated`` model (its zero gates are new); the
    export is a gated model that loads back with them."""
    need("RICE1")
    from safetensors.torch import load_file

    exp = tmp_path / "exp"
    _train("diffcr", "diffcr-smoke.json", tmp_path / "run0", exp, 1)
    base = json.loads((CONFIGS / "diffcr-smoke.json").read_text())
    cfg = tmp_path / "gated.json"
    cfg.write_text(json.dumps({**base, "init_from": str(exp), "model": {**base["model"], "fusion": "gated"}}))
    out = tmp_path / "exp-gated"
    r = _train("diffcr", cfg, tmp_path / "run-gated", out, 2)
    assert "starting from weights" in r.stdout + r.stderr
    assert json.loads((out / "unet" / "config.json").read_text())["fusion"] == "gated"
    keys = load_file(out / "unet" / "diffusion_pytorch_model.safetensors").keys()
    assert any(k.startswith("cond_gate.") for k in keys)


@pytest.mark.slow
def test_two_processes_keep_replicas_identical(tmp_path):
    """`accelerate launch --multi_gpu --num_processes 2` runs on CPU with the gloo backend."""
    need("RICE1")
    accelerate = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                  "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    _train("pixel-cr", "pixel-cr-smoke.json", tmp_path / "run", tmp_path / "exp", 3, launcher=accelerate)
    sums = [(tmp_path / "run" / f"replica-{i}.txt").read_text() for i in range(2)]
    assert sums[0] == sums[1]


def test_bad_config_is_one_line_error(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"task": "pixel-cr", "nonsense": 1}))
    r = subprocess.run([sys.executable, "-m", "cloudrm", "train", "pixel-cr", "--config", str(bad)],
                       capture_output=True, text=True, cwd=REPO, env=_env(), timeout=120)
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith("error: ")


def test_cloud_options_from_the_config(tmp_path):
    """``data.clouds`` sets the generator's options over the defaults; an unknown field is a ConfigError naming it."""
    from cloudrm.errors import ConfigError
    from cloudrm.training.config import TrainConfig
    from cloudrm.training.tasks.diffcr import DiffCRTask

    def task(clouds):
        return DiffCRTask(TrainConfig(task="diffcr", variant="t", data_root=str(tmp_path), data={"clouds": clouds}))

    cc = task({"p_haze": 0.3, "coverage": [0.1, 0.6]}).cloud_config()
    assert cc.p_haze == 0.3 and cc.coverage == (0.1, 0.6) and cc.p_thick == 0.8
    with pytest.raises(ConfigError, match="p_hase"):
        task({"p_hase": 0.3}).cloud_config()


def test_diffcr_validation_can_sample_one_date_as_shipped(tmp_path):
    """``task_options.val_single_date_strength`` (with the default 20 steps) validates a single date on the path
    the method ships: the same output as ``load_method("diffcr")`` for seed 0; without it, the full schedule. The
    exported weights carry that strength."""
    import torch
    from cloudrm import load_method
    from cloudrm.training.config import TrainConfig
    from cloudrm.training.tasks.diffcr import DiffCRTask

    m = load_method("diffcr", "sen2")
    date = np.random.default_rng(0).random((1, 3, 64, 64), dtype=np.float32)

    def validated(**opts):
        task = DiffCRTask(TrainConfig(task="diffcr", variant="t", data_root=str(tmp_path),
                                      task_options={"val_steps": 20, **opts}))
        return task.predict(m.unet, torch.from_numpy(date)).numpy()

    shipped = validated(val_single_date_strength=m.single_date_strength)
    assert m.single_date_strength < 1 and np.allclose(shipped, m(date, steps=20).image, atol=1e-5)
    assert np.abs(validated() - shipped).mean() > 1e-3
    # and the exported weights sample one date as they were validated
    task = DiffCRTask(TrainConfig(task="diffcr", variant="t", data_root=str(tmp_path),
                                  task_options={"val_single_date_strength": 0.4}))
    task.export(m.unet, tmp_path / "exp", {"trained_steps": 1, "train_minutes": 0.1, "batch_size": 1,
                                           "validation": {}})
    assert load_method("diffcr", str(tmp_path / "exp")).single_date_strength == 0.4


def test_average_groups_is_the_one_validation_summary():
    """Per-group means (SSIM to 4 decimals, others to 3; unmeasured values left out) and ``psnr``: the mean of
    the groups' means, each group counting once (what picks the shipped checkpoint)."""
    from cloudrm.training.tasks import average_groups

    groups = {"RICE2": [{"psnr": 30.0, "ssim": 0.81234, "niqe": None}, {"psnr": 32.0, "ssim": 0.8, "niqe": None}],
              "scenes:Sen2/fig": [{"psnr": 20.0, "ssim": 0.5, "niqe": 6.0}]}
    res = average_groups(groups, key=lambda g: g.replace("scenes:", "").replace("/", "_"))
    assert res == {"RICE2_psnr": 31.0, "RICE2_ssim": 0.8062, "RICE2_n": 2, "Sen2_fig_psnr": 20.0,
                   "Sen2_fig_ssim": 0.5, "Sen2_fig_niqe": 6.0, "Sen2_fig_n": 1, "psnr": 25.5}
    ae = average_groups({"a/b": [{"recon_psnr": 28.0, "recon_ssim": 0.9}]}, main="recon_psnr")
    assert ae == {"a_b_recon_psnr": 28.0, "a_b_recon_ssim": 0.9, "a_b_n": 1, "psnr": 28.0}
    assert average_groups({}) == {}


def test_validation_groups_of_real_sentinel2():
    """``s2val:`` gives the validation regions' real cloudy dates, ``s2clear:`` their clear dates as input (a model
    should give them back unchanged), ``s2made:`` their clear dates clouded here, three times each, with the clear
    date as exact reference; no training region is in any."""
    from cloudrm.datasets import s2_is_validation
    from cloudrm.training.config import TrainConfig
    from cloudrm.training.tasks.diffcr import DiffCRTask

    root = need()
    if not (root / "SEN12MS-CR" / "pairs").is_dir():
        pytest.skip("SEN12MS-CR not in the data folder")
    cfg = TrainConfig(task="diffcr", variant="t", data_root=str(root),
                      data={"val": ["s2val:SEN12MS-CR/pairs", "s2clear:SEN12MS-CR/pairs", "s2made:SEN12MS-CR/pairs"],
                            "bank": ["SEN12MS-CR/pairs"]})
    items = DiffCRTask(cfg).val_items()
    real = [it for it in items if it["group"].startswith("s2val:")]
    clear = [it for it in items if it["group"].startswith("s2clear:")]
    made = [it for it in items if it["group"].startswith("s2made:")]
    assert len(real) == len(clear) >= 4 and all(s2_is_validation(it["name"]) for it in items)
    for a, b in zip(real, clear):
        assert a["name"] == b["name"] and b["dates"].shape == (1, *b["target"].shape)
        assert (b["dates"][0] == b["target"]).all() and (a["dates"][0] != a["target"]).any()
    assert [it["name"] for it in made] == [it["name"] for it in real for _ in range(3)]
    kept = []
    for i, it in enumerate(made):
        date, target = it["dates"][0], it["target"]
        assert it["dates"].shape == (1, *target.shape) and np.abs(date - target).max() > 0.05  # clouded
        assert i % 3 == 0 or not np.array_equal(date, made[i - 1]["dates"][0])              # other clouds each time
        kept.append((np.abs(date - target).max(axis=0) < 1e-3).mean())
    assert max(kept) > 0.3, kept  # where no cloud fell, the ground is the reference's, exactly
    alone = DiffCRTask(TrainConfig(task="diffcr", variant="t", data_root=str(root),
                                   data={"val": ["s2made:SEN12MS-CR/pairs"], "bank": ["SEN12MS-CR/pairs"]})).val_items()
    assert all(np.array_equal(a["dates"], b["dates"]) for a, b in zip(alone, made))  # whatever groups precede it


@pytest.mark.slow
def test_a_resumed_run_is_the_same_run(tmp_path):
    """Stopping and resuming changes nothing: 10 steps in one go and 5 + 5 with a resume mid-epoch (4 batches an
    epoch, so the run also crosses epochs on both sides) log the same losses. Before the resume skipped the epoch's
    trained batches and kept the shuffle order, the losses after a resume were other ones."""
    need("RICE1")
    base = json.loads((CONFIGS / "diffcr-smoke.json").read_text())
    cfg = tmp_path / "short-epochs.json"
    cfg.write_text(json.dumps({**base, "data": {**base["data"], "length": 8}}))

    def losses(run_dir):
        return [(e["step"], e["loss"]) for e in json.loads((run_dir / "log.json").read_text()) if "loss" in e]

    _train("diffcr", cfg, tmp_path / "one", tmp_path / "exp-one", 10)
    _train("diffcr", cfg, tmp_path / "two", tmp_path / "exp-two", 5)
    r = _train("diffcr", cfg, tmp_path / "two", tmp_path / "exp-two", 10)
    assert "resumed from" in r.stdout + r.stderr
    state = json.loads((tmp_path / "two" / "checkpoint-10" / "cloudrm_state.json").read_text())
    assert state["epoch"] >= 2  # 10 steps of 4-batch epochs: the third epoch
    one, two = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert [s for s, _ in two] == [s for s, _ in one] == list(range(1, 11))
    assert [v for _, v in two] == pytest.approx([v for _, v in one], rel=1e-6)


def _pixel_cr_folder(folder, seed, **arch):
    """A tiny trained-looking Pixel-CR weights folder (random weights, as ``task.export`` lays it out)."""
    import torch

    from cloudrm.models.pixel_cr import PixelCR

    torch.manual_seed(seed)
    PixelCR(dim=16, stem_dims=(8,), depths=(2,), heads=2, **arch).save_pretrained(str(folder / "pixel_cr"))
    meta = {"method": "idf-cr", "variant": "sen2", "bands": ["B04", "B03", "B02"], "eval": [{"psnr": 99.0}],
            "components": {"pixel_cr": {"trained_steps": 100 * (seed + 1), "train_minutes": 1.0 + seed,
                                        "training_data": {"p_real": seed}, "hardware": "CPU (2 cores)",
                                        "batch_size": 8 + seed}}}
    (folder / "cloudrm.json").write_text(json.dumps(meta))


def test_average_writes_the_weighted_mean_of_one_part(tmp_path):
    """`cloudrm average A B --shares 3 1`: the part is 0.75 A + 0.25 B, tensor by tensor; the folder loads and runs
    as pixel-cr; cloudrm.json names both sources with their own provenance and drops the sources' scores."""
    import torch
    from safetensors.torch import load_file

    from cloudrm import load_method
    from cloudrm.training.average import WEIGHTS_FILE

    a, b, out = tmp_path / "a", tmp_path / "b", tmp_path / "soup"
    _pixel_cr_folder(a, 0)
    _pixel_cr_folder(b, 1)
    # a folder saved from a loaded model carries diffusers' `_name_or_path`: bookkeeping, not architecture
    cfg_b = b / "pixel_cr" / "config.json"
    cfg_b.write_text(json.dumps({**json.loads(cfg_b.read_text()), "_name_or_path": "elsewhere/pixel_cr"}))
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", HOME=str(tmp_path))
    r = subprocess.run([sys.executable, "-m", "cloudrm", "average", str(a), str(b), "--shares", "3", "1",
                        "-o", str(out)], capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    wa, wb, wo = (load_file(str(f / "pixel_cr" / WEIGHTS_FILE)) for f in (a, b, out))
    assert wo.keys() == wa.keys()
    for k in wa:
        assert torch.allclose(wo[k], 0.75 * wa[k] + 0.25 * wb[k], atol=1e-6), k
    assert any(not torch.equal(wo[k], wa[k]) for k in wa)
    meta = json.loads((out / "cloudrm.json").read_text())
    assert "eval" not in meta
    part = meta["components"]["pixel_cr"]
    assert [s["share"] for s in part["averaged_from"]] == [0.75, 0.25]
    assert [s["training_data"]["p_real"] for s in part["averaged_from"]] == [0, 1]
    assert part["trained_steps"] == 200 and part["train_minutes"] == 2.0 and "average" in part["produced_by"]
    assert part["hardware"] == "CPU (2 cores)" and "batch_size" not in part  # shared by all sources / not
    # provenance names no home directory: the sources lie in $HOME here
    assert [s["folder"] for s in part["averaged_from"]] == ["~/a", "~/b"]
    assert str(tmp_path) not in (out / "cloudrm.json").read_text() and "~/soup" in part["produced_by"]
    x = np.random.default_rng(0).random((3, 32, 32)).astype(np.float32)
    y = load_method("pixel-cr", str(out))([x]).image
    assert y.shape == (3, 32, 32) and np.isfinite(y).all()


def test_average_refuses_what_cannot_be_averaged(tmp_path):
    """Other architectures, a missing part, bad shares: exit 2 and one `error:` line; nothing is written."""
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    _pixel_cr_folder(a, 0)
    _pixel_cr_folder(b, 1)
    _pixel_cr_folder(c, 2, window=4)
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    for args, says in (([a, c], "another architecture"), ([a, tmp_path / "none"], "no pixel_cr weights"),
                       ([a, b, "--shares", "1", "-1"], "positive"), ([a, b, "--shares", "1"], "one share per"),
                       ([a], "at least two")):
        r = subprocess.run([sys.executable, "-m", "cloudrm", "average", *map(str, args), "-o", str(tmp_path / "o")],
                           capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert r.stderr.count("\n") == 1 and says in r.stderr, r.stderr
        assert not (tmp_path / "o").exists()
