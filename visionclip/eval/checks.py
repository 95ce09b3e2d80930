"""The readability checks of `visionclip predict`, calibrated.

Each check (is_fundus, is_macular_readable, is_optic_disc_readable, is_retinal_region_readable, the
SynFundus-1M flags) is a zero-shot choice between positive and negative prompts: its score is the
logit difference  s = logit_scale * (cos(image, positive) - cos(image, negative)).  A softmax of two
prompts is not a probability anyone measured, so the score is mapped to one by Platt scaling,
p = sigmoid(a * s + b), fitted by logistic regression on held-out renderings: the corpus val split
(never trained on), whose labels say which images are fundus photographs and which regions can be
read. The fit is a property of the model: `calibrate_checks` stores it beside the weights
(`check_calibration.json`), and predict reads it there.

Predict reports p(fundus) under an even prior (calibrated_probabilities): the fit's own prior, the val
split's prevalence, is taken out, since a user's folder has a mix of its own.

What the calibration is worth: it holds for images like the renderings it was fitted on. On real
photographs the score still orders images by the model's belief, but the probability is only as good
as the model's transfer (the zero-shot notebook measures both on the real dev photographs).
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ..data.captions import NON_FUNDUS, READABILITY
from ..errors import CheckpointError

CALIBRATION_FILE = "check_calibration.json"
# Images of the val split the fit uses at most (seeded subsample above it): two parameters per
# check need far fewer; embedding a 100k val split would cost more than the fit is worth.
MAX_CALIBRATION_IMAGES = 5000

# (positive prompts, negative prompts) per SynFundus readability flag. The negative sides are the
# phrases the corpus captioner (data.captions: NON_FUNDUS, READABILITY) writes for flag = 0, so a
# model trained on the corpus has seen them; the positive sides describe an ordinary photograph.
_POSITIVE_PROMPTS = {
    "en": {"is_fundus": ["a fundus photograph", "colour fundus photograph showing a normal fundus"],
           "is_macular_readable": ["the macula is clearly visible", "a normal fundus without lesions"],
           "is_optic_disc_readable": ["the optic disc is clearly visible", "a well defined disc"],
           "is_retinal_region_readable": ["a sharp fundus photograph of good quality",
                                          "a normal fundus without lesions"]},
    "zh": {"is_fundus": ["眼底照片", "彩色眼底照相可见正常眼底"],
           "is_macular_readable": ["黄斑区显示清晰", "正常眼底"],
           "is_optic_disc_readable": ["视盘界清色可", "视盘区域显示清晰"],
           "is_retinal_region_readable": ["图像清晰，质量良好", "正常眼底"]},
}
READABILITY_PROMPTS = {
    lang: {flag: (pos, list(NON_FUNDUS[li][:2] if flag == "is_fundus" else READABILITY[flag][li]))
           for flag, pos in _POSITIVE_PROMPTS[lang].items()}
    for lang, li in (("en", 1), ("zh", 0))  # li: the language's index in the captioner's (zh, en) pairs
}
CHECKS = tuple(READABILITY_PROMPTS["en"])


def check_prototypes(model, tokenizer, language: str, flair_exact: bool = False) -> dict:
    """{check: [2, D] prototypes (positive, negative)} in `language`."""
    from .zeroshot import class_prototypes

    return {flag: class_prototypes(model, tokenizer, [list(pos), list(neg)], model.context_length,
                                   flair_exact=flair_exact)
            for flag, (pos, neg) in READABILITY_PROMPTS[language].items()}


def check_scores(image_emb, prototypes: Mapping, logit_scale: float) -> dict[str, np.ndarray]:
    """{check: [N] logit differences, positive minus negative prompt}."""
    img = np.asarray(image_emb, dtype=np.float32)
    out = {}
    for flag, protos in prototypes.items():
        p = np.asarray(protos, dtype=np.float32)
        out[flag] = float(logit_scale) * (img @ p[0] - img @ p[1])
    return out


def _platt(scores: np.ndarray, labels: np.ndarray) -> dict:
    """sigmoid(a * s + b) fitted by (nearly unregularised) logistic regression, with its fit quality."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import brier_score_loss, roc_auc_score

    fit = LogisticRegression(C=1e4).fit(scores[:, None], labels)
    p = fit.predict_proba(scores[:, None])[:, 1]
    return {"a": float(fit.coef_[0, 0]), "b": float(fit.intercept_[0]), "images": int(len(labels)),
            "positives": int(labels.sum()), "auc": float(roc_auc_score(labels, scores)),
            "brier": float(brier_score_loss(labels, p)),
            "brier_of_prevalence": float(brier_score_loss(labels, np.full(len(labels), labels.mean())))}


