"""Preemption through the public commands on the tiny profile: SIGTERM sent to a real rendering,
prepare or book process (to its whole process group, as Slurm does, so pool workers get it too)
once it is demonstrably mid-way. It must exit with 75 and a message giving the command that
resumes, keep every finished file intact, and that command must end byte-identical to an
uninterrupted run.

Two knobs keep it to seconds: prepare runs with 2-image shards (data.prepare.SHARD_IMAGES, set by a
wrapper around visionclip.cli.main, since no profile key sets it), and the book runs two tiny
notebooks of its own (one sleeps long enough to be signalled inside) instead of the book's five.
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
