"""Zero-shot evaluation of a run on the benchmark sets with the FLAIR protocol.

Per dataset: image embeddings, the four prompt settings (zh/en x plain/EK), and two reference rows
computed on the same images: chance (an untrained model with the same configuration and seed) and
the supervised ceiling (eval.ceiling). The results go to run_dir/eval and into the paper's Table 1
layout (eval.table), where every row says which data it was computed on.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from ..data.transforms import Preprocess
from ..data.benchmarks import check_classes, check_dataset, labels_of, load_dataset_manifest, load_records
from ..io import write_json, write_text
from ..paths import STANDIN_BENCHMARKS, RunLayout, benchmark_dir
from ..precision import choose_device
from ..pretrained import chance_model, load_classifier, load_clip
from .embed import embed_images, save_embeddings
from .ceiling import balance_heads, ceiling_probs, classifier_heads
from .metrics import classification_report
from .readable import unreadable_settings
from .table import CEILING_ROW, CHANCE_ROW, row_name, row_source, source_label, write_table
from .zeroshot import build_prompts, class_prototypes, logit_scale_of, zero_shot_scores

ORDINAL = {"messidor2", "messidor"}  # DR grades: the quadratic-weighted kappa is meaningful
PROMPT_SETTINGS = (("zh", "plain"), ("zh", "ek"), ("en", "plain"), ("en", "ek"))


# ---------------------------------------------------------------- zero-shot

def zero_shot_probs(model, tokenizer, image_emb: np.ndarray, manifest: Mapping, language: str, mode: str,
                    flair_exact: bool = False) -> np.ndarray:
    prompts = build_prompts(manifest, language, mode)
    protos = class_prototypes(model, tokenizer, prompts, model.context_length, flair_exact=flair_exact)
    return zero_shot_scores(image_emb, protos, logit_scale_of(model))


def evaluate_zero_shot(model_dir: str | Path | None, dataset: str, data_root: str | Path, language: str = "zh",
                       mode: str = "ek", flair_exact: bool = False, image_size: int | None = None,
                       batch_size: int = 64, n_boot: int = 1000, seed: int = 0, model=None, tokenizer=None,
                       records: Sequence | None = None, image_emb: np.ndarray | None = None,
                       device: str | torch.device = "auto", num_workers: int = 0) -> dict:
    """Zero-shot metrics of one model on one dataset in one prompt setting.

    model_dir is loaded on `device` (precision.choose_device: "auto" is the GPU when there is one),
    the images decoded in `num_workers` DataLoader workers. Pass `model`/`tokenizer` (instead of
    model_dir), `records` and `image_emb` to reuse work across prompt settings. Returns {"dataset",
    "data_root", "language", "mode", "flair_exact", "report", "y_true", "y_prob", "paths"} (the last
    three as arrays, for prediction files).
    """
    check_dataset(dataset)
    if model is None:
        model, tokenizer = load_clip(model_dir, choose_device(str(device), "device"))
    if records is None:
        records = load_records(dataset, data_root)
    manifest = load_dataset_manifest(dataset)
    y_true, class_names = labels_of(records)
    check_classes(manifest, class_names, f"{data_root}")
    if image_emb is None:
        preprocess = Preprocess(image_size or model.image_size, flair_exact)
        image_emb = embed_images(model, records, preprocess, batch_size, desc=f"embed {dataset}",
                                 num_workers=num_workers)
    probs = zero_shot_probs(model, tokenizer, image_emb, manifest, language, mode, flair_exact)
    report = classification_report(y_true, probs, class_names, n_boot=n_boot, seed=seed,
                                   ordinal=dataset in ORDINAL)
    return {"dataset": dataset, "data_root": str(data_root), "language": language, "mode": mode,
            "flair_exact": bool(flair_exact), "report": report, "y_true": y_true, "y_prob": probs,
            "paths": np.array([str(r.path) for r in records])}





def write_predictions(path: str | Path, paths: Sequence[str], y_true: np.ndarray, y_prob: np.ndarray,
                      class_names: Sequence[str]) -> None:
    df = pd.DataFrame({"path": list(paths), "label": [class_names[i] for i in y_true],
                       "predicted": [class_names[i] for i in y_prob.argmax(1)]})
    for k, c in enumerate(class_names):
        df[f"p_{c}"] = y_prob[:, k]
    write_text(path, df.to_csv(index=False, float_format="%.6f"))


def public_result(res: Mapping) -> dict:
    """An evaluate_zero_shot result without its per-image arrays (what the JSON files hold)."""
    return {k: v for k, v in res.items() if k not in ("y_true", "y_prob", "paths")}


def run_evaluation(profile, run_dir: str | Path, variant: str = "test", datasets: Sequence[str] | None = None,
                   settings: Sequence[tuple[str, str]] = PROMPT_SETTINGS, references: bool = True) -> dict:
    """The whole zero-shot evaluation of run_dir/model on the benchmark sets of `variant`.

    Per dataset: image embeddings (saved to run_dir/embeddings/<dataset>_<variant>.npz), the four
    prompt settings (zh/en x plain/EK), chance (untrained model, headline prompts) and the supervised
    ceiling (when run_dir/supervised exists). Writes run_dir/eval/<variant>/<dataset>.json (every
    report, confusion matrices, per-class sensitivity/specificity with intervals), predictions of the
    headline setting, and the table (run_dir/eval/table.* for the test variant). Returns a summary.
    `references=False` skips the chance and ceiling rows (two more passes over the images), e.g. for
    the dev rendering where only the prompt settings are compared.
    """
    run_dir = Path(run_dir)
    layout = RunLayout(run_dir)
    ev = profile.eval
    preprocess, n_boot, seed = Preprocess.for_evaluation(profile), ev.bootstrap, profile.seed
    device, workers = choose_device(ev.device), ev.num_workers
    model, tokenizer = load_clip(layout.model, device)
    chance = chance_model(profile, tokenizer, model.image_size, device) if references else None
    classifier = load_classifier(layout.supervised, device) if references and layout.supervised.is_dir() else None
    if datasets is None:  # the original MESSIDOR has no stand-in: evaluated when its real root is set
        datasets = list(STANDIN_BENCHMARKS) + (["messidor"] if getattr(profile.data, "messidor_root", "") else [])

    rows: dict[str, dict] = {}
    sources: dict[str, str] = {}
    per_dataset: dict[str, dict] = {}
    # settings the model cannot read (a prompt language outside what it was trained on) are not
    # results: left out of the table, the JSON and the figures, each with its one-line reason
    setting_prompts: dict[tuple[str, str], list[str]] = {}
    for ds in datasets:
        if benchmark_dir(profile, run_dir, ds, variant) is not None:
            for lang, mode in settings:
                setting_prompts.setdefault((lang, mode), []).extend(
                    p for cls in build_prompts(load_dataset_manifest(ds), lang, mode) for p in cls)
    left_out = unreadable_settings(model, tokenizer, setting_prompts)
    for ds in datasets:
        root = benchmark_dir(profile, run_dir, ds, variant)
        if root is None:
            continue
        records = load_records(ds, root)
        y_true, class_names = labels_of(records)
        manifest = load_dataset_manifest(ds)
        check_classes(manifest, class_names, str(root))
        sources[ds] = source_label(profile, run_dir, ds, variant)
        emb = embed_images(model, records, preprocess, ev.batch_size, desc=f"embed {ds} ({variant})",
                           num_workers=workers)
        save_embeddings(run_dir, f"{ds}_{variant}", image=emb, label=y_true,
                        path=np.array([str(r.path) for r in records]),
                        domain=np.array([str(getattr(r, "domain", "")) for r in records]),
                        class_names=np.array(class_names))
        common = dict(records=records, n_boot=n_boot, seed=seed, flair_exact=ev.flair_exact)
        results = {}
        for lang, mode in settings:
            if f"{lang}_{mode}" in left_out:
                continue
            res = evaluate_zero_shot(None, ds, root, lang, mode, model=model, tokenizer=tokenizer, image_emb=emb,
                                     **common)
            results[f"{lang}_{mode}"] = res
            rows.setdefault(row_name(lang, mode, ev.flair_exact), {})[ds] = res["report"]["aca"]
        headline = results.get(f"{ev.language}_{ev.prompt_mode}") or next(iter(results.values()))
        write_predictions(layout.predictions(ds, variant), headline["paths"], y_true, headline["y_prob"],
                          class_names)
        if chance is not None:
            chance_emb = embed_images(chance, records, preprocess, ev.batch_size, desc=f"embed {ds} (chance)",
                                      num_workers=workers)
            ch = evaluate_zero_shot(None, ds, root, ev.language, ev.prompt_mode, model=chance, tokenizer=tokenizer,
                                    image_emb=chance_emb, **common)
            results["chance"] = ch
            rows.setdefault(CHANCE_ROW, {})[ds] = ch["report"]["aca"]
        if classifier is not None:
            heads = classifier_heads(classifier, records, preprocess, ev.batch_size, workers)
            if classifier.label_priors is not None:
                heads = balance_heads(heads, classifier.label_priors)
            probs = ceiling_probs(heads, ds, class_names)
            rep = classification_report(y_true, probs, class_names, n_boot=n_boot, seed=seed, ordinal=ds in ORDINAL)
            results["supervised"] = {"dataset": ds, "data_root": str(root), "report": rep}
            rows.setdefault(CEILING_ROW, {})[ds] = rep["aca"]
        per_dataset[ds] = {name: public_result(r) for name, r in results.items()}
        write_json(layout.eval_json(ds, variant), {"dataset": ds, "variant": variant, "source": sources[ds],
                                            "class_names": class_names, "results": per_dataset[ds],
                                            "left_out": left_out})

    source = row_source(sources)
    table_rows = [{"model": name, "source": source, "scores": scores} for name, scores in rows.items()]
    left_out_rows = {row_name(*key.split("_", 1), ev.flair_exact): reason for key, reason in left_out.items()}
    df = write_table(table_rows, run_dir, variant, left_out=left_out_rows)
    return {"variant": variant, "table": df, "rows": table_rows, "per_dataset": per_dataset,
            "eval_dir": str(layout.eval(variant)), "left_out": left_out_rows}



__all__ = ["PROMPT_SETTINGS", "evaluate_zero_shot", "zero_shot_probs", "write_predictions", "run_evaluation"]
