"""The corpus split: 8:1:1, seeded, stable across runs and when the corpus grows."""
from __future__ import annotations

from pathlib import Path

import pytest

from visionclip.data.records import CorpusRecord
from visionclip.data.splits import split_corpus
from visionclip.errors import DataError


def recs(n: int, start: int = 0) -> list[CorpusRecord]:
    return [CorpusRecord(Path(f"Fundus/{i:07d}.jpg"), {"file_name": f"{i:07d}.jpg"}, "zh", "en", "cam")
            for i in range(start, start + n)]


def names(split: dict) -> dict[str, set]:
    return {k: {r.labels["file_name"] for r in v} for k, v in split.items()}


def test_ratios_8_1_1():
    s = split_corpus(recs(20000), seed=1)
    n = {k: len(v) for k, v in s.items()}
    assert sum(n.values()) == 20000
    assert abs(n["train"] / 20000 - 0.8) < 0.01 and abs(n["val"] / 20000 - 0.1) < 0.01
    assert abs(n["test"] / 20000 - 0.1) < 0.01


def test_stable_across_runs_and_under_growth():
    small = names(split_corpus(recs(3000), seed=42))
    assert small == names(split_corpus(recs(3000), seed=42))
    grown = names(split_corpus(recs(3000) + recs(2000, start=3000), seed=42))
    for k in small:
        assert small[k] <= grown[k]                         # nothing already assigned moves
    assert small != names(split_corpus(recs(3000), seed=43))  # the seed matters
    # order of the input does not matter either
    assert names(split_corpus(list(reversed(recs(3000))), seed=42)) == small


def test_empty_split_and_duplicates_raise():
    with pytest.raises(DataError, match=r"empty.*corpus_size"):
        split_corpus(recs(1), seed=0)
    with pytest.raises(DataError, match=r"appears twice"):
        split_corpus(recs(5) + recs(1), seed=0)
    with pytest.raises(DataError, match=r"three positive"):
        split_corpus(recs(50), seed=0, ratios=(8, 2))
