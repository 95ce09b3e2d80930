"""Per-step metrics as JSON lines: one object per step, appended and flushed.

Appending keeps a long run's log O(1) per step, and the file stays open for the run (no open and
close per step on a shared file system while the other ranks wait); a kill can leave a partial last line, and a
resume replays steps after the checkpoint, so `truncate_after(step)` rewrites the file
(atomically) without malformed lines and without rows past the checkpoint's step.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

from ..io import write_text


def _clean(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN/inf
    return value


def read_rows(path: str | os.PathLike) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue  # a line cut by a kill
        if isinstance(row, dict):
            rows.append(row)
    return rows


class JsonlLog:
    def __init__(self, path: str | os.PathLike, enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled
        self._file = None  # opened by the first append, kept until close()

    def truncate_after(self, step: int) -> None:
        """Keep only well-formed rows with row['step'] <= step (all rows go when step < 0)."""
        if not self.enabled:
            return
        self.close()
        rows = [r for r in read_rows(self.path) if r.get("step", math.inf) <= step]
        write_text(self.path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))

    def append(self, row: dict) -> None:
        if not self.enabled:
            return
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8")
        self._file.write(json.dumps({k: _clean(v) for k, v in row.items()}, sort_keys=True) + "\n")
        self._file.flush()  # a reader (the notebook, a killed run's resume) sees every finished step

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> "JsonlLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
