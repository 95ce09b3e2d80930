"""Zero-shot evaluation with the FLAIR protocol and the paper's Table 1, with this run's rows.

The table has the paper's layout (columns MESSIDOR / FIVES / REFUGE, metric ACA) and says where
every number comes from: the paper's rows are marked "reported in the paper"; this run's rows name
the data they were computed on; two reference rows are computed on the same images: chance (an
untrained model with the same configuration and seed) and the supervised ceiling (the same image
encoder trained on the corpus labels by cross-entropy, its heads mapped to each benchmark's classes).
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from .errors import CheckpointError, ConfigError, DataError
from .io import write_json, write_text
from .metrics import classification_report, format_interval
from .progress import progress
from .zeroshot import build_prompts, class_prototypes, logit_scale_of, zero_shot_scores

TABLE_COLUMNS = {"messidor2": "MESSIDOR", "fives": "FIVES", "refuge": "REFUGE"}
# shown only when a run evaluated the original MESSIDOR (real data only: it has no stand-in)
EXTRA_COLUMNS = {"messidor": "MESSIDOR (original, grades 0-3)"}
KNOWN_DATASETS = ("messidor2", "messidor", "fives", "refuge")
ORDINAL = {"messidor2", "messidor"}  # DR grades: the quadratic-weighted kappa is meaningful
PAPER_SOURCE = "reported in the paper"
PAPER_ROWS: tuple[tuple[str, tuple[float, float, float]], ...] = (
    ("CLIP", (0.237, 0.250, 0.470)),
    ("BiomedCLIP", (0.224, 0.416, 0.540)),
    ("FLAIR", (0.545, 0.732, 0.899)),
    ("FLAIR EK", (0.604, 0.735, 0.920)),
    ("VisionCLIP (paper)", (0.431, 0.739, 0.925)),
)
PROMPT_SETTINGS = (("zh", "plain"), ("zh", "ek"), ("en", "plain"), ("en", "ek"))
CHANCE_ROW = "Chance (untrained model, same configuration and seed)"
CEILING_ROW = "Supervised ceiling (same image encoder, cross-entropy on corpus labels)"


# ---------------------------------------------------------------- loading

def check_dataset(name: str) -> str:
    if name not in KNOWN_DATASETS:
        raise ConfigError(f"unknown dataset {name!r}: expected one of {list(KNOWN_DATASETS)}")
    return name


def load_clip(model_dir: str | Path):
    """(model, tokenizer) from a save_pretrained() directory, with a clear error when it is not one."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise CheckpointError(f"{model_dir}: no such model directory; expected the output of "
                              "VisionCLIP.save_pretrained (run_dir/model)")
    from .model import VisionCLIP

    model, tokenizer = VisionCLIP.from_pretrained(model_dir)
    model.eval()
    # channels-last weights as in training: embedding runs the trainer's convolution kernels (and ~10% faster)
    return model.to(memory_format=torch.channels_last), tokenizer


def model_setting(model, name: str, default=None):
    """A configuration value of a loaded model (image_size, context_length), wherever it keeps it."""
    for holder in (model, getattr(model, "config", None), getattr(model, "model_cfg", None),
                   getattr(model, "cfg", None)):
        if holder is None:
            continue
        value = holder.get(name) if isinstance(holder, Mapping) else getattr(holder, name, None)
        if value is not None:
            return value
    if default is None:
        raise CheckpointError(f"the loaded model does not record {name!r}; pass {name}= explicitly")
    return default


def load_records(dataset: str, root: str | Path) -> list:
    """Records of a benchmark in its real layout, with errors naming the root and the expected layout."""
    check_dataset(dataset)
    root = Path(root)
    if not root.exists():
        raise DataError(f"{root}: data root of {dataset} does not exist")
    if root.is_dir() and not any(root.iterdir()):
        raise DataError(f"{root}: data root of {dataset} is empty; expected the dataset's release layout")
    from .data.readers import read_benchmark

    records = list(read_benchmark(dataset, root))
    if not records:
        raise DataError(f"{root}: no {dataset} images found; expected the dataset's release layout")
    return records


