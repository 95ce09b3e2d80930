"""Ablations of notebook 05: what each choice of the recipe is worth, each varied alone.

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
import hashlib
import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageFilter

from .config import LOSSES, Profile, load_profile
from .errors import ConfigError, DataError
from .io import write_json
from .paths import STANDIN_BENCHMARKS
from .seeding import rng

DATASET_NAMES = {"messidor2": "MESSIDOR-2", "fives": "FIVES", "refuge": "REFUGE"}
CORPUS_FRACTIONS = (0.25, 0.5)          # of synth.corpus_size, beside the full corpus of the baseline
EXTRA_SEEDS = 2                         # training seeds beside the baseline's: seed + 1, seed + 2
SEVERITIES = (0, 1, 2, 3)               # perturbation levels of the robustness curves
BLUR_SIGMA_PER_LEVEL = 0.01             # Gaussian blur sigma per level, as a share of the image side
EXPOSURE_STOPS_PER_LEVEL = 0.5          # under-exposure per level, in photographic stops (gain 2^-x)
FUNDUS_PROMPTS = {"en": ("not a fundus photograph", "a fundus photograph"),
                  "zh": ("不是眼底照片", "一张眼底照片")}   # class 0 = not fundus, class 1 = fundus
RESULT_FILE = "result.json"
# ACA (balanced accuracy) of a model that ignores the image: one over the number of classes
CHANCE_ACA = {"MESSIDOR-2": 1 / 5, "FIVES": 1 / 4, "REFUGE": 1 / 2}


# ---------------------------------------------------------------- the grid

@dataclasses.dataclass(frozen=True)
class Variant:
    """One trained model of the ablation grid: its name, what it varies and its profile overrides."""
    name: str
    group: str                     # the comparison it was added for
    label: str                     # what the tables call it
    overrides: Mapping             # profile overrides on top of the ablation profile
    corpus_size: int | None = None  # a prefix of the rendered corpus; None = all of it


def variant_grid(profile: Profile) -> dict[str, Variant]:
    """The variants, baseline first; the baseline serves every comparison as its reference setting."""
    s, t = profile.synth, profile.train
    base = Variant("baseline", "baseline", f"{t.caption_language} captions, {t.loss}, "
                   f"{s.corpus_size} images, {t.image_size} px, seed {profile.seed}", {})
    grid = {"baseline": base}
    for lang in ("zh", "en", "both"):
        if lang != t.caption_language:
            over = {"train.caption_language": lang}
            if lang in ("zh", "en"):  # a model is read with prompts in the language it was trained on
                over["eval.language"] = lang
            grid[f"captions_{lang}"] = Variant(f"captions_{lang}", "captions", f"{lang} captions", over)
    for other_loss in LOSSES:
        if other_loss != t.loss:
            grid[f"loss_{other_loss}"] = Variant(f"loss_{other_loss}", "loss", other_loss, {"train.loss": other_loss})
    for frac in CORPUS_FRACTIONS:
        n = max(10, int(round(frac * s.corpus_size)))
        if n < s.corpus_size:
            grid[f"corpus_{n}"] = Variant(f"corpus_{n}", "corpus_size", f"{n} images", {}, corpus_size=n)
    if s.render_size != t.image_size:  # the second resolution: the full rendered size
        grid[f"resolution_{s.render_size}"] = Variant(f"resolution_{s.render_size}", "resolution",
                                                      f"{s.render_size} px", {"train.image_size": s.render_size})
    for k in range(1, EXTRA_SEEDS + 1):
        seed = profile.seed + k
        grid[f"seed_{seed}"] = Variant(f"seed_{seed}", "seed", f"seed {seed}", {"seed": seed})
    return grid


def select_variants(grid: Mapping[str, Variant], names: Sequence[str] = ()) -> dict[str, Variant]:
    """The named variants (all when empty); the baseline always, since every comparison needs it."""
    unknown = [n for n in names if n not in grid]
    if unknown:
        raise ConfigError(f"variants {unknown}: unknown; expected names from {list(grid)}")
    keep = set(names) | {"baseline"} if names else set(grid)
    return {n: v for n, v in grid.items() if n in keep}


# ---------------------------------------------------------------- data

def ablation_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "ablations"


def data_dir(run_dir: str | Path) -> Path:
    return ablation_dir(run_dir) / "data"


def corpus_path(run_dir: str | Path, size: int | None = None) -> Path:
    return data_dir(run_dir) / ("corpus" if size is None else f"corpus_{size}")


def benchmark_path(run_dir: str | Path, dataset: str, variant: str = "test") -> Path:
    return data_dir(run_dir) / "benchmarks" / variant / dataset


def _link_or_copy(src: Path, dst: Path) -> None:
    if dst.exists():
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:  # another file system: a copy is the same bytes
        shutil.copyfile(src, dst)


def subset_corpus(profile: Profile, full_dir: str | Path, out_dir: str | Path, size: int) -> Path:
    """The first `size` images of the rendered corpus as a corpus of its own.

    Label row and image i are pure functions of (seed, i), so the first n images of a corpus are
    exactly a corpus of size n: the images are hard-linked and `render_corpus` (which skips files
    that exist) writes the CSVs and the manifest, byte-identical to rendering size n from scratch.
    """
    from .synth import render_corpus
    from .synth.labels import file_name_for
    from .synth.writers import stamp_corpus

    full_dir, out_dir = Path(full_dir), Path(out_dir)
    if size > profile.synth.corpus_size:
        raise ConfigError(f"subset of {size} images: the ablation corpus has only {profile.synth.corpus_size}")
    small = dataclasses.replace(profile, synth=dataclasses.replace(profile.synth, corpus_size=size))
    stamp_corpus(small, full_dir, write=False)   # the full corpus was rendered with these settings,
    stamp_corpus(small, out_dir)                 # and the subset claims them before its images are linked
    for i in range(size):
        name = file_name_for(i)
        src = full_dir / "Fundus" / name
        if not src.is_file():
            raise DataError(f"{src}: missing; render the full corpus before taking its first {size} images")
        _link_or_copy(src, out_dir / "Fundus" / name)
    return render_corpus(small, out_dir, progress=False)


def prepare_ablation_data(profile: Profile, run_dir: str | Path, grid: Mapping[str, Variant],
                          n_nonfundus: int = 0) -> dict[str, Path]:
    """Render (resumably) everything the variants share; returns {name: root}."""
    from .synth import render_benchmarks, render_corpus
    from .synth.nonfundus import RESERVED_KINDS
    from .synth.writers import render_nonfundus

    roots = {"corpus": render_corpus(profile, corpus_path(run_dir))}
    for v in grid.values():
        if v.corpus_size is not None:
            roots[f"corpus_{v.corpus_size}"] = subset_corpus(profile, roots["corpus"],
                                                             corpus_path(run_dir, v.corpus_size), v.corpus_size)
    for variant in ("test", "seen"):
        for ds, root in render_benchmarks(profile, data_dir(run_dir) / "benchmarks" / variant, variant).items():
            roots[f"{ds}/{variant}"] = root
    if n_nonfundus:
        roots["nonfundus"] = render_nonfundus(data_dir(run_dir) / "nonfundus", n_nonfundus,
                                              profile.synth.benchmark_test_seed, RESERVED_KINDS,
                                              profile.synth.render_size)
    return roots


def variant_profile(profile_name: str, overrides: Mapping, variant: Variant, run_dir: str | Path) -> Profile:
    """The ablation profile with the user's overrides, then the variant's, reading the shared corpus."""
    over = {**dict(overrides), **dict(variant.overrides),
            "data.corpus_root": str(corpus_path(run_dir, variant.corpus_size))}
    return load_profile(profile_name, over)


# ---------------------------------------------------------------- perturbations

def perturb(img: Image.Image, kind: str, level: int) -> Image.Image:
    """Blur or under-expose an image; level 0 is the image itself.

    blur: Gaussian blur with sigma = level x BLUR_SIGMA_PER_LEVEL x the image side (defocus);
    exposure: every channel scaled by 2^(-level x EXPOSURE_STOPS_PER_LEVEL) (a darker flash).
    Applied at the image's stored resolution, before the evaluation preprocessing, as a camera would.
    """
    if level < 0:
        raise ConfigError(f"perturbation level {level}: expected >= 0")
    if kind not in ("blur", "exposure"):
        raise ConfigError(f"perturbation {kind!r}: expected 'blur' or 'exposure'")
    img = img.convert("RGB")
    if level == 0:
        return img
    if kind == "blur":
        return img.filter(ImageFilter.GaussianBlur(level * BLUR_SIGMA_PER_LEVEL * max(img.size)))
    gain = 2.0 ** (-level * EXPOSURE_STOPS_PER_LEVEL)
    arr = np.asarray(img, dtype=np.float32) * gain
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8))


class PerturbedImages(torch.utils.data.Dataset):
    """Benchmark records, perturbed, then preprocessed exactly as in evaluation."""

    def __init__(self, records: Sequence, image_size: int, kind: str, level: int):
        self.records, self.image_size, self.kind, self.level = list(records), int(image_size), kind, int(level)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict:
        from .data.datasets import load_image, to_tensor
        from .data.transforms import preprocess_fundus

        img = perturb(load_image(self.records[i].path, self.image_size), self.kind, self.level)
        return {"image": to_tensor(preprocess_fundus(img, self.image_size)), "index": i}


# ---------------------------------------------------------------- the non-fundus set

@dataclasses.dataclass(frozen=True)
class FrameRecord:
    """An image for the fundus / not-fundus test (label 1 = fundus photograph)."""
    path: Path
    label: int
    kind: str


def nonfundus_set(run_dir: str | Path, seed: int, n_fundus: int | None = None) -> list[FrameRecord]:
    """The rendered reserved-kind non-fundus frames mixed with held-out fundus photographs.

    The fundus images are a seeded draw (as many as there are non-fundus frames unless `n_fundus`)
    from the held-out-camera test renderings of all three sets; the order is a seeded shuffle.
    """
    from .evaluate import load_records

    root = data_dir(run_dir) / "nonfundus"
    labels = root / "labels.csv"
    if not labels.is_file():
        raise DataError(f"{labels}: missing; render the non-fundus frames first (prepare_ablation_data)")
    frames = pd.read_csv(labels)
    non = [FrameRecord(root / "images" / f, 0, k) for f, k in zip(frames.file_name, frames.kind)]
    pool = [r for ds in STANDIN_BENCHMARKS for r in load_records(ds, benchmark_path(run_dir, ds, "test"))]
    n_fundus = len(non) if n_fundus is None else n_fundus
    if n_fundus > len(pool):
        raise DataError(f"non-fundus test: {n_fundus} fundus images asked, the test renderings hold {len(pool)}")
    picks = rng(seed, "nonfundus_fundus").choice(len(pool), size=n_fundus, replace=False)
    fundus = [FrameRecord(Path(pool[i].path), 1, f"fundus ({pool[i].dataset})") for i in sorted(picks)]
    items = non + fundus
    order = rng(seed, "nonfundus_order").permutation(len(items))
    return [items[i] for i in order]


# ---------------------------------------------------------------- evaluation of one variant

def _digest(profile: Profile) -> str:
    text = json.dumps(profile.to_dict(), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


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
    from .embed import embed_images
    from .evaluate import PROMPT_SETTINGS, evaluate_zero_shot, load_clip, load_records
    from .metrics import classification_report
    from .zeroshot import class_prototypes, logit_scale_of, zero_shot_scores

    ev, size = profile.eval, profile.train.image_size
    model, tokenizer = load_clip(model_dir)
    ctx = profile.model.context_length
    common = dict(model=model, tokenizer=tokenizer, n_boot=ev.bootstrap, seed=profile.seed)
    headline = (ev.language, ev.prompt_mode)
    out: dict = {"headline": f"{ev.language}_{ev.prompt_mode}", "test": {}, "seen": {}, "robustness": {},
                 "nonfundus": {}}
    for ds in STANDIN_BENCHMARKS:
        root = benchmark_path(run_dir, ds, "test")
        records = load_records(ds, root)
        emb = embed_images(model, records, size, ev.batch_size, desc=f"embed {ds}")
        res = {f"{lang}_{mode}": evaluate_zero_shot(None, ds, root, lang, mode, records=records, image_emb=emb,
                                                    **common) for lang, mode in PROMPT_SETTINGS}
        out["test"][ds] = {k: _entry(r["report"]) for k, r in res.items()}
        head = res[out["headline"]]
        if seen:
            sroot = benchmark_path(run_dir, ds, "seen")
            srecords = load_records(ds, sroot)
            semb = embed_images(model, srecords, size, ev.batch_size, desc=f"embed {ds} (seen)")
            sres = evaluate_zero_shot(None, ds, sroot, *headline, records=srecords, image_emb=semb, **common)
            out["seen"][ds] = {"report": _entry(sres["report"]), "y_true": head["y_true"].tolist(),
                               "pred_heldout": head["y_prob"].argmax(1).tolist(),
                               "pred_seen": sres["y_prob"].argmax(1).tolist()}
        for kind in ("blur", "exposure") if severities else ():
            for level in severities:
                if level == 0:
                    rep = head["report"]
                else:
                    pemb = embed_images(model, PerturbedImages(records, size, kind, level), size, ev.batch_size,
                                        desc=f"embed {ds} ({kind} {level})")
                    rep = evaluate_zero_shot(None, ds, root, *headline, records=records, image_emb=pemb,
                                             **common)["report"]
                out["robustness"].setdefault(ds, {}).setdefault(kind, {})[str(level)] = _entry(rep)
    if nonfundus:
        items = nonfundus_set(run_dir, profile.seed)
        y = np.array([it.label for it in items])
        emb = embed_images(model, PerturbedImages(items, size, "blur", 0), size, ev.batch_size,
                           desc="embed non-fundus test")
        for lang in prompt_languages:
            protos = class_prototypes(model, tokenizer, [[p] for p in FUNDUS_PROMPTS[lang]], ctx)
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
    from .stages import prepare_run_dir
    from .train import train_clip

    vdir = ablation_dir(run_dir) / variant.name
    options = {"seen": bool(seen), "severities": [int(x) for x in severities], "nonfundus": bool(nonfundus)}
    key = {"profile": _digest(profile), "options": options}
    cached = vdir / RESULT_FILE
    if cached.is_file():
        data = json.loads(cached.read_text(encoding="utf-8"))
        if data.get("key") == key:
            return data
    prepare_run_dir(profile, vdir)
    summary = train_clip(profile, vdir, progress=progress)
    languages = ("zh", "en") if profile.train.caption_language == "both" else (profile.eval.language,)
    result = evaluate_variant(profile, run_dir, vdir / "model", seen=seen, severities=severities,
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
                                    nonfundus=name in ("baseline", "captions_en", "captions_both"),
                                    progress=progress)
    return {"profile": base, "grid": grid, "results": results}


# ---------------------------------------------------------------- tables

def _in_order(per_dataset: Mapping) -> list[tuple[str, object]]:
    """(dataset, value) pairs in the book's column order, whatever order the mapping was stored in."""
    known = [ds for ds in STANDIN_BENCHMARKS if ds in per_dataset]
    return [(ds, per_dataset[ds]) for ds in known + sorted(set(per_dataset) - set(known))]


