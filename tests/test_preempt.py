"""Preemption through the public commands on the tiny profile: SIGTERM sent to a real rendering,
prepare or book process (to its whole process group, as Slurm does, so pool workers get it too)
once it is demonstrably mid-way. It must exit with 75 and a message giving the command that
resumes, keep every finished file intact, and that command must end byte-identical to an
uninterrupted run.

Two knobs keep it to seconds: prepare runs with 2-image shards (data.prepare.SHARD_IMAGES, set by a
wrapper around visionclip.cli.main, since no profile key sets it), and the book runs two tiny
notebooks of its own (one sleeps long enough to be signalled inside) instead of the book's five.

Training with DataLoader workers, which get the group's SIGTERM too: it stops at a step with its
checkpoint (75), and a run whose training raises with its persistent loader alive still exits.
"""
from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_faults import ENV, ROOT, _tree  # noqa: E402  (the fault tests' environment and helpers)
from test_train import N_IMAGES, write_tiny_run  # noqa: E402  (a 40-image corpus and its profile)

from visionclip import cli  # noqa: E402
from visionclip.data import prepare as prep  # noqa: E402
from visionclip.preempt import PREEMPTED_EXIT  # noqa: E402
from visionclip.report import pipeline  # noqa: E402

PROFILE = "tiny"
SHARD_IMAGES = 2
WRAPPER = """import sys
from visionclip.data import prepare
from visionclip.report import pipeline
import functools, pathlib
prepare.SHARD_IMAGES = int(sys.argv[1])
if sys.argv[2]:
    pipeline.run = functools.partial(pipeline.run, notebook_dir=pathlib.Path(sys.argv[2]))
from visionclip.cli import main
sys.exit(main(sys.argv[3:]))
"""


def _synth(run: Path) -> list[str]:  # the corpus only (no --variants), in two worker processes
    return ["synth", "--profile", PROFILE, "--run-dir", str(run), "--variants", "--set", "synth.workers=2"]


def _prepare(run: Path) -> list[str]:
    return ["prepare", "--profile", PROFILE, "--run-dir", str(run), "--workers", "2", "--no-progress"]


def _finished(folder: Path) -> bool:
    return folder.is_dir() and any(not p.name.startswith(".") for p in folder.iterdir())


