"""Every image file below a root, from one listing pass, found by name in any case.

Built for a million files: one os.scandir walk (no os.walk, whose per-folder name lists would hold a
million str at once), each name kept in a UTF-8 blob with a 4-byte folder code, and a hash index
(16 bytes a file) for the lookups. The only stat per file is DirEntry.stat's, for the zero-byte check.
"""
from __future__ import annotations

import os
from array import array
from pathlib import Path

from .table import StringColumn, StringIndex

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")


class ImageFiles:
    """The image files below `root` (hidden files and folders skipped); `path(k)` is file k's path."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.folders: list[str] = []      # relative posix paths; "" is the root itself
        self.names = StringColumn()       # file names as on disk
        self.folder_codes = array("i")
        self.empty: set[int] = set()      # zero-byte files (truncated downloads)
        self._walk()
        self._index: StringIndex | None = StringIndex(self.names, key=str.lower)

    def _walk(self) -> None:
        pending, seen = [""], set()
        while pending:
            rel = pending.pop()
            folder = self.root / rel
            st = os.stat(folder)
            if (st.st_dev, st.st_ino) in seen:  # a symbolic link back up the tree
                continue
            seen.add((st.st_dev, st.st_ino))
            code = len(self.folders)
            self.folders.append(rel)
            with os.scandir(folder) as entries:
                for entry in entries:
                    if entry.name.startswith("."):
                        continue
                    if entry.is_dir():
                        pending.append(f"{rel}/{entry.name}" if rel else entry.name)
                    elif entry.is_file() and os.path.splitext(entry.name)[1].lower() in IMAGE_EXTS:
                        if entry.stat().st_size == 0:
                            self.empty.add(len(self.names))
                        self.names.append(entry.name)
                        self.folder_codes.append(code)

    def __len__(self) -> int:
        return len(self.names)

    def path(self, k: int) -> Path:
        return self.root / self.folders[self.folder_codes[k]] / self.names[k]

    def find(self, name: str) -> list[int]:
        """The files called `name` (its last path component) in any case; the one spelled exactly
        as `name` when several differ only in case."""
        if self._index is None:
            raise RuntimeError("ImageFiles.find after forget_index()")
        base = name.replace("\\", "/").rsplit("/", 1)[-1]
        hits = self._index.find_all(base)
        exact = [k for k in hits if self.names[k] == base]
        return exact if len(hits) > 1 and len(exact) == 1 else hits

    def forget_index(self) -> None:
        """Drop the lookup index (16 bytes a file) once every name has been found."""
        self._index = None


__all__ = ["IMAGE_EXTS", "ImageFiles"]
