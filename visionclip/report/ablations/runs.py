"""Training and evaluating the ablation variants of notebook 05, each result cached.

Every variant is a small model trained on the ablation profile with one or two profile overrides
(caption language, loss, corpus size, image size, training seed) and evaluated zero-shot on the
held-out-camera test renderings. The rendered data are shared by all variants:

    run_dir/ablations/data/corpus/            the full ablation corpus (rendered once)
    run_dir/ablations/data/corpus_<n>/        its first n images (hard links) for the size curve
    run_dir/ablations/data/benchmarks/<test|seen>/<dataset>/
    run_dir/ablations/data/nonfundus/         frames of the kinds the corpus never contained
    run_dir/ablations/<variant>/              a run directory: model/, checkpoints/, metrics/,
                                              result.json (the cached evaluation, written last)

Re-running skips finished variants (result.json matches the variant's profile) and resumes
unfinished training from its newest checkpoint. Every comparison comes back as a tidy table
(one row per setting and dataset, value with its 95% bootstrap interval) plus one computed
sentence saying what it shows; nothing here hard-codes a number.
"""
from __future__ import annotations

import dataclasses
import json
from functools import partial
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ...config import Profile, load_profile
from ...data.benchmarks import load_records
from ...data.datasets import ImageDataset
from ...data.transforms import Preprocess
from ...eval.benchmark import PROMPT_SETTINGS, evaluate_zero_shot
from ...eval.checks import READABILITY_PROMPTS
from ...eval.embed import embed_images
from ...eval.metrics import classification_report
from ...eval.perturb import SEVERITIES, perturb
from ...eval.zeroshot import class_prototypes, logit_scale_of, zero_shot_scores
from ...precision import choose_device
from ...pretrained import load_clip
from ...io import write_json
from ...paths import STANDIN_BENCHMARKS, RunLayout
from ...training.loop import train_clip
from .data import nonfundus_set, prepare_ablation_data
from .grid import Variant, profile_digest, select_variants, variant_grid, variant_profile

def _entry(report: Mapping) -> dict:
    return {k: report[k] for k in ("aca", "auc", "macro_f1", "n")}


def evaluate_variant(profile: Profile, run_dir: str | Path, model_dir: str | Path, *, seen: bool = False,
                     severities: Sequence[int] = (), nonfundus: bool = False,
                     prompt_languages: Sequence[str] = ()) -> dict:
    """Zero-shot metrics of one trained variant on the shared ablation data.

    Always: every prompt setting (zh/en x plain/EK) on the held-out test renderings. Optionally:
    the headline setting on the seen-camera renderings (with per-case predictions for the paired
    gap), the robustness curves under blur and exposure, and the non-fundus test with the prompts
    of `prompt_languages`.
    """
    ev, preprocess = profile.eval, Preprocess.for_evaluation(profile)
    model, tokenizer = load_clip(model_dir, choose_device(ev.device))
    workers = ev.num_workers
    # every row, clean, seen, perturbed or non-fundus, is read and scored the same way
    common = dict(model=model, tokenizer=tokenizer, n_boot=ev.bootstrap, seed=profile.seed, flair_exact=ev.flair_exact)
    headline = (ev.language, ev.prompt_mode)
    out: dict = {"headline": f"{ev.language}_{ev.prompt_mode}", "test": {}, "seen": {}, "robustness": {},
                 "nonfundus": {}}
    for ds in STANDIN_BENCHMARKS:
        root = RunLayout(run_dir).ablation_benchmarks("test") / ds
        records = load_records(ds, root)
        emb = embed_images(model, records, preprocess, ev.batch_size, desc=f"embed {ds}", num_workers=workers)
        res = {f"{lang}_{mode}": evaluate_zero_shot(None, ds, root, lang, mode, records=records, image_emb=emb,
                                                    **common) for lang, mode in PROMPT_SETTINGS}
        out["test"][ds] = {k: _entry(r["report"]) for k, r in res.items()}
        head = res[out["headline"]]
        if seen:
            sroot = RunLayout(run_dir).ablation_benchmarks("seen") / ds
            srecords = load_records(ds, sroot)
            semb = embed_images(model, srecords, preprocess, ev.batch_size, desc=f"embed {ds} (seen)",
                                num_workers=workers)
            sres = evaluate_zero_shot(None, ds, sroot, *headline, records=srecords, image_emb=semb, **common)
            out["seen"][ds] = {"report": _entry(sres["report"]), "y_true": head["y_true"].tolist(),
                               "pred_heldout": head["y_prob"].argmax(1).tolist(),
                               "pred_seen": sres["y_prob"].argmax(1).tolist()}
        for kind in ("blur", "exposure") if severities else ():
            for level in severities:
                if level == 0:
                    rep = head["report"]
                else:
                    perturbed = ImageDataset(records, preprocess, alter=partial(perturb, kind=kind, level=level))
                    pemb = embed_images(model, perturbed, batch_size=ev.batch_size, desc=f"embed {ds} ({kind} {level})",
                                        num_workers=workers)
                    rep = evaluate_zero_shot(None, ds, root, *headline, records=records, image_emb=pemb,
                                             **common)["report"]
                out["robustness"].setdefault(ds, {}).setdefault(kind, {})[str(level)] = _entry(rep)
    if nonfundus:
        items = nonfundus_set(run_dir, profile.seed)
        y = np.array([it.label for it in items])
        emb = embed_images(model, items, preprocess, ev.batch_size, desc="embed non-fundus test",
                           num_workers=workers)
        for lang in prompt_languages:
            fundus, not_fundus = READABILITY_PROMPTS[lang]["is_fundus"]  # predict's is-fundus check
            protos = class_prototypes(model, tokenizer, [list(not_fundus), list(fundus)], model.context_length,
                                      flair_exact=ev.flair_exact)
            probs = zero_shot_scores(emb, protos, logit_scale_of(model))
            rep = classification_report(y, probs, ["not fundus", "fundus"], n_boot=ev.bootstrap, seed=profile.seed)
            out["nonfundus"][lang] = {"aca": rep["aca"], "auc": rep["auc"], "n": rep["n"],
                                      "n_nonfundus": int((y == 0).sum()), "confusion_matrix": rep["confusion_matrix"]}
    return out


