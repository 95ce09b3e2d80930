"""eval.separability: probe vs zero-shot AUC per class pair, and where a pair is lost."""
import json

import numpy as np
import pytest

from visionclip.config import load_profile
from visionclip.errors import DataError
from visionclip.eval.benchmark import write_predictions
from visionclip.eval.embed import save_embeddings
from visionclip.eval.metrics import bootstrap_ci, paired_auc_bootstrap
from visionclip.eval.separability import (class_pairs, lost_pairs, pair_separability, run_separability,
                                          where_lost)
from visionclip.paths import RunLayout
from visionclip.report.tables import separability_table

NAMES = ["none", "mild", "severe"]


def _set(seed: int, n: int = 120, dim: int = 8):
    """Three classes: 0 and 1 differ along dimension 0; 1 and 2 share one distribution."""
    r = np.random.default_rng(seed)
    y = np.repeat([0, 1, 2], n)
    x = r.normal(size=(3 * n, dim))
    x[:, 1] += 3.0                   # away from the origin, so unit-normalising keeps the geometry
    x[y >= 1, 0] += 2.5
    return x, y


def _probs(y: np.ndarray, informative: bool, seed: int) -> np.ndarray:
    """Zero-shot probabilities: either ranking class 1 above class 0, or blind to it."""
    r = np.random.default_rng(seed)
    p = r.uniform(0.2, 1.0, size=(len(y), 3))
    if informative:
        p[y == 1, 1] += 2.0
    return p / p.sum(1, keepdims=True)


def test_class_pairs():
    assert class_pairs(4, ordinal=True) == [(0, 1), (1, 2), (2, 3)]
    assert class_pairs(3, ordinal=False) == [(0, 1), (0, 2), (1, 2)]


def test_verdicts_name_where_the_pair_is_lost():
    (xd, yd), (xt, yt) = _set(1), _set(2)
    blind_prompts = pair_separability(xd, yd, xt, yt, _probs(yt, False, 3), [(0, 1), (1, 2)], n_boot=300, seed=0)
    seen, mixed = blind_prompts
    assert seen["probe"]["value"] > 0.9 and seen["zero_shot"]["value"] < 0.65
    assert where_lost(seen) == "prompts"            # the image holds it, the prompts do not read it
    assert mixed["probe"]["lo"] < 0.6 and where_lost(mixed) == "image embedding"
    reading = pair_separability(xd, yd, xt, yt, _probs(yt, True, 3), [(0, 1)], n_boot=300, seed=0)[0]
    assert reading["zero_shot"]["value"] > 0.9 and where_lost(reading) is None


def test_probe_is_fitted_on_dev_not_on_the_scored_images():
    # dev labels shuffled: a probe fitted on them cannot rank the test images, though the test set could
    (xd, yd), (xt, yt) = _set(1), _set(2)
    shuffled = np.random.default_rng(0).permutation(yd)
    row = pair_separability(xd, shuffled, xt, yt, _probs(yt, True, 3), [(0, 1)], n_boot=200, seed=0)[0]
    assert abs(row["probe"]["value"] - 0.5) < 0.15


def test_pair_without_images_gets_a_reason():
    (xd, yd), (xt, yt) = _set(1), _set(2)
    keep = yt != 2
    row = pair_separability(xd, yd, xt[keep], yt[keep], _probs(yt[keep], True, 3), [(1, 2)], n_boot=50)[0]
    assert row["probe"] is None and "no dev or test image" in row["reason"] and where_lost(row) is None


def test_paired_difference_is_zero_for_one_score_and_same_seed_same_interval():
    r = np.random.default_rng(0)
    y, s = r.integers(0, 2, 200), r.normal(size=200)
    same = paired_auc_bootstrap(y, s, s, n=100, seed=1)["difference"]
    assert (same["value"], same["lo"], same["hi"]) == (0.0, 0.0, 0.0)
    t = s + 0.5 * y
    assert paired_auc_bootstrap(y, t, s, n=100, seed=1) == paired_auc_bootstrap(y, t, s, n=100, seed=1)
    assert paired_auc_bootstrap(y, t, s, n=100, seed=1)["difference"]["lo"] > 0
    # each score's own interval is bootstrap_ci's on the same resamples
    point, lo, hi = bootstrap_ci(y, np.stack([-t, t], 1), "auc", n=100, seed=1)
    assert paired_auc_bootstrap(y, t, s, n=100, seed=1)["a"] == {"value": point, "lo": lo, "hi": hi}


def _run_dir(tmp_path):
    (xd, yd), (xt, yt) = _set(1), _set(2)
    paths = np.array([f"/bench/test/IM{i:04d}.jpg" for i in range(len(yt))])
    save_embeddings(tmp_path, "messidor2_dev", image=xd, label=yd, path=paths, class_names=np.array(NAMES))
    save_embeddings(tmp_path, "messidor2_test", image=xt, label=yt, path=paths, class_names=np.array(NAMES))
    order = np.random.default_rng(5).permutation(len(yt))     # the CSV's row order need not be the embeddings'
    write_predictions(RunLayout(tmp_path).predictions("messidor2", "test"), paths[order], yt[order],
                      _probs(yt, True, 3)[order], NAMES)
    return tmp_path


def test_run_separability_writes_json_and_skips_real_releases(tmp_path):
    run = _run_dir(tmp_path)
    profile = load_profile("ci", {"data.fives_root": str(tmp_path / "FIVES"), "eval.bootstrap": 100})
    out = run_separability(profile, run, ["messidor2", "fives"])
    assert json.loads(RunLayout(run).separability_json.read_text()) == json.loads(json.dumps(out))
    assert "dev rendering" in out["fives"]["skipped"]
    rows = out["messidor2"]["pairs"]
    assert [r["classes"] for r in rows] == [["none", "mild"], ["mild", "severe"]]   # ordinal: neighbours
    assert rows[0]["zero_shot"]["value"] > 0.9       # the CSV was matched to the embeddings by path
    assert lost_pairs(out, "image embedding") == ["messidor2: mild vs severe"]
    table = separability_table(out)
    assert list(table["lost in"]) == ["", "image embedding"]


def test_run_separability_names_a_missing_prediction(tmp_path):
    run = _run_dir(tmp_path)
    path = RunLayout(run).predictions("messidor2", "test")
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(DataError, match="no row for"):
        run_separability(load_profile("ci", {"eval.bootstrap": 100}), run, ["messidor2"])


def test_tiny_pair_keeps_undefined_intervals_as_none():
    # two test images: every resample that draws one of them twice has one class, an undefined AUC
    (xd, yd), (xt, yt) = _set(1), _set(2)
    pick = np.array([0, 120])
    row = pair_separability(xd, yd, xt[pick], yt[pick], _probs(yt[pick], True, 3), [(0, 1)], n_boot=20)[0]
    assert row["probe"]["value"] is not None
    json.dumps(row, allow_nan=False)            # no NaN reaches the JSON
    assert where_lost(row) in (None, "image embedding", "prompts")
