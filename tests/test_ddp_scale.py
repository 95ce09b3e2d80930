"""DDP as 32 ranks need it, shown on two gloo ranks: the corpus table built once, one fused
all-reduce per step, a resumed two-rank run bit-identical to an uninterrupted one, and a SIGTERM to
one rank stopping both at the same step, checkpointed, exit 75 (issue 23); a rank refused before the
rendezvous stopping the other at once, not after train.dist_timeout_min."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from test_train import ENV, N_IMAGES, ROOT, _weights, write_tiny_run
from test_train_ddp import _free_port

# Counts, per rank, what the issue is about: corpus tables built, all-reduces issued by the loop
# (DDP's gradient buckets go through its C++ reducer, not this function) and the host reads
# (.item(), .tolist()) that visionclip's own code makes between two of them, i.e. per step
# (torch's own, such as AdamW's step counters, are not the loop's to remove).
WORKER = r"""
import json, sys, torch
import torch.distributed as dist
import visionclip.data.readers as readers
from visionclip.config import load_profile
from visionclip.training.loop import train_clip

counts = {"tables_built": 0, "all_reduce": 0, "reads_between_reduces": []}
reads = [0]
real_build, real_all_reduce = readers.read_synfundus_table, dist.all_reduce
def build(*a, **k):
    counts["tables_built"] += 1
    return real_build(*a, **k)
def all_reduce(*a, **k):
    counts["all_reduce"] += 1
    counts["reads_between_reduces"].append(reads[0])
    reads[0] = 0
    return real_all_reduce(*a, **k)
def counted(name):
    real = getattr(torch.Tensor, name)
    def read(self, *a, **k):
        if sys._getframe(1).f_globals.get("__name__", "").startswith("visionclip"):
            reads[0] += 1
        return real(self, *a, **k)
    setattr(torch.Tensor, name, read)
counted("item"); counted("tolist")
readers.read_synfundus_table, dist.all_reduce = build, all_reduce

overrides = json.loads(sys.argv[3])
out = train_clip(load_profile(sys.argv[1], overrides), sys.argv[2], progress=False)
counts["steps_run"] = out["steps"] - (out["resumed_from"] or 0)
rank = dist.get_rank() if dist.is_initialized() else int(__import__("os").environ.get("RANK", 0))
with open(f"{sys.argv[2]}/counts_rank{rank}.json", "w") as f:
    json.dump(counts, f)