def load_dataset_manifest(dataset: str) -> dict:
    from .data.manifests import load_manifest

    return load_manifest(dataset)


def check_classes(manifest: Mapping, class_names: Sequence[str], where: str) -> None:
    """The manifest's classes (prompts) must be the dataset's classes, in the same order."""
    expected = [c["name_en"] for c in manifest["classes"]]
    if [c.lower() for c in expected] != [str(c).lower() for c in class_names]:
        raise DataError(f"{where}: dataset classes {list(class_names)} do not match the prompt classes "
                        f"{expected} of manifest {manifest.get('name', '?')!r}")


def labels_of(records: Sequence) -> tuple[np.ndarray, list[str]]:
    y = np.array([int(r.label) for r in records], dtype=np.int64)
    return y, list(records[0].class_names)


# ---------------------------------------------------------------- zero-shot

def zero_shot_probs(model, tokenizer, image_emb: np.ndarray, manifest: Mapping, language: str, mode: str,
                    context_length: int, flair_exact: bool = False) -> np.ndarray:
    prompts = build_prompts(manifest, language, mode)
    protos = class_prototypes(model, tokenizer, prompts, context_length, flair_exact=flair_exact)
    return zero_shot_scores(image_emb, protos, logit_scale_of(model))


def evaluate_zero_shot(model_dir: str | Path | None, dataset: str, data_root: str | Path, language: str = "zh",
                       mode: str = "ek", flair_exact: bool = False, image_size: int | None = None,
                       batch_size: int = 64, n_boot: int = 1000, seed: int = 0, model=None, tokenizer=None,
                       records: Sequence | None = None, image_emb: np.ndarray | None = None) -> dict:
    """Zero-shot metrics of one model on one dataset in one prompt setting.

    Pass `model`/`tokenizer` (instead of model_dir), `records` and `image_emb` to reuse work across
    prompt settings. Returns {"dataset", "data_root", "language", "mode", "flair_exact", "report",
    "y_true", "y_prob", "paths"} (the last three as arrays, for prediction files).
    """
    from .embed import embed_images

    check_dataset(dataset)
    if model is None:
        model, tokenizer = load_clip(model_dir)
    if records is None:
        records = load_records(dataset, data_root)
    manifest = load_dataset_manifest(dataset)
    y_true, class_names = labels_of(records)
    check_classes(manifest, class_names, f"{data_root}")
    if image_emb is None:
        size = image_size or model_setting(model, "image_size")
        image_emb = embed_images(model, records, size, batch_size, flair_exact=flair_exact,
                                 desc=f"embed {dataset}")
    probs = zero_shot_probs(model, tokenizer, image_emb, manifest, language, mode,
                            model_setting(model, "context_length"), flair_exact)
    report = classification_report(y_true, probs, class_names, n_boot=n_boot, seed=seed,
                                   ordinal=dataset in ORDINAL)
    return {"dataset": dataset, "data_root": str(data_root), "language": language, "mode": mode,
            "flair_exact": bool(flair_exact), "report": report, "y_true": y_true, "y_prob": probs,
            "paths": np.array([str(r.path) for r in records])}


# ---------------------------------------------------------------- supervised ceiling

def _class_role(dataset: str, name: str) -> str:
    n = name.lower()
    if dataset == "refuge":
        return "no_gc" if n.startswith("no") else "gc"
    if dataset == "fives":
        if "normal" in n:
            return "normal"
        if "macular" in n:
            return "amd"
        if "diabetic" in n:
            return "dr"
        if "glaucoma" in n:
            return "gc"
    raise DataError(f"supervised ceiling: cannot map class {name!r} of {dataset} to the classifier's heads")


