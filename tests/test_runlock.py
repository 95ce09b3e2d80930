"""Two jobs on one run directory, and checkpoints that are never silently lost, through the public
commands on the tiny profiles.

The lock: a real `visionclip synth` holds it (frozen with SIGSTOP once its lock file exists, so it
is alive and mid-work for as long as the test needs), and a second command on the same run
directory is refused at once with the holder named, unless it is the same torchrun job. A lock
left by a dead process is taken over with a warning. Checkpoints: a corrupt newest one never
pushes a valid older one out when training saves and prunes. (Every checkpoint corrupt, and
--restart under an elastic restart, are rows of tests/test_bad_inputs.py.)
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_faults import ENV, ROOT, VC  # noqa: E402  (the fault tests' environment)
from test_train import write_tiny_run  # noqa: E402  (the trainer tests' tiny corpus and profile)

from visionclip import cli  # noqa: E402
from visionclip.runlock import JOB_ENV  # noqa: E402

LOCK = "visionclip.lock"


def _synth(run: Path, *extra: str) -> list[str]:
    return ["synth", "--profile", "tiny", "--run-dir", str(run), *extra]


@pytest.fixture()
def holder(tmp_path):
    """A real `visionclip synth` of job torchrun run id 'job-a', frozen while it holds tmp_path/run's lock."""
    run = tmp_path / "run"
    proc = subprocess.Popen([*VC, *_synth(run, "--variants")], env={**ENV, "TORCHELASTIC_RUN_ID": "job-a"},
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while not (run / LOCK).exists():
        assert proc.poll() is None and time.time() < deadline, "the holder never took the lock"
        time.sleep(0.005)
    proc.send_signal(signal.SIGSTOP)
    yield run, proc
    proc.send_signal(signal.SIGCONT)
    assert proc.wait(timeout=60) == 0
    assert not (run / LOCK).exists(), "the holder did not release its lock"


def test_a_second_job_is_refused_at_once_naming_the_holder(holder, monkeypatch, capsys):
    run, proc = holder
    monkeypatch.delenv(JOB_ENV, raising=False)
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    start = time.monotonic()
    assert cli.main(_synth(run, "--benchmarks-only", "--variants")) == 2
    assert time.monotonic() - start < 5
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"visionclip synth: error: {run}: in use by another job (host {socket.gethostname()}, "
                          f"pid {proc.pid}, job torchrun:job-a, since 20"), err
    assert err.endswith(f"wait for it to end, or, if it is no longer running, delete {run / LOCK}") and "\n" not in err
    assert cli.main(["prepare", "--profile", "tiny", "--run-dir", str(run)]) == 2  # prepare asks too
    assert json.loads((run / LOCK).read_text())["pid"] == proc.pid  # the holder's lock is untouched


def test_the_same_torchrun_job_passes(holder, monkeypatch, capsys):
    run, proc = holder
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job-a")  # another rank, or an elastic restart, of job-a
    assert cli.main(_synth(run, "--benchmarks-only", "--variants")) == 0, capsys.readouterr().err
    assert json.loads((run / LOCK).read_text())["pid"] == proc.pid  # still the holder's, not released by us


def test_a_stale_lock_of_a_dead_process_is_taken_over_with_a_warning(tmp_path, monkeypatch):
    monkeypatch.delenv(JOB_ENV, raising=False)
    dead = subprocess.Popen(["true"])
    dead.wait()
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK).write_text(json.dumps({"host": socket.gethostname(), "pid": dead.pid, "job": "torchrun:old",
                                        "since": "2026-01-01 00:00:00 UTC"}))
    with pytest.warns(RuntimeWarning, match=rf"{LOCK}: taking over the stale lock of a job that is no longer "
                                            rf"running \(host .*, pid {dead.pid}, job torchrun:old"):
        assert cli.main(_synth(run, "--benchmarks-only", "--variants")) == 0
    assert not (run / LOCK).exists()  # released at the end


# ------------------------------------------------------------------------------ checkpoints

def test_corrupt_newer_checkpoints_never_push_out_valid_ones(tmp_path, capsys):
    """A valid step 2 and corrupt (half-copied) steps 4 and 6: training resumes from 2, saves step 3
    and prunes to two. The corrupt ones must not count as the two kept, so 2 and 3 stay (ranked by step
    alone, 3, the checkpoint just written, and 2 were deleted, leaving only corrupt ones)."""
    from visionclip.config import load_profile
    from visionclip.training.loop import train_clip

    run = tmp_path / "run"
    profile = write_tiny_run(run, n=40, epochs=1.5, checkpoint_every=2, val_every=100)
    train_clip(load_profile(profile, {"train.max_steps": 2}), run, progress=False)
    checkpoints = run / "checkpoints"
    for step in (4, 6):
        corrupt = checkpoints / f"step_000000{step}"
        shutil.copytree(checkpoints / "step_0000002", corrupt)
        weights = corrupt / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:100])
    argv = ["train", "--profile", str(profile), "--run-dir", str(run), "--no-progress", "--set", "train.max_steps=3"]
    with pytest.warns(RuntimeWarning, match="skipping corrupt checkpoint"):
        assert cli.main(argv) == 0
    assert "'resumed_from': 2" in capsys.readouterr().out
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step_0000002", "step_0000003", "step_0000004",
                                                              "step_0000006"]
