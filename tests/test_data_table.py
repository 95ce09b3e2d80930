"""CorpusTable: the training corpus as columns gives exactly the records, splits and keys of the lists."""
from __future__ import annotations

import csv

import numpy as np
import pytest

from visionclip.data.datasets import ImageTextDataset, label_set_key
from visionclip.data.readers import read_synfundus, read_synfundus_table
from visionclip.data.splits import split_corpus
from visionclip.data.table import StringColumn, StringIndex
from visionclip.errors import DataError
from visionclip.schema import COLUMNS

from test_train import write_tiny_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = write_tiny_corpus(tmp_path_factory.mktemp("table") / "corpus", n=40)
    (root / "Fundus" / "img_00003.jpg").rename(root / "Fundus" / "IMG_00003.JPG")  # the CSV's case differs
    with open(root / "captions.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    rows = rows[:1] + rows[:0:-1] + [[rows[5][0], "后写的", "written later"]]  # reversed; a later row wins
    with open(root / "captions.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)
    return root


def test_table_rows_are_the_records(corpus):
    table, records = read_synfundus_table(corpus), read_synfundus(corpus)
    assert list(table) == records and len(table) == 40
    assert table[3].path.name == "IMG_00003.JPG" and table[-1] == records[-1]
    assert table[4].caption_en == "written later"
    assert [type(v) for v in table[0].labels.values()] == [str] + [int] * (len(COLUMNS) - 1)


def test_table_splits_slices_and_keys_match_the_lists(corpus):
    table, records = read_synfundus_table(corpus), read_synfundus(corpus)
    views, lists = split_corpus(table, 7), split_corpus(records, 7)
    for name in lists:
        assert list(views[name]) == lists[name]
    assert list(views["val"][:3]) == lists["val"][:3]
    assert views["train"].label_keys().tolist() == [label_set_key(r.labels) for r in lists["train"]]
    a = ImageTextDataset(views["train"], 32, "both", augment=True, seed=3)
    b = ImageTextDataset(lists["train"], 32, "both", augment=True, seed=3)
    for i in (0, 5):
        x, y = a[i], b[i]
        assert x["caption"] == y["caption"] and x["label_key"] == y["label_key"]
        assert (x["image"] == y["image"]).all() and (x["labels"] == y["labels"]).all()
    with pytest.raises(DataError, match="appears twice"):
        split_corpus(table.subset([0, 1, 2, 1]), 7)


def test_string_index_finds_last_and_first_repeat():
    col = StringColumn()
    for s in ["a", "眼底", "b", "眼底", "a"]:
        col.append(s)
    index = StringIndex(col)
    assert [index.find_last(s) for s in ("a", "眼底", "b", "zz")] == [4, 3, 2, -1]
    assert index.first_repeat() == (3, 1)
    assert list(col.take(np.array([2, 0]))) == ["b", "a"]


def test_read_corpus_finds_the_annotation_file_once_per_call(tmp_path, monkeypatch):
    """On a table-cache miss the annotation file is found for the cache key and used to build the
    table (finding it reads the header of every candidate file at the corpus root): once, not twice."""
    from visionclip.config import load_profile
    from visionclip.data import readers

    from test_train import write_tiny_run

    profile = load_profile(write_tiny_run(tmp_path, n=10))
    real, calls = readers._find_annotations, []
    monkeypatch.setattr(readers, "_find_annotations", lambda root: calls.append(root) or real(root))
    built = readers.read_corpus(profile, tmp_path)  # a miss: built and saved
    assert len(calls) == 1, calls
    assert list(readers.read_corpus(profile, tmp_path)) == list(built)  # a hit: loaded
    assert len(list((tmp_path / "data" / "corpus_tables").glob("table_*.npz"))) == 1
    assert len(calls) == 2, calls
