"""The corpus table saved once and loaded by every later reader: one build for 32 ranks, not 32.

Building the table walks the image folders (a million directory entries), reads every annotation row
and generates or reads every caption; on the stand-in it also checksums every file. Under torchrun
rank 0 builds it and writes it here; the other ranks (and later runs, the evaluation notebooks)
load it. The file is a numpy .npz of the table's flat arrays (no pickle), named by a key of what
the table is a function of:

- the annotation file (path, size, mtime in ns): a new or edited release gets a new table;
- the reading options (caption source and seed, quality filter, md5 check);
- the source of the modules that build it (readers, captions, ...): new code, new table.

What the key does not see: images replaced behind an unchanged annotation file. The prepare stage
decodes every image and lists the unreadable ones; set data.verify_md5 and delete the cache folder
after changing images in place.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import zipfile
from array import array
from pathlib import Path

import numpy as np

from ..io import atomic_path
from .file_index import ImageFiles
from .table import CorpusTable, ReleaseColumns, StringColumn

CACHE_VERSION = 1
_SOURCES = ("readers.py", "annotations.py", "captions.py", "advice.py", "table.py", "file_index.py",
            "table_cache.py")


def cache_key(annotations: Path, options: dict) -> str:
    """A digest of everything the table is a function of (see the module docstring)."""
    st = annotations.stat()
    here = Path(__file__).resolve().parent
    code = hashlib.sha256(b"".join((here / name).read_bytes() for name in _SOURCES)).hexdigest()
    what = {"version": CACHE_VERSION, "annotations": str(annotations.resolve()), "size": st.st_size,
            "mtime_ns": st.st_mtime_ns, "options": options, "code": code}
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:20]


def cache_path(folder: Path, key: str) -> Path:
    return Path(folder) / f"table_{key}.npz"


# ------------------------------------------------------------------ columns <-> arrays

def _put_strings(out: dict, name: str, column: StringColumn) -> None:
    out[f"{name}.blob"] = np.frombuffer(bytes(column._blob), dtype=np.uint8)
    out[f"{name}.ends"] = np.frombuffer(column._ends.tobytes(), dtype=np.int64)


def _get_strings(arrays, name: str) -> StringColumn:
    column = StringColumn()
    column._blob = bytearray(arrays[f"{name}.blob"].tobytes())
    column._ends = array("q")
    column._ends.frombytes(arrays[f"{name}.ends"].tobytes())
    return column


def save_table(table: CorpusTable, path: Path) -> None:
    """Write `table` to `path` atomically (a table of the annotation file's rows, any view)."""
    files = table.images
    if not isinstance(files, ImageFiles):
        raise TypeError(f"save_table: images of type {type(files).__name__}, expected ImageFiles")
    meta = {"root": str(files.root), "folders": files.folders, "domain_names": list(table.domain_names),
            "caption_sources": table.caption_sources, "release": table.release is not None,
            "view": table.rows is not None}
    arrays: dict[str, np.ndarray] = {
        "meta": np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8),
        "files.folder_codes": np.frombuffer(files.folder_codes.tobytes(), dtype=np.int32),
        "files.empty": np.array(sorted(files.empty), dtype=np.int64),
        "image_rows": np.asarray(table.image_rows), "labels": np.asarray(table.labels),
        "domain_codes": np.asarray(table.domain_codes),
    }
    _put_strings(arrays, "files.names", files.names)
    _put_strings(arrays, "file_names", table.file_names)
    _put_strings(arrays, "captions_zh", table.captions_zh)
    _put_strings(arrays, "captions_en", table.captions_en)
    if table.release is not None:
        arrays["release.extras"] = table.release.extras
        arrays["release.quality"] = table.release.quality
        _put_strings(arrays, "release.advice", table.release.advice)
    if table.rows is not None:
        arrays["rows"] = np.asarray(table.rows, dtype=np.int64)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)


def load_table(path: Path) -> CorpusTable | None:
    """The table saved at `path`; None when there is none or it cannot be read (it is rebuilt)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as a:
            meta = json.loads(a["meta"].tobytes().decode("utf-8"))
            files = ImageFiles.__new__(ImageFiles)  # the listing as saved: no second walk of the folders
            files.root, files.folders = Path(meta["root"]), list(meta["folders"])
            files.names = _get_strings(a, "files.names")
            files.folder_codes = array("i")
            files.folder_codes.frombytes(a["files.folder_codes"].tobytes())
            files.empty = set(a["files.empty"].tolist())
            files._index = None
            release = None
            if meta["release"]:
                release = ReleaseColumns(a["release.extras"], a["release.quality"], _get_strings(a, "release.advice"))
            return CorpusTable(files, a["image_rows"], _get_strings(a, "file_names"), a["labels"],
                               _get_strings(a, "captions_zh"), _get_strings(a, "captions_en"), a["domain_codes"],
                               meta["domain_names"], release, meta["caption_sources"],
                               a["rows"] if meta["view"] else None)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:  # a damaged cache is only a cost
        print(f"corpus table cache {path}: unreadable ({type(e).__name__}: {e}); building the table again",
              file=sys.stderr)
        return None


def prune(folder: Path, keep: Path) -> None:
    """Remove the folder's other tables (older keys: a changed release, options or code)."""
    for p in Path(folder).glob("table_*.npz"):
        if p != keep:
            try:
                p.unlink()
            except OSError:
                pass


__all__ = ["CACHE_VERSION", "cache_key", "cache_path", "load_table", "prune", "save_table"]
