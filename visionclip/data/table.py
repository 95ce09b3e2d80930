"""The corpus as columns: a few flat arrays instead of a Python object per annotation row.

A list of `CorpusRecord` costs ~3 KiB a row (a Path, a 17-key dict, three str objects, a
dataclass), ~3 GiB for SynFundus-1M in the training process. `CorpusTable` holds the same
values as UTF-8 blobs with offsets, an int8 label matrix and small domain codes (~0.1 KiB a
row plus the caption text) and builds a `CorpusRecord` only when one is asked for, equal to
the one `read_synfundus` returns. Splits and slices are views: an index array each.
"""
from __future__ import annotations

import copy
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping, Protocol, Sequence

import numpy as np

from ..schema import COLUMNS, DISEASE_FLAGS, READABILITY_FLAGS
from .records import CorpusRecord

LABEL_COLUMNS: tuple[str, ...] = COLUMNS[1:]  # the int columns; file_name has its own column


class StringColumn:
    """Strings appended one by one into a UTF-8 blob, read back by row number.

    ~len(utf-8) + 8 bytes a row, against ~60-100 for a str object held in a list.
    """

    def __init__(self) -> None:
        self._blob = bytearray()
        self._ends = array("q")  # row i is _blob[_ends[i-1]:_ends[i]]

    @classmethod
    def blanks(cls, n: int) -> "StringColumn":
        """n empty strings (8 bytes a row)."""
        out = cls()
        out._ends = array("q", bytes(8 * n))
        return out

    def append(self, text: str) -> None:
        self._blob += text.encode("utf-8")
        self._ends.append(len(self._blob))

    def __len__(self) -> int:
        return len(self._ends)

    def __getitem__(self, i: int) -> str:
        start = self._ends[i - 1] if i > 0 else 0  # callers pass row numbers in range
        return self._blob[start:self._ends[i]].decode("utf-8")

    def __iter__(self) -> Iterator[str]:
        return (self[i] for i in range(len(self)))

    def same_as(self, other: "StringColumn") -> bool:
        """Whether both hold the same strings in the same order (two C comparisons)."""
        return self._ends == other._ends and self._blob == other._blob

    def take(self, rows: Iterable[int]) -> "StringColumn":
        """A new column of the given rows, in that order (no list of str in between)."""
        out = StringColumn()
        view = memoryview(self._blob)
        for i in rows:
            i = int(i)
            out._blob += view[self._ends[i - 1] if i > 0 else 0:self._ends[i]]
            out._ends.append(len(out._blob))
        view.release()
        return out


class StringIndex:
    """Row lookup by exact string over a StringColumn, held as sorted 64-bit hashes (16 bytes a row).

    A dict of a million str keys costs ~100 bytes a row. Hashes are Python's (per process, used
    only inside it); equal hashes are confirmed by comparing the strings, so collisions are harmless.
    `key` (e.g. str.lower) makes strings equal when their keys are.
    """

    def __init__(self, column: StringColumn, key: Callable[[str], str] | None = None):
        self.column = column
        self._key = key or (lambda s: s)
        hashes = np.fromiter((hash(self._key(s)) for s in column), dtype=np.int64, count=len(column))
        self._order = np.argsort(hashes, kind="stable")  # equal hashes stay in row order
        self._sorted = hashes[self._order]

    def _candidates(self, h: int) -> np.ndarray:
        lo = np.searchsorted(self._sorted, h, "left")
        return self._order[lo:np.searchsorted(self._sorted, h, "right")]

    def find_all(self, text: str) -> list[int]:
        """Every row holding `text` (under `key`), in row order."""
        k = self._key(text)
        return [int(row) for row in self._candidates(hash(k)) if self._key(self.column[int(row)]) == k]

    def find_last(self, text: str) -> int:
        """The last row holding `text` (a dict filled in row order keeps the last), else -1."""
        rows = self.find_all(text)
        return rows[-1] if rows else -1

    def first_repeat(self) -> tuple[int, int] | None:
        """(row, earlier row with the same string) for the first row whose string came before, else None."""
        repeats = np.flatnonzero(self._sorted[1:] == self._sorted[:-1]) + 1
        best: tuple[int, int] | None = None
        for h in np.unique(self._sorted[repeats]):  # only groups of equal hashes: rare but for real repeats
            first: dict[str, int] = {}
            for row in self._candidates(int(h)):  # ascending rows
                text = self._key(self.column[int(row)])
                if text in first:
                    if best is None or row < best[0]:
                        best = (int(row), first[text])
                    break
                first[text] = int(row)
        return best


# The bits of a label-set key: the diseases, then the readability flags *not* met (datasets.label_set_key).
LABEL_SET_FLAGS = DISEASE_FLAGS + READABILITY_FLAGS


def label_keys(labels: np.ndarray) -> np.ndarray:
    """`datasets.label_set_key` of every row of an int8 [N, LABEL_COLUMNS] matrix, as int64."""
    keys = labels[:, LABEL_COLUMNS.index("dr_grade")].astype(np.int64) << len(LABEL_SET_FLAGS)
    for bit, flag in enumerate(LABEL_SET_FLAGS):
        value = labels[:, LABEL_COLUMNS.index(flag)].astype(np.int64) & 1
        keys |= (value if flag in DISEASE_FLAGS else 1 - value) << bit
    return keys


class ImageLocations(Protocol):
    """Where the images lie (data.file_index.ImageFiles): image k's path, below `root`."""
    root: Path

    def path(self, k: int) -> Path: ...


