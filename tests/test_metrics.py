"""Metrics against hand-computed cases and scikit-learn; bootstrap determinism."""
import json

import numpy as np
import pytest
from sklearn.metrics import (balanced_accuracy_score, cohen_kappa_score, f1_score, roc_auc_score)

from visionclip.eval import metrics as M
from visionclip.errors import DataError


def onehot_probs(pred, c, conf=0.7):
    p = np.full((len(pred), c), (1 - conf) / (c - 1))
    p[np.arange(len(pred)), pred] = conf
    return p


def test_aca_by_hand():
    y = np.array([0, 0, 0, 0, 1, 1])
    pred = np.array([0, 0, 0, 1, 1, 0])  # recall 3/4 and 1/2
    assert M.aca(y, pred) == pytest.approx((0.75 + 0.5) / 2)
    assert M.point_metric("aca", y, onehot_probs(pred, 2)) == pytest.approx(0.625)


def test_kappa_by_hand():
    # po = 4/6, pe = (4*4 + 2*2)/36 = 20/36 -> kappa = (24/36-20/36)/(16/36) = 0.25
    y = np.array([0, 0, 0, 0, 1, 1])
    pred = np.array([0, 0, 0, 1, 1, 0])
    assert M.kappa(y, pred) == pytest.approx(0.25)


def test_sensitivity_specificity_by_hand():
    cm = np.array([[3, 1], [1, 1]])
    sens, spec = M.sensitivity_specificity(cm)
    assert sens == pytest.approx([0.75, 0.5])
    assert spec == pytest.approx([0.5, 0.75])


def test_fast_equivalents_equal_sklearn():
    r = np.random.default_rng(0)
    for c in (2, 4, 5):
        y = r.integers(0, c, 60)
        prob = r.dirichlet(np.ones(c), 60)
        pred = prob.argmax(1)
        cm = M._cms(y[None], pred[None], c)
        assert M._aca_cm(cm)[0] == pytest.approx(balanced_accuracy_score(y, pred))
        assert M._kappa_cm(cm)[0] == pytest.approx(cohen_kappa_score(y, pred))
        assert M._kappa_cm(cm, "quadratic")[0] == pytest.approx(cohen_kappa_score(y, pred, weights="quadratic"))
        assert M._f1_cm(cm)[0] == pytest.approx(f1_score(y, pred, average="macro"))
        ref = roc_auc_score(y, prob[:, 1]) if c == 2 else roc_auc_score(y, prob, multi_class="ovr")
        assert M._auc_rank(y, prob) == pytest.approx(ref)
        assert M.auc(y, prob) == pytest.approx(ref)
        idx = np.stack([np.arange(60), r.integers(0, 60, 60), np.zeros(60, int)])
        prob_ties = prob.round(1)  # ties are counted one half
        batch = M._auc_bootstrap(y, prob_ties, idx)
        assert batch[:2] == pytest.approx([M._auc_rank(y[i], prob_ties[i]) for i in idx[:2]])
        assert np.isnan(batch[2])  # one case drawn 60 times: AUC undefined


def test_auc_binary_and_ties():
    y = np.array([0, 0, 1, 1])
    prob = np.array([[0.9, 0.1], [0.5, 0.5], [0.5, 0.5], [0.2, 0.8]])
    # pairs (pos, neg): (0.5 vs 0.1)=1, (0.5 vs 0.5)=0.5, (0.8 vs 0.1)=1, (0.8 vs 0.5)=1 -> 3.5/4
    assert M.auc(y, prob) == pytest.approx(0.875)
    assert M._auc_rank(y, prob) == pytest.approx(0.875)


def test_bootstrap_deterministic_and_seeded():
    r = np.random.default_rng(1)
    y = r.integers(0, 3, 80)
    prob = r.dirichlet(np.ones(3), 80)
    a = M.bootstrap_ci(y, prob, "aca", n=200, seed=7)
    b = M.bootstrap_ci(y, prob, "aca", n=200, seed=7)
    c = M.bootstrap_ci(y, prob, "aca", n=200, seed=8)
    assert a == b
    assert a[0] == c[0] and (a[1], a[2]) != (c[1], c[2])
    assert a[1] <= a[0] <= a[2]
    # a callable metric goes through the same resamples
    d = M.bootstrap_ci(y, prob, lambda t, p: balanced_accuracy_score(t, p.argmax(1)), n=200, seed=7)
    assert d == pytest.approx(a)
    lo, hi = M.bootstrap_ci(y, prob, "auc", n=200, seed=7)[1:]
    assert 0 <= lo <= hi <= 1
    slow = M.bootstrap_ci(y, prob, lambda t, p: M._auc_rank(t, p), n=200, seed=7)
    assert (lo, hi) == pytest.approx(slow[1:])


def test_report_is_json_and_complete():
    r = np.random.default_rng(2)
    y = np.repeat(np.arange(5), 6)
    prob = r.dirichlet(np.ones(5), 30)
    rep = M.classification_report(y, prob, [f"c{i}" for i in range(5)], n_boot=100, seed=0, ordinal=True)
    json.dumps(rep, allow_nan=False)
    for key in ("aca", "kappa", "quadratic_kappa", "macro_f1", "auc"):
        assert rep[key]["lo"] <= rep[key]["value"] <= rep[key]["hi"]
    assert np.array(rep["confusion_matrix"]).sum() == 30
    assert rep["per_class"][0]["support"] == 6
    assert M.format_interval(rep["aca"]).count("[") == 1


def test_bad_input():
    with pytest.raises(DataError, match="outside"):
        M.classification_report([0, 3], np.ones((2, 2)) / 2, ["a", "b"], n_boot=10)
    with pytest.raises(DataError, match="class names"):
        M.classification_report([0, 1], np.ones((2, 2)) / 2, ["a"], n_boot=10)
