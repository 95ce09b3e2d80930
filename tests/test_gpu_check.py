"""The GPU check script's smoke run (issue 22): the paper model's step on prepared shards, on the CPU,
so that `make gpu-check` works the day a GPU is at hand. Small inputs keep it short: 64 px images,
captions cut to 16 tokens (the text tower, 12 BERT layers, is most of a step's work on the CPU), and
one timed step after one warm-up per measurement."""
from __future__ import annotations

import re
import subprocess
import sys

from test_train import ENV, ROOT


def test_gpu_check_smoke_run_on_the_cpu():
    out = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--device", "cpu", "--steps", "1", "--warmup", "1",
                          "--images", "40", "--batch", "4", "--set", "train.image_size=64",
                          "--set", "model.context_length=16", "--set", "train.num_workers=0"],
                         cwd=ROOT, env={**ENV, "OMP_NUM_THREADS": "2"}, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout
    ceiling = float(re.search(r"ceiling \(\w+, channels_last\): ([\d.]+) img/s", text).group(1))
    fed = float(re.search(r"data path .*: ([\d.]+) img/s = ([\d.]+) of the ceiling", text).group(1))
    assert ceiling > 0 and fed > 0, text
    share = float(re.search(r"= ([\d.]+) of the \w+ peak", text).group(1))
    assert 0 < share < 1.5, text  # a step cannot do much more than the device's matmul peak
    assert "peak GPU memory" not in text  # said only on a GPU
