"""Zero-shot evaluation end to end on benchmark folders in the real layouts, with a tiny saved model."""
import json
import shutil
import sys

import pytest

from test_eval_fixtures import TINY_OVERRIDES, make_benchmarks, make_corpus, save_tiny_classifier, save_tiny_model
from visionclip.config import load_profile
from visionclip.errors import CheckpointError, ConfigError, DataError
from visionclip.eval import embed
from visionclip.report import figures
from visionclip.data import datasets as datasets_module
from visionclip.eval.benchmark import evaluate_zero_shot, run_evaluation
from visionclip.eval.fewshot import run_fewshot
from visionclip.eval.maps import run_embeddings
from visionclip.eval.retrieval import run_retrieval
from visionclip.eval.table import CEILING_ROW, PAPER_ROWS
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


def test_flair_exact_reaches_ceiling_and_retrieval(tmp_path, monkeypatch):
    """With eval.flair_exact on, the supervised ceiling and the corpus retrieval preprocess as the
    zero-shot rows do (FLAIR's padding): every image dataset they build gets flair_exact=True."""
    save_tiny_model(tmp_path / "model")
    save_tiny_classifier(tmp_path / "supervised")
    make_benchmarks(tmp_path / "data" / "benchmarks" / "test")
    make_corpus(tmp_path / "data" / "corpus")
    profile = load_profile("ci", {**TINY_OVERRIDES, "train.image_size": 32, "eval.bootstrap": 100,
                                  "eval.batch_size": 16, "eval.flair_exact": True})
    seen: list[tuple[str, str, bool]] = []

    def recorder(base):
        class Recording(base):
            def __init__(self, records, image_size, flair_exact=False):
                seen.append((base.__name__, sys._getframe(1).f_code.co_name, bool(flair_exact)))
                super().__init__(records, image_size, flair_exact=flair_exact)
        return Recording

    monkeypatch.setattr(datasets_module, "ImageDataset", recorder(datasets_module.ImageDataset))
    monkeypatch.setattr(embed, "RecordImages", recorder(embed.RecordImages))
    out = run_evaluation(profile, tmp_path, datasets=["refuge"], settings=[("en", "ek")])
    assert CEILING_ROW in set(out["table"]["model"])
    # zero-shot and chance embeddings (through embed_images), then the supervised ceiling
    assert seen == [("ImageDataset", "_as_dataset", True)] * 2 + [("ImageDataset", "classifier_heads", True)]
    seen.clear()
    run_retrieval(profile, tmp_path, languages=("en",), max_items=2)
    assert seen == [("RecordImages", "_as_dataset", True)]  # corpus test images, embedded once for both ways