@dataclass(frozen=True)
class ReleaseColumns:
    """The release's columns beyond the paper's labels, one entry per annotation row."""
    extras: np.ndarray      # int8 [N, len(EXTRA_FLAGS)]
    quality: np.ndarray     # float32 [N], retinal_region_quality_score
    advice: StringColumn    # diagnosticAdvice: the release's Chinese diagnostic sentence


class CorpusTable(Sequence[CorpusRecord]):
    """The corpus in annotation-file order; `table[i]` is the CorpusRecord of row i.

    Row r's image is `images.path(image_rows[r])`. `release` holds the release's extra columns (None
    for a corpus in the paper's 17 columns); `caption_sources` says where each language's captions
    came from ("release", "generated", or "none"). `rows` makes a view: its rows, in that order.
    """

    def __init__(self, images: ImageLocations, image_rows: np.ndarray, file_names: StringColumn,
                 labels: np.ndarray, captions_zh: StringColumn, captions_en: StringColumn,
                 domain_codes: np.ndarray, domain_names: Sequence[str], release: ReleaseColumns | None = None,
                 caption_sources: Mapping[str, str] | None = None, rows: np.ndarray | None = None):
        self.images, self.image_rows = images, image_rows
        self.file_names, self.labels = file_names, labels
        self.captions_zh, self.captions_en = captions_zh, captions_en
        self.domain_codes, self.domain_names = domain_codes, tuple(domain_names)
        self.release = release
        self.caption_sources = dict(caption_sources or {"zh": "generated", "en": "generated"})
        self.rows = rows

    @property
    def image_dir(self) -> Path:
        """The folder the images were found below (the corpus root)."""
        return Path(self.images.root)

    # ---- rows ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.file_names) if self.rows is None else len(self.rows)

    def _row(self, i: int) -> int:
        n = len(self)
        i = int(i)
        if not -n <= i < n:
            raise IndexError(f"CorpusTable index {i} out of range for {n} rows")
        i %= n
        return i if self.rows is None else int(self.rows[i])

    def _all_rows(self) -> np.ndarray:
        return np.arange(len(self.file_names)) if self.rows is None else self.rows

    def subset(self, indices: Sequence[int] | np.ndarray) -> "CorpusTable":
        """A view of these rows (positions in this table), in this order; the columns are shared."""
        idx = np.asarray(indices, dtype=np.int64)
        view = copy.copy(self)
        view.rows = idx if self.rows is None else self.rows[idx]
        return view

    def __getitem__(self, i):  # an int gives a record, a slice a view (like a list's slice)
        if isinstance(i, slice):
            return self.subset(np.arange(len(self))[i])
        return self.record(i)

    def __iter__(self) -> Iterator[CorpusRecord]:
        return (self.record(i) for i in range(len(self)))

    # ---- fields of one row -----------------------------------------------------------------
    def file_name(self, i: int) -> str:
        return self.file_names[self._row(i)]

    def path(self, i: int) -> Path:
        return self._path_of(self._row(i))

    def label_row(self, i: int) -> dict:
        """The annotation row keyed by COLUMNS, as read_synfundus gives it (ints; file_name a str)."""
        return self._labels_of(self._row(i))

    def record(self, i: int) -> CorpusRecord:
        row = self._row(i)
        return CorpusRecord(path=self._path_of(row), labels=self._labels_of(row),
                            caption_zh=self.captions_zh[row], caption_en=self.captions_en[row],
                            domain=self.domain_names[int(self.domain_codes[row])])

    def _path_of(self, row: int) -> Path:  # row: a row of the columns, not a position in this view
        return self.images.path(int(self.image_rows[row]))

    def _labels_of(self, row: int) -> dict:
        return {"file_name": self.file_names[row], **dict(zip(LABEL_COLUMNS, self.labels[row].tolist()))}

    # ---- whole columns ---------------------------------------------------------------------
    def label_matrix(self) -> np.ndarray:
        """int8 [len, LABEL_COLUMNS] of this table's rows."""
        return self.labels if self.rows is None else self.labels[self.rows]

    def label_keys(self) -> np.ndarray:
        return label_keys(self.label_matrix())

    def caption_pairs(self) -> Iterator[tuple[str, str]]:
        """(caption_zh, caption_en) of every row, in order, without building records."""
        for row in self._all_rows():
            yield self.captions_zh[int(row)], self.captions_en[int(row)]

    def captions(self, language: str) -> Iterator[str]:
        """The `language` ("zh" or "en") caption of every row, in order."""
        column = self.captions_zh if language == "zh" else self.captions_en
        return (column[int(row)] for row in self._all_rows())

    def caption_record(self, caption_language: str) -> dict[str, str]:
        """{language: source} of the languages `train.caption_language` trains on (zh, en or both)."""
        languages = ("zh", "en") if caption_language == "both" else (caption_language,)
        return {lang: self.caption_sources[lang] for lang in languages}

    # ---- the release's extra columns (None for a corpus in the paper's 17 columns) ------------
    def extras_matrix(self) -> np.ndarray | None:
        """int8 [len, EXTRA_FLAGS] of this table's rows."""
        if self.release is None:
            return None
        return self.release.extras if self.rows is None else self.release.extras[self.rows]

    def quality_scores(self) -> np.ndarray | None:
        if self.release is None:
            return None
        return self.release.quality if self.rows is None else self.release.quality[self.rows]

    def advice(self) -> Iterator[str] | None:
        """The release's diagnostic sentence of every row, in order."""
        if self.release is None:
            return None
        return (self.release.advice[int(row)] for row in self._all_rows())


__all__ = ["CorpusTable", "ImageLocations", "LABEL_COLUMNS", "ReleaseColumns", "StringColumn", "StringIndex",
           "label_keys"]
