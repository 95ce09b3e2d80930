"""Where a run's artifacts live (ARCHITECTURE.md "Run directory"), named once."""
from __future__ import annotations

from pathlib import Path

from .config import Profile

STANDIN_BENCHMARKS = ("messidor2", "fives", "refuge")
VARIANTS = ("test", "dev", "seen")


def corpus_dir(profile: Profile, run_dir: str | Path) -> Path:
    """The real SynFundus-1M release when data.corpus_root is set, else the rendered stand-in."""
    return Path(profile.data.corpus_root) if profile.data.corpus_root else Path(run_dir) / "data" / "corpus"


def benchmark_dir(profile: Profile, run_dir: str | Path, dataset: str, variant: str = "test") -> Path | None:
    """The real dataset root when configured (for the test variant), else the rendered stand-in.

    Returns None for a dataset that has no stand-in and no configured root (the original MESSIDOR).
    """
    real = getattr(profile.data, f"{dataset}_root", "")
    if real and variant == "test":
        return Path(real)
    if dataset not in STANDIN_BENCHMARKS:
        return None
    return Path(run_dir) / "data" / "benchmarks" / variant / dataset


def is_standin(profile: Profile, dataset: str) -> bool:
    return not getattr(profile.data, f"{dataset}_root", "")
