"""Zero-shot evaluation end to end on benchmark folders in the real layouts, with a tiny saved model."""
import json
import shutil

import pytest

import numpy as np
import torch

from test_eval_fixtures import (TINY_OVERRIDES, fundus_image, make_benchmarks, make_corpus, save_tiny_classifier,
                                save_tiny_model)
from visionclip.config import load_profile
from visionclip.data.benchmarks import labels_of, load_records
from visionclip.data.readers import read_synfundus
from visionclip.data.splits import split_corpus
from visionclip.data.transforms import Preprocess
from visionclip.errors import CheckpointError, ConfigError, DataError
from visionclip.eval.ceiling import balance_heads, ceiling_probs, classifier_heads
from visionclip.eval.embed import embed_images, load_embeddings
from visionclip.eval.metrics import classification_report
from visionclip.paths import RunLayout
from visionclip.pretrained import load_classifier, load_clip
from visionclip.report import figures
from visionclip.eval.benchmark import evaluate_zero_shot, run_evaluation
from visionclip.eval.fewshot import run_fewshot
from visionclip.eval.maps import run_embeddings
from visionclip.eval.retrieval import run_retrieval
from visionclip.eval.table import PAPER_ROWS
from visionclip.eval.retrieval import retrieval_examples
from visionclip.cli import main as cli_main


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    save_tiny_model(run_dir / "model")
    save_tiny_classifier(run_dir / "supervised")
    make_benchmarks(run_dir / "data" / "benchmarks" / "test")
    make_benchmarks(run_dir / "data" / "benchmarks" / "dev", seed=100)
    make_corpus(run_dir / "data" / "corpus")
    profile = load_profile("ci", {**TINY_OVERRIDES, "train.image_size": 32, "eval.bootstrap": 100,
                                  "eval.fewshot_k": [1, 2], "eval.fewshot_draws": 2, "eval.batch_size": 16})
    return profile, run_dir, run_evaluation(profile, run_dir)


def test_run_evaluation_writes_table_and_reports(run):
    profile, run_dir, out = run
    df = out["table"]
    assert list(df.columns) == ["model", "source", "MESSIDOR", "FIVES", "REFUGE"]
    assert len(df) == len(PAPER_ROWS) + 4 + 2  # paper rows, zh/en x plain/EK, chance, ceiling
    ours = df.iloc[len(PAPER_ROWS):]
    assert (ours["source"] == "synthetic stand-in, held-out camera profiles (test rendering)").all()
    assert ours["MESSIDOR"].str.match(r"^0\.\d{3} \[0\.\d{3}, [01]\.\d{3}\]$").all()
    assert ours["model"].str.contains("Chance").any() and ours["model"].str.contains("Supervised").any()
    for name in ("table.csv", "table.md", "table.json", "messidor2.json", "predictions_refuge.csv"):
        assert (run_dir / "eval" / name).is_file()
    rep = json.loads((run_dir / "eval" / "messidor2.json").read_text())["results"]
    assert set(rep) == {"zh_plain", "zh_ek", "en_plain", "en_ek", "chance", "supervised"}
    r = rep["zh_ek"]["report"]
    assert len(r["confusion_matrix"]) == 5 and "quadratic_kappa" in r
    assert r["per_class"][0]["sensitivity"]["lo"] is not None
    assert (run_dir / "embeddings" / "refuge_test.npz").is_file()
    # deterministic: the same run gives the same numbers
    again = run_evaluation(profile, run_dir, datasets=["refuge"])["table"]
    assert again["REFUGE"].tolist() == df["REFUGE"].tolist()


def test_real_data_root_is_named_in_the_table(run, tmp_path):
    profile, run_dir, _ = run
    real = make_benchmarks(tmp_path / "real")["refuge"]
    real_profile = load_profile("ci", {**TINY_OVERRIDES, "train.image_size": 32, "eval.bootstrap": 100,
                                       "eval.batch_size": 16, "data.refuge_root": str(real)})
    other_run = tmp_path / "run"  # its own run dir: the shared one keeps its evaluation for the tests below
    shutil.copytree(run_dir / "model", other_run / "model")
    df = run_evaluation(real_profile, other_run, datasets=["refuge"], settings=[("en", "ek")],
                        references=False)["table"]
    assert len(df) == len(PAPER_ROWS) + 1
    assert (df["source"].iloc[len(PAPER_ROWS):] == f"real refuge at {real}").all()


def test_fewshot_uses_dev_shots(run):
    profile, run_dir, _ = run
    out = run_fewshot(profile, run_dir, datasets=["fives", "refuge"])
    assert [c["k"] for c in out["fives"]["curve"]] == [1, 2]
    assert out["fives"]["shots_from"].startswith("dev")
    assert out["refuge"]["zero_shot_aca"]["value"] is not None


