"""Tables of the book composed from library pieces (data summaries, prompt settings, gaps, retrieval).

The notebooks stay glue: each table they show is one call here, each figure one call in figures.py.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from ..errors import DataError
from ..paths import STANDIN_BENCHMARKS, VARIANTS, RunLayout, benchmark_dir
from ..data.advice import agreement
from ..data.table import LABEL_COLUMNS
from ..schema import DISEASE_FLAGS, DR_GRADE_NAMES, EXTRA_FLAGS, EXTRA_GLOSSES, FLAG_COLUMNS, GLOSSES, QUALITY_COLUMN
from ..seeding import rng


# ---------------------------------------------------------------- corpus

def primary_finding(labels: dict) -> str:
    """One name per image for colouring maps: non-fundus, the DR grade, else the first disease flag."""
    if not labels["is_fundus"]:
        return "non-fundus"
    if labels["dr_grade"] > 0:
        return f"DR grade {labels['dr_grade']}"
    for flag in DISEASE_FLAGS:
        if flag != "is_dm" and labels[flag]:
            return GLOSSES[flag][0]
    return "no finding"


def label_frame(records) -> pd.DataFrame:
    """One row per corpus image: the schema columns plus camera domain and primary finding."""
    rows = [dict(r.labels, domain=r.domain, finding=primary_finding(r.labels)) for r in records]
    if not rows:
        raise DataError("label_frame: no corpus records")
    return pd.DataFrame(rows)


def prevalence_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Share of images carrying each flag and each DR grade."""
    rows = [{"annotation": f, "meaning": GLOSSES.get(f, (f.removeprefix("is_").replace("_", " "),))[0],
             "images": int(frame[f].sum()), "share": round(float(frame[f].mean()), 4)} for f in FLAG_COLUMNS]
    rows += [{"annotation": f"dr_grade={g}", "meaning": DR_GRADE_NAMES[g][0],
              "images": int((frame.dr_grade == g).sum()), "share": round(float((frame.dr_grade == g).mean()), 4)}
             for g in range(5)]
    return pd.DataFrame(rows)


def caption_examples(records, n: int = 6, seed: int = 0) -> pd.DataFrame:
    """A seeded sample of image-caption pairs, one per distinct primary finding where possible."""
    order = rng(seed, "caption-examples").permutation(len(records))
    chosen, seen = [], set()
    for i in order:
        finding = primary_finding(records[i].labels)
        if finding not in seen:
            seen.add(finding)
            chosen.append(records[i])
        if len(chosen) == n:
            break
    return pd.DataFrame([{"file": r.path.name, "finding": primary_finding(r.labels), "camera": r.domain,
                          "caption (zh)": r.caption_zh, "caption (en)": r.caption_en} for r in chosen])


def token_lengths(tokenizer, records) -> pd.DataFrame:
    """Tokens per caption ([CLS] and [SEP] included), untruncated, for both languages (a language
    without captions, as English under data.captions=release, has no rows)."""
    rows = []
    for lang in ("zh", "en"):
        texts = [t for t in (getattr(r, f"caption_{lang}") for r in records) if t]
        if not texts:
            continue
        ids = tokenizer(texts, context_length=512)["attention_mask"].sum(dim=1).tolist()
        rows += [{"language": lang, "tokens": int(t)} for t in ids]
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- captions and the release's columns

CAPTION_SOURCE_WORDS = {"release": "the release's diagnostic sentence (diagnosticAdvice)",
                        "generated": "reports generated from the labels", "none": "none"}


def caption_source_line(corpus, caption_language: str) -> str:
    """Which captions a run trains on, in words (the saved model records the same: training_captions)."""
    used = corpus.caption_record(caption_language)
    return "captions used for training: " + "; ".join(
        f"{lang} = {CAPTION_SOURCE_WORDS[source]}" for lang, source in used.items())


def _vocabulary(texts: Sequence[str], language: str) -> int:
    # Chinese is tokenised one character per token; English by lower-cased words
    if language == "zh":
        return len({ch for t in texts for ch in t if not ch.isspace()})
    return len({w for t in texts for w in t.lower().replace(".", " ").replace(",", " ").split()})