def ceiling_probs(heads: Mapping[str, torch.Tensor], dataset: str, class_names: Sequence[str]) -> np.ndarray:
    """Map the classifier's heads ({"dr_grade": [B,5], "flags": [B,14]} logits) to a benchmark's classes.

    MESSIDOR-2: the 5 grade probabilities; original MESSIDOR (0-3): grades 3 and 4 merged (clipped);
    REFUGE: [1 - p(glaucoma), p(glaucoma)]; FIVES: scores normal = (1-p_amd)(1-p_dr)(1-p_gc),
    AMD = p_amd, DR = p(grade > 0), glaucoma = p_gc, renormalised to sum to one.
    """
    from .schema import FLAG_COLUMNS

    grade = torch.softmax(heads["dr_grade"].float(), -1).numpy()
    flags = torch.sigmoid(heads["flags"].float()).numpy()
    p_amd = flags[:, FLAG_COLUMNS.index("is_amd")]
    p_gc = flags[:, FLAG_COLUMNS.index("is_gc")]
    if dataset == "messidor2":
        return grade
    if dataset == "messidor":
        return np.concatenate([grade[:, :3], grade[:, 3:].sum(1, keepdims=True)], 1)
    p_dr = 1.0 - grade[:, 0]
    roles = {"amd": p_amd, "gc": p_gc, "dr": p_dr, "no_gc": 1.0 - p_gc,
             "normal": (1 - p_amd) * (1 - p_dr) * (1 - p_gc)}
    scores = np.stack([roles[_class_role(dataset, c)] for c in class_names], 1)
    return scores / np.clip(scores.sum(1, keepdims=True), 1e-12, None)


def balance_heads(heads: Mapping[str, torch.Tensor], priors: Mapping[str, Sequence[float]]) -> dict:
    """Logit adjustment (Menon et al., 2021): the heads' logits as if every DR grade, and both values
    of every flag, had been equally frequent in training.

    ACA weighs every class equally; a classifier trained on a corpus where glaucoma is 7% of eyes
    almost never says glaucoma at p > 0.5, so without this the ceiling would measure the corpus's
    prevalence rather than what the encoder saw. Zero-shot prototypes are not adjusted: under InfoNCE
    and FLAIR's label-aware targets they carry no prior, under label_aware_dedup the corpus's.
    """
    grade_prior = torch.tensor(priors["dr_grade"], dtype=torch.float32)
    flag_prior = torch.tensor(priors["flags"], dtype=torch.float32)
    return {"dr_grade": heads["dr_grade"].float() - grade_prior.log(),
            "flags": heads["flags"].float() - torch.logit(flag_prior)}


@torch.no_grad()
def classifier_heads(classifier, records: Sequence, image_size: int, batch_size: int = 64,
                     flair_exact: bool = False) -> dict:
    """Concatenated head logits of the supervised classifier over records.

    `flair_exact` pads at the bottom and right as FLAIR does (centred otherwise); run_evaluation passes
    eval.flair_exact, so the ceiling row is preprocessed as the zero-shot rows it is compared with.
    """
    from .data.datasets import ImageDataset
    from .embed import _collate, inference_autocast, to_model_input

    classifier.eval()
    loader = torch.utils.data.DataLoader(ImageDataset(list(records), image_size, flair_exact=flair_exact),
                                         batch_size=batch_size, shuffle=False, num_workers=0, collate_fn=_collate)
    out: dict[str, list] = {"dr_grade": [], "flags": []}
    for images in progress(loader, desc="supervised ceiling", total=len(loader), unit="batch"):
        with inference_autocast(classifier):
            heads = classifier(to_model_input(images))
        for k in out:
            out[k].append(heads[k].float().cpu())
    return {k: torch.cat(v) for k, v in out.items()}


def load_classifier(sup_dir: str | Path):
    sup_dir = Path(sup_dir)
    if not sup_dir.is_dir():
        raise CheckpointError(f"{sup_dir}: no supervised classifier; train it with `visionclip train --supervised`")
    from .model import ImageClassifier

    return ImageClassifier.from_pretrained(sup_dir).to(memory_format=torch.channels_last)