def _row(comparison: str, setting: str, ds: str, entry: Mapping, **extra) -> dict:
    return {"comparison": comparison, "setting": setting, "dataset": DATASET_NAMES.get(ds, ds),
            "value": entry["value"], "lo": entry["lo"], "hi": entry["hi"], **extra}


def _headline_rows(results: Mapping, names: Sequence[str], comparison: str, labels: Mapping[str, str],
                   metric: str = "aca", **extra_of) -> list[dict]:
    rows = []
    for name in names:
        if name not in results:
            continue
        r = results[name]
        for ds, settings in _in_order(r["test"]):
            extra = {k: f(name) for k, f in extra_of.items()}
            rows.append(_row(comparison, labels[name], ds, settings[r["headline"]][metric], **extra))
    return rows


def _caption_models(run: Mapping):
    """(result, caption language, prompt language) of the baseline and each caption-language model,
    each read in its own prompt language (both languages for the bilingual model)."""
    results, grid = run["results"], run["grid"]
    for name in ["baseline"] + [n for n, v in grid.items() if v.group == "captions"]:
        if name not in results:
            continue
        r = results[name]
        lang = (r["variant"]["overrides"].get("train.caption_language")
                or run["profile"].train.caption_language)
        for pl in (("zh", "en") if lang == "both" else (r["headline"].split("_")[0],)):
            yield r, lang, pl