def caption_statistics(corpus, caption_language: str) -> pd.DataFrame:
    """Per caption language the corpus has: its source, whether training uses it, how many captions
    and distinct ones, their length in characters and their vocabulary (characters for zh, words for en)."""
    used = corpus.caption_record(caption_language)
    rows = []
    for lang in ("zh", "en"):
        source = corpus.caption_sources[lang]
        if source == "none":
            continue
        texts = list(corpus.captions(lang))
        lengths = np.array([len(t) for t in texts])
        rows.append({"language": lang, "source": source, "trained on": lang in used, "captions": len(texts),
                     "distinct": len(set(texts)), "mean length": round(float(lengths.mean()), 1),
                     "median length": float(np.median(lengths)), "95th pct length": float(np.percentile(lengths, 95)),
                     "vocabulary": _vocabulary(texts, lang)})
    return pd.DataFrame(rows)


def release_columns_note(corpus) -> str:
    """One line on the release's extra columns: absent, or how many rows data.min_quality kept."""
    if corpus.release is None:
        return ("the corpus is annotated in the paper's 17 columns: it has none of the release's extra "
                "flags, quality score or diagnostic sentence")
    total = len(corpus.release.quality)
    return (f"the release's metadata: {len(EXTRA_FLAGS)} extra flags, {QUALITY_COLUMN} and a diagnostic "
            f"sentence per image; {len(corpus)} of {total} rows kept (data.min_quality)")


def release_column_tables(corpus) -> list[pd.DataFrame]:
    """The release's extra flags (prevalence) and quality score, and how often each condition's flag
    agrees with the diagnostic sentence (data.advice.agreement); [] for a 17-column corpus."""
    extras = corpus.extras_matrix()
    if extras is None:
        return []
    prevalence = pd.DataFrame([{"flag": f, "meaning": EXTRA_GLOSSES[f][0], "images": int(extras[:, i].sum()),
                                "share": round(float(extras[:, i].mean()), 4)} for i, f in enumerate(EXTRA_FLAGS)])
    quality = pd.Series(corpus.quality_scores(), name=QUALITY_COLUMN).describe().to_frame().T.round(3)
    labels = corpus.label_matrix()
    column = {c: labels[:, i] for i, c in enumerate(LABEL_COLUMNS)}
    flags = {"dr": column["dr_grade"] > 0, **{c: column[c] for c in DISEASE_FLAGS},
             "is_tessellated": extras[:, EXTRA_FLAGS.index("is_tessellated")]}
    agree = pd.DataFrame(agreement(flags, corpus.advice()))
    agree["agree"] = agree["agree"].round(4)
    return [prevalence, quality, agree]


# ---------------------------------------------------------------- benchmark sets

def benchmark_records(profile, run_dir, variants: Sequence[str] = VARIANTS) -> dict[tuple[str, str], list]:
    from ..data.readers import read_benchmark

    out = {}
    for variant in variants:
        for ds in STANDIN_BENCHMARKS:
            root = benchmark_dir(profile, run_dir, ds, variant)
            if root is not None and root.exists():
                out[(ds, variant)] = read_benchmark(ds, root)
    return out


def benchmark_summary(sets: dict[tuple[str, str], list]) -> pd.DataFrame:
    """Images per class (rows: dataset and class; columns: renderings), cameras in the last row per dataset."""
    counts: dict[tuple[str, str], dict] = {}
    for (ds, variant), records in sets.items():
        names = records[0].class_names
        for name, c in zip(names, np.bincount([r.label for r in records], minlength=len(names))):
            counts.setdefault((ds, name), {})[variant] = int(c)
        counts.setdefault((ds, "cameras"), {})[variant] = ", ".join(sorted({r.domain for r in records}))
    frame = pd.DataFrame.from_dict(counts, orient="index")
    frame.index = pd.MultiIndex.from_tuples(frame.index, names=["dataset", "class"])
    return frame


