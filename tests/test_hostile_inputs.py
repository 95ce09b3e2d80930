"""Issue 24 beyond the one-line CLI cases of test_bad_inputs: a real full and a real read-only file
system, a failing DDP rank, BatchNorm statistics a forward overflowed, 16-bit images, oversized
photographs in predict, and the ablations' copies."""
from __future__ import annotations

import contextlib
import errno
import io
import os
import shutil
import socket
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_bad_inputs import png_header  # noqa: E402
from test_eval_fixtures import fundus_image, save_tiny_model  # noqa: E402
from test_train import ENV, ROOT, write_tiny_run  # noqa: E402

from visionclip import cli  # noqa: E402


def _cli(argv: list[str]) -> tuple[int, list[str]]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = cli.main(argv)
    return rc, [ln for ln in err.getvalue().splitlines() if ln.strip()]


@contextlib.contextmanager
def _mounted(target: Path, *options: str):
    """`mount` as root; skips where this machine does not allow it (a container, not root)."""
    target.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", *options, str(target)] if options[0] != "--bind" else
                          ["mount", *options, str(target), str(target)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount here ({done.stderr.decode().strip()}); test_bad_inputs injects the error")
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], capture_output=True)


# ------------------------------------------------------------------------- real disks

def test_training_on_a_full_tmpfs_says_so_in_one_line(tmp_path):
    """A 1 MiB tmpfs holds the corpus, not the first checkpoint: the real ENOSPC, not an injected one."""
    with _mounted(tmp_path / "small", "-t", "tmpfs", "-o", "size=1m", "tmpfs") as small:
        run = small / "run"
        profile = write_tiny_run(run, n=40, epochs=0.5, checkpoint_every=1, val_every=100)
        rc, lines = _cli(["train", "--profile", str(profile), "--run-dir", str(run), "--no-progress"])
        assert rc == 2 and len(lines) == 1, lines
        assert lines[0].startswith(f"visionclip train: error: {run}/") and \
            lines[0].endswith(": No space left on device"), lines[0]
        left = [str(p) for p in run.rglob("*") if ".tmp" in p.name]
        assert not left and not (run / "model").exists(), left


PREPARE_AFTER_THE_CHECK = r"""
import shutil, sys
from collections import namedtuple
from visionclip import cli
shutil.disk_usage = lambda path: namedtuple("U", "total used free")(1 << 40, 0, 1 << 40)  # another job fills it later
sys.exit(cli.main(sys.argv[1:]))
"""