def caption_table(run: Mapping) -> pd.DataFrame:
    """Caption language of training; each model read with prompts of its own language (EK)."""
    mode = run["profile"].eval.prompt_mode
    rows = [_row("caption language", f"{lang} captions, {pl} prompts", ds, settings[f"{pl}_{mode}"]["aca"])
            for r, lang, pl in _caption_models(run) for ds, settings in _in_order(r["test"])]
    return pd.DataFrame(rows)


def prompt_table(run: Mapping) -> pd.DataFrame:
    """Plain vs EK prompts at test time, for every trained caption language, in its own prompt language."""
    rows = [_row("prompts", f"{'EK' if mode == 'ek' else 'plain'} prompts", ds, settings[f"{pl}_{mode}"]["aca"],
                 model=f"{lang} captions, {pl} prompts")
            for r, lang, pl in _caption_models(run) for mode in ("plain", "ek")
            for ds, settings in _in_order(r["test"])]
    return pd.DataFrame(rows)


def _group_labels(run: Mapping, group: str) -> dict[str, str]:
    """{variant name: setting label} for the baseline and the variants of one group, baseline first;
    the baseline is named by its own value of what the group varies."""
    grid, base = run["grid"], run["profile"]
    labels = {"baseline": {"loss": base.train.loss, "corpus_size": f"{base.synth.corpus_size} images",
                           "resolution": f"{base.train.image_size} px",
                           "seed": f"seed {base.seed}"}.get(group, "baseline")}
    labels.update({n: v.label for n, v in grid.items() if v.group == group})
    return labels


