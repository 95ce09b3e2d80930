"""torch Datasets: item contract, determinism per (seed, epoch, index), decode errors, draft mode."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from visionclip.data.datasets import (LABEL_VECTOR, ImageDataset, ImageTextDataset, label_set_key, label_set_name,
                                      load_image)
from visionclip.data.records import CorpusRecord, Record
from visionclip.data.transforms import Preprocess
from visionclip.errors import DataError
from visionclip.schema import COLUMNS, DISEASE_FLAGS, FLAG_COLUMNS


def disk_jpeg(path: Path, size=(120, 90), seed=0, radius=0.45) -> Path:
    g = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[:h, :w]
    arr = np.zeros((h, w, 3), np.uint8)
    inside = (xx - w / 2) ** 2 + (yy - h / 2) ** 2 < (radius * h) ** 2
    arr[inside] = g.integers(60, 220, size=(inside.sum(), 3))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, quality=90)
    return path


def row(i: int, **kw) -> dict:
    r = {c: 0 for c in COLUMNS}
    r.update(file_name=f"{i}.jpg", dr_grade=i % 5, is_fundus=1, is_macular_readable=1,
             is_optic_disc_readable=1, is_retinal_region_readable=1)
    r.update(kw)
    return r


@pytest.fixture()
def corpus(tmp_path):
    return [CorpusRecord(disk_jpeg(tmp_path / f"{i}.jpg", seed=i), row(i, is_gc=i % 2),
                         f"中文描述{i}", f"english caption {i}", "cam") for i in range(6)]


def test_item_contract(corpus):
    ds = ImageTextDataset(corpus, image_size=48, language="zh", augment=False, seed=0)
    item = ds[3]
    assert set(item) == {"image", "caption", "label_key", "index", "labels"}
    assert item["image"].dtype == torch.uint8 and item["image"].shape == (3, 48, 48)
    assert item["caption"] == "中文描述3" and item["index"] == 3
    assert item["labels"].dtype == torch.long and item["labels"].shape == (15,)
    assert LABEL_VECTOR == ("dr_grade",) + FLAG_COLUMNS
    assert item["labels"].tolist() == [corpus[3].labels[c] for c in LABEL_VECTOR]
    assert item["label_key"] == label_set_key(corpus[3].labels)
    assert ImageTextDataset(corpus, 48, "en", False, 0)[3]["caption"] == "english caption 3"
    batch = next(iter(DataLoader(ds, batch_size=4)))
    assert batch["image"].shape == (4, 3, 48, 48) and len(batch["caption"]) == 4


def test_deterministic_per_seed_epoch_index(corpus):
    a = ImageTextDataset(corpus, 48, "both", augment=True, seed=11)
    b = ImageTextDataset(corpus, 48, "both", augment=True, seed=11)
    a.set_epoch(2), b.set_epoch(2)
    for i in (0, 5):
        x, y = a[i], b[i]
        assert torch.equal(x["image"], y["image"]) and x["caption"] == y["caption"]
    a.set_epoch(3)
    assert not torch.equal(a[0]["image"], b[0]["image"])
    # "both" draws each language sometimes
    langs = {ImageTextDataset(corpus, 48, "both", False, s)[0]["caption"][:3] for s in range(12)}
    assert langs == {"中文描", "eng"}
    # without augmentation the epoch changes nothing
    c = ImageTextDataset(corpus, 48, "zh", augment=False, seed=11)
    first = c[1]["image"]
    c.set_epoch(9)
    assert torch.equal(first, c[1]["image"])


def test_worker_processes_give_the_same_batches(corpus):
    ds = ImageTextDataset(corpus, 32, "both", augment=True, seed=4)
    ds.set_epoch(1)
    solo = list(DataLoader(ds, batch_size=3, num_workers=0))
    pool = list(DataLoader(ds, batch_size=3, num_workers=2))
    for a, b in zip(solo, pool):
        assert torch.equal(a["image"], b["image"]) and a["caption"] == b["caption"]


def test_image_dataset(tmp_path):
    # circles cut at top and bottom: wider than tall, so the square needs padding
    recs = [Record(disk_jpeg(tmp_path / f"{i}.jpg", seed=i, radius=0.6), i % 2, ("a", "b"), "refuge", "refuge")
            for i in range(3)]
    ds = ImageDataset(recs, Preprocess(40))
    item = ds[2]
    assert item["image"].shape == (3, 40, 40) and item["label"] == 0 and item["index"] == 2
    flair = ImageDataset(recs, Preprocess(40, flair_exact=True))[2]["image"]
    assert not torch.equal(flair, item["image"])     # padding at bottom/right, not centred


def test_corrupt_and_missing_images_name_the_file(tmp_path, corpus):
    bad = tmp_path / "0.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    with pytest.raises(DataError, match=r"0.jpg: cannot decode image"):
        ImageTextDataset(corpus, 32)[0]
    with pytest.raises(DataError, match=r"nope.jpg: image file not found"):
        load_image(tmp_path / "nope.jpg", 32)
    with pytest.raises(DataError, match=r"language"):
        ImageTextDataset(corpus, 32, language="fr")


def test_large_jpeg_decoded_in_draft_mode(tmp_path):
    path = disk_jpeg(tmp_path / "big.jpg", size=(1024, 768))
    small = load_image(path, 64)
    assert small.size[0] < 1024 and min(small.size) >= 64
    assert load_image(path, 600).size == (1024, 768)


def test_label_set_key_is_stable_and_separates_what_captions_say():
    r = row(0, dr_grade=2, is_dm=1, is_dme=1)
    expected = 2 * (1 << 14) + (1 << DISEASE_FLAGS.index("is_dm")) + (1 << DISEASE_FLAGS.index("is_dme"))
    assert label_set_key(r) == expected
    assert label_set_key({**r, "eye_side": 1}) == expected
    assert label_set_key({**r, "is_gc": 1}) != expected
    assert label_set_key({**r, "is_macular_readable": 0}) != expected
    keys = {label_set_key(row(0, dr_grade=g, **{f: 1})) for g in range(5) for f in DISEASE_FLAGS}
    assert len(keys) == 5 * len(DISEASE_FLAGS)
    # a frame that is not a fundus photograph carries no disease, yet is not a normal eye: the
    # label-aware loss must not pair its caption with normal eyes
    frame = row(0, is_fundus=0, is_macular_readable=0, is_optic_disc_readable=0, is_retinal_region_readable=0)
    assert label_set_key(frame) != label_set_key(row(0))
    assert label_set_key(row(0)) == 0


def test_label_set_name_reads_the_key_back():
    assert label_set_name(label_set_key(row(0))) == "normal"
    assert label_set_name(label_set_key(row(0, dr_grade=2, is_dm=1, is_dme=1))) == \
        "DR grade 2 + diabetes + diabetic macular edema"
    assert label_set_name(label_set_key(row(0, is_gc=1))) == "glaucoma"
    assert label_set_name(label_set_key(row(0, is_gc=1, is_macular_readable=0))) == "glaucoma + macula not readable"
    frame = row(0, is_fundus=0, is_macular_readable=0, is_optic_disc_readable=0, is_retinal_region_readable=0)
    assert label_set_name(label_set_key(frame)) == "not a fundus photograph"
