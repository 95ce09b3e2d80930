"""Plain-text progress bars on stderr: visible in a terminal, quiet under CI and in notebooks.

Notebook outputs are compared by nbval, so bars must never land in them; papermill
runs set VISIONCLIP_QUIET=1 and the pipeline prints which notebook runs instead.
"""
from __future__ import annotations

import os
import sys
from typing import Iterable, Optional

from tqdm import tqdm as _tqdm_text


def quiet() -> bool:
    return os.environ.get("VISIONCLIP_QUIET", "") not in ("", "0") or os.environ.get("CI", "") == "true"


def progress(iterable: Optional[Iterable] = None, *, desc: str = "", total: Optional[int] = None,
             unit: str = "it", **kwargs):
    """A text tqdm bar on stderr (never a widget), disabled when quiet()."""
    return _tqdm_text(iterable, desc=desc, total=total, unit=unit, file=sys.stderr,
                      disable=quiet(), dynamic_ncols=True, mininterval=1.0, **kwargs)


__all__ = ["progress", "quiet"]
