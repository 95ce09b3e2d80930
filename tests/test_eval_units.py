"""Retrieval, few-shot, embeddings I/O, the paper table and the supervised-ceiling mapping."""
import json

import numpy as np
import pytest
import torch

from visionclip.eval.embed import embed_images, load_embeddings, save_embeddings
from visionclip.errors import DataError
from visionclip.data.benchmarks import check_classes, load_dataset_manifest
from visionclip.eval.ceiling import balance_heads, ceiling_probs
from visionclip.eval.table import PAPER_ROWS, paper_table, row_name, write_table
from visionclip.eval.fewshot import draw_shots, fewshot_probe, split_pool
from visionclip.eval.retrieval import hits_by_label_set, recall_at_k, top_matches


def test_retrieval_constructed_case():
    # 3 pairs; image 1's best text is text 2, which shares image 1's label set.
    img = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float32)
    txt = np.array([[1, 0, 0], [0, 0.6, 0.8], [0, 0.8, 0.6]], dtype=np.float32)
    keys = np.array([7, 9, 9])
    r = recall_at_k(img, txt, keys, keys, ks=(1, 2))
    assert r["image_to_text"]["exact"] == {"R@1": pytest.approx(1 / 3), "R@2": 1.0}
    assert r["image_to_text"]["label_set"]["R@1"] == 1.0
    assert r["text_to_image"]["exact"]["R@1"] == pytest.approx(1 / 3)
    assert r["text_to_image"]["label_set"]["R@1"] == 1.0
    assert top_matches(img, txt, 1)[:, 0].tolist() == [0, 2, 1]
    with pytest.raises(DataError, match="one caption per image"):
        recall_at_k(img, txt[:2])


def test_hits_by_label_set_names_what_a_miss_retrieved():
    # images 0-2 normal, 3-4 glaucoma, 5 DR grade 1 + diabetes; each image's top caption is the one
    # listed in `best`
    from visionclip.data.datasets import label_set_key
    from visionclip.schema import COLUMNS, READABILITY_FLAGS

    eye = {c: int(c in READABILITY_FLAGS) for c in COLUMNS if c != "file_name"}  # a readable eye, no finding
    normal, glaucoma, dr1_dm = (label_set_key({**eye, **extra}) for extra in ({}, {"is_gc": 1},
                                                                                {"dr_grade": 1, "is_dm": 1}))
    keys = np.array([normal, normal, normal, glaucoma, glaucoma, dr1_dm])
    best = [0, 1, 5, 0, 4, 2]
    img = np.eye(6, dtype=np.float32)
    txt = np.zeros((6, 6), dtype=np.float32)
    txt[best, np.arange(6)] = 1.0  # caption best[i] is image i's nearest
    table = hits_by_label_set(img, txt, keys)
    assert list(table["label set"]) == ["normal", "glaucoma", "DR grade 1 + diabetes"]
    assert list(table["images"]) == [3, 2, 1]
    assert table["hit rate"].tolist() == pytest.approx([2 / 3, 1 / 2, 0.0])
    assert list(table["most retrieved instead"]) == ["DR grade 1 + diabetes", "normal", "normal"]
    rate = float((table["hit rate"] * table["images"]).sum() / table["images"].sum())
    assert rate == pytest.approx(recall_at_k(img, txt, keys, keys, ks=(1,))["image_to_text"]["label_set"]["R@1"])
    assert len(hits_by_label_set(img, txt, keys, top=1)) == 1


def test_fewshot_deterministic_and_disjoint():
    r = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], 10)
    emb = r.normal(size=(30, 4)) + np.eye(4)[labels] * 3
    a = fewshot_probe(emb, labels, emb, labels, ks=[1, 4], draws=3, seed=5)
    b = fewshot_probe(emb, labels, emb, labels, ks=[1, 4], draws=3, seed=5)
    assert a == b and [x["k"] for x in a] == [1, 4] and len(a[0]["aca"]) == 3
    assert a[1]["aca_mean"] > 0.5
    shots = draw_shots(labels, 4, seed=1)
    assert np.bincount(labels[shots]).tolist() == [4, 4, 4]
    pool, score = split_pool(labels, seed=3)
    assert not set(pool) & set(score) and len(pool) + len(score) == 30
    with pytest.raises(DataError, match="class 3"):
        draw_shots(labels, 1, seed=0, n_classes=4)


