"""Counterfactual reports (train.hard_negatives): one statement flipped, schema kept, seeded."""
from __future__ import annotations

import pytest

from visionclip.data.captions import caption
from visionclip.data.counterfactual import counterfactual_caption, counterfactual_row
from visionclip.data.datasets import ImageTextDataset, label_set_key, label_set_name
from visionclip.schema import DISEASE_FLAGS, READABILITY_FLAGS
from visionclip.synth.labels import coherent, sample_labels

from test_data_datasets import corpus, row  # noqa: F401  (the fixture and the row builder)


@pytest.fixture(scope="module")
def rows():
    return sample_labels(600, seed=11)


def _changed(a, b):
    return {k for k in ("dr_grade",) + DISEASE_FLAGS + READABILITY_FLAGS if int(a[k]) != int(b[k])}


def test_every_flip_changes_what_the_report_says_and_keeps_the_schema(rows):
    kinds = set()
    for i, r in enumerate(rows):
        f = counterfactual_row(r, seed=1, epoch=0, index=i)
        assert label_set_key(f) != label_set_key(r), (r, f)
        assert coherent(dict(f)) == f                      # the schema's clinical rules hold
        changed = _changed(r, f)
        if not r["is_fundus"]:
            assert label_set_name(label_set_key(f)) == "normal"
            kinds.add("to fundus")
        elif not f["is_fundus"]:
            kinds.add("not fundus")
        elif "dr_grade" in changed:
            assert (r["dr_grade"] == 0) != (f["dr_grade"] == 0)
            kinds.add("dr")
        else:   # one disease flag (is_dme may bring the grade it implies)
            assert len(changed & set(DISEASE_FLAGS) - {"is_dm"}) == 1
            kinds.add("flag")
    assert kinds == {"to fundus", "not fundus", "dr", "flag"}


def test_flips_are_seeded_by_seed_epoch_and_index(rows):
    r = next(x for x in rows if x["is_fundus"])
    assert counterfactual_row(r, 1, 0, 5) == counterfactual_row(r, 1, 0, 5)
    drawn = {tuple(sorted(counterfactual_row(r, 1, e, 5).items())) for e in range(12)}
    assert len(drawn) > 2                                   # another epoch, another flip


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_the_counterfactual_report_is_in_the_language_and_differs(rows, lang):
    for i, r in enumerate(rows[:50]):
        text, flipped = counterfactual_caption(r, 1, 0, i, lang)
        assert text == caption(flipped, 1, i, lang)
        assert text != caption(r, 1, i, lang)
        assert any("\u4e00" <= ch <= "\u9fff" for ch in text) == (lang == "zh")


def test_dataset_items_carry_a_negative_only_when_asked(corpus):  # noqa: F811
    plain = ImageTextDataset(corpus, 48, "zh", False, 0)
    assert "negative_caption" not in plain[2]
    hard = ImageTextDataset(corpus, 48, "zh", False, 0, hard_negatives=True)
    item = hard[2]
    text, flipped = counterfactual_caption(corpus[2].labels, 0, 0, 2, "zh")
    assert item["negative_caption"] == text and item["negative_label_key"] == label_set_key(flipped)
    assert item["caption"] == plain[2]["caption"] and item["negative_label_key"] != item["label_key"]
    hard.set_epoch(1)
    assert [hard[i]["negative_caption"] for i in range(6)] != [item["negative_caption"]] + [
        ImageTextDataset(corpus, 48, "zh", False, 0, hard_negatives=True)[i]["negative_caption"] for i in range(1, 6)]


def test_the_trainer_trains_with_hard_negatives_and_resumes_to_the_same_weights(tmp_path):
    """train.hard_negatives through the real loop: finite losses, and a run stopped after 2 steps and
    resumed ends with the uninterrupted run's weights (the negatives are seeded by (seed, epoch, index))."""
    from safetensors.torch import load_file
    import torch

    from visionclip.config import load_profile
    from visionclip.training.loop import train_clip
    from test_train import write_tiny_run

    runs = {}
    for name in ("full", "resumed"):
        run = tmp_path / name
        profile = load_profile(write_tiny_run(run, n=30, epochs=1, checkpoint_every=1, val_every=100),
                               {"train.hard_negatives": True})
        if name == "resumed":
            assert train_clip(load_profile(run / "tiny.yaml", {"train.hard_negatives": True,
                                                               "train.max_steps": 2}), run, progress=False)["steps"] == 2
        summary = train_clip(profile, run, progress=False)
        runs[name] = load_file(str(run / "model" / "model.safetensors"))
        assert summary["steps"] == summary["total_steps"] >= 3
    assert all(torch.equal(runs["full"][k], runs["resumed"][k]) for k in runs["full"])
    # the negatives changed training: the same run without them ends elsewhere
    plain = tmp_path / "plain"
    train_clip(load_profile(write_tiny_run(plain, n=30, epochs=1, checkpoint_every=1, val_every=100)), plain,
               progress=False)
    other = load_file(str(plain / "model" / "model.safetensors"))
    assert not all(torch.equal(runs["full"][k], other[k]) for k in other)