def group_table(run: Mapping, group: str, comparison: str) -> pd.DataFrame:
    """Headline ACA of the baseline and the variants of one group."""
    grid, base = run["grid"], run["profile"]
    labels = _group_labels(run, group)
    names = list(labels)
    extra = {}
    if group == "corpus_size":
        extra["images"] = lambda n: grid[n].corpus_size or base.synth.corpus_size
    if group == "resolution":
        extra["pixels"] = lambda n: int(grid[n].overrides.get("train.image_size", base.train.image_size))
    df = pd.DataFrame(_headline_rows(run["results"], names, comparison, labels, **extra))
    if "images" in df:
        df = df.sort_values("images", kind="stable").reset_index(drop=True)
    return df


def val_retrieval_table(run: Mapping, group: str, comparison: str) -> pd.DataFrame:
    """Final validation retrieval (image -> text top-1 by label set, on the corpus val pool) of the
    baseline and the variants of one group, with a Wilson 95% interval over the pool's images."""
    from scipy.stats import binomtest

    rows = []
    for name, label in _group_labels(run, group).items():
        val = run["results"].get(name, {}).get("final_val") or {}
        if "i2t_top1_label_set" not in val:
            continue
        n = int(val["val_images"])
        ci = binomtest(int(round(val["i2t_top1_label_set"] * n)), n).proportion_ci(method="wilson")
        rows.append({"comparison": comparison, "setting": label, "dataset": f"corpus val ({n} images)",
                     "value": val["i2t_top1_label_set"], "lo": ci.low, "hi": ci.high, "chance": val["chance"]})
    return pd.DataFrame(rows)