def test_a_disk_filled_while_preparing_is_an_error_not_a_sigbus(tmp_path):
    """prepare checks the free space first; a disk another job fills afterwards used to kill it with SIGBUS
    (a memory-mapped shard's page with no block behind it): its blocks are now reserved up front."""
    with _mounted(tmp_path / "small", "-t", "tmpfs", "-o", "size=1m", "tmpfs") as small:
        run = small / "run"
        profile = write_tiny_run(run, n=40)
        profile.write_text(profile.read_text().replace("image_size: 32", "image_size: 128"))  # 2.2 MB of crops
        done = subprocess.run([sys.executable, "-c", PREPARE_AFTER_THE_CHECK, "prepare", "--profile", str(profile),
                               "--run-dir", str(run), "--workers", "1", "--no-progress"],
                              env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
        assert done.stderr.strip() == (f"visionclip prepare: error: {run}/data/prepared/128px/shard_00000.npy: "
                                       "No space left on device"), done.stderr
        assert not [p for p in run.rglob("*") if ".tmp" in p.name]


def test_writing_to_a_read_only_mount_says_so_in_one_line(tmp_path):
    run = tmp_path / "run"
    profile = write_tiny_run(run, n=24)
    with _mounted(run, "--bind"):
        subprocess.run(["mount", "-o", "remount,ro,bind", str(run)], check=True)
        rc, lines = _cli(["synth", "--profile", str(profile), "--run-dir", str(run), "--benchmarks-only",
                          "--variants", "test"])
    assert rc == 2 and len(lines) == 1, lines
    assert lines[0].startswith(f"visionclip synth: error: {run}/") and lines[0].endswith(": Read-only file system"), \
        lines[0]


# ------------------------------------------------------------------------- DDP: a failing rank

DDP_FAILING_RANK = r"""
import errno, os, pathlib, sys
real = pathlib.Path.write_bytes
def full_disk(self, data):  # only rank 0 writes checkpoints: its disk is full
    if "checkpoints" in str(self):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return real(self, data)
if os.environ["RANK"] == "0":
    pathlib.Path.write_bytes = full_disk
from visionclip.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_rank_that_cannot_write_releases_its_peer_with_one_line_each(tmp_path):
    profile = write_tiny_run(tmp_path, n=40, epochs=0.5, checkpoint_every=1, val_every=100)
    port, procs = _free_port(), []
    started = time.monotonic()
    for rank in (0, 1):
        env = {**ENV, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
               "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen([sys.executable, "-c", DDP_FAILING_RANK, "train", "--profile", str(profile),
                                       "--run-dir", str(tmp_path), "--no-progress"],
                                      env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
    errs, ended = [], []
    for p in procs:  # rank 0 first: the peer must follow it within seconds
        errs.append(p.communicate(timeout=240)[1].decode())
        ended.append(time.monotonic())
    for rank, (p, err) in enumerate(zip(procs, errs)):
        lines = [ln for ln in err.splitlines() if ln.strip()]
        print(f"rank {rank}: exit {p.returncode}: {err.strip()[-600:]}")
        assert p.returncode == 2 and len(lines) == 1 and lines[0].startswith("visionclip train: error: "), err
    assert "No space left on device" in errs[0] and "rank 1 stopped: another rank left the run" in errs[1], errs
    print(f"peer released {ended[1] - ended[0]:.1f} s after the failing rank exited; {ended[1] - started:.0f} s in all")
    assert ended[1] - ended[0] < 30  # the collective timeout is train.dist_timeout_min, an hour


# ------------------------------------------------------------------------- BatchNorm statistics

class _Overflowing(torch.nn.Module):
    """Linear -> BatchNorm1d -> Linear; a large enough input overflows the batch variance to inf."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 1))

    def forward(self, x):
        return self.net(x).sum()


def test_norm_buffers_see_and_undo_an_overflowing_forward():
    from visionclip.training.guard import NonFiniteGuard, NormBuffers

    model = _Overflowing().train()
    norms = NormBuffers(model)
    assert norms and len(norms.stats) == 2 and len(norms.counters) == 1
    model(torch.randn(16, 4))  # one ordinary step: statistics move, stay finite
    norms.snapshot()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert not bool(norms.bad())

    loss = model(torch.full((16, 4), 3e38) * torch.linspace(-1, 1, 16)[:, None])  # the forward overflows
    flag = norms.bad()
    assert flag.dtype == torch.bool and flag.dim() == 0  # a tensor the loop fuses with its other flags
    assert bool(flag) and not torch.isfinite(model.net[1].running_var).all()
    guard = NonFiniteGuard(max_in_a_row=3)
    if guard.record(bool(flag) or not torch.isfinite(loss).item(), step=2, what="loss, gradient or BatchNorm statistics"):
        norms.restore()
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the skipped step left no trace
    assert not bool(norms.bad())


def test_norm_buffers_of_a_model_without_batchnorm_cost_nothing():
    from visionclip.training.guard import NormBuffers

    norms = NormBuffers(torch.nn.Linear(3, 2))
    norms.snapshot(); norms.restore()
    assert not norms and not bool(norms.bad())


# ------------------------------------------------------------------------- images

def test_sixteen_bit_images_are_scaled_without_a_float64_copy():
    from visionclip.data.transforms import to_rgb

    h, w = 1500, 2000
    levels = (np.arange(h * w, dtype=np.uint32).reshape(h, w) * 37 % 4096).astype(np.uint16)  # 12-bit camera
    img = Image.fromarray(levels)
    assert img.mode == "I;16"
    tracemalloc.start()
    rgb = to_rgb(img)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    # The image in float64 (and its clipped copy) was 16 bytes a pixel: 48 MB here.
    assert peak < 6 * h * w, f"{peak / 1e6:.1f} MB for a {h * w / 1e6:.0f} MP image"
    expected = np.clip(levels.astype(np.float64) * (255.0 / levels.max()), 0, 255).astype(np.uint8)
    got = np.asarray(rgb)
    assert rgb.mode == "RGB" and np.array_equal(got[..., 0], expected) and np.array_equal(got[..., 2], expected)


def test_predict_skips_a_photograph_larger_than_any_fundus_camera_takes(tmp_path):
    model = tmp_path / "model"
    save_tiny_model(model, image_size=32)
    photos = tmp_path / "photos"
    fundus_image(photos / "eye.jpg", (48, 40))
    (photos / "scan.png").write_bytes(png_header(9000, 9000))  # 81 MP: PIL would only warn
    out = tmp_path / "pred.csv"
    rc, lines = _cli(["predict", "--checkpoint", str(model), "--classes", "normal", "glaucoma", "--language", "en",
                      "--out", str(out), str(photos)])
    assert rc == 0
    assert [ln for ln in lines if "scan.png" in ln] == [
        f"visionclip predict: skipped {photos / 'scan.png'}: 9000 x 9000 px (81 MP) is larger than any fundus "
        "photograph (at most 50 MP are decoded)"], lines
    import pandas as pd
    df = pd.read_csv(out)
    assert df.set_index("path").loc[str(photos / "scan.png"), "status"].startswith("unreadable: ")


# ------------------------------------------------------------------------- saved models as one unit

def test_a_save_that_fails_leaves_the_previous_model_whole(tmp_path):
    from visionclip.model import VisionCLIP

    from visionclip.text import CaptionTokenizer

    model, tok = save_tiny_model(tmp_path / "model", image_size=32)
    before = {p.name: p.read_bytes() for p in (tmp_path / "model").iterdir()}
    tokens = tok.tokens()
    other = CaptionTokenizer.from_tokens(tokens[:-2] + tokens[-2:][::-1])  # another save's, same size
    with mock.patch("visionclip.model._save_weights", side_effect=OSError(errno.ENOSPC, "x", "weights")):
        with pytest.raises(OSError):
            model.save_pretrained(tmp_path / "model", other)  # the tokenizer is written, the weights fail
    assert {p.name: p.read_bytes() for p in (tmp_path / "model").iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temporary directory left
    VisionCLIP.from_pretrained(tmp_path / "model")
    model.save_pretrained(tmp_path / "model", tok)  # and a save that succeeds replaces it whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


# ------------------------------------------------------------------------- the ablations' copies

def test_ablation_copies_are_atomic_and_a_short_copy_is_made_again(tmp_path):
    from visionclip.report.ablations.data import _link_or_copy

    src = tmp_path / "src.jpg"
    src.write_bytes(os.urandom(50_000))
    dst = tmp_path / "out" / "src.jpg"
    dst.parent.mkdir()
    dst.write_bytes(src.read_bytes()[:1000])  # cut short by an interrupted copy of an older version
    no_links = mock.patch("os.link", side_effect=OSError(errno.EXDEV, os.strerror(errno.EXDEV)))
    with no_links:
        _link_or_copy(src, dst)
    assert dst.read_bytes() == src.read_bytes() and not os.path.samefile(src, dst)

    def half_then_full(a, b, *args, **kwargs):  # a full disk half way through the copy
        Path(b).write_bytes(Path(a).read_bytes()[:25_000])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    other = tmp_path / "out" / "other.jpg"
    with no_links, mock.patch("shutil.copyfile", half_then_full), pytest.raises(OSError) as info:
        _link_or_copy(src, other)
    assert info.value.filename == str(other) and info.value.errno == errno.ENOSPC
    assert sorted(p.name for p in other.parent.iterdir()) == ["src.jpg"]  # nothing under the final name
