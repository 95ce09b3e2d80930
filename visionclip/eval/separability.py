"""Where a pair of classes is lost: in the image embedding or in the prompts.

Zero-shot can tell two classes apart only as well as the image embedding does. For each pair of
classes of a stand-in benchmark, two AUCs on the same test images of those two classes:

- **probe**: a logistic regression trained on the *dev* rendering's image embeddings of the pair (held-out
  cameras, its own seed; never on the images scored) and scored on the *test* rendering: how much of
  the difference the image embedding holds;
- **zero-shot**: the headline prompts' probability of the second class against the first,
  p_b / (p_a + p_b), on the same images: how much of it the prompts read.

A probe near 0.5 means the image tower never learnt to see the difference, and no wording of the
prompts can recover it; zero-shot well below a high probe means the prompts lose what the image holds.
Ordinal sets (DR grades) are read as neighbouring grades, the others as every pair.
"""
from __future__ import annotations

import itertools
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression

from ..errors import DataError
from ..io import write_json
from ..paths import STANDIN_BENCHMARKS, RunLayout, is_standin
from ..seeding import derive_seed
from .benchmark import ORDINAL
from .embed import load_embeddings
from .metrics import paired_auc_bootstrap

# A probe whose interval reaches this AUC or lower does not separate the pair usefully: the image
# embedding, not the prompts, is where it is lost.
IMAGE_BLIND_AUC = 0.6
# The prompts lose a pair when the probe beats zero-shot by more than this at the lower end of the
# paired interval: differences of a few thousandths near AUC 1 are not worth a reader's attention.
PROMPT_LOSS = 0.02


def class_pairs(n_classes: int, ordinal: bool) -> list[tuple[int, int]]:
    """Neighbouring classes for an ordinal scale, else every pair."""
    if ordinal:
        return [(a, a + 1) for a in range(n_classes - 1)]
    return list(itertools.combinations(range(n_classes), 2))


def pair_separability(dev_emb, dev_labels, test_emb, test_labels, test_prob, pairs: Sequence[tuple[int, int]],
                      n_boot: int = 1000, seed: int = 0) -> list[dict]:
    """For each pair (a, b): probe and zero-shot AUC of b against a on the test images of a and b.

    The probe is fitted on the dev images of the pair only; both AUCs and their difference are
    bootstrapped over the same resamples of the test images (metrics.paired_auc_bootstrap).
    """
    unit = lambda x: np.asarray(x, np.float64) / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    dev_emb, test_emb = unit(dev_emb), unit(test_emb)
    dev_labels, test_labels = np.asarray(dev_labels).astype(int), np.asarray(test_labels).astype(int)
    test_prob = np.asarray(test_prob, np.float64)
    rows = []
    for a, b in pairs:
        fit, scored = np.isin(dev_labels, (a, b)), np.isin(test_labels, (a, b))
        n_dev = [int((dev_labels == c).sum()) for c in (a, b)]
        n_test = [int((test_labels == c).sum()) for c in (a, b)]
        row = {"pair": (int(a), int(b)), "dev_images": n_dev, "test_images": n_test}
        if min(n_dev) == 0 or min(n_test) == 0:
            rows.append(dict(row, probe=None, zero_shot=None, reason="a class of the pair has no dev or test image"))
            continue
        probe = LogisticRegression(max_iter=3000, class_weight="balanced")
        probe.fit(dev_emb[fit], dev_labels[fit] == b)
        positive = test_labels[scored] == b
        pa, pb = test_prob[scored, a], test_prob[scored, b]
        probe_score, zero_shot_score = probe.decision_function(test_emb[scored]), pb / np.maximum(pa + pb, 1e-12)
        auc = paired_auc_bootstrap(positive, probe_score, zero_shot_score, n_boot, derive_seed(seed, "separability", a, b))
        rows.append(dict(row, probe=auc["a"], zero_shot=auc["b"], probe_minus_zero_shot=auc["difference"]))
    return rows


def _test_probabilities(layout: RunLayout, dataset: str, test: dict) -> np.ndarray:
    """The headline setting's class probabilities of the test rendering, in the embeddings' order."""
    path = layout.predictions(dataset, "test")
    if not path.is_file():
        raise DataError(f"{path}: missing; run eval.benchmark.run_evaluation on the test rendering first")
    frame = pd.read_csv(path).set_index("path")
    columns = [f"p_{name}" for name in test["class_names"]]
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: column {missing[0]!r} is missing (classes of the test embeddings)")
    paths = [str(p) for p in test["path"]]
    absent = [p for p in paths if p not in frame.index]
    if absent:
        raise DataError(f"{path}: no row for {absent[0]!r} of the test embeddings")
    return frame.loc[paths, columns].to_numpy(np.float64)


def run_separability(profile, run_dir: str | Path, datasets: Sequence[str] | None = None) -> dict:
    """Probe against zero-shot AUC for the class pairs of each stand-in set; writes eval/separability.json.

    Needs the dev and test embeddings and the test predictions that run_evaluation writes. A dataset
    read from a real release has no dev rendering to fit the probe on: it is listed as skipped.
    """
    layout = RunLayout(run_dir)
    out: dict = {}
    for ds in datasets or STANDIN_BENCHMARKS:
        if not is_standin(profile, ds):
            out[ds] = {"skipped": "a real release: no dev rendering to fit the probe on"}
            continue
        test, dev = load_embeddings(run_dir, f"{ds}_test"), load_embeddings(run_dir, f"{ds}_dev")
        names = [str(n) for n in test["class_names"]]
        rows = pair_separability(dev["image"], dev["label"], test["image"], test["label"],
                                 _test_probabilities(layout, ds, test), class_pairs(len(names), ds in ORDINAL),
                                 profile.eval.bootstrap, derive_seed(profile.seed, "separability", ds))
        for row in rows:
            row["classes"] = [names[i] for i in row["pair"]]
        out[ds] = {"pairs": rows, "probe_fitted_on": "dev rendering", "scored_on": "test rendering"}
    write_json(layout.separability_json, out)
    return out


def where_lost(row: dict) -> str | None:
    """'image embedding' when the probe's interval reaches IMAGE_BLIND_AUC or lower; 'prompts' when the
    paired interval of probe minus zero-shot lies above PROMPT_LOSS; None when zero-shot keeps what
    the image holds."""
    probe_lo = (row.get("probe") or {}).get("lo")
    if probe_lo is None:
        return None
    if probe_lo <= IMAGE_BLIND_AUC:
        return "image embedding"
    gap_lo = row["probe_minus_zero_shot"]["lo"]
    if gap_lo is not None and gap_lo > PROMPT_LOSS:
        return "prompts"
    return None


def lost_pairs(result: dict, where: str) -> list[str]:
    """'dataset: a vs b' for each pair of a run_separability result lost in `where`."""
    return [f"{ds}: {r['classes'][0]} vs {r['classes'][1]}" for ds, entry in result.items()
            for r in entry.get("pairs", []) if where_lost(r) == where]


__all__ = ["IMAGE_BLIND_AUC", "PROMPT_LOSS", "class_pairs", "pair_separability", "run_separability", "where_lost", "lost_pairs"]