# ---------------------------------------------------------------- chance

def chance_model(profile, tokenizer, image_size: int | None = None):
    """An untrained VisionCLIP with the run's configuration and seed (the chance reference)."""
    from .model import build_model
    from .seeding import seed_everything

    seed_everything(profile.seed)
    vocab_size = getattr(tokenizer, "vocab_size", None) or len(tokenizer)
    model = build_model(profile.model, vocab_size, image_size or profile.train.image_size)
    model.eval()
    return model.to(memory_format=torch.channels_last)


# ---------------------------------------------------------------- the table

def row_name(language: str, mode: str, flair_exact: bool = False) -> str:
    text = f"VisionCLIP (this run, {language}, {'EK' if mode == 'ek' else 'plain'} prompts)"
    return text[:-1] + ", FLAIR-exact)" if flair_exact else text


def paper_table(results: Iterable[Mapping]) -> pd.DataFrame:
    """The paper's Table 1 layout: its rows first, then `results`.

    Each result is {"model": str, "source": str, "scores": {"messidor2"|"fives"|"refuge": report entry
    {"value","lo","hi"}}}; a missing dataset shows as "—". Cells read "0.xxx [lo, hi]". A column for
    the original MESSIDOR is added when a result has it.
    """
    results = list(results)
    columns = dict(TABLE_COLUMNS)
    columns.update({ds: col for ds, col in EXTRA_COLUMNS.items() if any(ds in r.get("scores", {}) for r in results)})
    rows = [{"model": m, "source": PAPER_SOURCE, **{col: "—" for col in columns.values()},
             **{col: f"{v:.3f}" for col, v in zip(TABLE_COLUMNS.values(), vals)}} for m, vals in PAPER_ROWS]
    for r in results:
        scores = r.get("scores", {})
        rows.append({"model": r["model"], "source": r["source"],
                     **{col: format_interval(scores.get(ds)) for ds, col in columns.items()}})
    return pd.DataFrame(rows, columns=["model", "source", *columns.values()])


def table_json(results: Iterable[Mapping]) -> dict:
    rows = [{"model": m, "source": PAPER_SOURCE, "aca": dict(zip(TABLE_COLUMNS, vals))} for m, vals in PAPER_ROWS]
    rows += [{"model": r["model"], "source": r["source"], "aca": dict(r.get("scores", {}))} for r in results]
    # a list of [dataset, column] pairs: JSON objects are written with sorted keys, the order matters here
    return {"metric": "ACA (balanced accuracy) with bootstrap 95% interval",
            "columns": [[ds, col] for ds, col in TABLE_COLUMNS.items()], "rows": rows}


def write_table(results: Sequence[Mapping], eval_dir: str | Path) -> pd.DataFrame:
    """table.csv, table.md and table.json in eval_dir (atomic)."""
    eval_dir = Path(eval_dir)
    df = paper_table(results)
    buf = io.StringIO()
    df.to_csv(buf, index=False, quoting=csv.QUOTE_MINIMAL)
    write_text(eval_dir / "table.csv", buf.getvalue())
    write_text(eval_dir / "table.md", df.to_markdown(index=False) + "\n")
    write_json(eval_dir / "table.json", table_json(results))
    return df


def write_predictions(path: str | Path, paths: Sequence[str], y_true: np.ndarray, y_prob: np.ndarray,
                      class_names: Sequence[str]) -> None:
    df = pd.DataFrame({"path": list(paths), "label": [class_names[i] for i in y_true],
                       "predicted": [class_names[i] for i in y_prob.argmax(1)]})
    for k, c in enumerate(class_names):
        df[f"p_{c}"] = y_prob[:, k]
    write_text(path, df.to_csv(index=False, float_format="%.6f"))


def _public(res: Mapping) -> dict:
    return {k: v for k, v in res.items() if k not in ("y_true", "y_prob", "paths")}


