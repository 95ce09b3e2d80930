"""The readers on what this project's own writers render (visionclip.synth.writers), end to end."""
from __future__ import annotations

import collections

import pytest

from visionclip.config import load_profile
from visionclip.data.datasets import ImageDataset, ImageTextDataset
from visionclip.data.readers import read_benchmark, read_synfundus
from visionclip.data.transforms import Preprocess
from visionclip.errors import DataError

writers = pytest.importorskip("visionclip.synth.writers")


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    profile = load_profile("ci", {"synth.corpus_size": 12, "synth.render_size": 64, "synth.messidor2_size": 10,
                                  "synth.fives_size": 8, "synth.refuge_size": 10, "synth.workers": 1})
    corpus = writers.render_corpus(profile, out / "corpus", progress=False)
    benches = writers.render_benchmarks(profile, out / "benchmarks" / "test", "test", progress=False)
    return profile, corpus, benches


def test_corpus_reads_with_cameras_and_captions(rendered):
    profile, corpus, _ = rendered
    recs = read_synfundus(corpus)
    assert len(recs) == 12
    assert {r.domain for r in recs} <= set(profile.synth.train_cameras)
    assert all(r.caption_zh and r.caption_en for r in recs)
    item = ImageTextDataset(recs, 32, "zh", augment=True, seed=profile.seed)[0]
    assert item["image"].shape == (3, 32, 32) and item["caption"] == recs[0].caption_zh


@pytest.mark.parametrize("name,n,classes", [("messidor2", 10, 5), ("fives", 8, 4), ("refuge", 10, 2)])
def test_benchmarks_read_on_heldout_cameras(rendered, name, n, classes):
    profile, _, benches = rendered
    recs = read_benchmark(name, benches[name])
    assert len(recs) == n and len(recs[0].class_names) == classes
    assert {r.domain for r in recs} <= set(profile.synth.heldout_cameras)
    if name == "fives":
        assert collections.Counter(r.label for r in recs) == {0: 2, 1: 2, 2: 2, 3: 2}
    if name == "refuge":
        assert collections.Counter(r.label for r in recs) == {0: 9, 1: 1}
    assert ImageDataset(recs, Preprocess(32))[0]["image"].shape == (3, 32, 32)


def test_tampered_stand_in_is_refused(rendered):
    _, _, benches = rendered
    victim = sorted((benches["refuge"] / "Training400" / "Non-Glaucoma").iterdir())[0]
    data = victim.read_bytes()
    try:
        victim.write_bytes(data[:-10])
        with pytest.raises(DataError, match=rf"{victim.name}: sha256"):
            read_benchmark("refuge", benches["refuge"])
    finally:
        victim.write_bytes(data)
