"""Few-shot linear probes: logistic regression on frozen image embeddings.

Where the shots come from (never from the images that are scored):
- stand-in benchmarks: the shots are drawn from the *dev* rendering of the same benchmark (same
  held-out cameras, another seed, `benchmark_dev_seed`) and the probe is scored on the whole *test*
  rendering, the same images as the zero-shot rows, so the two are directly comparable;
- real datasets (no dev rendering exists): the set is split once, seeded and stratified, into a shot
  pool and a disjoint scoring half (`split_pool`); zero-shot shown beside it is then scored on the
  same half.
Each k draws `draws` seeded samples of k images per class; the result is mean ± sd of ACA. A scoring
set larger than FEWSHOT_MAX_SCORED images is scored on a seeded subsample of that many (recorded).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score

from ..data.benchmarks import labels_of, load_records
from ..data.transforms import Preprocess
from ..errors import DataError
from ..io import write_json
from ..paths import STANDIN_BENCHMARKS, RunLayout, benchmark_dir
from ..precision import choose_device
from ..pretrained import load_clip
from ..seeding import derive_seed, rng, subsample

# Scoring every probe (each k, each draw) on more images than this adds time, hardly precision (a
# proportion over 20,000 images has a standard error of at most 0.0035): larger sets are scored on a
# seeded subsample of this many.
FEWSHOT_MAX_SCORED = 20_000


def draw_shots(labels: np.ndarray, k: int, seed: int, n_classes: int | None = None) -> np.ndarray:
    """Indices of k examples per class (all of a class when it has fewer than k), seeded."""
    labels = np.asarray(labels)
    n_classes = int(labels.max()) + 1 if n_classes is None else n_classes
    g = rng(seed, "shots", k)
    picked = []
    for c in range(n_classes):
        idx = np.flatnonzero(labels == c)
        if len(idx) == 0:
            raise DataError(f"few-shot: class {c} has no example in the shot pool; expected at least one")
        picked.append(g.choice(idx, size=min(k, len(idx)), replace=False))
    return np.sort(np.concatenate(picked))


def split_pool(labels: np.ndarray, seed: int, fraction: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """A seeded stratified split of one set into (shot pool, scoring part), disjoint."""
    labels = np.asarray(labels)
    g = rng(seed, "fewshot-pool")
    pool, score = [], []
    for c in np.unique(labels):
        idx = g.permutation(np.flatnonzero(labels == c))
        cut = max(1, int(round(len(idx) * fraction))) if len(idx) > 1 else 0
        pool.append(idx[:cut])
        score.append(idx[cut:])
    return np.sort(np.concatenate(pool)), np.sort(np.concatenate(score))


def fewshot_probe(train_emb, train_labels, test_emb, test_labels, ks: Sequence[int], draws: int, seed: int,
                  n_classes: int | None = None) -> list[dict]:
    """For each k: ACA of a logistic-regression probe over `draws` seeded draws of shots.

    Returns [{"k", "aca_mean", "aca_sd", "aca": [per draw]}]. Same seed, same numbers.
    """
    train_emb = np.asarray(train_emb, dtype=np.float64)
    test_emb = np.asarray(test_emb, dtype=np.float64)
    train_labels = np.asarray(train_labels).astype(int)
    test_labels = np.asarray(test_labels).astype(int)
    if n_classes is None:
        n_classes = int(max(train_labels.max(), test_labels.max())) + 1
    results = []
    for k in ks:
        scores = []
        for d in range(draws):
            idx = draw_shots(train_labels, int(k), derive_seed(seed, "draw", d), n_classes)
            clf = LogisticRegression(max_iter=2000, C=1.0)
            clf.fit(train_emb[idx], train_labels[idx])
            scores.append(float(balanced_accuracy_score(test_labels, clf.predict(test_emb))))
        results.append({"k": int(k), "aca_mean": float(np.mean(scores)),
                        "aca_sd": float(np.std(scores, ddof=1)) if len(scores) > 1 else 0.0, "aca": scores})
    return results


def run_fewshot(profile, run_dir: str | Path, datasets: Sequence[str] | None = None) -> dict:
    """Linear probes on the stand-in sets: shots from the dev rendering, scored on the test rendering.

    Needs the test embeddings written by run_evaluation; embeds the dev rendering (saved too).
    Writes run_dir/eval/fewshot.json with the zero-shot ACA of the headline setting beside each curve.
    """
    from .embed import embed_images, load_embeddings, save_embeddings

    run_dir = Path(run_dir)
    layout = RunLayout(run_dir)
    ev = profile.eval
    model = None
    out = {}
    for ds in datasets or STANDIN_BENCHMARKS:
        test = load_embeddings(run_dir, f"{ds}_test")
        try:
            dev = load_embeddings(run_dir, f"{ds}_dev")
        except DataError:
            if model is None:
                model, _ = load_clip(layout.model, choose_device(ev.device))
            records = load_records(ds, benchmark_dir(profile, run_dir, ds, "dev"))
            y, _names = labels_of(records)
            emb = embed_images(model, records, Preprocess.for_evaluation(profile), ev.batch_size,
                               desc=f"embed {ds} (dev)", num_workers=ev.num_workers)
            save_embeddings(run_dir, f"{ds}_dev", image=emb, label=y,
                            path=np.array([str(r.path) for r in records]),
                            domain=np.array([str(getattr(r, "domain", "")) for r in records]))
            dev = {"image": emb, "label": y}
        n_classes = len(test["class_names"]) if "class_names" in test else None
        scored = subsample(len(test["label"]), FEWSHOT_MAX_SCORED, profile.seed, "fewshot-scored", ds)
        curve = fewshot_probe(dev["image"], dev["label"], test["image"][scored], test["label"][scored],
                              ev.fewshot_k, ev.fewshot_draws, profile.seed, n_classes)
        zs = None
        path = layout.eval_json(ds)
        if path.is_file():
            data = json.loads(path.read_text(encoding="utf-8"))
            zs = data["results"].get(f"{ev.language}_{ev.prompt_mode}", {}).get("report", {}).get("aca")
        out[ds] = {"shots_from": "dev rendering (benchmark_dev_seed)", "scored_on": "test rendering",
                   "scored_images": int(len(scored)), "test_images": int(len(test["label"])),
                   "curve": curve, "zero_shot_aca": zs}
    write_json(layout.fewshot_json, out)
    return out


__all__ = ["FEWSHOT_MAX_SCORED", "draw_shots", "split_pool", "fewshot_probe", "run_fewshot"]