def source_label(profile, run_dir, dataset: str, variant: str) -> str:
    from .paths import benchmark_dir, is_standin

    if not is_standin(profile, dataset) and variant == "test":
        return f"real {dataset} at {benchmark_dir(profile, run_dir, dataset, variant)}"
    cams = "training" if variant == "seen" else "held-out"
    return f"synthetic stand-in, {cams} camera profiles ({variant} rendering)"


def _row_source(sources: Mapping[str, str]) -> str:
    distinct = set(sources.values())
    if len(distinct) == 1:
        return distinct.pop()
    return "; ".join(f"{TABLE_COLUMNS.get(ds, ds)}: {s}" for ds, s in sources.items())


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
    from .embed import embed_images, save_embeddings
    from .paths import STANDIN_BENCHMARKS, benchmark_dir

    run_dir = Path(run_dir)
    ev = profile.eval
    image_size, n_boot, seed = profile.train.image_size, ev.bootstrap, profile.seed
    model, tokenizer = load_clip(run_dir / "model")
    context_length = model_setting(model, "context_length", profile.model.context_length)
    chance = chance_model(profile, tokenizer, model_setting(model, "image_size", image_size)) if references else None
    sup_dir = run_dir / "supervised"
    classifier = load_classifier(sup_dir) if references and sup_dir.is_dir() else None
    if datasets is None:  # the original MESSIDOR has no stand-in: evaluated when its real root is set
        datasets = list(STANDIN_BENCHMARKS) + (["messidor"] if getattr(profile.data, "messidor_root", "") else [])
    out_dir = run_dir / "eval" if variant == "test" else run_dir / "eval" / variant

    rows: dict[str, dict] = {}
    sources: dict[str, str] = {}
    per_dataset: dict[str, dict] = {}
    for ds in datasets:
        root = benchmark_dir(profile, run_dir, ds, variant)
        if root is None:
            continue
        records = load_records(ds, root)
        y_true, class_names = labels_of(records)
        manifest = load_dataset_manifest(ds)
        check_classes(manifest, class_names, str(root))
        sources[ds] = source_label(profile, run_dir, ds, variant)
        emb = embed_images(model, records, image_size, ev.batch_size, flair_exact=ev.flair_exact,
                           desc=f"embed {ds} ({variant})")
        save_embeddings(run_dir, f"{ds}_{variant}", image=emb, label=y_true,
                        path=np.array([str(r.path) for r in records]),
                        domain=np.array([str(getattr(r, "domain", "")) for r in records]),
                        class_names=np.array(class_names))
        common = dict(records=records, n_boot=n_boot, seed=seed, flair_exact=ev.flair_exact)
        results = {}
        for lang, mode in settings:
            res = evaluate_zero_shot(None, ds, root, lang, mode, model=model, tokenizer=tokenizer, image_emb=emb,
                                     **common)
            results[f"{lang}_{mode}"] = res
            rows.setdefault(row_name(lang, mode, ev.flair_exact), {})[ds] = res["report"]["aca"]
        headline = results.get(f"{ev.language}_{ev.prompt_mode}") or next(iter(results.values()))
        write_predictions(out_dir / f"predictions_{ds}.csv", headline["paths"], y_true, headline["y_prob"],
                          class_names)
        if chance is not None:
            chance_emb = embed_images(chance, records, image_size, ev.batch_size, flair_exact=ev.flair_exact,
                                      desc=f"embed {ds} (chance)")
            ch = evaluate_zero_shot(None, ds, root, ev.language, ev.prompt_mode, model=chance, tokenizer=tokenizer,
                                    image_emb=chance_emb, **common)
            results["chance"] = ch
            rows.setdefault(CHANCE_ROW, {})[ds] = ch["report"]["aca"]
        if classifier is not None:
            heads = classifier_heads(classifier, records, image_size, ev.batch_size, flair_exact=ev.flair_exact)
            if classifier.label_priors is not None:
                heads = balance_heads(heads, classifier.label_priors)
            probs = ceiling_probs(heads, ds, class_names)
            rep = classification_report(y_true, probs, class_names, n_boot=n_boot, seed=seed, ordinal=ds in ORDINAL)
            results["supervised"] = {"dataset": ds, "data_root": str(root), "report": rep}
            rows.setdefault(CEILING_ROW, {})[ds] = rep["aca"]
        per_dataset[ds] = {name: _public(r) for name, r in results.items()}
        write_json(out_dir / f"{ds}.json", {"dataset": ds, "variant": variant, "source": sources[ds],
                                            "class_names": class_names, "results": per_dataset[ds]})

    source = _row_source(sources)
    table_rows = [{"model": name, "source": source, "scores": scores} for name, scores in rows.items()]
    df = write_table(table_rows, out_dir)
    return {"variant": variant, "table": df, "rows": table_rows, "per_dataset": per_dataset, "eval_dir": str(out_dir)}


