"""Scale-out: `torchrun --nproc_per_node 2 -m visionclip.cli train` (gloo, CPU) against one process with
the same global batch, and the sampler's sharding for a million-image corpus.

Tolerance, stated honestly. Two ranks are not the same computation as one process:
- BatchNorm normalises each rank's half batch (4 images on the tiny profile) by its own statistics
  (SyncBatchNorm needs CUDA), so even the first step, from identical weights, gives a different loss
  (measured: 2.97 on one process, 2.37 on two);
- dropout masks are drawn per rank.
So per-step losses are not compared; the schedule is (same steps, same lr per step, same samples),
and the final validation loss must agree within 35% relative. Measured on this machine: 1.629 vs
1.635 with the generator-1.0 captions, 1.671 vs 2.087 (25%) with generator 1.1's; per-step train
losses differ by up to 0.47 in both, and training 4x longer does not bring them closer (1.751 vs
2.069), so the spread is the per-rank BatchNorm over 4 images, not a fault. On the tiny profile the
validation loss is close to chance (ln 5 = 1.61 with 5 val images), so this shows that the two-rank
run trains without diverging, not that it learns equally well. The exact equivalence, with BatchNorm frozen and dropout off, is tests/test_train_ddp.py
(losses within 1e-5, weights within 1e-4).
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from test_faults import ENV, PROFILE, ROOT, TIMEOUT, _run, _synth

from visionclip.paths import RunLayout
from visionclip.training.sampler import ResumableBatchSampler

VAL_LOSS_RTOL = 0.35


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    rendered = tmp_path_factory.mktemp("scaleout")
    _run(_synth(rendered))
    return RunLayout(rendered).data


def test_two_process_torchrun_matches_one_process_within_tolerance(tmp_path, data):
    one, two = tmp_path / "one", tmp_path / "two"
    for run in (one, two):
        shutil.copytree(data, RunLayout(run).data)
    _run([sys.executable, "-m", "visionclip.cli", "train", "--profile", PROFILE, "--run-dir", str(one)])
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                "-m", "visionclip.cli", "train", "--profile", PROFILE, "--run-dir", str(two)]
    proc = subprocess.run(torchrun, env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("'world_size': 2") == 1, proc.stdout  # rank 0 alone reports

    newest = sorted((two / "checkpoints").iterdir())[-1]
    assert json.loads((newest / "state.json").read_text())["extra"]["world_size"] == 2
    rows1, rows2 = _rows(one / "metrics" / "train.jsonl"), _rows(two / "metrics" / "train.jsonl")
    assert [(r["step"], r["lr"]) for r in rows1] == [(r["step"], r["lr"]) for r in rows2]
    assert all(np.isfinite(r["loss"]) and not r["skipped"] for r in rows1 + rows2)
    val1, val2 = _rows(one / "metrics" / "val.jsonl")[-1], _rows(two / "metrics" / "val.jsonl")[-1]
    assert val1["step"] == val2["step"] and val1["val_images"] == val2["val_images"]
    print(f"final val_loss: 1 process {val1['val_loss']:.4f}, 2 processes {val2['val_loss']:.4f}; "
          f"per-step train loss |diff| {[round(abs(a['loss'] - b['loss']), 3) for a, b in zip(rows1, rows2)]}")
    assert val2["val_loss"] == pytest.approx(val1["val_loss"], rel=VAL_LOSS_RTOL)


@pytest.mark.parametrize("world_size", [2, 4])
def test_each_rank_reads_only_its_shard_of_a_million_image_corpus(world_size):
    n, global_batch, seed = 1_000_000, 256, 7
    single = ResumableBatchSampler(n, global_batch, seed)
    ranks = [ResumableBatchSampler(n, global_batch, seed, rank=r, world_size=world_size) for r in range(world_size)]
    for step in (0, 1, 3905, 3906 + 17):  # first batches, the last of epoch 0, one inside epoch 1
        for s in (single, *ranks):
            s.set_position(step)
        expected = next(iter(single))
        shards = [next(iter(s)) for s in ranks]
        assert all(len(sh) == global_batch // world_size for sh in shards)
        flat = [i for sh in shards for i in sh]
        assert len(set(flat)) == len(flat), "two ranks read the same image"
        assert flat == expected, "the ranks' shards together are not the single-process batch"
    assert len(ranks[0]) == single.steps_per_epoch - ranks[0].start_step


def test_sampler_indices_are_exactly_the_local_batches_over_an_epoch():
    n, global_batch = 1000, 64
    ranks = [ResumableBatchSampler(n, global_batch, 3, rank=r, world_size=2) for r in range(2)]
    seen = [[i for b in s for i in b] for s in ranks]
    assert not set(seen[0]) & set(seen[1])
    assert len(seen[0]) == len(seen[1]) == (n // global_batch) * global_batch // 2