def domain_table(run: Mapping, n_boot: int | None = None) -> pd.DataFrame:
    """Baseline ACA on training-camera vs held-out-camera renderings of the same eyes, with the paired gap."""
    from sklearn.metrics import balanced_accuracy_score

    base = run["results"]["baseline"]
    prof = run["profile"]
    n_boot = n_boot or prof.eval.bootstrap
    rows = []
    for ds, s in _in_order(base["seen"]):
        y, ph, ps = (np.asarray(s[k]) for k in ("y_true", "pred_heldout", "pred_seen"))
        idx = rng(prof.seed, "domain_gap", ds).integers(0, len(y), size=(n_boot, len(y)))
        with warnings.catch_warnings():  # a resample may miss a class that was predicted: expected, not news
            warnings.simplefilter("ignore", UserWarning)
            diffs = np.array([balanced_accuracy_score(y[i], ps[i]) - balanced_accuracy_score(y[i], ph[i])
                              for i in idx])
        lo, hi = np.percentile(diffs, [2.5, 97.5])
        held = base["test"][ds][base["headline"]]["aca"]
        rows.append(_row("cameras", "seen cameras", ds, s["report"]["aca"]))
        rows.append(_row("cameras", "held-out cameras", ds, held))
        rows.append({"comparison": "cameras", "setting": "gap (seen - held-out), paired",
                     "dataset": DATASET_NAMES.get(ds, ds), "value": float(balanced_accuracy_score(y, ps)
                                                                         - balanced_accuracy_score(y, ph)),
                     "lo": float(lo), "hi": float(hi)})
    return pd.DataFrame(rows)