class _Images(torch.utils.data.Dataset):
    def __len__(self):
        return 5

    def __getitem__(self, i):
        return {"image": torch.full((3, 4, 4), i * 50, dtype=torch.uint8), "label": i % 2}


class _MeanModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))

    def encode_image(self, x):
        assert x.dtype == torch.float32 and x.max() <= 1.0
        m = x.mean(dim=(1, 2, 3))
        return torch.stack([m, 1 - m], 1)


def test_embed_images_and_npz_roundtrip(tmp_path):
    model = _MeanModel().train()
    emb = embed_images(model, _Images(), batch_size=2)
    assert emb.shape == (5, 2) and np.allclose(np.linalg.norm(emb, axis=1), 1)
    assert model.training  # mode restored
    save_embeddings(tmp_path, "toy", image=emb, label=np.arange(5), path=np.array(["a", "b", "c", "d", "e"]))
    back = load_embeddings(tmp_path, "toy")
    assert np.array_equal(back["image"], emb) and back["path"][1] == "b"
    assert not list((tmp_path / "embeddings").glob(".*tmp"))
    with pytest.raises(DataError, match="not found"):
        load_embeddings(tmp_path, "missing")


class _AutocastProbe(_MeanModel):
    """Records the autocast state and memory layout its image tower is called under."""

    def encode_image(self, x):
        self.seen = (torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu"),
                     x.is_contiguous(memory_format=torch.channels_last))
        return super().encode_image(x)


def test_embed_images_runs_under_the_requested_autocast_channels_last():
    model = _AutocastProbe()
    full = embed_images(model, _Images(), batch_size=5, precision="fp32")
    assert model.seen[0] is False and model.seen[2] is True
    half = embed_images(model, _Images(), batch_size=5, precision="bf16")
    assert model.seen == (True, torch.bfloat16, True)
    assert half.dtype == np.float32 and np.allclose(half, full, atol=1e-2)


def test_bf16_embeddings_of_a_resnet_stay_close_to_fp32():
    from visionclip.config import ModelConfig
    from visionclip.model import build_model

    cfg = ModelConfig(image_tower="resnet18", projection_norm=False, text_pooling="cls", exposure_norm=False, embed_dim=16,
                      text_layers=1, text_hidden=32, text_heads=2, text_intermediate=64, max_positions=32,
                      vocab="corpus", vocab_size=100, context_length=16)
    torch.manual_seed(0)
    model = build_model(cfg, 100).eval()
    images = torch.utils.data.TensorDataset(torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8))
    full = embed_images(model, images, batch_size=3, precision="fp32")
    half = embed_images(model, images, batch_size=3, precision="bf16")
    cos = (full * half).sum(axis=1)
    assert cos.min() > 0.99 and not np.array_equal(full, half)  # bf16 did run, and moved little


def test_paper_table_layout(tmp_path):
    ours = [{"model": row_name("zh", "ek"), "source": "synthetic stand-in, held-out camera profiles",
             "scores": {"messidor2": {"value": 0.5, "lo": 0.4, "hi": 0.6}, "refuge": {"value": 0.9, "lo": 0.85, "hi": 0.95}}}]
    df = paper_table(ours)
    assert list(df.columns) == ["model", "source", "MESSIDOR", "FIVES", "REFUGE"]
    assert df.iloc[0].tolist() == ["CLIP", "reported in the paper", "0.237", "0.250", "0.470"]
    assert df.iloc[4, 0] == "VisionCLIP (paper)" and df.iloc[4, 4] == "0.925"
    assert df.iloc[len(PAPER_ROWS)].tolist()[2:] == ["0.500 [0.400, 0.600]", "—", "0.900 [0.850, 0.950]"]
    write_table(ours, tmp_path)
    assert (tmp_path / "eval" / "table.md").read_text().count("reported in the paper") == 5
    data = json.loads((tmp_path / "eval" / "table.json").read_text())
    assert data["rows"][-1]["aca"]["messidor2"]["value"] == 0.5


