"""The book's summary tables: prompt choice on dev, domain-gap pairing, benchmark counts."""
import json
from pathlib import Path

import pandas as pd
import pytest

from visionclip.report import tables
from visionclip.data.records import Record
from visionclip.errors import DataError


def _eval_json(path: Path, ds: str, acas: dict) -> None:
    results = {k: {"report": {"aca": {"value": v, "lo": v - 0.1, "hi": v + 0.1}}} for k, v in acas.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"dataset": ds, "results": results, "class_names": ["a", "b"]}))


def test_best_dev_setting_ignores_reference_rows(tmp_path):
    _eval_json(tmp_path / "eval" / "dev" / "fives.json", "fives", {"zh_ek": 0.7, "zh_plain": 0.6, "supervised": 0.99})
    _eval_json(tmp_path / "eval" / "dev" / "refuge.json", "refuge", {"zh_ek": 0.5, "zh_plain": 0.8, "chance": 0.9})
    best, means = tables.best_dev_setting(tables.load_eval(tmp_path, "dev"))
    assert best == "zh_plain"  # mean 0.70 against 0.60; chance and ceiling rows never win
    assert means["zh_plain"] == pytest.approx(0.7)
    assert set(means.index) == {"zh_ek", "zh_plain"}


def test_load_eval_names_the_missing_directory(tmp_path):
    with pytest.raises(DataError, match="no evaluation JSON"):
        tables.load_eval(tmp_path, "seen")


def _predictions(path: Path, paths, labels, preds) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"path": paths, "label": labels, "predicted": preds}).to_csv(path, index=False)


def test_domain_gap_pairs_cases_by_relative_path(tmp_path):
    # FIVES repeats file names across train/ and test/: pairing must use the path below the dataset root
    rel = [f"{split}/Original/{i}_N.png" for split in ("train", "test") for i in range(1, 21)]
    labels = ["normal" if i % 2 else "glaucoma" for i in range(len(rel))]
    for ds in ("messidor2", "fives", "refuge"):
        held = [f"/r/benchmarks/test/{ds}/{p}" for p in rel]
        seen = [f"/r/benchmarks/seen/{ds}/{p}" for p in rel]
        wrong = ["glaucoma" if j < 10 else lab for j, lab in enumerate(labels)]  # 10 mistakes held-out only
        _predictions(tmp_path / "eval" / f"predictions_{ds}.csv", held, labels, wrong)
        _predictions(tmp_path / "eval" / "seen" / f"predictions_{ds}.csv", seen, labels, labels)
    gap = tables.domain_gap_table(tmp_path, n_boot=200, seed=0)
    assert list(gap.dataset) == ["messidor2", "fives", "refuge"]
    assert (gap["images"] == 40).all()
    assert (gap["ACA seen cameras"] == 1.0).all()
    assert (gap["gap (seen - held-out)"] > 0).all()


def test_benchmark_summary_counts_classes_per_rendering(tmp_path):
    names = ("no glaucoma", "glaucoma")
    def recs(n_pos, cam):
        return [Record(tmp_path / f"{i}.jpg", int(i < n_pos), names, "refuge", cam) for i in range(10)]
    table = tables.benchmark_summary({("refuge", "test"): recs(1, "nidek_afc"), ("refuge", "seen"): recs(1, "topcon_nw")})
    assert table.loc[("refuge", "glaucoma"), "test"] == 1
    assert table.loc[("refuge", "no glaucoma"), "seen"] == 9
    assert table.loc[("refuge", "cameras"), "seen"] == "topcon_nw"


def test_primary_finding_orders_dr_before_flags():
    row = {"is_fundus": 1, "dr_grade": 2, "is_amd": 1, **{k: 0 for k in ("is_aon", "is_crp", "is_dm", "is_dme",
                                                                         "is_em", "is_gc", "is_htr", "is_pm", "is_rvo")}}
    assert tables.primary_finding(row) == "DR grade 2"
    assert tables.primary_finding(dict(row, dr_grade=0)) == "age-related macular degeneration"
    assert tables.primary_finding(dict(row, is_fundus=0)) == "non-fundus"


def test_release_columns_and_caption_statistics(tmp_path):
    from release_fixture import ROWS, write_release
    from test_data_readers import CORPUS_ROWS, make_corpus
    from visionclip.data.readers import read_synfundus_table

    write_release(tmp_path / "r")
    corpus = read_synfundus_table(tmp_path / "r", captions="both", caption_seed=1)
    prevalence, quality, agree = tables.release_column_tables(corpus)
    assert prevalence.set_index("flag")["images"].to_dict() == {
        "is_abnormal": 5, "is_md": 1, "is_mh": 0, "has_lesion": 2, "is_tessellated": 1, "is_treated": 0}
    assert (quality.loc[:, "min"].item(), quality.loc[:, "max"].item()) == (0.4, 0.91)
    agree = agree.set_index("condition")
    assert agree.loc["is_htr", ["flagged", "stated", "sentence only"]].tolist() == [0, 1, 1]  # the noisy row
    assert agree.loc["is_htr", "agree"] == round(5 / 6, 4) and agree.loc["is_gc", "agree"] == 1.0
    assert agree.loc["dr", ["flagged", "both"]].tolist() == [1, 1]
    assert "6 of 6 rows kept" in tables.release_columns_note(corpus)

    stats = tables.caption_statistics(corpus, "zh").set_index("language")
    sentences = [r[6] for r in ROWS]
    assert stats.loc["zh", ["source", "trained on", "captions", "distinct"]].tolist() == ["release", True, 6, 6]
    assert stats.loc["zh", "mean length"] == round(sum(map(len, sentences)) / 6, 1)
    assert stats.loc["zh", "vocabulary"] == len(set("".join(sentences)))
    assert stats.loc["en", ["source", "trained on"]].tolist() == ["generated", False]
    assert tables.caption_source_line(corpus, "both") == (
        "captions used for training: zh = the release's diagnostic sentence (diagnosticAdvice); "
        "en = reports generated from the labels")
    release_only = read_synfundus_table(tmp_path / "r", captions="release", min_quality=0.66)
    assert tables.caption_statistics(release_only, "zh").language.tolist() == ["zh"]
    assert "4 of 6 rows kept" in tables.release_columns_note(release_only)
    from visionclip.text import CaptionTokenizer
    tokenizer = CaptionTokenizer.train(sentences, 120)
    assert set(tables.token_lengths(tokenizer, list(release_only)).language) == {"zh"}  # no empty English

    paper = read_synfundus_table(make_corpus(tmp_path / "c", CORPUS_ROWS))
    assert tables.release_column_tables(paper) == []
    assert "paper's 17 columns" in tables.release_columns_note(paper)