"""

# 40 images -> 32 in the train split -> 4 steps of 8 per epoch; no validation or checkpoint inside
# the measured steps, so every all-reduce and host read counted belongs to the steps themselves.
BASE = {"train.epochs": 2, "train.val_every": 100, "train.checkpoint_every": 100}


def _two_ranks(run_dir, overrides: dict) -> list[dict]:
    port = _free_port()
    procs = []
    for rank in (0, 1):
        env = {**ENV, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen([sys.executable, "-c", WORKER, str(run_dir / "tiny.yaml"), str(run_dir),
                                       json.dumps({**BASE, **overrides})],
                                      env=env, cwd=ROOT, stderr=subprocess.PIPE))
    for p in procs:
        _, err = p.communicate(timeout=240)
        assert p.returncode == 0, err.decode()[-3000:]
    return [json.loads((run_dir / f"counts_rank{r}.json").read_text()) for r in (0, 1)]


def _rows(run_dir, name: str) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics" / f"{name}.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "images_per_s"} for r in rows]


@pytest.fixture(scope="module")
def whole(tmp_path_factory) -> tuple:
    """One uninterrupted two-rank run (8 steps) and its counts: what both tests below compare with (the
    CLI trains the same profile through the same train_clip, so its logs and weights are the same)."""
    run = tmp_path_factory.mktemp("whole")
    write_tiny_run(run, n=N_IMAGES)
    return run, _two_ranks(run, {})


def test_two_ranks_build_the_table_once_fuse_the_step_and_resume_bit_identically(tmp_path, whole):
    whole, counts = whole
    split = tmp_path / "split"
    write_tiny_run(split, n=N_IMAGES)

    assert counts[0]["steps_run"] == counts[1]["steps_run"] == 8
    # the table: rank 0 built it, rank 1 loaded rank 0's file
    assert [c["tables_built"] for c in counts] == [1, 0], counts
    assert len(list((whole / "data" / "corpus_tables").glob("table_*.npz"))) == 1
    # one all-reduce per step from the loop (flags + scalars fused) and one host read
    for c in counts:
        assert c["all_reduce"] == c["steps_run"], counts
        # between two steps' reduces: that step's one read of the fused vector, nothing else
        assert c["reads_between_reduces"][1:] == [1] * (c["steps_run"] - 1), counts

    # stopped after 3 steps (checkpoint there), resumed on two ranks: the same run, bit for bit
    first = _two_ranks(split, {"train.max_steps": 3, "train.checkpoint_every": 3})
    assert first[0]["steps_run"] == 3 and first[0]["tables_built"] == 1
    state = json.loads(next((split / "checkpoints").glob("step_0000003/state.json")).read_text())
    assert "rng_rank1.safetensors" in state["sha256"], "rank 1's random streams are not in the checkpoint"
    resumed = _two_ranks(split, {})
    assert resumed[0]["steps_run"] == 5
    assert [c["tables_built"] for c in resumed] == [0, 0], "the saved table was not reused"

    assert _rows(split, "train") == _rows(whole, "train")
    # the stopped run also validated where it stopped (a max_steps run validates its last step)
    assert [r for r in _rows(split, "val") if r["step"] != 3] == _rows(whole, "val")
    a, b = _weights(whole), _weights(split)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed two-rank weights differ from the uninterrupted run's"


def _two_rank_cli(run_dir, *extra: str) -> list[subprocess.Popen]:
    port = _free_port()
    sets = [a for k, v in BASE.items() for a in ("--set", f"{k}={v}")]
    return [subprocess.Popen([sys.executable, "-m", "visionclip", "train", "--profile", str(run_dir / "tiny.yaml"),
                              "--run-dir", str(run_dir), "--no-progress", *sets, *extra],
                             env={**ENV, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
                                  "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1",
                                  "TORCHELASTIC_RUN_ID": "test-job"},
                             cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            for rank in (0, 1)]


def test_sigterm_to_one_rank_stops_both_at_one_step_and_the_resume_is_bit_identical(tmp_path, whole):
    whole, _ = whole
    stopped = tmp_path / "stopped"
    write_tiny_run(stopped, n=N_IMAGES)

    procs = _two_rank_cli(stopped)
    deadline = time.monotonic() + 120
    # the table is built inside the trainer, after the signal handlers are in place
    while not list((stopped / "data" / "corpus_tables").glob("table_*.npz")):
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), "training never started"
        time.sleep(0.05)
    os.kill(procs[1].pid, signal.SIGTERM)  # rank 1 only: the flag reaches rank 0 with the step's scalars
    errs = [p.communicate(timeout=240)[1].decode() for p in procs]
    for rank, (p, err) in enumerate(zip(procs, errs)):
        assert p.returncode == 75, (rank, err[-2000:])
    assert "SIGTERM received: stopped training clip at step" in errs[1], errs[1]
    assert "resume with: visionclip train" in errs[1] and "--restart" not in errs[1]
    step = int(errs[1].split("at step ")[1].split()[0])
    assert f"at step {step} " in errs[0], errs  # the same step on both ranks
    assert (stopped / "checkpoints" / f"step_{step:07d}").is_dir()
    assert not (stopped / "model").exists(), "a stopped run wrote a final model"

    for p in _two_rank_cli(stopped):  # the resume
        assert p.wait(timeout=240) == 0, p.stderr.read().decode()[-2000:]
    assert _rows(stopped, "train") == _rows(whole, "train")
    a, b = _weights(whole), _weights(stopped)
    assert all(torch.equal(a[k], b[k]) for k in a), "the resumed run's weights differ from the uninterrupted run's"


def _ranks_with(run_dir, extra: dict[int, list[str]]) -> list[subprocess.Popen]:
    """Two CLI ranks, each with its own extra arguments (a rank refused before the rendezvous)."""
    port = _free_port()
    procs = []
    for rank in (0, 1):
        argv = ["--profile", str(run_dir / "tiny.yaml"), "--run-dir", str(run_dir), "--no-progress",
                *[a for k, v in BASE.items() for a in ("--set", f"{k}={v}")]]
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "visionclip", "train", *argv, *extra.get(rank, [])],
            env={**ENV, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
                 "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1", "TORCHELASTIC_RUN_ID": "test-job"},
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
    return procs


@pytest.mark.parametrize("refused, extra, says", [
    (1, ["--device", "cuda:99"], "--device: cuda:99 asked for, but this machine has"),  # in setup, before the rendezvous
    (0, ["--set", "train.no_such_key=1"], "train.no_such_key"),          # in the CLI: the store's own rank
])
def test_a_rank_refused_before_the_rendezvous_stops_the_other_at_once(tmp_path, refused, extra, says):
    """Without the meeting in the rendezvous store the other rank waited train.dist_timeout_min (an
    hour) in init_process_group for a rank that had already exited."""
    write_tiny_run(tmp_path, n=N_IMAGES)
    started = time.monotonic()
    procs = _ranks_with(tmp_path, {refused: extra})
    try:
        errs = [p.communicate(timeout=90)[1].decode() for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert time.monotonic() - started < 90
    other = 1 - refused
    assert [p.returncode for p in procs] == [2, 2], errs
    assert says in errs[refused] and "error:" in errs[refused], errs[refused][-2000:]
    assert all(len(err.strip().splitlines()) == 1 for err in errs), errs  # each rank its one line
    line = errs[other].strip()
    assert line.startswith(f"visionclip train: error: rank {other} stopped: rank {refused} refused to start (")
    assert says in line, line
    assert not list(tmp_path.glob("checkpoints/*")) and not (tmp_path / "model").exists()
