"""Ablations: the variant grid, the perturbations, the non-fundus set, cached and resumed variants."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageDraw

import torch

from test_eval_fixtures import save_tiny_model
from visionclip.data.benchmarks import load_records
from visionclip.data.datasets import ImageDataset
from visionclip.data.transforms import Preprocess
from visionclip.eval import perturb
from visionclip.eval.benchmark import evaluate_zero_shot
from visionclip.eval.embed import embed_images
from visionclip.pretrained import load_clip
from visionclip.report.ablations import data as ablation_data
from visionclip.report.ablations import grid as ablation_grid
from visionclip.report.ablations import runs, tables
from visionclip.config import LOSSES, load_profile
from visionclip.errors import ConfigError
from visionclip.paths import RunLayout
from visionclip.synth.nonfundus import RESERVED_KINDS

TINY = """extends: ablation_ci
synth:
  corpus_size: 40
  render_size: 48
  messidor2_size: 10
  fives_size: 8
  refuge_size: 10
train:
  image_size: 32
  batch_size: 16
  epochs: 1
eval:
  bootstrap: 100
"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[str, Path]:
    """A tiny ablation profile and its rendered shared data (corpus, subsets, test/seen, non-fundus)."""
    base = tmp_path_factory.mktemp("ablation")
    path = base / "tiny_ablation.yaml"
    path.write_text(TINY, encoding="utf-8")
    profile = load_profile(str(path))
    run_dir = base / "run"
    ablation_data.prepare_ablation_data(profile, run_dir, ablation_grid.variant_grid(profile), n_nonfundus=12)
    return str(path), run_dir


def test_grid_varies_one_thing_each():
    p = load_profile("ablation")
    grid = ablation_grid.variant_grid(p)
    assert list(grid)[0] == "baseline" and grid["baseline"].overrides == {}
    groups = {v.group for v in grid.values()}
    assert groups == {"baseline", "captions", "loss", "corpus_size", "resolution", "seed"}
    assert {v.overrides["train.caption_language"] for v in grid.values() if v.group == "captions"} == {"en", "both"}
    assert grid["captions_en"].overrides["eval.language"] == "en"  # read in the language it was trained on
    sizes = sorted(v.corpus_size for v in grid.values() if v.group == "corpus_size")
    assert sizes == [round(f * p.synth.corpus_size) for f in ablation_grid.CORPUS_FRACTIONS] and sizes[-1] < p.synth.corpus_size
    assert {v.overrides["train.loss"] for v in grid.values() if v.group == "loss"} == set(LOSSES) - {p.train.loss}
    assert grid[f"resolution_{p.synth.render_size}"].overrides == {"train.image_size": p.synth.render_size}
    assert [v.overrides["seed"] for v in grid.values() if v.group == "seed"] == [p.seed + 1, p.seed + 2]
    # each variant's resolved profile differs from the baseline's exactly in its overrides (+ the corpus root)
    root = Path("/tmp/unused_run")
    base = ablation_grid.variant_profile("ablation", {}, grid["baseline"], root).to_dict()
    for v in grid.values():
        prof = ablation_grid.variant_profile("ablation", {}, v, root).to_dict()
        changed = {f"{s}.{k}" for s in base if isinstance(base[s], dict) for k in base[s] if base[s][k] != prof[s][k]}
        changed |= {s for s in base if not isinstance(base[s], dict) and base[s] != prof[s]}
        expected = set(v.overrides) | ({"data.corpus_root"} if v.corpus_size else set())
        assert changed == expected, v.name
        assert prof["data"]["corpus_root"] == str(RunLayout(root).ablation_corpus(v.corpus_size))


def test_select_variants_keeps_the_baseline_and_names_unknown_ones():
    grid = ablation_grid.variant_grid(load_profile("ablation"))
    other_loss = next(name for name in grid if name.startswith("loss_"))  # the loss the profile does not use
    assert list(ablation_grid.select_variants(grid, [other_loss])) == ["baseline", other_loss]
    assert ablation_grid.select_variants(grid, []) == grid
    with pytest.raises(ConfigError, match="loss_soft"):
        ablation_grid.select_variants(grid, ["loss_soft"])


def _pattern(size: int = 96) -> Image.Image:
    img = Image.new("RGB", (size, size), (120, 60, 30))
    d = ImageDraw.Draw(img)
    for x in range(0, size, 6):
        d.line((x, 0, x, size), fill=(250, 200, 120), width=2)
    return img


def test_perturbations_grow_with_the_level():
    img = _pattern()
    assert np.array_equal(np.asarray(perturb.perturb(img, "blur", 0)), np.asarray(img))
    detail = [np.abs(np.diff(np.asarray(perturb.perturb(img, "blur", k), np.float32), axis=1)).mean() for k in perturb.SEVERITIES]
    assert all(a > b for a, b in zip(detail, detail[1:])), detail  # blur removes edges, more at each level
    means = [np.asarray(perturb.perturb(img, "exposure", k), np.float32).mean() for k in perturb.SEVERITIES]
    ratios = np.array(means[1:]) / means[0]
    expected = 2.0 ** (-np.array(perturb.SEVERITIES[1:]) * perturb.EXPOSURE_STOPS_PER_LEVEL)
    assert np.allclose(ratios, expected, atol=0.01)
    with pytest.raises(ConfigError):
        perturb.perturb(img, "noise", 1)
    with pytest.raises(ConfigError):
        perturb.perturb(img, "blur", -1)


