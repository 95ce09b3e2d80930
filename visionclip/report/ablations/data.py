"""The rendered data every ablation variant shares: the ablation corpus and its nested subsets,
the benchmark renderings, and the non-fundus frames of kinds the corpus never contained."""
from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path
from typing import Mapping

import pandas as pd

from ...config import Profile
from ...errors import ConfigError, DataError
from ...io import atomic_path
from ...paths import STANDIN_BENCHMARKS, RunLayout
from ...seeding import rng


def _link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link `src` to `dst`, or copy it atomically (a temporary sibling, fsynced, renamed) where
    links cannot be made. An existing `dst` is kept only when it is `src` or as long as it: a copy
    cut short by an older, non-atomic version is made again, not checksummed as valid."""
    if dst.exists() and (os.path.samefile(src, dst) or dst.stat().st_size == src.stat().st_size):
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.unlink(missing_ok=True)
    try:
        os.link(src, dst)
    except OSError:  # another file system: a copy is the same bytes
        with atomic_path(dst) as tmp:
            shutil.copyfile(src, tmp)


def subset_corpus(profile: Profile, full_dir: str | Path, out_dir: str | Path, size: int) -> Path:
    """The first `size` images of the rendered corpus as a corpus of its own.

    Label row and image i are pure functions of (seed, i), so the first n images of a corpus are
    exactly a corpus of size n: the images are hard-linked and `render_corpus` (which skips files
    that exist) writes the CSVs and the manifest, byte-identical to rendering size n from scratch.
    """
    from ...synth.writers import render_corpus
    from ...synth.labels import file_name_for
    from ...synth.writers import stamp_corpus

    full_dir, out_dir = Path(full_dir), Path(out_dir)
    if size > profile.synth.corpus_size:
        raise ConfigError(f"subset of {size} images: the ablation corpus has only {profile.synth.corpus_size}")
    small = dataclasses.replace(profile, synth=dataclasses.replace(profile.synth, corpus_size=size))
    stamp_corpus(small, full_dir, write=False)   # the full corpus was rendered with these settings,
    stamp_corpus(small, out_dir)                 # and the subset claims them before its images are linked
    for i in range(size):
        name = file_name_for(i)
        src = full_dir / "Fundus" / name
        if not src.is_file():
            raise DataError(f"{src}: missing; render the full corpus before taking its first {size} images")
        _link_or_copy(src, out_dir / "Fundus" / name)
    return render_corpus(small, out_dir, progress=False)


def prepare_ablation_data(profile: Profile, run_dir: str | Path, grid: Mapping,
                          n_nonfundus: int = 0) -> dict[str, Path]:
    """Render (resumably) everything the variants share; returns {name: root}."""
    from ...synth.writers import render_benchmarks, render_corpus
    from ...synth.nonfundus import RESERVED_KINDS
    from ...synth.writers import render_nonfundus

    layout = RunLayout(run_dir)
    roots = {"corpus": render_corpus(profile, layout.ablation_corpus())}
    for v in grid.values():
        if v.corpus_size is not None:
            roots[f"corpus_{v.corpus_size}"] = subset_corpus(profile, roots["corpus"],
                                                             layout.ablation_corpus(v.corpus_size), v.corpus_size)
    for variant in ("test", "seen"):
        for ds, root in render_benchmarks(profile, layout.ablation_benchmarks(variant), variant).items():
            roots[f"{ds}/{variant}"] = root
    if n_nonfundus:
        roots["nonfundus"] = render_nonfundus(layout.ablation_nonfundus, n_nonfundus,
                                              profile.synth.benchmark_test_seed, RESERVED_KINDS,
                                              profile.synth.render_size)
    return roots


@dataclasses.dataclass(frozen=True)
class FrameRecord:
    """An image for the fundus / not-fundus test (label 1 = fundus photograph)."""
    path: Path
    label: int
    kind: str


def nonfundus_set(run_dir: str | Path, seed: int, n_fundus: int | None = None) -> list[FrameRecord]:
    """The rendered reserved-kind non-fundus frames mixed with held-out fundus photographs.

    The fundus images are a seeded draw (as many as there are non-fundus frames unless `n_fundus`)
    from the held-out-camera test renderings of all three sets; the order is a seeded shuffle.
    """
    from ...data.benchmarks import load_records

    layout = RunLayout(run_dir)
    root = layout.ablation_nonfundus
    labels = root / "labels.csv"
    if not labels.is_file():
        raise DataError(f"{labels}: missing; render the non-fundus frames first (prepare_ablation_data)")
    frames = pd.read_csv(labels)
    non = [FrameRecord(root / "images" / f, 0, k) for f, k in zip(frames.file_name, frames.kind)]
    pool = [r for ds in STANDIN_BENCHMARKS for r in load_records(ds, layout.ablation_benchmarks("test") / ds)]
    n_fundus = len(non) if n_fundus is None else n_fundus
    if n_fundus > len(pool):
        raise DataError(f"non-fundus test: {n_fundus} fundus images asked, the test renderings hold {len(pool)}")
    picks = rng(seed, "nonfundus_fundus").choice(len(pool), size=n_fundus, replace=False)
    fundus = [FrameRecord(Path(pool[i].path), 1, f"fundus ({pool[i].dataset})") for i in sorted(picks)]
    items = non + fundus
    order = rng(seed, "nonfundus_order").permutation(len(items))
    return [items[i] for i in order]
