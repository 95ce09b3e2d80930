"""Scale-out: two gloo ranks under the torchrun environment follow the single-process run."""
from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

from test_train import ENV, N_IMAGES, ROOT, _weights, write_tiny_run

DDP_WORKER = r"""
import sys, torch
import visionclip.data.prepare as prepare
import visionclip.model as vm
from visionclip.config import load_profile
from visionclip.training.loop import train_clip

real_build = vm.build_model
def deterministic_build(*a, **k):
    # Same maths on 1 or 2 ranks: no dropout (its masks depend on the rank's RNG) and BatchNorm
    # frozen in eval (its batch statistics are per rank; SyncBatchNorm does not run on CPU).
    model = real_build(*a, **k)
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()
            m.train = lambda mode=True, m=m: m
    return model
vm.build_model = deterministic_build
prepare.SHARD_IMAGES = 8  # with train.preload: five shards, split over the ranks
train_clip(load_profile(sys.argv[1], {"train.epochs": 1, "train.checkpoint_every": 100, "train.val_every": 100}), sys.argv[2], progress=False)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("preload", ["false", "true"])
def test_two_gloo_ranks_follow_the_single_process_loss_curve(tmp_path, preload):
    """Also with train.preload: each rank prepares its shards of the corpus, then both read all of them."""
    one, two = tmp_path / "one", tmp_path / "two"
    write_tiny_run(one, n=N_IMAGES, preload=preload)
    write_tiny_run(two, n=N_IMAGES, preload=preload)
    port = _free_port()
    procs = [subprocess.Popen([sys.executable, "-c", DDP_WORKER, str(one / "tiny.yaml"), str(one)],
                              env=ENV, cwd=ROOT, stderr=subprocess.PIPE)]
    for rank in (0, 1):
        env = {**ENV, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen([sys.executable, "-c", DDP_WORKER, str(two / "tiny.yaml"), str(two)],
                                      env=env, cwd=ROOT, stderr=subprocess.PIPE))
    for p in procs:
        _, err = p.communicate(timeout=180)
        assert p.returncode == 0, err.decode()[-3000:]
    rows1 = [json.loads(line) for line in (one / "metrics" / "train.jsonl").read_text().splitlines()]
    rows2 = [json.loads(line) for line in (two / "metrics" / "train.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows1] == [r["step"] for r in rows2] == [1, 2, 3, 4]
    # Same global batch, gathered negatives: equal up to float summation order (measured: loss
    # differences <= 2.4e-7 over 4 steps, weights <= 1.7e-6; bounds below leave room).
    print("loss |1 rank - 2 ranks| per step:", [abs(a["loss"] - b["loss"]) for a, b in zip(rows1, rows2)])
    for a, b in zip(rows1, rows2):
        assert b["loss"] == pytest.approx(a["loss"], abs=1e-5), (a, b)
    if preload == "true":
        shards = sorted(p.name for p in (two / "data" / "prepared" / "32px").glob("shard_*.npy"))
        assert shards == [f"shard_{k:05d}.npy" for k in range(5)]
    w1, w2 = _weights(one), _weights(two)
    weight_diff = max((w1[k] - w2[k]).abs().max().item() for k in w1)
    print("max |weight difference|:", weight_diff)
    assert weight_diff < 1e-4