def calibrate_checks(model, tokenizer, records: Sequence, preprocess, seed: int, batch_size: int = 64,
                     languages: Sequence[str] | None = None, num_workers: int = 0) -> dict:
    """Platt parameters of every check in every language, fitted on `records` (the corpus val split;
    a seeded subsample of MAX_CALIBRATION_IMAGES above that). A check whose labels take one value
    there gets no parameters (predict then says it is uncalibrated). `languages` defaults to those
    the model was trained on (model.training_captions): prompts in a language it never read score
    words it has not seen, and a fit on them would dress noise up as a probability."""
    from ..seeding import rng
    from .embed import embed_images
    from .zeroshot import logit_scale_of

    if languages is None:
        languages = sorted(getattr(model, "training_captions", None) or {"zh": None, "en": None})
    records = list(records)
    if len(records) > MAX_CALIBRATION_IMAGES:
        keep = np.sort(rng(seed, "check_calibration").choice(len(records), MAX_CALIBRATION_IMAGES, replace=False))
        records = [records[i] for i in keep]
    emb = embed_images(model, records, preprocess, batch_size, desc="embed val images (check calibration)",
                       num_workers=num_workers)
    scale = logit_scale_of(model)
    out: dict = {"fitted_on": "corpus val split", "images": len(records)}
    for lang in languages:
        scores = check_scores(emb, check_prototypes(model, tokenizer, lang), scale)
        out[lang] = {}
        for flag, s in scores.items():
            labels = np.array([int(r.labels[flag]) for r in records])
            if 0 < labels.sum() < len(labels):
                out[lang][flag] = _platt(s, labels)
    return out


def save_calibration(model_dir: str | Path, calibration: Mapping) -> Path:
    from ..io import write_json

    path = Path(model_dir) / CALIBRATION_FILE
    write_json(path, dict(calibration))
    return path


def load_calibration(model_dir: str | Path) -> dict | None:
    """The model's check calibration, or None when it has none (a model trained before it existed)."""
    import json

    path = Path(model_dir) / CALIBRATION_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: unreadable check calibration ({e}); delete it to predict uncalibrated, "
                              "or re-create it with the zero-shot notebook") from None


PRIORS = ("even", "fitted")
# Checks stated under an even prior (PRIORS "even"): whether an image is a fundus photograph at all,
# where a folder's mix is anyone's guess. Readability keeps the fitted prior: in clinical series as in
# the corpus most photographs can be read, and an even prior would call a well-read eye doubtful.
EVEN_PRIOR_CHECKS = ("is_fundus",)


def calibrated_probabilities(scores: Mapping[str, np.ndarray], calibration: Mapping | None,
                             language: str, prior: str = "even") -> tuple[dict[str, np.ndarray], dict[str, bool]]:
    """({check: [N] probabilities}, {check: calibrated?}). Uncalibrated checks fall back to the
    two-prompt softmax, sigmoid(s), and are marked so.

    prior "even": the checks of EVEN_PRIOR_CHECKS as for a folder where both answers are equally likely
    a priori, the fit's log prior odds (its val split's prevalence, 98% fundus in the corpus) taken out
    by Bayes' rule. Why the default: a user's folder has its own mix, unknown, and the corpus's
    prevalence would call a frame that the score puts between the two sides a fundus photograph.
    "fitted": every check at the val split's prevalence, as fitted."""
    if prior not in PRIORS:
        raise ValueError(f"prior {prior!r}: expected one of {PRIORS}")
    params = (calibration or {}).get(language, {})
    probs, calibrated = {}, {}
    for flag, s in scores.items():
        fit = params.get(flag)
        z = fit["a"] * s + fit["b"] if fit else s
        if fit and prior == "even" and flag in EVEN_PRIOR_CHECKS and 0 < fit.get("positives", 0) < fit.get("images", 0):
            share = fit["positives"] / fit["images"]
            z = z - np.log(share / (1 - share))
        probs[flag] = 1.0 / (1.0 + np.exp(-np.clip(z, -60, 60)))
        calibrated[flag] = fit is not None
    return probs, calibrated


def calibrate_run(profile, run_dir: str | Path) -> dict:
    """Fit the checks of run_dir's CLIP model on its corpus val split (embedded on eval.device) and
    store the fit beside it."""
    from ..data.prepare import readable
    from ..data.readers import read_corpus
    from ..data.splits import split_corpus
    from ..data.transforms import Preprocess
    from ..paths import RunLayout
    from ..precision import choose_device
    from ..pretrained import load_clip

    model_dir = RunLayout(run_dir).model
    model, tokenizer = load_clip(model_dir, choose_device(profile.eval.device))
    # the val images training skipped as unreadable are skipped here too (data.prepare's list)
    val = readable(split_corpus(read_corpus(profile, run_dir), profile.seed)["val"], profile, run_dir)
    calibration = calibrate_checks(model, tokenizer, val, Preprocess.for_evaluation(profile), profile.seed,
                                   profile.eval.batch_size, num_workers=profile.eval.num_workers)
    save_calibration(model_dir, calibration)
    return calibration


def calibration_table(calibration: Mapping):
    """One row per language and check: images, positives, AUC, Brier score and the prevalence's."""
    import pandas as pd

    rows = [{"language": lang, "check": flag, **{k: fit[k] for k in ("images", "positives", "auc", "brier",
                                                                     "brier_of_prevalence")}}
            for lang, fits in calibration.items() if isinstance(fits, dict) for flag, fit in fits.items()]
    return pd.DataFrame(rows)


__all__ = ["READABILITY_PROMPTS", "CHECKS", "CALIBRATION_FILE", "check_prototypes", "check_scores",
           "calibrate_checks", "calibrate_run", "calibration_table", "save_calibration", "load_calibration",
           "calibrated_probabilities", "PRIORS", "EVEN_PRIOR_CHECKS"]
