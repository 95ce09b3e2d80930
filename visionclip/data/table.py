"""The corpus as columns: a few flat arrays instead of a Python object per annotation row.

A list of `CorpusRecord` costs ~3 KiB a row (a Path, a 17-key dict, three str objects, a
dataclass), ~3 GiB for SynFundus-1M in the training process. `CorpusTable` holds the same
values as UTF-8 blobs with offsets, an int8 label matrix and small domain codes (~0.1 KiB a
row plus the caption text) and builds a `CorpusRecord` only when one is asked for, equal to
the one `read_synfundus` returns. Splits and slices are views: an index array each.
"""
from __future__ import annotations

from array import array
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np

from ..schema import COLUMNS, DISEASE_FLAGS
from .records import CorpusRecord

LABEL_COLUMNS: tuple[str, ...] = COLUMNS[1:]  # the int columns; file_name has its own column


class StringColumn:
    """Strings appended one by one into a UTF-8 blob, read back by row number.

    ~len(utf-8) + 8 bytes a row, against ~60-100 for a str object held in a list.
    """

    def __init__(self) -> None:
        self._blob = bytearray()
        self._ends = array("q")  # row i is _blob[_ends[i-1]:_ends[i]]

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
    """

    def __init__(self, column: StringColumn):
        self.column = column
        hashes = np.fromiter((hash(s) for s in column), dtype=np.int64, count=len(column))
        self._order = np.argsort(hashes, kind="stable")  # equal hashes stay in row order
        self._sorted = hashes[self._order]

    def _candidates(self, h: int) -> np.ndarray:
        lo = np.searchsorted(self._sorted, h, "left")
        return self._order[lo:np.searchsorted(self._sorted, h, "right")]

    def find_last(self, text: str) -> int:
        """The last row holding `text` (a dict filled in row order keeps the last), else -1."""
        for row in self._candidates(hash(text))[::-1]:
            if self.column[int(row)] == text:
                return int(row)
        return -1

    def first_repeat(self) -> tuple[int, int] | None:
        """(row, earlier row with the same string) for the first row whose string came before, else None."""
        repeats = np.flatnonzero(self._sorted[1:] == self._sorted[:-1]) + 1
        best: tuple[int, int] | None = None
        for h in np.unique(self._sorted[repeats]):  # only groups of equal hashes: rare but for real repeats
            first: dict[str, int] = {}
            for row in self._candidates(int(h)):  # ascending rows
                text = self.column[int(row)]
                if text in first:
                    if best is None or row < best[0]:
                        best = (int(row), first[text])
                    break
                first[text] = int(row)
        return best


def label_keys(labels: np.ndarray) -> np.ndarray:
    """`datasets.label_set_key` of every row of an int8 [N, LABEL_COLUMNS] matrix, as int64."""
    keys = labels[:, LABEL_COLUMNS.index("dr_grade")].astype(np.int64) << len(DISEASE_FLAGS)
    for bit, flag in enumerate(DISEASE_FLAGS):
        keys |= (labels[:, LABEL_COLUMNS.index(flag)].astype(np.int64) & 1) << bit
    return keys


class CorpusTable(Sequence[CorpusRecord]):
    """The corpus in annotation-CSV order; `table[i]` is the CorpusRecord of row i.

    image_dir / file name is a row's path, except rows in `disk_names` (row -> name on disk, where
    the CSV spells it in another case). `rows` makes a view: its rows, in that order, of the columns.
    """

    def __init__(self, image_dir: Path, file_names: StringColumn, labels: np.ndarray,
                 captions_zh: StringColumn, captions_en: StringColumn, domain_codes: np.ndarray,
                 domain_names: Sequence[str], disk_names: Mapping[int, str] | None = None,
                 rows: np.ndarray | None = None):
        self.image_dir = Path(image_dir)
        self.file_names, self.labels = file_names, labels
        self.captions_zh, self.captions_en = captions_zh, captions_en
        self.domain_codes, self.domain_names = domain_codes, tuple(domain_names)
        self.disk_names = dict(disk_names or {})
        self.rows = rows

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
        rows = idx if self.rows is None else self.rows[idx]
        return CorpusTable(self.image_dir, self.file_names, self.labels, self.captions_zh, self.captions_en,
                           self.domain_codes, self.domain_names, self.disk_names, rows)

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
        return self.image_dir / self.disk_names.get(row, self.file_names[row])

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


__all__ = ["CorpusTable", "LABEL_COLUMNS", "StringColumn", "StringIndex", "label_keys"]
