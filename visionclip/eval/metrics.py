"""Classification metrics with seeded bootstrap 95% intervals.

Point estimates come from scikit-learn. The bootstrap recomputes them on 1,000+ resamples of the
cases, so it uses exact numpy equivalents computed from each resample's confusion matrix (and a
rank formula for AUC); tests/test_metrics.py checks they equal scikit-learn's.

ACA (balanced accuracy, the mean of per-class recall) is the "accuracy" of the paper's Table 1.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import (balanced_accuracy_score, cohen_kappa_score, confusion_matrix, f1_score,
                             roc_auc_score)

from ..errors import DataError
from ..seeding import rng

METRICS = ("aca", "kappa", "quadratic_kappa", "macro_f1", "auc")


# ---------------------------------------------------------------- checks

def _check(y_true, y_prob) -> tuple[np.ndarray, np.ndarray]:
    y_true = np.asarray(y_true).astype(int).ravel()
    y_prob = np.asarray(y_prob, dtype=np.float64)
    if y_prob.ndim != 2:
        raise DataError(f"y_prob: expected a [cases, classes] array, got shape {y_prob.shape}")
    if len(y_true) != len(y_prob):
        raise DataError(f"y_true has {len(y_true)} cases but y_prob has {len(y_prob)}")
    if len(y_true) == 0:
        raise DataError("no cases to score (empty y_true)")
    c = y_prob.shape[1]
    if y_true.min() < 0 or y_true.max() >= c:
        raise DataError(f"y_true holds labels outside 0..{c - 1} (y_prob has {c} columns)")
    return y_true, y_prob


# ---------------------------------------------------------------- scikit-learn point estimates

def aca(y_true, y_pred) -> float:
    """Balanced accuracy: mean recall over the classes present in y_true."""
    return float(balanced_accuracy_score(y_true, y_pred))


def kappa(y_true, y_pred, weights: str | None = None) -> float:
    v = cohen_kappa_score(y_true, y_pred, weights=weights)
    return float(v)


def macro_f1(y_true, y_pred) -> float:
    return float(f1_score(y_true, y_pred, average="macro", zero_division=0))


def auc(y_true, y_prob) -> float:
    """Binary AUC (score of class 1) for 2 classes, else macro one-vs-rest AUC; nan if undefined.

    Classes absent from y_true have no AUC and are left out of the macro mean.
    """
    y_true, y_prob = _check(y_true, y_prob)
    c = y_prob.shape[1]
    if c == 2:
        if len(np.unique(y_true)) < 2:
            return math.nan
        return float(roc_auc_score(y_true, y_prob[:, 1]))
    present = [k for k in range(c) if 0 < (y_true == k).sum() < len(y_true)]
    if not present:
        return math.nan
    return float(np.mean([roc_auc_score(y_true == k, y_prob[:, k]) for k in present]))


def sensitivity_specificity(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-class sensitivity (recall) and specificity from a confusion matrix (rows = truth)."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    fn = cm.sum(axis=1) - tp
    fp = cm.sum(axis=0) - tp
    tn = cm.sum() - tp - fn - fp
    with np.errstate(invalid="ignore", divide="ignore"):
        return tp / (tp + fn), tn / (tn + fp)


# ---------------------------------------------------------------- fast equivalents for the bootstrap

def _cms(y_true: np.ndarray, y_pred: np.ndarray, c: int) -> np.ndarray:
    """Confusion matrices for a batch of resamples: y_* [B, N] -> [B, C, C]."""
    b = y_true.shape[0]
    flat = (np.arange(b)[:, None] * c * c + y_true * c + y_pred).ravel()
    return np.bincount(flat, minlength=b * c * c).reshape(b, c, c).astype(np.float64)


def _aca_cm(cm: np.ndarray) -> np.ndarray:
    support = cm.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.diagonal(cm, axis1=-2, axis2=-1) / support
    return np.nanmean(np.where(support > 0, recall, np.nan), axis=-1)


def _kappa_cm(cm: np.ndarray, weights: str | None = None) -> np.ndarray:
    c = cm.shape[-1]
    n = cm.sum(axis=(-2, -1), keepdims=True)
    expected = cm.sum(-1, keepdims=True) * cm.sum(-2, keepdims=True) / n
    i, j = np.meshgrid(np.arange(c), np.arange(c), indexing="ij")
    w = (i - j) ** 2 if weights == "quadratic" else (i != j).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return 1.0 - (w * cm).sum(axis=(-2, -1)) / (w * expected).sum(axis=(-2, -1))


def _f1_cm(cm: np.ndarray) -> np.ndarray:
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    fn = cm.sum(-1) - tp
    fp = cm.sum(-2) - tp
    denom = 2 * tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(denom > 0, 2 * tp / denom, np.nan)  # labels seen in neither truth nor prediction
    return np.nanmean(f1, axis=-1)


def _auc_rank(y_true: np.ndarray, y_prob: np.ndarray) -> float:
    """Mann-Whitney AUC with average ranks for ties (equals roc_auc_score)."""
    c = y_prob.shape[1]
    classes = [1] if c == 2 else range(c)
    vals = []
    for k in classes:
        pos = y_true == k
        n_pos = int(pos.sum())
        n_neg = len(y_true) - n_pos
        if n_pos == 0 or n_neg == 0:
            continue
        ranks = rankdata(y_prob[:, k])
        vals.append((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
    return float(np.mean(vals)) if vals else math.nan


def _auc_bootstrap(y_true: np.ndarray, y_prob: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """_auc_rank of every resample idx[b] at once, in O(B * N).

    A resample is the original cases with multiplicities, so each class's scores are sorted once
    and the AUC becomes a weighted count of correctly ordered (positive, negative) pairs, ties 1/2.
    """
    b, n = idx.shape
    c = y_prob.shape[1]
    weights = np.bincount((np.arange(b)[:, None] * n + idx).ravel(), minlength=b * n).reshape(b, n)
    weights = weights.astype(np.float64)
    per_class = []
    for k in ([1] if c == 2 else range(c)):
        order = np.argsort(y_prob[:, k], kind="stable")
        sorted_scores = y_prob[order, k]
        starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
        pos = (y_true[order] == k)
        w = weights[:, order]
        gp = np.add.reduceat(w * pos, starts, axis=1)
        gn = np.add.reduceat(w * ~pos, starts, axis=1)
        below = np.cumsum(gn, axis=1) - gn
        n_pos, n_neg = gp.sum(1), gn.sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            auc_k = (gp * (below + 0.5 * gn)).sum(1) / (n_pos * n_neg)
        per_class.append(np.where((n_pos > 0) & (n_neg > 0), auc_k, np.nan))
    stacked = np.stack(per_class, 1)
    out = np.full(b, np.nan)
    ok = np.isfinite(stacked).any(1)
    out[ok] = np.nanmean(stacked[ok], axis=1)
    return out


def _metric_on_cms(name: str, cms: np.ndarray) -> np.ndarray:
    if name == "aca":
        return _aca_cm(cms)
    if name == "kappa":
        return _kappa_cm(cms)
    if name == "quadratic_kappa":
        return _kappa_cm(cms, "quadratic")
    if name == "macro_f1":
        return _f1_cm(cms)
    raise KeyError(name)


def point_metric(name: str, y_true, y_prob) -> float:
    """One named metric by scikit-learn (predictions = argmax of y_prob)."""
    y_true, y_prob = _check(y_true, y_prob)
    y_pred = y_prob.argmax(1)
    if name == "aca":
        return aca(y_true, y_pred)
    if name == "kappa":
        return kappa(y_true, y_pred)
    if name == "quadratic_kappa":
        return kappa(y_true, y_pred, "quadratic")
    if name == "macro_f1":
        return macro_f1(y_true, y_pred)
    if name == "auc":
        return auc(y_true, y_prob)
    raise DataError(f"unknown metric {name!r}: expected one of {METRICS} or a callable")


# ---------------------------------------------------------------- bootstrap

def _resample_indices(n_cases: int, n: int, seed: int) -> np.ndarray:
    return rng(seed, "bootstrap").integers(0, n_cases, size=(n, n_cases))


def _percentiles(values: np.ndarray, alpha: float = 0.05) -> tuple[float, float]:
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return math.nan, math.nan
    lo, hi = np.percentile(v, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(lo), float(hi)


def bootstrap_ci(y_true, y_prob, metric: str | Callable, n: int = 1000, seed: int = 0,
                 alpha: float = 0.05) -> tuple[float, float, float]:
    """(point, lo, hi): the metric and its percentile (1 - alpha) interval over `n` case resamples.

    `metric` is a name in METRICS or a callable (y_true, y_prob) -> float. Same seed, same interval.
    Resamples where the metric is undefined (e.g. AUC with one class drawn) are dropped.
    """
    y_true, y_prob = _check(y_true, y_prob)
    idx = _resample_indices(len(y_true), n, seed)
    c = y_prob.shape[1]
    if callable(metric):
        point = float(metric(y_true, y_prob))
        values = np.array([metric(y_true[i], y_prob[i]) for i in idx], dtype=np.float64)
    elif metric == "auc":
        point = point_metric("auc", y_true, y_prob)
        values = _auc_bootstrap(y_true, y_prob, idx)
    else:
        point = point_metric(metric, y_true, y_prob)
        y_pred = y_prob.argmax(1)
        values = _metric_on_cms(metric, _cms(y_true[idx], y_pred[idx], c))
    lo, hi = _percentiles(values, alpha)
    return point, lo, hi


def paired_auc_bootstrap(positive, score_a, score_b, n: int = 1000, seed: int = 0,
                         alpha: float = 0.05) -> dict[str, dict]:
    """AUC of two scores of the same cases and of their difference, each {'value', 'lo', 'hi'} (None
    where undefined), all three over the same `n` case resamples: the intervals of a and b are
    bootstrap_ci's, and the difference's is a paired bootstrap (the cases' own variation cancels)."""
    positive = np.asarray(positive).astype(int).ravel()
    a, b = (np.stack([-np.asarray(s, np.float64), np.asarray(s, np.float64)], 1) for s in (score_a, score_b))
    idx = _resample_indices(len(positive), n, seed)
    boot_a, boot_b = _auc_bootstrap(positive, a, idx), _auc_bootstrap(positive, b, idx)
    point_a, point_b = point_metric("auc", positive, a), point_metric("auc", positive, b)
    return {"a": _interval(point_a, *_percentiles(boot_a, alpha)),
            "b": _interval(point_b, *_percentiles(boot_b, alpha)),
            "difference": _interval(point_a - point_b, *_percentiles(boot_a - boot_b, alpha))}


def _clean(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def _interval(point, lo, hi) -> dict:
    return {"value": _clean(point), "lo": _clean(lo), "hi": _clean(hi)}


def classification_report(y_true, y_prob, class_names: Sequence[str], n_boot: int = 1000, seed: int = 0,
                          ordinal: bool = False, alpha: float = 0.05) -> dict:
    """Every metric with its bootstrap interval, per-class sensitivity/specificity, confusion matrix.

    All metrics share the same `n_boot` resamples. `ordinal` adds the quadratic-weighted kappa
    (meaningful for DR grades only). The result is JSON-serialisable (undefined values are None).
    """
    y_true, y_prob = _check(y_true, y_prob)
    c = y_prob.shape[1]
    if len(class_names) != c:
        raise DataError(f"{len(class_names)} class names for {c} probability columns")
    y_pred = y_prob.argmax(1)
    idx = _resample_indices(len(y_true), n_boot, seed)
    cms = _cms(y_true[idx], y_pred[idx], c)
    names = ["aca", "kappa"] + (["quadratic_kappa"] if ordinal else []) + ["macro_f1"]
    report: dict = {"n": int(len(y_true)), "classes": list(class_names), "n_boot": int(n_boot),
                    "seed": int(seed), "ci_level": 1 - alpha}
    for name in names:
        report[name] = _interval(point_metric(name, y_true, y_prob), *_percentiles(_metric_on_cms(name, cms), alpha))
    auc_values = _auc_bootstrap(y_true, y_prob, idx)
    report["auc"] = _interval(point_metric("auc", y_true, y_prob), *_percentiles(auc_values, alpha))
    report["accuracy"] = _clean(float((y_pred == y_true).mean()))
    cm = confusion_matrix(y_true, y_pred, labels=list(range(c)))
    sens, spec = sensitivity_specificity(cm)
    b_sens, b_spec = sensitivity_specificity_batch(cms)
    report["per_class"] = [
        {"class": class_names[k], "support": int(cm[k].sum()), "predicted": int(cm[:, k].sum()),
         "sensitivity": _interval(sens[k], *_percentiles(b_sens[:, k], alpha)),
         "specificity": _interval(spec[k], *_percentiles(b_spec[:, k], alpha))}
        for k in range(c)]
    report["confusion_matrix"] = cm.astype(int).tolist()
    return report


def sensitivity_specificity_batch(cms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    tp = np.diagonal(cms, axis1=-2, axis2=-1)
    fn = cms.sum(-1) - tp
    fp = cms.sum(-2) - tp
    tn = cms.sum(axis=(-2, -1))[..., None] - tp - fn - fp
    with np.errstate(invalid="ignore", divide="ignore"):
        return tp / (tp + fn), tn / (tn + fp)


def format_interval(entry: dict | None, digits: int = 3) -> str:
    """'0.xxx [lo, hi]' for a report entry {'value','lo','hi'}; '—' when undefined."""
    if not entry or entry.get("value") is None:
        return "—"
    v, lo, hi = entry["value"], entry.get("lo"), entry.get("hi")
    if lo is None or hi is None:
        return f"{v:.{digits}f}"
    return f"{v:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


__all__ = ["METRICS", "aca", "kappa", "macro_f1", "auc", "sensitivity_specificity", "point_metric",
           "bootstrap_ci", "paired_auc_bootstrap", "classification_report", "format_interval"]