def test_evaluate_zero_shot_and_bad_input(run, tmp_path, capsys):
    profile, run_dir, _ = run
    root = run_dir / "data" / "benchmarks" / "test" / "refuge"
    res = evaluate_zero_shot(run_dir / "model", "refuge", root, "en", "plain", image_size=32, n_boot=50)
    assert res["report"]["n"] == 4 and res["y_prob"].shape == (4, 2)
    with pytest.raises(ConfigError, match="unknown dataset 'idrid'"):
        evaluate_zero_shot(run_dir / "model", "idrid", root)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty"):
        evaluate_zero_shot(run_dir / "model", "fives", tmp_path / "empty")
    with pytest.raises(DataError, match=r"no train/Original or test/Original folder\. Expected the fives layout"):
        evaluate_zero_shot(run_dir / "model", "fives", root)  # a REFUGE folder is not the FIVES layout
    with pytest.raises(CheckpointError, match="ImageClassifier"):  # a checkpoint of another kind
        evaluate_zero_shot(run_dir / "supervised", "refuge", root)
    # the CLI: clear one-line errors, a report on success
    assert cli_main(["evaluate", "--checkpoint", str(run_dir / "model"), "--dataset", "refuge",
                     "--data-root", str(root), "--bootstrap", "100", "--out-dir", str(tmp_path / "o")]) == 0
    assert "aca" in capsys.readouterr().out and (tmp_path / "o" / "refuge.json").is_file()
    assert cli_main(["evaluate", "--checkpoint", str(run_dir / "model"), "--dataset", "fives",
                     "--data-root", str(tmp_path / "nowhere")]) == 2
    assert "nowhere" in capsys.readouterr().err


def test_retrieval_embeddings_and_maps(run, monkeypatch):
    profile, run_dir, _ = run
    out = run_retrieval(profile, run_dir)
    n = out["zh"]["n"]
    assert n >= 2 and set(out["zh"]["image_to_text"]) == {"exact", "label_set"}
    assert out["en"]["text_to_image"]["label_set"]["R@10"] >= out["en"]["text_to_image"]["exact"]["R@10"]
    ex = retrieval_examples(run_dir, "zh", n_queries=2, k=2)
    assert len(ex["match_paths"]) == 2 and len(ex["match_paths"][0]) == 2
    info = run_embeddings(profile, run_dir)
    assert info["n_images"] == n
    # the UMAP fit itself is tested in test_eval_viz.py; here only the glue, with a cheap projection
    monkeypatch.setattr(figures, "umap_projection", lambda img, protos=None, seed=0: (
        img[:, :2], None if protos is None else protos[:, :2]))
    figs = figures.corpus_maps(run_dir)
    assert set(figs) == {"disease", "dr_grade", "domain"}
    assert set(figures.benchmark_maps(run_dir, "fives")) == {"class", "domain"}


def _cut_disks(folder):
    """Every image under `folder` redrawn as a disk cut at top and bottom (wider than tall): FLAIR's
    bottom-right padding and the centred one then give different pixels."""
    for i, path in enumerate(sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".png"))):
        fundus_image(path, seed=900 + i, shape="cut")


def test_flair_exact_reaches_every_row_and_the_corpus_retrieval(tmp_path):
    """Under eval.flair_exact every image the evaluation reads is padded as FLAIR pads: the saved
    zero-shot embeddings, the supervised ceiling's report and the corpus retrieval's embeddings are
    exactly what FLAIR-padded images give, and not what centred ones give."""
    save_tiny_model(tmp_path / "model")
    save_tiny_classifier(tmp_path / "supervised")
    layout = RunLayout(tmp_path)
    make_benchmarks(layout.benchmarks("test"))
    make_corpus(layout.corpus)
    _cut_disks(layout.benchmarks("test") / "refuge")
    _cut_disks(layout.corpus / "Fundus")
    profile = load_profile("ci", {**TINY_OVERRIDES, "train.image_size": 32, "eval.bootstrap": 100,
                                  "eval.batch_size": 16, "eval.flair_exact": True})
    flair, centred = Preprocess(32, flair_exact=True), Preprocess(32)
    model, _ = load_clip(layout.model)

    run_evaluation(profile, tmp_path, datasets=["refuge"], settings=[("en", "ek")])
    records = load_records("refuge", layout.benchmarks("test") / "refuge")
    saved = load_embeddings(tmp_path, "refuge_test")["image"]
    assert np.array_equal(saved, embed_images(model, records, flair, 16))
    assert not np.array_equal(saved, embed_images(model, records, centred, 16))

    classifier = load_classifier(layout.supervised)
    y, names = labels_of(records)

    def ceiling_report(preprocess):
        heads = classifier_heads(classifier, records, preprocess, 16)
        if classifier.label_priors is not None:  # as run_evaluation does
            heads = balance_heads(heads, classifier.label_priors)
        return classification_report(y, ceiling_probs(heads, "refuge", names), names, n_boot=100, seed=profile.seed)
    written = json.loads(layout.eval_json("refuge").read_text())["results"]["supervised"]["report"]
    assert written == json.loads(json.dumps(ceiling_report(flair)))
    assert not torch.equal(classifier_heads(classifier, records, flair, 16)["flags"],
                           classifier_heads(classifier, records, centred, 16)["flags"])

    run_retrieval(profile, tmp_path, languages=("en",), max_items=4)
    corpus = split_corpus(read_synfundus(layout.corpus), profile.seed)["test"][:4]
    saved = load_embeddings(tmp_path, "corpus_test_en")["image"]
    assert np.array_equal(saved, embed_images(model, corpus, flair, 16))
    assert not np.array_equal(saved, embed_images(model, corpus, centred, 16))
