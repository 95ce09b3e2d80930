"""The paper's random 8:1:1 train/val/test split of the corpus, seeded and stable.

Each image is assigned by a seeded hash of its file name rather than by a permutation of the
list: the split is identical across runs and processes, and when the corpus grows (more shards
rendered, a bigger profile) every image already assigned keeps its split.
"""
from __future__ import annotations

from array import array
from typing import Sequence, TypeVar

import numpy as np

from ..errors import DataError
from ..seeding import derive_seed
from .table import CorpusTable

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
    """{"train", "val", "test"} lists of records (input order kept within each split);
    views of the table when `records` is a CorpusTable."""
    if len(ratios) != 3 or any(r <= 0 for r in ratios):
        raise DataError(f"split ratios {tuple(ratios)}: expected three positive numbers (train, val, test)")
    if isinstance(records, CorpusTable):
        return _split_table(records, seed, ratios)  # type: ignore[return-value]
    out: dict[str, list[T]] = {name: [] for name in SPLITS}
    seen: set[str] = set()
    for rec in records:
        name = _file_name(rec)
        if name in seen:
            raise DataError(f"file_name {name!r} appears twice in the corpus; the split is keyed by it")
        seen.add(name)
        out[split_of(name, seed, ratios)].append(rec)
    _require_every_split(out, len(records), ratios, lambda: _common_folder(records))
    return out


def _require_every_split(splits: dict, n: int, ratios: Sequence[float], where) -> None:
    """DataError when a split got no record; `where()` gives the '<folder>: ' prefix, only then computed."""
    empty = [k for k, v in splits.items() if not len(v)]
    if empty:
        raise DataError(f"{where()}split of {n} records with ratios {tuple(ratios)} left {empty} "
                        "empty; the corpus is too small (profile synth.corpus_size)")


def _split_table(table: CorpusTable, seed: int, ratios: Sequence[float]) -> dict[str, CorpusTable]:
    """split_corpus of a table: an index array per split instead of a list of records."""
    if table.rows is not None:  # the table's own file names are unique (its reader checks); a view may repeat a row
        _, first = np.unique(table.rows, return_index=True)
        if len(first) < len(table):
            again = int(np.flatnonzero(~np.isin(np.arange(len(table)), first))[0])
            raise DataError(f"file_name {table.file_name(again)!r} appears twice in the corpus; "
                            "the split is keyed by it")
    picks = {name: array("q") for name in SPLITS}
    for i in range(len(table)):
        picks[split_of(table.file_name(i), seed, ratios)].append(i)
    _require_every_split(picks, len(table), ratios, lambda: f"{table.image_dir}: " if len(table) else "")
    return {name: table.subset(np.frombuffer(v, dtype=np.int64)) for name, v in picks.items()}