def robustness_table(run: Mapping) -> pd.DataFrame:
    """Baseline headline ACA per perturbation kind and level on the held-out test renderings."""
    rows = []
    for ds, kinds in _in_order(run["results"]["baseline"]["robustness"]):
        for kind, levels in kinds.items():
            for level, entry in levels.items():
                amount = (f"sigma {int(level) * BLUR_SIGMA_PER_LEVEL:.2f} x side" if kind == "blur"
                          else f"-{int(level) * EXPOSURE_STOPS_PER_LEVEL:.1f} stops")
                rows.append(_row(f"robustness to {kind}", f"level {level}", ds, entry["aca"],
                                 kind=kind, level=int(level), amount=amount))
    return pd.DataFrame(rows)


def nonfundus_table(run: Mapping) -> pd.DataFrame:
    """Fundus vs not-fundus zero-shot: AUC and balanced accuracy per model and prompt language."""
    rows = []
    for name, r in run["results"].items():
        for lang, res in r.get("nonfundus", {}).items():
            label = run["grid"][name].label if name != "baseline" else \
                f"{run['profile'].train.caption_language} captions"
            for metric in ("auc", "aca"):
                rows.append({"comparison": "non-fundus detection", "setting": f"{label}, {lang} prompts",
                             "dataset": f"{res['n_nonfundus']} reserved-kind frames + "
                                        f"{res['n'] - res['n_nonfundus']} fundus",
                             "metric": "AUC" if metric == "auc" else "balanced accuracy",
                             "value": res[metric]["value"], "lo": res[metric]["lo"], "hi": res[metric]["hi"]})
    return pd.DataFrame(rows)


def seed_table(run: Mapping) -> pd.DataFrame:
    """Headline ACA per training seed, and per dataset the mean and standard deviation across seeds."""
    df = group_table(run, "seed", "training seed")
    summary = (df.groupby("dataset", sort=False)["value"].agg(["mean", "std", "min", "max", "count"])
               .rename(columns={"count": "seeds"}).reset_index())
    summary["mean CI half-width"] = (df.assign(hw=(df.hi - df.lo) / 2).groupby("dataset", sort=False)["hw"]
                                     .mean().to_numpy())
    return df, summary


