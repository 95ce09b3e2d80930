"""Delimited text files (CSV, TSV) read one row at a time, whatever wrote them.

The delimiter is sniffed (comma or tab: the corpus's metadata comes both ways), the text is UTF-8
with or without a BOM (Excel writes one), and any line ending is read (csv reads \\n, \\r\\n and \\r).
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Iterator, NoReturn

from ..errors import DataError
from ..io import utf8_error_at

DELIMITERS = ",\t"
SNIFF_BYTES = 1 << 16


def sniff_delimiter(sample: str) -> str:
    """The delimiter of a file's first lines; a comma when csv.Sniffer cannot tell (one column)."""
    lines = sample.splitlines(keepends=True)
    if len(lines) > 1:
        sample = "".join(lines[:-1])  # the last line of a sample may be cut short
    try:
        return csv.Sniffer().sniff(sample, delimiters=DELIMITERS).delimiter
    except csv.Error:
        return ","


class DelimitedRows:
    """A delimited file read one row at a time: `header`, then (line number, row) pairs, values stripped.

    The corpus files have a row per image (a million for SynFundus-1M), too many to hold as dicts.
    Files used to be read whole before any value was checked, so an unreadable file is reported
    ahead of a bad value in it: report errors through `fail`, which reads the rest first.
    """

    def __init__(self, path: Path):
        self.path = path
        self._unreadable: DataError | None = None
        try:
            self._file = open(path, newline="", encoding="utf-8-sig")
        except FileNotFoundError:
            raise DataError(f"{path}: file not found") from None
        try:
            try:
                self.delimiter = sniff_delimiter(self._file.read(SNIFF_BYTES))
                self._file.seek(0)
                self._reader = csv.DictReader(self._file, delimiter=self.delimiter)
                self.header = [h.strip() for h in (self._reader.fieldnames or [])]
            except UnicodeDecodeError:
                raise not_utf8(path) from None
            except csv.Error as e:
                raise DataError(f"{path}: not a readable UTF-8 CSV ({e})") from None
            self._reader.fieldnames = self.header
            if not self.header:
                self.fail(DataError(f"{path}: empty CSV, expected a header row"))
        except BaseException:
            self._file.close()
            raise

    def __enter__(self) -> "DelimitedRows":
        return self

    def __exit__(self, *exc) -> None:
        self._file.close()

    def __iter__(self) -> Iterator[tuple[int, dict]]:
        while True:
            try:
                row = next(self._reader)
            except StopIteration:
                return
            except (UnicodeDecodeError, csv.Error) as e:
                self._unreadable = (not_utf8(self.path) if isinstance(e, UnicodeDecodeError) else
                                    DataError(f"{self.path}: not a readable UTF-8 CSV ({e})"))
                raise self._unreadable from None
            yield self._reader.line_num, {k: (v or "").strip() if isinstance(v, str) else v
                                          for k, v in row.items()}

    def fail(self, error: DataError) -> NoReturn:
        """Raise `error`, or the file's own unreadability when the rows after it show one."""
        if self._unreadable is None:
            try:
                for _ in self:
                    pass
            except DataError:
                pass
        raise (self._unreadable or error) from None


def read_rows(path: Path) -> tuple[list[str], list[tuple[int, dict]]]:
    """Header and (line number, row) pairs of a small delimited file (see DelimitedRows)."""
    with DelimitedRows(path) as rows:
        return rows.header, list(rows)


class NotUTF8(DataError):
    """A delimited file in another encoding (GBK, Latin-1...): named as such, with its first bad line."""


def not_utf8(path: Path) -> NotUTF8:
    return NotUTF8(f"{path}: not UTF-8 text at {utf8_error_at(path)}; the file is in another encoding "
                   "(GBK, Latin-1...): save it as UTF-8 (e.g. iconv -f GBK -t UTF-8)")


def read_header(path: Path) -> list[str]:
    """The header of a delimited file, or [] when it is not readable text (not a candidate then).
    A file in another encoding whose header line is plain ASCII (a GBK export of the release) is
    still a candidate: reading its rows then names the encoding problem and the line."""
    try:
        with DelimitedRows(path) as rows:
            return rows.header
    except NotUTF8:
        with open(path, "rb") as f:
            first = f.readline(SNIFF_BYTES)
        try:
            line = first.decode("utf-8-sig")
        except UnicodeDecodeError:
            return []
        return [h.strip() for h in next(csv.reader([line], delimiter=sniff_delimiter(line)), [])]
    except DataError:
        return []


__all__ = ["DelimitedRows", "NotUTF8", "not_utf8", "read_header", "read_rows", "sniff_delimiter"]
