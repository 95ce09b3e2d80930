"""The paper's random 8:1:1 train/val/test split of the corpus, seeded and stable.

Each image is assigned by a seeded hash of its file name rather than by a permutation of the
list: the split is identical across runs and processes, and when the corpus grows (more shards
rendered, a bigger profile) every image already assigned keeps its split.
"""
from __future__ import annotations

from typing import Sequence, TypeVar

from ..errors import DataError
from ..seeding import derive_seed

SPLITS = ("train", "val", "test")
T = TypeVar("T")


def _file_name(record: object) -> str:
    labels = getattr(record, "labels", None)
    if isinstance(labels, dict) and labels.get("file_name"):
        return str(labels["file_name"])
    return record.path.name  # type: ignore[attr-defined]


def _common_folder(records: Sequence[object]) -> str:
    """'<folder>: ' holding the records' images, for error messages ('' when records have no path)."""
    import os

    paths = [str(getattr(r, "path", "")) for r in records if getattr(r, "path", None)]
    if not paths:
        return ""
    folder = os.path.commonpath(paths) if len(paths) > 1 else os.path.dirname(paths[0])
    return f"{folder}: "


def split_of(file_name: str, seed: int, ratios: Sequence[float] = (8, 1, 1)) -> str:
    """The split of one image: a uniform draw in [0, 1) from hash(seed, file_name) against the ratios."""
    u = derive_seed(seed, "split", file_name) / 2**63
    total = float(sum(ratios))
    edge = 0.0
    for name, r in zip(SPLITS, ratios):
        edge += r / total
        if u < edge:
            return name
    return SPLITS[-1]


def split_corpus(records: Sequence[T], seed: int, ratios: Sequence[float] = (8, 1, 1)) -> dict[str, list[T]]:
    """{"train", "val", "test"} lists of records (input order kept within each split)."""
    if len(ratios) != 3 or any(r <= 0 for r in ratios):
        raise DataError(f"split ratios {tuple(ratios)}: expected three positive numbers (train, val, test)")
    out: dict[str, list[T]] = {name: [] for name in SPLITS}
    seen: set[str] = set()
    for rec in records:
        name = _file_name(rec)
        if name in seen:
            raise DataError(f"file_name {name!r} appears twice in the corpus; the split is keyed by it")
        seen.add(name)
        out[split_of(name, seed, ratios)].append(rec)
    empty = [k for k, v in out.items() if not v]
    if empty:
        where = _common_folder(records)
        raise DataError(f"{where}split of {len(records)} records with ratios {tuple(ratios)} left {empty} "
                        "empty; the corpus is too small (profile synth.corpus_size)")
    return out
