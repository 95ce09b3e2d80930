"""Fault injection through the public commands on the tiny profile (profiles/tiny.yaml).

SIGKILL lands at a moment the test detects (the first rendered file, the first checkpoint, the
evaluation's embedding bar, the notebook's first rendered image), never after a blind sleep.
Then a plain re-run must finish and end identical to an uninterrupted run: rendered files byte
for byte, trained weights bit for bit, evaluation metrics JSON equal. A corrupted newest
checkpoint must make resume fall back to the previous one with a warning naming it.

Every command runs as a subprocess with OMP_NUM_THREADS=1, the reference included: bit-identical
weights need the same float summation order, and torch's thread count changes it.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parent.parent
PROFILE = "tiny"
ENV = {**{k: v for k, v in os.environ.items() if k != "CI"}, "HF_HUB_OFFLINE": "1", "VISIONCLIP_QUIET": "1",
       "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false"}
VC = [sys.executable, "-m", "visionclip"]
TIMEOUT = 240


def _run(cmd: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, env=env or ENV, cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
    return proc


def _synth(run: Path) -> list[str]:
    return [*VC, "synth", "--profile", PROFILE, "--run-dir", str(run), "--variants", "test"]


def _train(run: Path) -> list[str]:
    return [*VC, "train", "--profile", PROFILE, "--run-dir", str(run)]


def _evaluate(model: Path, data_root: Path, out: Path) -> list[str]:
    return [*VC, "evaluate", "--checkpoint", str(model), "--dataset", "fives", "--data-root", str(data_root),
            "--bootstrap", "200", "--batch-size", "2", "--out-dir", str(out)]


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _temporaries(root: Path) -> list[str]:
    return [p.relative_to(root).as_posix() for p in root.rglob(".*") if p.is_file()]


def _descendants(pid: int) -> list[int]:
    """pid's child processes, recursively (read from /proc: the papermill kernel runs in its own session)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _kill_when(proc: subprocess.Popen, ready, what: str, timeout: float = TIMEOUT) -> None:
    """SIGKILL proc and every process it started as soon as ready() is true."""
    deadline = time.time() + timeout
    while not ready():
        assert proc.poll() is None, f"the command ended (exit {proc.returncode}) before {what}"
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)
    assert proc.poll() is None, f"the command ended before it could be killed at {what}"
    for pid in [proc.pid, *_descendants(proc.pid)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert proc.wait(timeout=30) == -signal.SIGKILL


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """Uninterrupted: render, train, evaluate."""
    ref = tmp_path_factory.mktemp("reference")
    _run(_synth(ref))
    _run(_train(ref))
    _run(_evaluate(ref / "model", ref / "data" / "benchmarks" / "test" / "fives", ref / "eval"))
    return ref


def test_rendering_killed_after_its_first_file_resumes_to_identical_bytes(tmp_path, reference):
    out = tmp_path / "data"
    fundus = out / "corpus" / "Fundus"
    proc = subprocess.Popen(_synth(tmp_path), env=ENV, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _kill_when(proc, lambda: fundus.is_dir() and any(p.suffix == ".jpg" and not p.name.startswith(".")
                                                     for p in fundus.iterdir()), "the first rendered image")
    # rendering's files only: the reference's training also prepared its crops under data/prepared and
    # saved the corpus table under data/corpus_tables
    expected = {rel: data for rel, data in _tree(reference / "data").items()
                if not rel.startswith(("prepared/", "corpus_tables/"))}
    partial = _tree(out)
    assert len(partial) < len(expected), "nothing was left to render after the kill"
    # Whatever exists under a final name is finished: byte-identical to the uninterrupted run.
    for rel, data in partial.items():
        if not rel.rsplit("/", 1)[-1].startswith("."):
            assert data == expected[rel], f"{rel}: a final file differs after the kill"
    _run(_synth(tmp_path))
    assert _tree(out) == expected


def test_training_killed_after_its_first_checkpoint_resumes_bit_identical(tmp_path, reference):
    run = tmp_path / "run"
    shutil.copytree(reference / "data", run / "data")
    checkpoints = run / "checkpoints"
    proc = subprocess.Popen(_train(run), env=ENV, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _kill_when(proc, lambda: checkpoints.is_dir() and any(p.name.startswith("step_") for p in checkpoints.iterdir()),
               "the first checkpoint")
    assert not (run / "model").exists()
    resumed = _run(_train(run))
    assert "'resumed_from': None" not in resumed.stdout, resumed.stdout
    ref, got = load_file(str(reference / "model" / "model.safetensors")), load_file(str(run / "model" / "model.safetensors"))
    assert ref.keys() == got.keys()
    assert all((ref[k] == got[k]).all() for k in ref), "resumed weights differ from the uninterrupted run"

    def losses(path: Path) -> list[tuple[int, float]]:
        return [(r["step"], r["loss"]) for r in map(json.loads, path.read_text().splitlines())]
    assert losses(run / "metrics" / "train.jsonl") == losses(reference / "metrics" / "train.jsonl")
    assert not _temporaries(run / "checkpoints")


def test_evaluation_killed_while_embedding_reruns_to_identical_metrics(tmp_path, reference):
    out = tmp_path / "eval"
    data_root = reference / "data" / "benchmarks" / "test" / "fives"
    env = {**ENV, "VISIONCLIP_QUIET": "0"}  # the progress bar is the signal that embedding has begun
    proc = subprocess.Popen(_evaluate(reference / "model", data_root, out), env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seen = bytearray()

    def read() -> None:
        for chunk in iter(lambda: proc.stderr.read1(256), b""):
            seen.extend(chunk)
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    _kill_when(proc, lambda: b"embed fives" in seen, "the embedding progress bar")
    reader.join(timeout=10)
    assert not (out / "fives.json").exists() and not (out / "predictions_fives.csv").exists()
    assert not out.exists() or not _temporaries(out)
    _run(_evaluate(reference / "model", data_root, out))
    assert json.loads((out / "fives.json").read_text()) == json.loads((reference / "eval" / "fives.json").read_text())
    assert (out / "predictions_fives.csv").read_bytes() == (reference / "eval" / "predictions_fives.csv").read_bytes()


def test_corrupt_newest_checkpoint_falls_back_with_a_warning_through_the_cli(tmp_path, reference):
    run = tmp_path / "run"
    shutil.copytree(reference / "data", run / "data")
    shutil.copytree(reference / "checkpoints", run / "checkpoints")
    shutil.copytree(reference / "metrics", run / "metrics")
    newest, previous = sorted((run / "checkpoints").iterdir(), reverse=True)[:2]
    weights = newest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 3])  # a half-copied file
    proc = _run(_train(run))
    assert f"skipping corrupt checkpoint {newest}" in proc.stderr, proc.stderr[-2000:]
    assert f"'resumed_from': {int(previous.name.split('_')[1])}" in proc.stdout, proc.stdout
    ref, got = load_file(str(reference / "model" / "model.safetensors")), load_file(str(run / "model" / "model.safetensors"))
    assert all((ref[k] == got[k]).all() for k in ref), "weights after the fallback differ from the uninterrupted run"


def test_book_pipeline_killed_mid_notebook_leaves_no_final_notebook_and_resumes(tmp_path, reference):
    run = tmp_path / "run"
    notebooks = run / "notebooks"
    final = notebooks / "01_data_exploration.ipynb"
    cmd = [sys.executable, "-m", "visionclip", "book", "--profile", PROFILE, "--run-dir", str(run),
           "--only", "01", "--no-book"]
    proc = subprocess.Popen(cmd, env=ENV, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    fundus = run / "data" / "corpus" / "Fundus"
    # Notebook 01 renders the data: its first image proves the kernel is mid-notebook.
    _kill_when(proc, lambda: fundus.is_dir() and any(p.suffix == ".jpg" for p in fundus.iterdir()),
               "notebook 01's first rendered image")
    assert not final.exists(), "a partial notebook exists under its final name"
    leftovers = [p.name for p in notebooks.iterdir()] if notebooks.is_dir() else []
    assert all(name.startswith(".") for name in leftovers), leftovers  # hidden temporaries only
    _run(cmd[:-1] + ["--resume", "--no-book"])
    meta = json.loads(final.read_text())["metadata"]["papermill"]
    assert meta["exception"] is None and meta["parameters"]["profile"] == PROFILE
    # The notebook rendered the same data as the uninterrupted `visionclip synth`.
    for part in ("corpus", "benchmarks/test"):
        assert _tree(run / "data" / part) == _tree(reference / "data" / part), part
