"""Run a trained VisionCLIP on anyone's photographs: per-class probabilities as CSV, plus checks.

Any size or crop is accepted (data.transforms.preprocess_fundus crops the fundus disk, resizes the
long side and pads to square). Beside the class probabilities the CSV carries a readability check
in the SynFundus-1M semantics (is_fundus, is_macular_readable, is_optic_disc_readable,
is_retinal_region_readable), each a zero-shot choice between a positive and a negative prompt whose
score is mapped to a probability by the model's calibration (eval.checks, fitted on held-out renderings).
A file that cannot be decoded is reported on stderr, marked in the `status` column, and skipped.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

from ..errors import ConfigError, DataError

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
DEFAULT_TEMPLATES = {"en": "A fundus photograph of [CLS]", "zh": "一张眼底照片，显示[CLS]"}
def list_images(images_or_folder: str | Path | Sequence[str | Path]) -> list[Path]:
    """Image files from a folder (recursive, sorted, by extension) and/or explicit paths."""
    items = [images_or_folder] if isinstance(images_or_folder, (str, Path)) else list(images_or_folder)
    out: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in IMAGE_EXTS
                           and not q.name.startswith("."))
            if not found:
                raise DataError(f"{p}: no images found; expected files ending in {list(IMAGE_EXTS)}")
            out.extend(found)
        elif p.exists():
            out.append(p)
        else:
            raise DataError(f"{p}: no such image file or folder")
    if not out:
        raise DataError("predict: no images given")
    return out


def resolve_prompts(classes: Sequence[str] | None, dataset: str | None, language: str,
                    mode: str = "ek") -> tuple[list[str], list[list[str]]]:
    """(class names for the CSV columns, prompts per class) from a free class list and/or a dataset."""
    from ..data.manifests import load_manifest
    from .zeroshot import build_prompts, fill_template

    if not classes and not dataset:
        raise ConfigError("predict: give --classes and/or --dataset (whose classes and prompts are used)")
    if dataset:
        from ..data.benchmarks import check_dataset

        manifest = load_manifest(check_dataset(dataset))
        names_en = [c["name_en"] for c in manifest["classes"]]
        names_lang = [c[f"name_{language}"] for c in manifest["classes"]]
        if classes:
            given = [c.strip().lower() for c in classes]
            if given not in ([n.lower() for n in names_en], [n.lower() for n in names_lang]):
                raise DataError(f"predict: classes {list(classes)} do not match dataset {dataset!r}, whose classes "
                                f"are {names_en} (or {names_lang}), in that order")
        return names_en, build_prompts(manifest, language, mode)
    if len(set(classes)) != len(classes) or len(classes) < 2:
        raise ConfigError(f"predict: --classes needs at least two distinct names, got {list(classes)}")
    template = DEFAULT_TEMPLATES[language]
    return list(classes), [[fill_template(template, c)] for c in classes]


def predict(model_dir: str | Path, images_or_folder, classes: Sequence[str] | None = None,
            dataset: str | None = None, language: str = "zh", out_csv: str | Path | None = None,
            mode: str = "ek", image_size: int | None = None, batch_size: int = 32, model=None, tokenizer=None,
            flair_exact: bool = False, device: str | torch.device = "cpu", num_workers: int = 0):
    """Per-class probabilities for every readable image; returns a pandas DataFrame (and writes out_csv).

    model_dir is loaded on `device`; the images are decoded in `num_workers` DataLoader workers.

    `flair_exact` reproduces FLAIR's choices, as `visionclip evaluate --flair-exact` does: raw
    (unrenormalised) mean prototypes, for the classes and the readability checks, and zero padding
    at the bottom and right instead of centred.

    Columns: path, status ("ok" or "unreadable: ..."), predicted, p_<class>..., then p_is_fundus,
    p_is_macular_readable, p_is_optic_disc_readable, p_is_retinal_region_readable.
    """
    import numpy as np
    import pandas as pd
    import torch

    from ..data.datasets import ImageDataset
    from ..data.transforms import Preprocess
    from ..io import write_text
    from ..pretrained import load_clip
    from ..progress import progress
    from .embed import embed_batch
    from .checks import (READABILITY_PROMPTS, calibrated_probabilities, check_prototypes, check_scores,
                         load_calibration)
    from .zeroshot import class_prototypes, logit_scale_of, zero_shot_scores

    if language not in READABILITY_PROMPTS:
        raise ConfigError(f"predict: language {language!r}: expected one of {list(READABILITY_PROMPTS)}")
    paths = list_images(images_or_folder)
    names, prompts = resolve_prompts(classes, dataset, language, mode)
    if model is None:
        model, tokenizer = load_clip(model_dir, device)
    images = ImageDataset(paths, Preprocess(int(image_size or model.image_size), flair_exact), unreadable="report")
    ctx = model.context_length
    scale = logit_scale_of(model)
    protos = class_prototypes(model, tokenizer, prompts, ctx, flair_exact=flair_exact)
    checks = READABILITY_PROMPTS[language]
    check_protos = check_prototypes(model, tokenizer, language, flair_exact=flair_exact)
    # fitted on renormalised prototypes: FLAIR's raw ones give other scores, left uncalibrated
    calibration = None if flair_exact or model_dir is None else load_calibration(model_dir)
    calibrated = {}

    rows = []
    model.eval()
    # collate_fn=list: an unreadable image comes back as an item without one, reported below
    loader = torch.utils.data.DataLoader(images, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                                         collate_fn=list)
    for items in progress(loader, desc="predict", total=len(loader), unit="batch"):
        readable = [it for it in items if it["image"] is not None]
        for it in items:
            if it["image"] is None:
                print(f"visionclip predict: skipped {paths[it['index']]}: {it['error']}", file=sys.stderr)
                rows.append({"path": str(paths[it["index"]]), "status": f"unreadable: {it['error']}"})
        if not readable:
            continue
        # embedded as evaluation embeds (eval.embed.embed_batch), prompts included
        emb = embed_batch(model, torch.stack([it["image"] for it in readable])).numpy()
        probs = zero_shot_scores(emb, protos, scale)
        check, calibrated = calibrated_probabilities(check_scores(emb, check_protos, scale), calibration, language)
        for j, it in enumerate(readable):
            row = {"path": str(paths[it["index"]]), "status": "ok", "predicted": names[int(probs[j].argmax())]}
            row.update({f"p_{n}": float(probs[j, k]) for k, n in enumerate(names)})
            row.update({f"p_{flag}": float(v[j]) for flag, v in check.items()})
            rows.append(row)
    columns = ["path", "status", "predicted"] + [f"p_{n}" for n in names] + [f"p_{f}" for f in checks]
    order = {str(p): k for k, p in enumerate(paths)}
    df = pd.DataFrame(rows, columns=columns)
    df = df.iloc[np.argsort([order[p] for p in df["path"]], kind="stable")].reset_index(drop=True)
    uncalibrated = [flag for flag, ok in calibrated.items() if not ok]
    df.attrs["uncalibrated_checks"] = uncalibrated
    if uncalibrated:
        print(f"visionclip predict: {', '.join(uncalibrated)}: no calibration beside the model "
              f"({'flair_exact' if flair_exact else 'eval.checks.calibrate_checks'}); p_ is the two-prompt softmax",
              file=sys.stderr)
    if (df["status"] != "ok").all():
        raise DataError(f"predict: none of the {len(paths)} images could be read (first: {paths[0]})")
    if out_csv is not None:
        write_text(out_csv, df.to_csv(index=False, float_format="%.6f"))
    return df


__all__ = ["predict", "list_images", "resolve_prompts", "DEFAULT_TEMPLATES"]