def test_ceiling_mapping():
    heads = {"dr_grade": torch.tensor([[5.0, 0, 0, 0, 0], [0, 0, 0, 0, 5.0]]), "flags": torch.full((2, 14), -9.0)}
    heads["flags"][1, 6] = 9.0  # is_gc
    assert ceiling_probs(heads, "messidor2", list("abcde")).argmax(1).tolist() == [0, 4]
    m = ceiling_probs(heads, "messidor", list("abcd"))
    assert m.shape == (2, 4) and np.allclose(m.sum(1), 1) and m.argmax(1).tolist() == [0, 3]
    assert ceiling_probs(heads, "refuge", ["no glaucoma", "glaucoma"]).argmax(1).tolist() == [0, 1]
    names = ["normal", "age related macular degeneration", "diabetic retinopathy", "glaucoma"]
    f = ceiling_probs(heads, "fives", names)
    assert np.allclose(f.sum(1), 1) and f[0].argmax() == 0 and f[1].argmax() in (2, 3)


def test_balanced_ceiling_decides_at_the_training_prevalence():
    """A classifier whose glaucoma logit sits between its training prior (7%) and 0.5 says 'no glaucoma'
    unadjusted and 'glaucoma' once the prior is taken out; logits equal to the log-priors become uniform."""
    grade_prior = [0.7, 0.1, 0.1, 0.05, 0.05]
    flag_prior = [0.05] * 14
    flag_prior[6] = 0.07  # is_gc
    priors = {"dr_grade": grade_prior, "flags": flag_prior}
    gc_logit = float(torch.logit(torch.tensor(0.2)))  # p = 0.2: above the prior, below 0.5
    heads = {"dr_grade": torch.tensor([grade_prior]).log(), "flags": torch.full((1, 14), -9.0)}
    heads["flags"][0, 6] = gc_logit
    names = ["no glaucoma", "glaucoma"]
    assert ceiling_probs(heads, "refuge", names).argmax(1).tolist() == [0]
    balanced = balance_heads(heads, priors)
    assert ceiling_probs(balanced, "refuge", names).argmax(1).tolist() == [1]
    assert torch.allclose(balanced["dr_grade"], torch.zeros(1, 5), atol=1e-6)


def test_classifier_label_priors_round_trip_and_bad_priors_are_named(tmp_path):
    from visionclip.config import load_profile
    from visionclip.errors import CheckpointError
    from visionclip.model import ImageClassifier, build_image_classifier

    clf = build_image_classifier(load_profile("tiny").model, 32)
    clf.label_priors = {"dr_grade": [0.6, 0.1, 0.1, 0.1, 0.1], "flags": [0.1] * 14}
    clf.save_pretrained(tmp_path / "sup")
    assert ImageClassifier.from_pretrained(tmp_path / "sup").label_priors == clf.label_priors
    config_path = tmp_path / "sup" / "config.json"
    config = json.loads(config_path.read_text())
    config["label_priors"]["flags"] = [0.1] * 13
    config_path.write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"config\.json: field 'label_priors'"):
        ImageClassifier.from_pretrained(tmp_path / "sup")


def test_paper_table_original_messidor_column():
    ours = [{"model": "m", "source": "real messidor at /data/m", "scores": {"messidor": {"value": 0.4, "lo": 0.3, "hi": 0.5}}}]
    df = paper_table(ours)
    assert df.columns[-1].startswith("MESSIDOR (original")
    assert df.iloc[0, -1] == "—" and df.iloc[-1, -1] == "0.400 [0.300, 0.500]"
    assert "MESSIDOR (original" not in "".join(paper_table([]).columns)


def test_check_classes_names_the_mismatch():
    manifest = load_dataset_manifest("refuge")  # classes: no glaucoma, glaucoma
    check_classes(manifest, ["No Glaucoma", "GLAUCOMA"], "/x")  # same classes, same order: case is ignored
    msg = (r"/x: dataset classes \['glaucoma', 'no glaucoma'\] do not match the prompt classes "
           r"\['no glaucoma', 'glaucoma'\] of manifest 'refuge'")
    with pytest.raises(DataError, match=msg):  # the right classes in the wrong order
        check_classes(manifest, ["glaucoma", "no glaucoma"], "/x")
    with pytest.raises(DataError, match=r"dataset classes \['normal', 'glaucoma'\] do not match"):
        check_classes(manifest, ["normal", "glaucoma"], "/x")