def devset_table(entries: Sequence[dict]) -> pd.DataFrame:
    """The real-photograph dev set, one row per image: where it comes from and what it is labelled."""
    return pd.DataFrame([{"image": e["digest"], "source": e["source"], "where": e["where"], "licence": e["licence"],
                          "fundus": "yes" if e["is_fundus"] else f"no ({e.get('kind', '')})",
                          "eye": e.get("eye", ""), "lesions": e.get("lesions", ""), "size": f"{e['width']} x {e['height']}"}
                         for e in entries])


def devset_predictions(entries: Sequence[dict], root: str | Path, model_dir: str | Path, dataset: str = "fives",
                       language: str = "zh", mode: str = "plain") -> pd.DataFrame:
    """The model's zero-shot reading of every real dev-set image (eval.predict, with `dataset`'s classes
    and prompts), beside what the image is labelled: one row per image."""
    from ..eval.predict import predict

    paths = [Path(root) / e["file"] for e in entries]
    pred = predict(model_dir, paths, dataset=dataset, language=language, mode=mode)
    by_path = {row["path"]: row for row in pred.to_dict("records")}
    rows = []
    for e, path in zip(entries, paths):
        r = by_path[str(path)]
        rows.append({"image": e["digest"], "real image": f"eye {e['eye']}" if e["is_fundus"] else e.get("kind", "not fundus"),
                     "lesions (label)": e.get("lesions", ""), "predicted": r["predicted"],
                     "p(predicted)": r[f"p_{r['predicted']}"], "p_is_fundus": r["p_is_fundus"],
                     "p_retina_readable": r["p_is_retinal_region_readable"], "is_fundus (label)": int(e["is_fundus"])})
    return pd.DataFrame(rows)


def fundus_check_auc(table: pd.DataFrame) -> float | None:
    """AUC of p_is_fundus for telling the real fundus photographs from the other frames (None when
    one of the two groups is empty). 0.5 is chance; below 0.5 the check is inverted."""
    from sklearn.metrics import roc_auc_score

    y = table["is_fundus (label)"]
    return float(roc_auc_score(y, table["p_is_fundus"])) if y.nunique() == 2 else None


def realism_statistics(entries: Sequence[dict], devset_root: str | Path, corpus_records: Sequence, size: int,
                       n_rendered: int = 60, seed: int = 0) -> dict[str, pd.DataFrame]:
    """data.image_stats of the real fundus photographs of the dev set and of a seeded sample of
    rendered corpus images, both preprocessed to `size` (what the model sees): {"real", "rendered"},
    one row per image."""
    real = [Path(devset_root) / e["file"] for e in entries if e["is_fundus"]]
    pick = rng(seed, "realism-sample").choice(len(corpus_records), size=min(n_rendered, len(corpus_records)),
                                              replace=False)
    rendered = [corpus_records[int(i)].path for i in np.sort(pick)
                if int(corpus_records[int(i)].labels.get("is_fundus", 1))]
    return {"real": _statistics_frame(real, size), "rendered": _statistics_frame(rendered, size)}


def _statistics_frame(paths: Sequence[Path], size: int) -> pd.DataFrame:
    """data.image_stats of each image preprocessed to `size`, one row per image (with its path)."""
    from ..data.datasets import read_image
    from ..data.image_stats import image_statistics
    from ..data.transforms import Preprocess

    preprocess = Preprocess(size)
    return pd.DataFrame([{"path": str(p), **image_statistics(np.asarray(read_image(p, preprocess)))} for p in paths])


def camera_look_statistics(profile, rendered: pd.DataFrame, out_dir: str | Path, size: int) -> pd.DataFrame:
    """The same statistics for the `rendered` corpus images (realism_statistics' sample) drawn again
    in their cameras' own looks, without the corpus's domain randomisation: the labels, cameras and
    seeds are the same, so the difference to `rendered` is what the randomisation does."""
    from ..synth.writers import render_corpus_without_randomisation

    names = [Path(p).name for p in rendered["path"]]
    return _statistics_frame(render_corpus_without_randomisation(profile, names, out_dir), size)