def _sigterm_when(argv: list[str], ready, what: str, notebook_dir: Path | None = None) -> tuple[int, str]:
    """Run `visionclip argv` in a session of its own, SIGTERM its process group once ready() is true;
    (exit status, stderr)."""
    cmd = [sys.executable, "-c", WRAPPER, str(SHARD_IMAGES), str(notebook_dir or ""), *argv]
    proc = subprocess.Popen(cmd, env=ENV, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.time() + 120
    while not ready():
        assert proc.poll() is None, f"ended (exit {proc.returncode}) before {what}: {proc.stderr.read()[-2000:]}"
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err


def _stopped_line(err: str, command: str) -> str:
    """The message, which is the last line (the book's kernels may log before it) and one line."""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines and lines[-1].startswith(f"visionclip {command}: stopped: SIGTERM received: "), err
    assert command == "book" or len(lines) == 1, err
    return lines[-1]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """Uninterrupted: the tiny corpus rendered, then prepared in 2-image shards."""
    ref = tmp_path_factory.mktemp("reference")
    assert cli.main(_synth(ref)) == 0
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(prep, "SHARD_IMAGES", SHARD_IMAGES)
        assert cli.main(_prepare(ref)) == 0
    return ref


def test_sigterm_mid_rendering_exits_75_keeps_finished_images_and_resumes_identical(tmp_path, reference):
    fundus = tmp_path / "data" / "corpus" / "Fundus"
    rc, err = _sigterm_when(_synth(tmp_path), lambda: _finished(fundus), "the first rendered image")
    assert rc == PREEMPTED_EXIT, err
    line = _stopped_line(err, "synth")
    assert f"stopped rendering {fundus} with " in line, line
    resume = line.split("; resume with: ")[1]
    assert resume == f"visionclip synth --profile tiny --run-dir {tmp_path} --variants --set synth.workers=2"
    expected = {k: v for k, v in _tree(reference / "data").items() if k.startswith("corpus/")}
    partial = _tree(tmp_path / "data")
    assert 0 < len(partial) < len(expected) and "corpus/manifest.json" not in partial
    assert all(data == expected[rel] for rel, data in partial.items()), "a finished file differs"
    assert not (tmp_path / "visionclip.lock").exists()
    assert cli.main(resume.split()[1:]) == 0
    assert _tree(tmp_path / "data") == expected


def test_sigterm_mid_prepare_exits_75_keeps_finished_shards_and_resumes_identical(tmp_path, reference):
    shutil.copytree(reference / "data" / "corpus", tmp_path / "data" / "corpus")
    folder = tmp_path / "data" / "prepared" / "32px"
    rc, err = _sigterm_when(_prepare(tmp_path), lambda: (folder / "shard_00000.json").exists(),
                            "the first prepared shard")
    assert rc == PREEMPTED_EXIT, err
    line = _stopped_line(err, "prepare")
    assert f"stopped preparing {folder} with " in line and " of 32 shards finished" in line, line
    expected = _tree(reference / "data" / "prepared")
    partial = {rel: data for rel, data in _tree(tmp_path / "data" / "prepared").items()}
    assert len(partial) < len(expected) and "32px/bad_images.csv" not in partial
    assert all(data == expected[rel] for rel, data in partial.items()), "a finished shard differs"
    resume = line.split("; resume with: ")[1]
    assert resume == f"visionclip prepare --profile tiny --run-dir {tmp_path} --workers 2 --no-progress"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(prep, "SHARD_IMAGES", SHARD_IMAGES)
        assert cli.main(resume.split()[1:]) == 0
    assert _tree(tmp_path / "data" / "prepared") == expected


def _notebook(path: Path, code: str) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell('profile: str = "cpu"  # profile\nrun_dir: str = ""  # run dir',
                                          metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell(code)]
    for i, c in enumerate(nb.cells):
        c["id"] = f"cell-{i}"
    nbformat.write(nb, path)


def test_sigterm_mid_notebook_finishes_it_then_exits_75_and_resume_runs_the_rest(tmp_path, capsys):
    nb_dir = tmp_path / "notebooks"
    nb_dir.mkdir()
    started = tmp_path / "started"
    # the first notebook says it is running, then works on for a while (long enough to be signalled)
    _notebook(nb_dir / "01_slow.ipynb", f"import pathlib, time\npathlib.Path({str(started)!r}).touch()\n"
                                        "time.sleep(1)\nprint('01 finished')")
    _notebook(nb_dir / "02_next.ipynb", "print('02 finished')")
    run = tmp_path / "run"
    argv = ["book", "--profile", PROFILE, "--run-dir", str(run), "--no-book"]
    rc, err = _sigterm_when(argv, started.exists, "the first notebook's kernel", notebook_dir=nb_dir)
    assert rc == PREEMPTED_EXIT, err
    line = _stopped_line(err, "book")
    assert "stopped before notebook 02_next (2 of 2); the 1 before it are executed" in line, line
    assert line.endswith(f"; resume with: visionclip book --profile tiny --run-dir {run} --no-book --resume")
    executed = run / "notebooks"
    assert sorted(p.name for p in executed.iterdir()) == ["01_slow.ipynb"]  # finished, under its final name
    assert "01 finished" in executed.joinpath("01_slow.ipynb").read_text()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pipeline, "run", functools.partial(pipeline.run, notebook_dir=nb_dir))
        assert cli.main(line.split("; resume with: ")[1].split()[1:]) == 0
    out = capsys.readouterr().out
    assert "01_slow: up to date, skipped (--resume)" in out and "02_next: done" in out
    # beside the notebooks, the finished run's provenance.json (report.provenance)
    assert sorted(p.name for p in executed.glob("*.ipynb")) == ["01_slow.ipynb", "02_next.ipynb"]


# ------------------------------------------------------------------ DataLoader workers and SIGTERM

def _worker(ready) -> None:  # a DataLoader worker's view: the initializer, then work
    from visionclip.preempt import stop_signals_from_parent_only
    stop_signals_from_parent_only()
    ready.set()
    time.sleep(60)


def test_a_worker_ignores_a_stop_signal_from_others_and_ends_on_its_parents():
    import multiprocessing as mp
    ctx = mp.get_context("fork")
    ready = ctx.Event()
    child = ctx.Process(target=_worker, args=(ready,), daemon=True)
    child.start()
    try:
        assert ready.wait(30)
        for name in ("SIGTERM", "SIGUSR1"):  # sent by another process, as a scheduler signals the process group
            subprocess.run([sys.executable, "-c", f"import os, signal; os.kill({child.pid}, signal.{name})"],
                           check=True)
        time.sleep(0.5)
        assert child.is_alive(), f"the worker died of another process's signal (exit {child.exitcode})"
        child.terminate()  # its parent's SIGTERM: what torch's shutdown and multiprocessing's atexit send
        child.join(10)
        assert child.exitcode == 0
    finally:
        if child.is_alive():
            child.kill()