def test_perturbed_rows_are_read_like_the_clean_ones_under_flair_exact(tiny, tmp_path, monkeypatch):
    """Every robustness row goes through the clean rows' preprocessing, FLAIR's padding included:
    with the perturbation replaced by the identity, each level scores exactly as the clean images."""
    path, run_dir = tiny
    profile = load_profile(path, {"eval.flair_exact": True})
    preprocess = Preprocess.for_evaluation(profile)
    assert preprocess.flair_exact
    records = load_records("fives", RunLayout(run_dir).ablation_benchmarks("test") / "fives")
    flair, centred = ImageDataset(records, preprocess), ImageDataset(records, Preprocess(preprocess.size))
    # what makes the test mean something: FLAIR's padding changes some of these renderings
    assert any(not torch.equal(flair[i]["image"], centred[i]["image"]) for i in range(len(records)))
    monkeypatch.setattr(runs, "perturb", lambda img, kind, level: img)
    save_tiny_model(tmp_path / "model")
    out = runs.evaluate_variant(profile, run_dir, tmp_path / "model", severities=(0, 1))
    assert set(out["robustness"]) == {"messidor2", "fives", "refuge"}
    for ds, kinds in out["robustness"].items():
        for kind, levels in kinds.items():
            assert levels["1"] == levels["0"] == out["test"][ds][out["headline"]], (ds, kind)
    # and the clean rows themselves are FLAIR's: padded bottom-right, unrenormalised prototypes
    model, tokenizer = load_clip(tmp_path / "model")
    ref = evaluate_zero_shot(None, "fives", "fives", profile.eval.language, profile.eval.prompt_mode, flair_exact=True,
                             model=model, tokenizer=tokenizer, records=records, n_boot=profile.eval.bootstrap,
                             seed=profile.seed, image_emb=embed_images(model, records, preprocess, profile.eval.batch_size))
    assert out["test"]["fives"][out["headline"]] == {k: ref["report"][k] for k in ("aca", "auc", "macro_f1", "n")}


def test_nonfundus_set_mixes_reserved_kinds_with_heldout_fundus(tiny):
    _, run_dir = tiny
    items = ablation_data.nonfundus_set(run_dir, seed=7)
    non = [it for it in items if it.label == 0]
    fundus = [it for it in items if it.label == 1]
    assert len(non) == 12 and len(fundus) == 12
    assert {it.kind for it in non} <= set(RESERVED_KINDS) and len({it.kind for it in non}) == 2
    test_root = RunLayout(run_dir).ablation_benchmarks("test")
    assert all(test_root in it.path.parents for it in fundus)          # held-out cameras, test rendering
    assert all(it.path.is_file() for it in items)
    again = ablation_data.nonfundus_set(run_dir, seed=7)
    assert [it.path for it in again] == [it.path for it in items]       # deterministic
    assert [it.path for it in ablation_data.nonfundus_set(run_dir, seed=8)] != [it.path for it in items]


def test_corpus_subset_is_a_prefix_of_the_corpus(tiny):
    path, run_dir = tiny
    profile = load_profile(path)
    sizes = [v.corpus_size for v in ablation_grid.variant_grid(profile).values() if v.corpus_size]
    full = pd.read_csv(RunLayout(run_dir).ablation_corpus() / "annotations.csv")
    for n in sizes:
        sub = pd.read_csv(RunLayout(run_dir).ablation_corpus(n) / "annotations.csv")
        pd.testing.assert_frame_equal(sub, full.head(n))
        manifest = json.loads((RunLayout(run_dir).ablation_corpus(n) / "manifest.json").read_text(encoding="utf-8"))
        assert manifest["corpus_size"] == n


