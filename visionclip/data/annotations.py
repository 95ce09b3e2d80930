"""The corpus's two annotation schemas: which one a header is, and one row of it parsed and checked.

`PAPER` is the paper's 17 columns (eye_side 0/1). `RELEASE` is the release's metadata as its users
publish it (visionclip.schema.RELEASE_COLUMNS): the same labels with the eye side as a word, plus an md5
per image, six more flags, a quality score and the Chinese diagnostic sentence. Every bad value raises
a DataError naming the file, row and field.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from ..errors import DataError
from ..schema import (ADVICE_COLUMN, COLUMNS, EXTRA_FLAGS, QUALITY_COLUMN, RELEASE_COLUMNS, SIDE_WORDS)
from .fields import parse_float, parse_int
from .table import LABEL_COLUMNS

_MD5 = re.compile(r"[0-9a-f]{32}")
# dr_grade and eye_side; every other label column is a 0/1 flag
_LABEL_VALUES: dict[str, Iterable[int]] = {"dr_grade": range(5), "eye_side": (0, 1)}


@dataclass(frozen=True)
class Schema:
    name: str                   # "paper" or "release"
    columns: tuple[str, ...]    # every column a header must have
    side_column: str            # the column eye_side is read from


PAPER = Schema("paper", COLUMNS, "eye_side")
RELEASE = Schema("release", RELEASE_COLUMNS, "eyes_side")
SCHEMAS = (RELEASE, PAPER)


def schema_of(header: Sequence[str]) -> Schema | None:
    """The schema whose every column `header` holds, else None."""
    return next((s for s in SCHEMAS if all(c in header for c in s.columns)), None)


def closest_schema(header: Sequence[str]) -> Schema:
    """The schema `header` shares most columns with (to name what it lacks)."""
    return max(SCHEMAS, key=lambda s: sum(c in header for c in s.columns))


def parse_side(value: str, where: str) -> int:
    side = SIDE_WORDS.get(value.lower())
    if side is None:
        raise DataError(f"{where}, field 'eyes_side': expected one of {sorted(SIDE_WORDS)}, got {value!r}")
    return side


def parse_labels(schema: Schema, row: dict, where: str) -> list[int]:
    """The row's LABEL_COLUMNS values (dr_grade, eye_side, the 14 flags), checked."""
    out = []
    for c in LABEL_COLUMNS:
        if c == "eye_side" and schema is RELEASE:
            out.append(parse_side(row[schema.side_column], where))
        else:
            out.append(parse_int(row[c], where, c, _LABEL_VALUES.get(c, (0, 1))))
    return out


@dataclass(frozen=True)
class ReleaseRow:
    extras: list[int]   # EXTRA_FLAGS order
    quality: float
    advice: str
    md5: str


def parse_release(row: dict, where: str) -> ReleaseRow:
    """The release's columns beyond the paper's labels, checked (the sentence may be empty here)."""
    extras = [parse_int(row[c], where, c, (0, 1)) for c in EXTRA_FLAGS]
    quality = parse_float(row[QUALITY_COLUMN], where, QUALITY_COLUMN)
    md5 = row["file_md5"].lower()
    if not _MD5.fullmatch(md5):
        raise DataError(f"{where}, field 'file_md5': expected 32 hexadecimal digits, got {row['file_md5']!r}")
    return ReleaseRow(extras, quality, row[ADVICE_COLUMN], md5)


def file_md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_md5(path: Path, expected: str, where: str) -> None:
    got = file_md5(path)
    if got != expected:
        raise DataError(f"{where}, field 'file_md5': {path} has md5 {got}, the metadata says {expected}")


__all__ = ["PAPER", "RELEASE", "ReleaseRow", "SCHEMAS", "Schema", "check_md5", "closest_schema", "file_md5",
           "parse_labels", "parse_release", "parse_side", "schema_of"]