# ---------------------------------------------------------------- few-shot and retrieval drivers

def run_fewshot(profile, run_dir: str | Path, datasets: Sequence[str] | None = None) -> dict:
    """Linear probes on the stand-in sets: shots from the dev rendering, scored on the test rendering.

    Needs the test embeddings written by run_evaluation; embeds the dev rendering (saved too).
    Writes run_dir/eval/fewshot.json with the zero-shot ACA of the headline setting beside each curve.
    """
    from .embed import embed_images, load_embeddings, save_embeddings
    from .fewshot import fewshot_probe
    from .paths import STANDIN_BENCHMARKS, benchmark_dir

    run_dir = Path(run_dir)
    ev = profile.eval
    model = None
    out = {}
    for ds in datasets or STANDIN_BENCHMARKS:
        test = load_embeddings(run_dir, f"{ds}_test")
        try:
            dev = load_embeddings(run_dir, f"{ds}_dev")
        except DataError:
            if model is None:
                model, _ = load_clip(run_dir / "model")
            records = load_records(ds, benchmark_dir(profile, run_dir, ds, "dev"))
            y, _names = labels_of(records)
            emb = embed_images(model, records, profile.train.image_size, ev.batch_size,
                               flair_exact=ev.flair_exact, desc=f"embed {ds} (dev)")
            save_embeddings(run_dir, f"{ds}_dev", image=emb, label=y,
                            path=np.array([str(r.path) for r in records]),
                            domain=np.array([str(getattr(r, "domain", "")) for r in records]))
            dev = {"image": emb, "label": y}
        n_classes = len(test["class_names"]) if "class_names" in test else None
        curve = fewshot_probe(dev["image"], dev["label"], test["image"], test["label"], ev.fewshot_k,
                              ev.fewshot_draws, profile.seed, n_classes)
        zs = None
        path = run_dir / "eval" / f"{ds}.json"
        if path.is_file():
            import json

            data = json.loads(path.read_text(encoding="utf-8"))
            zs = data["results"].get(f"{ev.language}_{ev.prompt_mode}", {}).get("report", {}).get("aca")
        out[ds] = {"shots_from": "dev rendering (benchmark_dev_seed)", "scored_on": "test rendering",
                   "curve": curve, "zero_shot_aca": zs}
    write_json(run_dir / "eval" / "fewshot.json", out)
    return out


def run_retrieval(profile, run_dir: str | Path, languages: Sequence[str] = ("zh", "en"),
                  max_items: int | None = None) -> dict:
    """Recall@1/5/10 both ways on the corpus test split (exact pair and by label set)."""
    from .data.readers import read_synfundus
    from .data.splits import split_corpus
    from .paths import corpus_dir
    from .retrieval import evaluate_retrieval

    run_dir = Path(run_dir)
    model, tokenizer = load_clip(run_dir / "model")
    records = split_corpus(read_synfundus(corpus_dir(profile, run_dir)), profile.seed)["test"]
    if max_items:
        records = records[:max_items]
    from .embed import embed_images

    image_emb = embed_images(model, records, profile.train.image_size, profile.eval.batch_size,
                             flair_exact=profile.eval.flair_exact, desc="embed corpus test images")
    out = {}
    for lang in languages:
        out[lang] = evaluate_retrieval(model, tokenizer, records, lang, profile.train.image_size,
                                       model_setting(model, "context_length", profile.model.context_length),
                                       profile.eval.batch_size, run_dir=run_dir, name=f"corpus_test_{lang}",
                                       image_emb=image_emb, flair_exact=profile.eval.flair_exact)
    write_json(run_dir / "eval" / "retrieval.json", out)
    return out


