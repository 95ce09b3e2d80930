"""Field values of the datasets' metadata files, parsed with errors that name where they came from."""
from __future__ import annotations

import math
from typing import Iterable

from ..errors import DataError


def parse_int(value: object, where: str, field: str, allowed: Iterable[int]) -> int:
    """An integer field (also '2.0' or 2.0, as spreadsheets and pandas write them) within `allowed`."""
    allowed = tuple(allowed)
    text = str(value).strip() if value is not None else ""
    try:
        number = float(text)
        if not number.is_integer():
            raise ValueError
        out = int(number)
    except ValueError:
        raise DataError(f"{where}, field '{field}': expected an integer in {list(allowed)}, "
                        f"got {text!r}") from None
    if out not in allowed:
        raise DataError(f"{where}, field '{field}': expected one of {list(allowed)}, got {out}")
    return out


def parse_float(value: object, where: str, field: str) -> float:
    """A finite number field ('0.83', '83', 0.83)."""
    text = str(value).strip() if value is not None else ""
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise DataError(f"{where}, field '{field}': expected a number, got {text!r}")
    return number