def realism_table(stats: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Rendered against real, statistic by statistic, the largest gap first (data.image_stats.compare_sets)."""
    from ..data.image_stats import compare_sets

    return compare_sets({name: frame.drop(columns="path").to_dict("records") for name, frame in stats.items()},
                        reference="real")


# ---------------------------------------------------------------- evaluation summaries

def headline_key(profile) -> str:
    return f"{profile.eval.language}_{profile.eval.prompt_mode}"


def load_eval(run_dir, variant: str = "test") -> dict[str, dict]:
    """The per-dataset evaluation JSON written by eval.benchmark.run_evaluation."""
    layout = RunLayout(run_dir)
    out = {}
    for ds in STANDIN_BENCHMARKS:
        path = layout.eval_json(ds, variant)
        if path.is_file():
            out[ds] = json.loads(path.read_text(encoding="utf-8"))
    if not out:
        raise DataError(f"{layout.eval(variant)}: no evaluation JSON; run eval.benchmark.run_evaluation(variant={variant!r}) first")
    return out


def setting_table(evals: dict[str, dict], metric: str = "aca") -> pd.DataFrame:
    """Rows = prompt settings (and chance / ceiling), columns = datasets, cells 'point [lo, hi]'."""
    from ..eval.metrics import format_interval

    rows: dict[str, dict] = {}
    for ds, data in evals.items():
        for key, res in data["results"].items():
            rows.setdefault(key, {})[ds] = format_interval(res["report"][metric])
    return pd.DataFrame.from_dict(rows, orient="index")


def best_dev_setting(dev_evals: dict[str, dict]) -> tuple[str, pd.Series]:
    """The prompt setting with the highest mean ACA over the dev renderings (chance/ceiling excluded)."""
    scores: dict[str, list] = {}
    for data in dev_evals.values():
        for key, res in data["results"].items():
            if key in ("chance", "supervised"):
                continue
            scores.setdefault(key, []).append(res["report"]["aca"]["value"])
    mean = pd.Series({k: float(np.mean(v)) for k, v in scores.items()}).sort_values(ascending=False)
    return str(mean.index[0]), mean.round(4)


def ceiling_ratio_table(evals: dict[str, dict], key: str) -> pd.DataFrame:
    """Zero-shot ACA of setting `key` against the supervised ceiling on the same set."""
    rows = []
    for ds, data in evals.items():
        res = data["results"]
        zs = res[key]["report"]["aca"]["value"]
        sup = res.get("supervised", {}).get("report", {}).get("aca", {}).get("value")
        rows.append({"dataset": ds, "zero-shot ACA": round(zs, 4),
                     "supervised ceiling ACA": None if sup is None else round(sup, 4),
                     "zero-shot / ceiling": None if not sup else round(zs / sup, 3)})
    return pd.DataFrame(rows)


def _predictions(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"{path}: missing; run eval.benchmark.run_evaluation for this rendering first")
    return pd.read_csv(path)


def domain_gap_table(run_dir, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """ACA on held-out vs training camera profiles for the same cases (same seed, same labels).

    The two renderings share file names, labels and anatomy and differ only in the camera, so the
    difference gets a paired bootstrap interval (resampling cases).
    """
    from sklearn.metrics import balanced_accuracy_score

    layout = RunLayout(run_dir)
    rows = []
    for ds in STANDIN_BENCHMARKS:
        held = _predictions(layout.predictions(ds, "test"))
        seen = _predictions(layout.predictions(ds, "seen"))
        # the last three path parts identify a case in every layout (FIVES repeats names across train/test)
        held["key"] = held.path.map(lambda p: "/".join(Path(p).parts[-3:]))
        seen["key"] = seen.path.map(lambda p: "/".join(Path(p).parts[-3:]))
        both = held.merge(seen, on="key", suffixes=("_held", "_seen"))
        if len(both) != len(held):
            raise DataError(f"{ds}: held-out and seen renderings do not pair by file name "
                            f"({len(held)} vs {len(both)} matched)")
        y = both.label_held.to_numpy()
        ph, ps = both.predicted_held.to_numpy(), both.predicted_seen.to_numpy()
        a_h, a_s = balanced_accuracy_score(y, ph), balanced_accuracy_score(y, ps)
        idx = rng(seed, "gap", ds).integers(0, len(y), size=(n_boot, len(y)))
        with warnings.catch_warnings():  # a resample may miss a rare class; sklearn warns, the ACA is still defined
            warnings.simplefilter("ignore", UserWarning)
            diffs = [balanced_accuracy_score(y[i], ps[i]) - balanced_accuracy_score(y[i], ph[i]) for i in idx]
        lo, hi = np.percentile(diffs, [2.5, 97.5])
        rows.append({"dataset": ds, "images": len(y), "ACA seen cameras": round(a_s, 4),
                     "ACA held-out cameras": round(a_h, 4), "gap (seen - held-out)": round(a_s - a_h, 4),
                     "gap 95% CI": f"[{lo:.3f}, {hi:.3f}]"})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- embeddings, retrieval, few-shot

def retrieval_table(retrieval: dict) -> pd.DataFrame:
    """Recall@K rows per caption language, direction and counting rule."""
    rows = []
    for lang, res in retrieval.items():
        for direction in ("image_to_text", "text_to_image"):
            for rule in ("label_set", "exact"):
                if rule in res[direction]:
                    row = {"captions": lang, "direction": direction.replace("_", " "), "hit counted by": rule.replace("_", " ")}
                    row.update({k: round(v, 4) for k, v in res[direction][rule].items()})
                    rows.append(row)
    return pd.DataFrame(rows)


def _scored_on(entry: dict) -> str:
    """'all 1,744 images', or the seeded subsample a large set's probes were scored on."""
    scored, total = entry.get("scored_images"), entry.get("test_images")
    if scored is None:
        return "all images"
    return f"all {total:,} images" if scored == total else f"a seeded {scored:,} of {total:,} images"


def fewshot_table(fewshot: dict) -> pd.DataFrame:
    rows = []
    for ds, entry in fewshot.items():
        zs = (entry.get("zero_shot_aca") or {}).get("value")
        for point in entry["curve"]:
            rows.append({"dataset": ds, "shots per class": point["k"], "probe ACA mean": round(point["aca_mean"], 4),
                         "probe ACA sd": round(point["aca_sd"], 4),
                         "zero-shot ACA": None if zs is None else round(zs, 4),
                         "probe scored on": _scored_on(entry)})
    return pd.DataFrame(rows)


def separability_table(result: dict) -> pd.DataFrame:
    """One row per class pair of eval.separability: probe and zero-shot AUC, and where the pair is lost."""
    from ..eval.metrics import format_interval
    from ..eval.separability import where_lost

    rows = []
    for ds, entry in result.items():
        for r in entry.get("pairs", []):
            rows.append({"dataset": ds, "pair": f"{r['classes'][0]} vs {r['classes'][1]}",
                         "test images": " + ".join(str(n) for n in r["test_images"]),
                         "probe AUC [95% CI]": format_interval(r["probe"]),
                         "zero-shot AUC [95% CI]": format_interval(r["zero_shot"]),
                         "probe - zero-shot [paired 95% CI]": format_interval(r.get("probe_minus_zero_shot")),
                         "lost in": where_lost(r) or r.get("reason", "")})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- rows that are not results

def left_out(evals: dict[str, dict]) -> dict[str, str]:
    """{setting: reason} of the prompt settings eval.benchmark left out (the model cannot read them)."""
    out: dict[str, str] = {}
    for data in evals.values():
        out.update(data.get("left_out", {}))
    return out


def readable_languages(evals: dict[str, dict]) -> list[str]:
    """Prompt languages with at least one evaluated setting."""
    return sorted({res["language"] for data in evals.values() for res in data["results"].values() if "language" in res})


def left_out_text(left: Mapping[str, str]) -> str:
    """One line per left-out setting or row: what and why; a line saying none when there is none."""
    if not left:
        return "Every prompt setting is readable by this model: none left out."
    return "\n".join(f"Left out (not a result): {name}: {reason}." for name, reason in left.items())


def left_out_html(left: Mapping[str, str]) -> str:
    """The same lines under an HTML table (the glued paper table)."""
    import html

    return "".join(f'<p class="left-out"><em>Left out (not a result): {html.escape(name)}: '
                   f'{html.escape(reason)}.</em></p>' for name, reason in left.items())