def disease_name(labels: Mapping) -> str:
    """One colour per image for the maps: its disease, 'several diseases', 'healthy' or 'not fundus'.

    Diabetes (is_dm) alone is not visible in the fundus and does not count; DR counts as a disease.
    """
    from .schema import DISEASE_FLAGS, GLOSSES

    if int(labels.get("is_fundus", 1)) == 0:
        return "not fundus"
    found = [GLOSSES[f][0] for f in DISEASE_FLAGS if f != "is_dm" and int(labels.get(f, 0))]
    if int(labels.get("dr_grade", 0)) > 0:
        found.insert(0, "diabetic retinopathy")
    if not found:
        return "healthy"
    return found[0] if len(found) == 1 else "several diseases"


def run_embeddings(profile, run_dir: str | Path, datasets: Sequence[str] = ("messidor2", "fives", "refuge"),
                   language: str | None = None, mode: str | None = None) -> dict:
    """Inputs of the embedding maps: corpus test images with their labels, and class prototypes.

    Writes run_dir/embeddings/corpus_test.npz (image, dr_grade, disease, domain, path) and
    run_dir/embeddings/prototypes.npz (<dataset> [C, D] and <dataset>_names, headline prompts).
    """
    from .data.readers import read_synfundus
    from .data.splits import split_corpus
    from .embed import embed_images, save_embeddings
    from .paths import corpus_dir

    run_dir = Path(run_dir)
    language = language or profile.eval.language
    mode = mode or profile.eval.prompt_mode
    model, tokenizer = load_clip(run_dir / "model")
    ctx = model_setting(model, "context_length", profile.model.context_length)
    records = split_corpus(read_synfundus(corpus_dir(profile, run_dir)), profile.seed)["test"]
    if not records:
        raise DataError(f"{corpus_dir(profile, run_dir)}: the corpus test split is empty")
    emb = embed_images(model, records, profile.train.image_size, profile.eval.batch_size,
                       flair_exact=profile.eval.flair_exact, desc="embed corpus test images")
    save_embeddings(run_dir, "corpus_test", image=emb,
                    dr_grade=np.array([int(r.labels["dr_grade"]) for r in records]),
                    disease=np.array([disease_name(r.labels) for r in records]),
                    domain=np.array([str(r.domain) for r in records]),
                    path=np.array([str(r.path) for r in records]))
    protos = {}
    for ds in datasets:
        manifest = load_dataset_manifest(ds)
        p = class_prototypes(model, tokenizer, build_prompts(manifest, language, mode), ctx,
                             flair_exact=profile.eval.flair_exact)
        protos[ds] = p.numpy()
        protos[f"{ds}_names"] = np.array([c[f"name_{language}"] for c in manifest["classes"]])
    save_embeddings(run_dir, "prototypes", **protos)
    return {"n_images": len(records), "prototypes": list(datasets), "language": language, "mode": mode}


__all__ = ["PAPER_ROWS", "TABLE_COLUMNS", "KNOWN_DATASETS", "PROMPT_SETTINGS", "load_clip", "load_records",
           "evaluate_zero_shot", "zero_shot_probs", "ceiling_probs", "chance_model", "paper_table", "write_table",
           "run_evaluation", "run_fewshot", "run_retrieval", "run_embeddings", "disease_name", "row_name"]