def run_variant(profile: Profile, run_dir: str | Path, variant: Variant, *, seen: bool = False,
                severities: Sequence[int] = (), nonfundus: bool = False, progress: bool = True) -> dict:
    """Train (resuming) and evaluate one variant, or read its cached result.json when it matches.

    The cache key is the variant's resolved profile and the evaluation options: a changed profile
    or option evaluates again (and training refuses to resume a checkpoint of another recipe).
    """
    from ..stages import prepare_run_dir

    variant_run = RunLayout(run_dir).ablation_variant(variant.name)  # a run directory of its own
    options = {"seen": bool(seen), "severities": [int(x) for x in severities], "nonfundus": bool(nonfundus)}
    key = {"profile": profile_digest(profile), "options": options}
    cached = variant_run.result_json
    if cached.is_file():
        data = json.loads(cached.read_text(encoding="utf-8"))
        if data.get("key") == key:
            return data
    prepare_run_dir(profile, variant_run.root)
    summary = train_clip(profile, variant_run.root, progress=progress)
    languages = ("zh", "en") if profile.train.caption_language == "both" else (profile.eval.language,)
    result = evaluate_variant(profile, run_dir, variant_run.model, seen=seen, severities=severities,
                              nonfundus=nonfundus, prompt_languages=languages)
    result.update({"key": key, "variant": dataclasses.asdict(variant) | {"overrides": dict(variant.overrides)},
                   "train_steps": summary["steps"], "train_images": summary["samples"],
                   "train_seconds": round(summary["seconds"], 1), "final_val": summary.get("final_val", {})})
    write_json(cached, result)
    # what a later run reads back (sorted keys, plain JSON types): fresh and cached runs show the same
    return json.loads(cached.read_text(encoding="utf-8"))


def run_ablations(profile_name: str, run_dir: str | Path, overrides: Mapping | None = None,
                  names: Sequence[str] = (), n_nonfundus: int | None = None, progress: bool = True) -> dict:
    """Render the shared data, then train and evaluate each selected variant; {name: result}."""
    overrides = dict(overrides or {})
    base = load_profile(profile_name, overrides)
    grid = select_variants(variant_grid(base), names)
    n_non = n_nonfundus if n_nonfundus is not None else max(20, base.synth.refuge_size // 2)
    prepare_ablation_data(base, run_dir, grid, n_non)
    results = {}
    for name, v in grid.items():
        vp = variant_profile(profile_name, overrides, v, run_dir)
        is_base = name == "baseline"
        results[name] = run_variant(vp, run_dir, v, seen=is_base, severities=SEVERITIES if is_base else (),
                                    # every caption language, and every training seed: is the check stable?
                                    nonfundus=is_base or v.group in ("captions", "seed"),
                                    progress=progress)
    return {"profile": base, "grid": grid, "results": results}


__all__ = ["evaluate_variant", "run_variant", "run_ablations"]