def show(df: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """A display copy: 'value [lo, hi]' cells, settings as rows and datasets as columns."""
    if df.empty:
        return df
    cell = df.apply(lambda r: f"{r.value:.{digits}f} [{r.lo:.{digits}f}, {r.hi:.{digits}f}]"
                    if pd.notna(r.value) and pd.notna(r.lo) else "—", axis=1)
    index = [c for c in ("model", "kind", "setting", "metric") if c in df]
    wide = df.assign(cell=cell).pivot_table(index=index, columns="dataset", values="cell", aggfunc="first",
                                            sort=False)
    wide.columns.name = None
    order = [c for c in DATASET_NAMES.values() if c in wide.columns]
    return wide[order + [c for c in wide.columns if c not in order]]


# ---------------------------------------------------------------- sentences (computed, never typed)

def overlaps(a: Mapping, b: Mapping) -> bool:
    """True when the intervals [lo, hi] of two rows overlap."""
    return not (a["hi"] < b["lo"] or b["hi"] < a["lo"])


def compare_sentence(df: pd.DataFrame, what: str, metric: str = "ACA") -> str:
    """Per dataset: which setting was highest, which lowest, and whether their intervals overlap."""
    if df.empty:
        return f"{what}: no results (the variants were not run)."
    parts, separated = [], 0
    for ds, g in df.groupby("dataset", sort=False):
        g = g.dropna(subset=["value"])
        if len(g) < 2:
            continue
        hi, lo = g.loc[g.value.idxmax()], g.loc[g.value.idxmin()]
        if round(hi.value, 3) == round(lo.value, 3):
            parts.append(f"on {ds} all {len(g)} settings scored {hi.value:.3f}")
            continue
        sep = not overlaps(hi, lo)
        separated += sep
        parts.append(f"on {ds} {hi.setting} was highest ({hi.value:.3f}) and {lo.setting} lowest "
                     f"({lo.value:.3f}), intervals {'do not overlap' if sep else 'overlap'}")
    if not parts:
        return f"{what}: fewer than two settings to compare."
    verdict = ("the difference is resolved on " + f"{separated} of {len(parts)} sets" if separated
               else "no difference is resolved by the intervals on any set")
    return f"{what} ({metric}): " + "; ".join(parts) + f"; {verdict}{_chance_clause(df) if metric == 'ACA' else ''}."


def _chance_clause(df: pd.DataFrame) -> str:
    """How many sets have some setting whose whole interval lies above chance ACA."""
    sets = [ds for ds in dict.fromkeys(df.dataset) if ds in CHANCE_ACA]
    if not sets:
        return ""
    above = [ds for ds in sets if (df[df.dataset == ds].lo > CHANCE_ACA[ds] + 1e-9).any()]
    return (f"; some setting's interval lies above chance (1 / classes) on {len(above)} of {len(sets)} sets"
            + (f" ({', '.join(above)})" if above else ""))


def curve_sentence(df: pd.DataFrame, x: str, what: str, unit: str = "") -> str:
    """Change from the smallest to the largest x per dataset, and whether the end intervals overlap."""
    if df.empty:
        return f"{what}: no results."
    parts, separated = [], 0
    for ds, g in df.groupby("dataset", sort=False):
        g = g.sort_values(x)
        if len(g) < 2:
            continue
        first, last = g.iloc[0], g.iloc[-1]
        sep = not overlaps(first, last)
        separated += sep
        parts.append(f"{ds} {first.value:.3f} -> {last.value:.3f} ({last.value - first.value:+.3f}, "
                     f"intervals {'do not overlap' if sep else 'overlap'})")
    span = f"from {df[x].min()}{unit} to {df[x].max()}{unit}"
    verdict = (f"a change is resolved on {separated} of {len(parts)} sets" if separated
               else "no change is resolved by the intervals")
    return f"{what} {span}: " + "; ".join(parts) + f"; {verdict}{_chance_clause(df)}."


def domain_sentence(df: pd.DataFrame) -> str:
    gaps = df[df.setting.str.startswith("gap")]
    if gaps.empty:
        return "Seen vs held-out cameras: no results."
    parts = []
    for _, g in gaps.iterrows():
        where = "excludes 0" if g.lo > 0 or g.hi < 0 else "includes 0"
        parts.append(f"{g.dataset} {g.value:+.3f} [{g.lo:+.3f}, {g.hi:+.3f}] ({where})")
    worst = gaps.loc[gaps.value.abs().idxmax()]
    resolved = worst.lo > 0 or worst.hi < 0
    return ("Gap in ACA between training-camera and held-out-camera renderings of the same eyes (paired "
            "bootstrap): " + "; ".join(parts) + f"; the largest gap, {worst.value:+.3f} on {worst.dataset}, is "
            f"{'within' if abs(worst.value) <= 0.05 else 'above'} the issue's 0.05 bound in its point estimate "
            f"and its interval {'excludes' if resolved else 'includes'} 0.")


def seed_sentence(summary: pd.DataFrame) -> str:
    if summary.empty:
        return "Training seeds: no results."
    parts = [f"{r.dataset} sd {r['std']:.3f} over {int(r.seeds)} seeds (range {r['min']:.3f}-{r['max']:.3f}, "
             f"mean bootstrap half-width {r['mean CI half-width']:.3f})" for _, r in summary.iterrows()]
    larger = int((summary["std"] > summary["mean CI half-width"]).sum())
    return ("Headline ACA across training seeds: " + "; ".join(parts) + f"; the seed-to-seed spread exceeds the "
            f"bootstrap half-width on {larger} of {len(summary)} sets, so "
            + ("the seed matters as much as the test-set sampling there." if larger
               else "a single seed's interval covers the seed-to-seed spread."))


def nonfundus_sentence(df: pd.DataFrame) -> str:
    if df.empty:
        return "Non-fundus detection: no results."
    auc = df[df.metric == "AUC"]
    best, worst = auc.loc[auc.value.idxmax()], auc.loc[auc.value.idxmin()]
    chance = "above" if best.lo > 0.5 else "not resolved above"
    inverted = auc[auc.hi < 0.5]
    return (f"Non-fundus detection on kinds the corpus never contained: the best setting, {best.setting}, "
            f"reached AUC {best.value:.3f} [{best.lo:.3f}, {best.hi:.3f}] ({chance} chance 0.5); the lowest, "
            f"{worst.setting}, {worst.value:.3f} [{worst.lo:.3f}, {worst.hi:.3f}]; {len(auc[auc.lo > 0.5])} of "
            f"{len(auc)} settings rank fundus above non-fundus frames beyond chance and {len(inverted)} rank them "
            f"the wrong way round (AUC interval below 0.5).")


# ---------------------------------------------------------------- figures

def interval_figure(df: pd.DataFrame, title: str, ylabel: str = "ACA", by: str = "setting"):
    """Grouped bars with 95% intervals: datasets on the x axis, one bar per `by` value."""
    from .viz import grouped_bars_figure

    values: dict = {}
    for _, r in df.iterrows():
        values.setdefault(r.dataset, {})[r[by]] = {"value": r.value, "lo": r.lo, "hi": r.hi}
    chance = {ds: CHANCE_ACA[ds] for ds in values if ds in CHANCE_ACA} if ylabel == "ACA" else None
    return grouped_bars_figure(values, title, ylabel=ylabel, xlabel="stand-in set", chance=chance)


def curve_figure(df: pd.DataFrame, x: str, title: str, xlabel: str, panels: str | None = None,
                 log_x: bool = False):
    """Lines with 95% interval bands per dataset, against x; one panel per `panels` value."""
    import matplotlib.pyplot as plt

    from .viz import setup_fonts

    setup_fonts()
    keys = list(dict.fromkeys(df[panels])) if panels else [None]
    fig, axes = plt.subplots(1, len(keys), figsize=(5.2 * len(keys), 3.8), squeeze=False, constrained_layout=True)
    for ax, key in zip(axes[0], keys):
        part = df if key is None else df[df[panels] == key]
        for ds, g in part.groupby("dataset", sort=False):
            g = g.sort_values(x)
            ax.plot(g[x], g.value, marker="o", label=ds)
            ax.fill_between(g[x], g.lo, g.hi, alpha=0.2)
            if ds in CHANCE_ACA:
                ax.axhline(CHANCE_ACA[ds], color=ax.lines[-1].get_color(), linestyle=":", linewidth=1)
        if log_x:
            ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(part[x].unique()), [str(v) for v in sorted(part[x].unique())])
        ax.set_ylim(0, 1.05)
        ax.set_xlabel(xlabel if key is None else f"{key}: {xlabel}")
        ax.set_ylabel("ACA (95% bootstrap interval)")
        ax.legend(fontsize="small")
    fig.suptitle(title)
    return fig


def timing_table(run: Mapping) -> pd.DataFrame:
    """What each variant trained: steps and image-text pairs seen."""
    return pd.DataFrame([{"variant": n, "varies": run["grid"][n].label, "steps": r["train_steps"],
                          "pairs seen": r["train_images"]} for n, r in run["results"].items()])


__all__ = ["Variant", "variant_grid", "select_variants", "prepare_ablation_data", "subset_corpus",
           "variant_profile", "perturb", "PerturbedImages", "FrameRecord", "nonfundus_set", "evaluate_variant",
           "run_variant", "run_ablations", "caption_table", "prompt_table", "group_table", "domain_table",
           "robustness_table", "nonfundus_table", "seed_table", "show", "overlaps", "compare_sentence",
           "curve_sentence", "domain_sentence", "seed_sentence", "nonfundus_sentence", "interval_figure",
           "curve_figure", "timing_table", "CORPUS_FRACTIONS", "SEVERITIES", "FUNDUS_PROMPTS"]