def test_variant_is_cached_and_resumes(tiny, monkeypatch):
    path, run_dir = tiny
    grid = ablation_grid.variant_grid(load_profile(path))
    v = grid["baseline"]
    prof = ablation_grid.variant_profile(path, {}, v, run_dir)
    first = runs.run_variant(prof, run_dir, v, progress=False)
    variant_run = RunLayout(run_dir).ablation_variant("baseline")
    assert variant_run.model.is_dir() and variant_run.result_json.is_file()
    assert set(first["test"]) == {"messidor2", "fives", "refuge"}
    assert {"zh_ek", "zh_plain", "en_ek", "en_plain"} <= set(first["test"]["fives"])
    assert 0.0 <= first["final_val"]["i2t_top1_label_set"] <= 1.0 and first["final_val"]["val_images"] > 0


    def no_training(*args, **kwargs):
        raise AssertionError("a finished variant must not train again")

    monkeypatch.setattr(runs, "train_clip", no_training)
    assert runs.run_variant(prof, run_dir, v, progress=False) == first      # read from result.json
    monkeypatch.undo()

    # evaluation lost (e.g. killed after training): training resumes at its final checkpoint, no new step
    steps_logged = len(variant_run.metrics("train").read_text().splitlines())
    variant_run.result_json.unlink()
    again = runs.run_variant(prof, run_dir, v, progress=False)
    assert len(variant_run.metrics("train").read_text().splitlines()) == steps_logged
    assert again["test"] == first["test"] and again["train_steps"] == first["train_steps"]

    # other evaluation options are another cache key: evaluated again, with the new parts
    more = runs.run_variant(prof, run_dir, v, seen=True, severities=(0, 1), progress=False)
    assert set(more["seen"]) == {"messidor2", "fives", "refuge"}
    assert set(more["robustness"]["fives"]) == {"blur", "exposure"}
    table = tables.domain_table({"results": {"baseline": more}, "profile": prof})
    assert set(table.setting) == {"seen cameras", "held-out cameras", "gap (seen - held-out), paired"}


def test_sentences_are_computed_from_the_table():
    df = pd.DataFrame([
        {"setting": "a", "dataset": "FIVES", "value": 0.8, "lo": 0.75, "hi": 0.85},
        {"setting": "b", "dataset": "FIVES", "value": 0.5, "lo": 0.45, "hi": 0.55},
        {"setting": "a", "dataset": "REFUGE", "value": 0.6, "lo": 0.4, "hi": 0.8},
        {"setting": "b", "dataset": "REFUGE", "value": 0.65, "lo": 0.45, "hi": 0.85},
    ])
    text = tables.compare_sentence(df, "Test")
    assert "on FIVES a was highest (0.800) and b lowest (0.500), intervals do not overlap" in text
    assert "on REFUGE b was highest (0.650) and a lowest (0.600), intervals overlap" in text
    assert "resolved on 1 of 2 sets" in text
    assert "interval lies above chance (1 / classes) on 1 of 2 sets (FIVES)" in text  # REFUGE chance is 0.5
    curve = df.assign(x=[1, 2, 1, 2])
    assert "FIVES 0.800 -> 0.500 (-0.300, intervals do not overlap)" in tables.curve_sentence(curve, "x", "Curve")
    assert tables.compare_sentence(df.iloc[:0], "Empty").endswith("no results (the variants were not run).")


def test_val_retrieval_table_has_wilson_intervals_per_loss():
    profile = load_profile("ablation")
    grid = ablation_grid.variant_grid(profile)
    others = [n for n, v in grid.items() if v.group == "loss"]
    results = {"baseline": {"final_val": {"i2t_top1_label_set": 0.5, "val_images": 10, "chance": 0.3}},
               others[0]: {"final_val": {"i2t_top1_label_set": 0.2, "val_images": 10, "chance": 0.3}},
               others[1]: {}}  # a variant without a validation pass has no row
    table = tables.val_retrieval_table({"grid": grid, "profile": profile, "results": results}, "loss", "loss")
    assert list(table.setting) == [profile.train.loss, grid[others[0]].label]
    assert set(table.dataset) == {"corpus val (10 images)"}
    base = table.iloc[0]
    assert (base.lo, base.hi) == pytest.approx((0.2366, 0.7634), abs=1e-4)  # Wilson 95% for 5 of 10
    assert "validation retrieval" in tables.compare_sentence(table, "Loss", metric="validation retrieval")


def test_nonfundus_check_is_reported_per_training_seed():
    profile = load_profile("ablation_ci")
    grid = ablation_grid.variant_grid(profile)
    seeds = [n for n, v in grid.items() if v.group == "seed"]
    assert seeds, "the grid trains the baseline recipe with other seeds"

    def result(auc: float) -> dict:
        entry = {"value": auc, "lo": auc - 0.05, "hi": min(auc + 0.05, 1.0)}
        return {"nonfundus": {"zh": {"auc": entry, "aca": entry, "n": 24, "n_nonfundus": 12}}}

    aucs = {"baseline": 0.97, seeds[0]: 0.62, "captions_en": 0.40}
    aucs.update({n: 0.90 for n in seeds[1:]})
    run = {"profile": profile, "grid": grid, "results": {n: result(a) for n, a in aucs.items()}}
    table = tables.nonfundus_table(run)
    auc = table[table.metric == "AUC"].set_index("setting")
    assert auc.loc[f"zh captions, seed {profile.seed}, zh prompts", "seed"] == profile.seed
    assert auc.loc[f"zh captions, seed {grid[seeds[0]].overrides['seed']}, zh prompts", "value"] == 0.62
    assert pd.isna(auc.loc["en captions, zh prompts", "seed"])      # another recipe: not a seed of this one
    sentence = tables.nonfundus_sentence(table)
    # the spread across seeds covers the baseline recipe's models only, not the other caption language's
    assert f"Across {1 + len(seeds)} training seeds of the baseline recipe (zh prompts): AUC 0.620 to 0.970" in sentence
