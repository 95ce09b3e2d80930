"""Trainer building blocks: schedule, param groups, precision, checkpoints, sampler, metrics, guard."""
from __future__ import annotations

import json
import random
import warnings

import numpy as np
import pytest
import torch

from visionclip.errors import CheckpointError, ConfigError, TrainingError
from visionclip.training import checkpoint as ckpt
from visionclip.training.guard import NonFiniteGuard
from visionclip.training.logs import JsonlLog, read_rows
from visionclip.training.optim import build_optimizer, param_groups
from visionclip.precision import choose_precision
from visionclip.training.sampler import ResumableBatchSampler
from visionclip.training.schedule import build_scheduler, warmup_cosine_factor


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.bn = torch.nn.BatchNorm2d(4)
        self.emb = torch.nn.Embedding(10, 4)
        self.emb_norm = torch.nn.LayerNorm(4)
        self.proj = torch.nn.Linear(4, 2)
        self.logit_scale = torch.nn.Parameter(torch.tensor(2.0))

    def forward(self, x):
        return self.proj(self.bn(self.conv(x)).mean((2, 3))).sum() * self.logit_scale


def test_schedule_warms_up_linearly_then_decays_by_cosine_to_zero():
    total, warm = 100, 10
    f = [warmup_cosine_factor(s, total, warm) for s in range(total)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(b > a for a, b in zip(f[:9], f[1:10]))             # rising during warm-up
    assert all(b <= a for a, b in zip(f[10:], f[11:]))             # never rising after
    assert f[10 + 45] == pytest.approx(0.5, abs=0.02)              # cosine midpoint
    assert warmup_cosine_factor(total, total, warm) == pytest.approx(0.0)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
    sched = build_scheduler(opt, total, 0.1)
    lrs = []
    for _ in range(total):
        lrs.append(opt.param_groups[0]["lr"]); opt.step(); sched.step()
    assert lrs[9] == pytest.approx(2.0) and lrs[0] == pytest.approx(0.2)
    assert json.loads(json.dumps(sched.state_dict()))["last_epoch"] == total  # JSON-able state


def test_no_weight_decay_on_norms_biases_and_logit_scale():
    model = Tiny()
    decay, no_decay = param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    assert sorted(names[id(p)] for p in decay["params"]) == ["conv.weight", "emb.weight", "proj.weight"]
    assert {names[id(p)] for p in no_decay["params"]} == {
        "conv.bias", "bn.weight", "bn.bias", "emb_norm.weight", "emb_norm.bias", "proj.bias", "logit_scale"}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert len(build_optimizer(model, 1e-3, 0.1).param_groups) == 2


def test_precision_choice():
    cpu = torch.device("cpu")
    assert choose_precision("fp32", cpu).dtype is None
    assert choose_precision("auto", cpu).name in ("bf16", "fp32")
    with pytest.raises(ConfigError, match="fp16"):
        choose_precision("fp16", cpu)


def _trained_state(tmp_path, step):
    torch.manual_seed(0)
    model = Tiny().to(memory_format=torch.channels_last)
    opt = build_optimizer(model, 1e-2, 0.1)
    sched = build_scheduler(opt, 10, 0.2)
    for _ in range(2):
        model(torch.randn(2, 3, 5, 5)).backward(); opt.step(); sched.step(); opt.zero_grad()
    return model, opt, sched


def test_checkpoint_round_trip_restores_everything_and_rng(tmp_path):
    model, opt, sched = _trained_state(tmp_path, 2)
    random.seed(5); np.random.seed(6); torch.manual_seed(7)
    path = ckpt.save_checkpoint(tmp_path, step=2, samples=16, model=model, optimizer=opt, scheduler=sched,
                                extra={"note": "x"})
    expect = (torch.rand(3), np.random.rand(3), random.random())
    assert path.name == "step_0000002" and not list(tmp_path.glob(".*"))
    assert not list(path.glob("*.pt")) and not list(path.glob("*.pkl"))
    state = ckpt.load_checkpoint(path)
    assert (state.step, state.samples, state.extra["note"]) == (2, 16, "x")
    for k, v in model.state_dict().items():
        assert torch.equal(state.model[k], v)
    ckpt.restore_rng(*state.rng)
    assert torch.equal(torch.rand(3), expect[0]) and np.array_equal(np.random.rand(3), expect[1])
    assert random.random() == expect[2]
    model2, opt2, sched2 = _trained_state(tmp_path, 0)
    ckpt.apply_optimizer_state(opt2, state.optimizer)
    sched2.load_state_dict(state.scheduler)
    for p1, p2 in zip(opt.param_groups[0]["params"], opt2.param_groups[0]["params"]):
        if p1.grad is None:  # unused by Tiny.forward: no state
            continue
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(opt.state[p1][key], opt2.state[p2][key])
        assert opt2.state[p2]["exp_avg"].stride() == p2.stride()  # channels_last kept
    assert sched2.state_dict() == sched.state_dict()


def test_keeps_newest_and_falls_back_from_a_corrupt_checkpoint(tmp_path):
    model, opt, sched = _trained_state(tmp_path, 2)
    for step in (1, 2, 3):
        ckpt.save_checkpoint(tmp_path, step=step, samples=step, model=model, optimizer=opt, scheduler=sched,
                             keep=2)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step_0000003", "step_0000002"]
    newest = tmp_path / "step_0000003" / "model.safetensors"
    newest.write_bytes(newest.read_bytes()[:-10])  # truncated by a dying disk
    with pytest.raises(CheckpointError, match="checksum"):
        ckpt.load_checkpoint(tmp_path / "step_0000003")
    with pytest.warns(RuntimeWarning, match="corrupt checkpoint"):
        state = ckpt.load_latest(tmp_path)
    assert state.step == 2
    (tmp_path / "step_0000002" / "state.json").write_text("{")
    with warnings.catch_warnings():  # none verifies: an error naming both, not a silent start at step 0
        warnings.simplefilter("ignore")
        with pytest.raises(CheckpointError, match=r"no checkpoint verifies .*step_0000003.*step_0000002"):
            ckpt.load_latest(tmp_path)
    assert ckpt.load_latest(tmp_path / "none") is None


def test_sampler_shards_the_global_batch_and_resumes_at_any_step():
    full = ResumableBatchSampler(50, 8, seed=3)
    assert full.steps_per_epoch == 6
    epoch0 = list(full)
    assert sorted(sum(epoch0, [])) == sorted(set(sum(epoch0, [])))  # no repeats in an epoch
    ranks = [ResumableBatchSampler(50, 8, seed=3, rank=r, world_size=2) for r in (0, 1)]
    for b, (a, c) in enumerate(zip(*[list(s) for s in ranks])):
        assert a + c == epoch0[b] and len(a) == 4
    full.set_position(8)  # epoch 1, batch 2
    assert (full.epoch, len(full)) == (1, 4)
    again = ResumableBatchSampler(50, 8, seed=3); again.epoch = 1
    assert list(full) == list(again)[2:]
    assert list(again) != epoch0
    with pytest.raises(ConfigError, match="batch_size"):
        ResumableBatchSampler(50, 9, seed=3, world_size=2)


def test_metrics_log_truncates_replayed_and_cut_lines(tmp_path):
    log = JsonlLog(tmp_path / "m" / "train.jsonl")
    for s in range(1, 6):
        log.append({"step": s, "loss": float("nan") if s == 2 else 1.0 / s})
    with open(log.path, "a") as f:
        f.write('{"step": 6, "lo')  # a kill mid-write
    log.truncate_after(3)
    rows = read_rows(log.path)
    assert [r["step"] for r in rows] == [1, 2, 3] and rows[1]["loss"] is None
    log.append({"step": 4})
    assert [r["step"] for r in read_rows(log.path)] == [1, 2, 3, 4]


def test_nonfinite_guard_counts_resets_and_raises():
    g = NonFiniteGuard(3)
    assert g.record(True, 1) and g.record(True, 2) and not g.record(False, 3)
    assert (g.in_a_row, g.total_skipped) == (0, 2)
    g.record(True, 4); g.record(True, 5)
    with pytest.raises(TrainingError, match="3 steps in a row"):
        g.record(True, 6)


def test_checkpoints_from_before_augment_on_resume_as_per_item_augmentation(tmp_path):
    from visionclip.config import load_profile
    from visionclip.training.checkpoint import TrainState
    from visionclip.training.loop import _check_resumable, resume_signature

    profile = load_profile("tiny")
    old = {k: v for k, v in resume_signature(profile).items() if k != "train.augment_on"}
    state = TrainState(2, 16, {}, {}, {}, None, ({}, {}), {"signature": old}, tmp_path / "step_0000002")
    _check_resumable(state, profile)  # items: what every run did before the key existed
    with pytest.raises(CheckpointError, match=r"step_0000002: saved by a run with different \['train.augment_on'\]"):
        _check_resumable(state, load_profile("tiny", {"train.augment_on": "batches"}))


def test_caption_choice_quality_filter_and_hard_negatives_are_resume_keys(tmp_path):
    from visionclip.config import load_profile
    from visionclip.training.checkpoint import TrainState
    from visionclip.training.loop import _check_resumable, resume_signature

    profile = load_profile("tiny")
    newer = ("train.hard_negatives", "data.captions", "data.min_quality")
    old = {k: v for k, v in resume_signature(profile).items() if k not in newer}
    state = TrainState(2, 16, {}, {}, {}, None, ({}, {}), {"signature": old}, tmp_path / "step_0000002")
    _check_resumable(state, profile)  # saved before the keys: generated captions, no filter, no negatives
    for key, value in (("train.hard_negatives", True), ("data.min_quality", 0.5)):
        with pytest.raises(CheckpointError, match=rf"different \['{key}'\]"):
            _check_resumable(state, load_profile("tiny", {key: value}))
