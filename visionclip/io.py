"""Atomic file writes and checksums.

A killed process must never leave a half-written file under its final name:
everything is written to a temporary sibling, flushed, then renamed.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:  # a read-only disk, a permission: name the file, not its temporary name
        if e.errno is None:
            raise
        raise OSError(e.errno, os.strerror(e.errno), str(path)) from e
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except OSError as e:
        # A failed write() (a full disk) carries no file name; name the file being written.
        if e.filename is None and e.errno is not None:
            raise OSError(e.errno, os.strerror(e.errno), str(path)) from e
        raise
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def errors_named_as(tmp_dir: str | os.PathLike, final_dir: str | os.PathLike) -> Iterator[None]:
    """Inside, an OSError about a file of the temporary directory `tmp_dir` (a unit being written, renamed
    onto `final_dir` when complete) names that file under `final_dir`, as the user knows it."""
    try:
        yield
    except OSError as e:
        tmp, name = str(tmp_dir), str(e.filename or "")
        if e.errno is None or not (name == tmp or name.startswith(tmp + os.sep)):
            raise
        raise OSError(e.errno, os.strerror(e.errno), str(final_dir) + name[len(tmp):]) from e


def clean_stale_temps(dirs: Iterable[str | os.PathLike], names: Iterable[str] | None = None) -> None:
    """Remove the temporary siblings atomic_path leaves behind when a process is SIGKILLed (never final
    files): all of them, or only those of the final file `names` (others may be another process's)."""
    patterns = [".*.tmp"] if names is None else [f".{name}.*.tmp" for name in names]
    for d in map(Path, dirs):
        if d.is_dir():
            for pattern in patterns:
                for p in d.glob(pattern):
                    p.unlink(missing_ok=True)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=True) + "\n")


def os_error_line(e: OSError) -> str:
    """An OSError in one line: the path(s), then what the errno means (ENOSPC: 'No space left on device')."""
    what = os.strerror(e.errno) if e.errno is not None else (str(e).strip().splitlines() or [type(e).__name__])[-1]
    paths = [str(p) for p in (e.filename, e.filename2) if p is not None]
    return f"{' -> '.join(paths)}: {what}" if paths else what


def utf8_error_at(path: str | os.PathLike) -> str:
    """Where `path` stops being UTF-8: 'line N, byte offset K (0xNN)', or '' when it all decodes.
    Read a line at a time in binary: a newline byte never occurs inside a UTF-8 sequence."""
    offset = 0
    with open(path, "rb") as f:
        for number, line in enumerate(f, 1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as e:
                return f"line {number}, byte offset {offset + e.start} (0x{line[e.start]:02x})"
            offset += len(line)
    return ""


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()