LEFT_ALIVE = """import sys, torch
from torch.utils.data import default_collate
from visionclip.training.loop import make_loader
loader = make_loader(list(range(16)), batch_size=2, collate=default_collate, num_workers=2,
                     device=torch.device("cpu"), seed_key=(0,), persistent=True)
next(iter(loader))
print("workers started", flush=True)
raise RuntimeError("left the loader alive")
"""


def _exits_within(argv: list[str], timeout: float, stdout=subprocess.PIPE) -> tuple[subprocess.Popen, str, str]:
    """Run argv in a session of its own; (process, stdout, stderr), or fail (all killed) past timeout."""
    proc = subprocess.Popen(argv, env=ENV, cwd=ROOT, stdout=stdout, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"still running after {timeout} s: interpreter exit hung on its DataLoader workers")
    return proc, out, err


def test_a_loader_left_alive_by_an_error_does_not_hang_interpreter_exit():
    """make_loader outside the trainer (the benchmarks use it): no finally shuts its workers down, and
    multiprocessing's atexit SIGTERMs and joins them; workers deaf to it hung here."""
    proc, out, err = _exits_within([sys.executable, "-c", LEFT_ALIVE], 60)
    assert "workers started" in out and "RuntimeError: left the loader alive" in err, err[-2000:]
    assert proc.returncode == 1


# SIGTERM to the whole process group of a training run with DataLoader workers (Slurm's preemption;
# torchrun kills each rank's group), and an error inside training with the persistent loader alive.

TRAIN_SETS = ["--set", "train.num_workers=2", "--set", "train.epochs=50", "--set", "train.checkpoint_every=1000",
              "--set", "train.val_every=1000"]
FAIL_AT_STEP = """import sys
from visionclip.training.tasks import ClipTask
real, calls = ClipTask.step_loss, [0]
def step_loss(self, *a, **k):
    calls[0] += 1
    if calls[0] == 3:
        raise RuntimeError("injected failure inside training")
    return real(self, *a, **k)
ClipTask.step_loss = step_loss
from visionclip.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _group_gone(pgid: int, within: float) -> bool:
    """No live process (zombies aside: their reaping is init's business) left in process group pgid."""
    def alive() -> bool:
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
        return False

    deadline = time.monotonic() + within
    while alive():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_sigterm_to_a_training_runs_process_group_stops_it_at_a_checkpoint_with_75(tmp_path):
    run = tmp_path / "run"
    write_tiny_run(run, n=N_IMAGES)
    log = run / "metrics" / "train.jsonl"
    argv = [sys.executable, "-m", "visionclip", "train", "--profile", str(run / "tiny.yaml"), "--run-dir", str(run),
            "--no-progress", *TRAIN_SETS]
    proc = subprocess.Popen(argv, env=ENV, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not (log.is_file() and log.read_text().count("\n") >= 2):  # mid-training, workers running
            assert proc.poll() is None, f"ended (exit {proc.returncode}) before training: {proc.stderr.read()[-2000:]}"
            assert time.monotonic() < deadline, "timed out waiting for training steps"
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGTERM)  # the trainer and its DataLoader workers alike
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == PREEMPTED_EXIT, err[-3000:]
    line = _stopped_line(err, "train")
    step = int(line.split("stopped training clip at step ")[1].split()[0])
    assert 2 <= step < 200, line
    assert (run / "checkpoints" / f"step_{step:07d}" / "state.json").is_file()
    assert not (run / "model").exists(), "a stopped run wrote a final model"
    assert _group_gone(proc.pid, 10), "DataLoader workers outlived the stopped trainer"


def test_an_error_inside_training_with_a_persistent_loader_alive_exits_promptly(tmp_path):
    run = tmp_path / "run"
    write_tiny_run(run, n=N_IMAGES)
    argv = [sys.executable, "-c", FAIL_AT_STEP, "train", "--profile", str(run / "tiny.yaml"), "--run-dir", str(run),
            "--no-progress", *TRAIN_SETS]
    proc, _, err = _exits_within(argv, 90, stdout=subprocess.DEVNULL)
    assert proc.returncode == 1 and "RuntimeError: injected failure inside training" in err, err[-3000:]
    assert _group_gone(proc.pid, 10), "DataLoader workers outlived the failed trainer"
