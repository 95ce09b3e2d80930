"""The two record types every reader returns: one for benchmark images, one for corpus pairs."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Record:
    """One labelled benchmark image.

    `label` indexes `class_names`; `domain` is the camera profile that rendered a stand-in
    (from render_meta.csv) or, for a real release, the dataset name.
    """
    path: Path
    label: int
    class_names: tuple[str, ...]
    dataset: str
    domain: str


@dataclass(frozen=True)
class CorpusRecord:
    """One image-text pair of the SynFundus-style corpus.

    `labels` is the annotation row keyed by `visionclip.schema.COLUMNS` (ints; file_name a str).
    """
    path: Path
    labels: dict = field(hash=False)
    caption_zh: str
    caption_en: str
    domain: str
