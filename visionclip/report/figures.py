"""Every figure of the book: each function returns a matplotlib Figure with title, axis labels and legend.

Chinese class names and prompts need a CJK font: `setup_fonts()` adds the first installed one
(Noto Sans CJK, WenQuanYi, Droid Sans Fallback...) as a fallback after the default font, and does
nothing when none is installed (glyphs then show as boxes, nothing fails).
"""
from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib import font_manager

from ..data.datasets import load_image
from ..errors import DataError
from ..schema import DISEASE_FLAGS
from ..seeding import rng
from ..eval.maps import map_note, map_points, umap_projection
from ..paths import RunLayout
from .ablations.tables import CHANCE_ACA
from .tables import prevalence_table

CJK_FONT_HINTS = ("Noto Sans CJK", "Noto Serif CJK", "Noto Sans SC", "Source Han Sans", "WenQuanYi",
                  "Droid Sans Fallback", "AR PL UMing", "AR PL UKai", "SimHei", "Microsoft YaHei", "PingFang")


def print_resolution() -> bool:
    """Inline figures at twice the pixels for their size (about 200 dpi), so the book's PDF prints
    them sharp; their displayed size is unchanged. True inside an IPython kernel, else a no-op."""
    try:
        from IPython import get_ipython
        from matplotlib_inline.backend_inline import set_matplotlib_formats
    except ImportError:
        return False
    if get_ipython() is None:
        return False
    set_matplotlib_formats("retina")
    return True


def show_photographs(fig, dpi: int = 200, quality: int = 90):
    """Show a figure made of photographs as a JPEG at print resolution (`dpi`), at the size the
    inline backend would show it. As a PNG at that resolution a sheet of photographs weighs tens of
    megabytes in the notebook, the page and the PDF; the JPEG a tenth of it."""
    import io

    from IPython.display import Image, display

    pad = matplotlib.rcParams["savefig.pad_inches"]
    inches = fig.get_tightbbox(fig.canvas.get_renderer()).width + 2 * pad  # what bbox_inches="tight" saves
    buf = io.BytesIO()
    fig.savefig(buf, format="jpeg", dpi=dpi, bbox_inches="tight", pad_inches=pad, facecolor="white",
                pil_kwargs={"quality": quality})
    plt.close(fig)
    display(Image(data=buf.getvalue(), format="jpeg", width=int(inches * matplotlib.rcParams["figure.dpi"])))


def setup_fonts() -> str | None:
    """Put an installed CJK font in the sans-serif fallback list; returns its name, or None.
    Also sets inline figures to print resolution (print_resolution), which every notebook needs
    as it needs the font."""
    print_resolution()
    names = {f.name for f in font_manager.fontManager.ttflist}
    for hint in CJK_FONT_HINTS:
        match = sorted(n for n in names if n.startswith(hint))
        if match:
            # first in the list: matplotlib's per-glyph fallback did not reach a CJK font placed
            # after DejaVu Sans here (tofu boxes); Noto Sans CJK has Latin glyphs of its own
            family = [f for f in matplotlib.rcParams["font.sans-serif"] if f != match[0]]
            matplotlib.rcParams["font.sans-serif"] = [match[0], *family]
            matplotlib.rcParams["font.family"] = "sans-serif"
            matplotlib.rcParams["axes.unicode_minus"] = False
            return match[0]
    return None


def _fig(width: float = 6.0, height: float = 4.5, ncols: int = 1, nrows: int = 1):
    setup_fonts()
    return plt.subplots(nrows, ncols, figsize=(width, height), squeeze=False, constrained_layout=True)


# ---------------------------------------------------------------- metrics figures

def confusion_matrix_figure(cm, class_names: Sequence[str], title: str = "Confusion matrix",
                            normalise: bool = True):
    """Heatmap of a confusion matrix (rows: truth); cells show row shares and counts."""
    cm = np.asarray(cm, dtype=float)
    fig, ax = _fig(1.2 * len(class_names) + 3, 1.0 * len(class_names) + 2.5)
    ax = ax[0, 0]
    rows = cm.sum(1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    labels = np.array([[f"{share[i, j]:.2f}\n({int(cm[i, j])})" for j in range(cm.shape[1])]
                       for i in range(cm.shape[0])])
    sns.heatmap(share if normalise else cm, annot=labels, fmt="", cmap="Blues", vmin=0,
                vmax=1 if normalise else None, xticklabels=class_names, yticklabels=class_names, ax=ax,
                cbar_kws={"label": "share of the true class" if normalise else "images"})
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    ax.tick_params(axis="x", rotation=30)
    ax.tick_params(axis="y", rotation=0)
    return fig


def _err(entries: Sequence[Mapping]):
    v = np.array([e["value"] if e and e.get("value") is not None else np.nan for e in entries], dtype=float)
    lo = np.array([e["lo"] if e and e.get("lo") is not None else np.nan for e in entries], dtype=float)
    hi = np.array([e["hi"] if e and e.get("hi") is not None else np.nan for e in entries], dtype=float)
    return v, np.nan_to_num(np.vstack([v - lo, hi - v]), nan=0.0).clip(min=0)


def sensitivity_specificity_figure(report: Mapping, title: str = "Per-class sensitivity and specificity"):
    """Grouped bars per class with bootstrap 95% intervals, from a metrics.classification_report."""
    per = report["per_class"]
    names = [p["class"] for p in per]
    x = np.arange(len(names))
    fig, ax = _fig(max(5, 1.3 * len(names) + 2), 4)
    ax = ax[0, 0]
    for off, key, color in ((-0.2, "sensitivity", "tab:blue"), (0.2, "specificity", "tab:orange")):
        v, err = _err([p[key] for p in per])
        ax.bar(x + off, v, width=0.4, yerr=err, capsize=3, label=key, color=color)
    ax.set_xticks(x, names, rotation=20, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("value (95% bootstrap interval)")
    ax.set_xlabel("class")
    ax.set_title(title)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: bars reach 1.0
    return fig


def grouped_bars_figure(values: Mapping[str, Mapping[str, Mapping]], title: str, ylabel: str = "ACA",
                        xlabel: str = "dataset", chance: Mapping[str, float] | None = None):
    """Bars with intervals: values[group][setting] = {"value","lo","hi"}; e.g. dataset x prompt setting.

    Used for plain-vs-EK and zh-vs-en comparisons; `chance` draws a dashed line per group.
    """
    groups = list(values)
    settings = list(dict.fromkeys(s for g in groups for s in values[g]))
    if not groups or not settings:
        raise DataError("grouped_bars_figure: nothing to plot")
    width = 0.8 / len(settings)
    x = np.arange(len(groups))
    fig, ax = _fig(max(6, 1.6 * len(groups) + 2), 4.2)
    ax = ax[0, 0]
    for k, s in enumerate(settings):
        v, err = _err([values[g].get(s) for g in groups])
        ax.bar(x - 0.4 + width * (k + 0.5), v, width=width, yerr=err, capsize=3, label=s)
    if chance:
        for i, g in enumerate(groups):
            if g in chance:
                ax.hlines(chance[g], i - 0.45, i + 0.45, colors="grey", linestyles="dashed",
                          label="chance" if i == 0 else None)
    ax.set_xticks(x, groups)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel(f"{ylabel} (95% bootstrap interval)")
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


def prompt_comparison_figure(run_dir: str | Path, compare: str = "mode", metric: str = "aca",
                             variant: str = "test"):
    """Plain vs EK (compare="mode") or zh vs en (compare="language") from the run's per-dataset
    evaluation JSON of `variant`."""
    eval_dir = RunLayout(run_dir).eval(variant)
    values: dict[str, dict] = {}
    for path in sorted(eval_dir.glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        if "results" not in data:
            continue
        ds = data["dataset"]
        for key, res in data["results"].items():
            if "_" not in key or "language" not in res:
                continue
            lang, mode = res["language"], res["mode"]
            label = (f"{'EK' if mode == 'ek' else 'plain'} ({lang})" if compare == "mode"
                     else f"{lang} ({'EK' if mode == 'ek' else 'plain'})")
            values.setdefault(ds, {})[label] = res["report"][metric]
        values[ds] = dict(sorted(values.get(ds, {}).items()))
    if not values:
        raise DataError(f"{eval_dir}: no per-dataset evaluation JSON found; run eval.benchmark.run_evaluation first")
    what = "plain vs expert-knowledge prompts" if compare == "mode" else "Chinese vs English prompts"
    return grouped_bars_figure(values, f"Zero-shot {metric.upper()}: {what}", ylabel=metric.upper())


def paper_table_figure(table: Mapping | str | Path, title: str = "Zero-shot ACA: the paper's Table 1 and this run"):
    """Bars per dataset for every row of evaluate's table.json: the paper's numbers hatched (no
    interval is reported), this run's rows with their bootstrap 95% intervals."""
    if not isinstance(table, Mapping):
        table = json.loads(Path(table).read_text(encoding="utf-8"))
    columns = dict(table["columns"])  # [[dataset, column label], ...] in the paper's order
    rows = table["rows"]
    fig, ax = _fig(max(8, 2.2 * len(columns) + 4), 4.8)
    ax = ax[0, 0]
    width = 0.85 / len(rows)
    x = np.arange(len(columns))
    palette = sns.color_palette("tab20", n_colors=len(rows))
    for i, (row, color) in enumerate(zip(rows, palette)):
        entries = []
        for ds in columns:
            v = row["aca"].get(ds)
            entries.append(v if isinstance(v, Mapping) else ({"value": v} if v is not None else None))
        v, err = _err(entries)
        paper = row["source"] == "reported in the paper"
        ax.bar(x - 0.425 + width * (i + 0.5), v, width=width, yerr=None if paper else err, capsize=2,
               color=color, hatch="//" if paper else None, edgecolor="white" if paper else None,
               label=f"{row['model']}" + (" (paper)" if paper and "paper" not in row["model"] else ""))
    ax.set_xticks(x, list(columns.values()))
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("dataset")
    ax.set_ylabel("ACA (balanced accuracy)")
    ax.set_title(title)
    ax.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


# ---------------------------------------------------------------- embedding maps

def umap_figure(image_emb, colour_by: Sequence, colour_name: str, prototypes=None,
                prototype_names: Sequence[str] | None = None, seed: int = 0, title: str | None = None,
                projection=None):
    """Scatter of the UMAP map coloured by `colour_by` (disease, DR grade, camera...); prototypes as stars.

    Pass `projection` (the output of umap_projection) to draw several colourings of one fit.
    """
    img_xy, proto_xy = projection if projection is not None else umap_projection(image_emb, prototypes, seed)
    fig, ax = _fig(7.5, 5.5)
    ax = ax[0, 0]
    df = pd.DataFrame({"x": img_xy[:, 0], "y": img_xy[:, 1], colour_name: [str(c) for c in colour_by]})
    sns.scatterplot(data=df, x="x", y="y", hue=colour_name, s=12, alpha=0.7, linewidth=0, ax=ax,
                    hue_order=sorted(df[colour_name].unique()))
    if proto_xy is not None:
        ax.scatter(proto_xy[:, 0], proto_xy[:, 1], marker="*", s=260, c="black", edgecolors="white",
                   label="text prototypes")
        for (px, py), name in zip(proto_xy, prototype_names or []):
            ax.annotate(name, (px, py), xytext=(4, 4), textcoords="offset points", fontsize=8)
    ax.set_xlabel("UMAP 1")
    ax.set_ylabel("UMAP 2")
    ax.set_title(title or f"Image embeddings (UMAP), coloured by {colour_name}")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), title=colour_name)
    return fig


def corpus_maps(run_dir: str | Path, prototypes_of: Sequence[str] = ("fives",), seed: int = 0) -> dict:
    """UMAP maps of the corpus test split coloured by disease, DR grade and camera, from one fit.

    Reads the run's embeddings corpus_test and prototypes (eval.maps.run_embeddings); the
    prototypes of `prototypes_of` are fitted together with the images and drawn as stars.
    """
    from ..eval.embed import load_embeddings

    data = load_embeddings(run_dir, "corpus_test")
    keep = map_points(len(data["image"]), seed)
    note = map_note(len(keep), len(data["image"]))
    data = {k: data[k][keep] for k in ("image", "dr_grade", "disease", "domain")}
    protos = load_embeddings(run_dir, "prototypes")
    p = np.vstack([protos[ds] for ds in prototypes_of]) if prototypes_of else None
    names = [str(n) for ds in prototypes_of for n in protos[f"{ds}_names"]]
    proj = umap_projection(data["image"], p, seed)
    grades = [f"grade {g}" for g in data["dr_grade"]]
    return {key: umap_figure(data["image"], colours, label, p, names, seed, projection=proj,
                             title=f"Corpus test split{note} (UMAP), coloured by {label}")
            for key, colours, label in (("disease", data["disease"], "disease"),
                                        ("dr_grade", grades, "DR grade"),
                                        ("domain", data["domain"], "camera"))}


def benchmark_maps(run_dir: str | Path, dataset: str, variant: str = "test", seed: int = 0) -> dict:
    """UMAP maps of one benchmark set coloured by class and by camera, with its class prototypes."""
    from ..eval.embed import load_embeddings

    data = load_embeddings(run_dir, f"{dataset}_{variant}")
    keep = map_points(len(data["image"]), seed)
    note = map_note(len(keep), len(data["image"]))
    data.update({k: data[k][keep] for k in ("image", "label", "domain")})
    protos = load_embeddings(run_dir, "prototypes")
    p, names = protos.get(dataset), [str(n) for n in protos.get(f"{dataset}_names", [])]
    proj = umap_projection(data["image"], p, seed)
    classes = [str(data["class_names"][y]) for y in data["label"]] if "class_names" in data else data["label"]
    return {key: umap_figure(data["image"], colours, label, p, names, seed, projection=proj,
                             title=f"{dataset} ({variant}) embeddings{note} (UMAP), coloured by {label}")
            for key, colours, label in (("class", classes, "class"), ("domain", data["domain"], "camera"))}


# ---------------------------------------------------------------- training curves

def read_jsonl(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: metrics file not found; train a model first")
    rows = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{i}: not valid JSON ({e})") from None
    return pd.DataFrame(rows)


def training_curves_figure(train_jsonl: str | Path, val_jsonl: str | Path | None = None, step: str = "step"):
    """Loss, learning rate, logit scale and validation retrieval against the training step.

    Plots whichever of the columns loss / lr / logit_scale (train) and any R@K or loss column (val)
    the JSONL files hold.
    """
    train = read_jsonl(train_jsonl)
    val = read_jsonl(val_jsonl) if val_jsonl and Path(val_jsonl).is_file() else None
    panels = [c for c in ("loss", "lr", "logit_scale") if c in train.columns]
    retrieval_cols = []
    if val is not None:
        retrieval_cols = [c for c in val.columns if any(t in c.lower() for t in ("top", "r@", "recall"))
                          and pd.api.types.is_numeric_dtype(val[c])]
        if retrieval_cols:
            panels.append("validation retrieval")
    if not panels:
        raise DataError(f"{train_jsonl}: no loss / lr / logit_scale columns to plot")
    fig, axes = _fig(4.2 * len(panels), 3.6, ncols=len(panels))
    for ax, name in zip(axes[0], panels):
        if name == "validation retrieval":
            for c in retrieval_cols:
                ax.plot(val[step], val[c], marker="o", lw=1.2, label=c)
            if "chance" in val.columns:
                ax.plot(val[step], val["chance"], ls="--", color="grey", label="chance (label set)")
            ax.set_ylabel("recall")
        else:
            ax.plot(train[step], train[name], lw=1.2, label=f"train {name}")
            if name == "loss" and val is not None and "val_loss" in val.columns:
                ax.plot(val[step], val["val_loss"], marker="o", lw=1.2, label="validation loss")
            ax.set_ylabel(name)
        ax.set_title(name)
        ax.set_xlabel(step)
        ax.legend(fontsize="small")
    fig.suptitle("Pre-training curves")
    return fig


# ---------------------------------------------------------------- few-shot

def fewshot_figure(fewshot: Mapping[str, Mapping], title: str = "Few-shot linear probe vs zero-shot"):
    """ACA (mean ± sd over draws) against shots per class, per dataset; zero-shot as a dashed line."""
    fig, ax = _fig(6.5, 4.2)
    ax = ax[0, 0]
    colors = sns.color_palette(n_colors=max(3, len(fewshot)))
    for color, (ds, entry) in zip(colors, fewshot.items()):
        curve = entry["curve"]
        k = [c["k"] for c in curve]
        ax.errorbar(k, [c["aca_mean"] for c in curve], yerr=[c["aca_sd"] for c in curve], marker="o",
                    capsize=3, color=color, label=f"{ds}: linear probe")
        zs = entry.get("zero_shot_aca")
        if zs and zs.get("value") is not None:
            ax.axhline(zs["value"], color=color, ls="--", lw=1, label=f"{ds}: zero-shot")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("shots per class (k)")
    ax.set_ylabel("ACA (mean ± sd over draws)")
    ax.set_ylim(0, 1.05)
    ax.set_title(title)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


def separability_figure(result: Mapping[str, Mapping], title: str = "Class pairs: what the image holds, what the prompts read"):
    """Per dataset, each class pair's probe AUC and zero-shot AUC with 95% intervals; chance at 0.5.

    A pair whose probe sits near chance is lost in the image embedding: no prompt can recover it."""
    sets = {ds: entry["pairs"] for ds, entry in result.items() if entry.get("pairs")}
    if not sets:
        raise DataError("separability_figure: no dataset with class pairs (every set was skipped)")
    heights = [len(p) for p in sets.values()]
    fig, axes = plt.subplots(len(sets), 1, figsize=(7.5, 0.45 * sum(heights) + 1.2 * len(sets)), squeeze=False,
                             constrained_layout=True, gridspec_kw={"height_ratios": heights})
    lows = [r[k]["lo"] for pairs in sets.values() for r in pairs for k in ("probe", "zero_shot")
            if r.get(k) and r[k].get("lo") is not None]
    left = min([0.4] + [lo - 0.03 for lo in lows])
    marks = {"probe": ("o", "#1f77b4", "linear probe (fitted on dev renderings)"),
             "zero_shot": ("s", "#d62728", "zero-shot (headline prompts)")}
    for ax, (ds, pairs) in zip(axes[:, 0], sets.items()):
        labels = [f"{r['classes'][0]} vs {r['classes'][1]}" for r in pairs]
        for offset, (key, (marker, color, label)) in zip((-0.12, 0.12), marks.items()):
            for i, r in enumerate(pairs):
                e = r.get(key)
                if not e or e.get("value") is None:
                    continue
                if e.get("lo") is not None and e.get("hi") is not None:
                    ax.plot([e["lo"], e["hi"]], [i + offset] * 2, color=color, lw=1.5)
                ax.plot(e["value"], i + offset, marker=marker, color=color, ls="", label=label if i == 0 else None)
        ax.axvline(0.5, color="grey", ls=":", lw=1)
        ax.set_yticks(range(len(pairs)), [textwrap.fill(t, 42) for t in labels], fontsize="small")
        ax.set_ylim(len(pairs) - 0.5, -0.5)
        ax.set_xlim(left, 1.01)
        ax.set_title(ds, fontsize="medium", loc="left")
    axes[-1, 0].set_xlabel("AUC of the second class against the first, test renderings (95% CI)")
    fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="outside lower center", ncols=2, fontsize="small")
    fig.suptitle(title)
    return fig


# ---------------------------------------------------------------- retrieval examples

def retrieval_examples_figure(query_paths: Sequence[str], query_texts: Sequence[str], match_paths,
                              title: str = "Text-to-image retrieval: top matches", image_size: int = 128,
                              match_captions=None):
    """A grid: one row per text query, its top-k retrieved images (hits framed when captions given).

    match_paths[q] lists image paths for query q; `match_captions[q][j]` (optional) is shown under
    each image; `query_paths` (the paired image, may be empty) is shown first, framed in green.
    """
    k = max(len(m) for m in match_paths)
    show_query = bool(query_paths)
    ncols = k + int(show_query)
    fig, axes = _fig(2.0 * ncols + 1, 2.3 * len(query_texts), ncols=ncols, nrows=len(query_texts))
    for q, text in enumerate(query_texts):
        cells = ([query_paths[q]] if show_query else []) + list(match_paths[q])
        for j in range(ncols):
            ax = axes[q, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j >= len(cells):
                ax.axis("off")
                continue
            im = load_image(Path(cells[j]), image_size).convert("RGB")
            im.thumbnail((image_size, image_size))
            ax.imshow(np.asarray(im))
            if show_query and j == 0:
                wrapped = "\n".join(textwrap.wrap(text, 26, max_lines=3, placeholder=" …"))
                ax.set_title(f"query: {wrapped}", fontsize=7, color="green", loc="left")
                ax.set_xlabel("paired image", fontsize=7, color="green")
                for s in ax.spines.values():
                    s.set_edgecolor("green")
                    s.set_linewidth(2)
            else:
                rank = j + 1 - int(show_query)
                cap = match_captions[q][rank - 1] if match_captions is not None else ""
                ax.set_title(f"#{rank} {cap}"[:40], fontsize=7)
        if not show_query:
            axes[q, 0].set_ylabel("\n".join(text[i:i + 22] for i in range(0, min(len(text), 66), 22)), fontsize=7)
    fig.suptitle(title)
    return fig


# ---------------------------------------------------------------- ablations

def interval_figure(df: pd.DataFrame, title: str, ylabel: str = "ACA", by: str = "setting"):
    """Grouped bars with 95% intervals: datasets on the x axis, one bar per `by` value."""
    from .figures import grouped_bars_figure

    values: dict = {}
    for _, r in df.iterrows():
        values.setdefault(r.dataset, {})[r[by]] = {"value": r.value, "lo": r.lo, "hi": r.hi}
    chance = {ds: CHANCE_ACA[ds] for ds in values if ds in CHANCE_ACA} if ylabel == "ACA" else None
    return grouped_bars_figure(values, title, ylabel=ylabel, xlabel="stand-in set", chance=chance)


def curve_figure(df: pd.DataFrame, x: str, title: str, xlabel: str, panels: str | None = None,
                 log_x: bool = False):
    """Lines with 95% interval bands per dataset, against x; one panel per `panels` value."""
    import matplotlib.pyplot as plt

    from .figures import setup_fonts

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


# ---------------------------------------------------------------- corpus and benchmark sets

def prevalence_figure(frame: pd.DataFrame, title: str = "Label prevalence in the corpus"):
    setup_fonts()
    table = prevalence_table(frame)
    fig, ax = plt.subplots(figsize=(8, 5.5))
    ax.barh(table.annotation, table.share, color="#4c72b0")
    ax.invert_yaxis()
    ax.set_xlabel("share of images")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def cooccurrence_figure(frame: pd.DataFrame, title: str = "Disease co-occurrence (images with both)"):
    """Counts of images carrying both findings (DR as dr_grade > 0)."""
    import seaborn as sns

    setup_fonts()
    cols = {"DR": frame.dr_grade > 0}
    cols.update({f.removeprefix("is_").upper(): frame[f] > 0 for f in DISEASE_FLAGS})
    flags = pd.DataFrame(cols).astype(int)
    co = flags.T @ flags
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    sns.heatmap(co, annot=True, fmt="d", cmap="Blues", ax=ax, cbar_kws={"label": "images"})
    ax.set_title(title)
    ax.set_xlabel("finding")
    ax.set_ylabel("finding")
    fig.tight_layout()
    return fig


def token_length_figure(lengths: pd.DataFrame, context_length: int):
    import seaborn as sns

    setup_fonts()
    fig, ax = plt.subplots(figsize=(7, 4))
    sns.histplot(data=lengths, x="tokens", hue="language", discrete=True, element="step", ax=ax)
    ax.axvline(context_length, color="red", ls="--", label=f"context length {context_length}")
    ax.set_xlabel("tokens per caption ([CLS] and [SEP] included)")
    ax.set_ylabel("captions")
    ax.set_title("Caption length in tokens, Chinese vs English")
    fig.tight_layout()
    return fig


EXAMPLE_TILE_PX = 256  # large photographs are decoded reduced (JPEG draft) to at least this side


def _show_image(ax, path: str | Path) -> None:
    """An image file on the axes, as stored (RGB), decoded at EXAMPLE_TILE_PX or more."""
    ax.imshow(np.asarray(load_image(Path(path), EXAMPLE_TILE_PX).convert("RGB")))


def benchmark_examples_figure(sets: dict[tuple[str, str], list], variant: str = "test", per_class: int = 3,
                              seed: int = 0, tile: float = 1.5):
    """Rows = (dataset, class), columns = examples, each titled with its camera."""
    setup_fonts()
    rows = []
    for (ds, v), records in sets.items():
        if v != variant:
            continue
        for label, name in enumerate(records[0].class_names):
            members = [r for r in records if r.label == label]
            pick = rng(seed, ds, variant, label).permutation(len(members))[:per_class]
            rows.append((f"{ds}\n{name}", [members[i] for i in pick]))
    fig, axes = plt.subplots(len(rows), per_class, figsize=(tile * per_class + 1.5, tile * len(rows)), squeeze=False)
    for i, (title, members) in enumerate(rows):
        for j in range(per_class):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j < len(members):
                _show_image(ax, members[j].path)
                ax.set_title(members[j].domain, fontsize=7)
            else:
                ax.axis("off")
            if j == 0:
                ax.set_ylabel(title, fontsize=7)
    fig.suptitle(f"Stand-in benchmark sets ({variant} rendering): examples per class", fontsize=10)
    fig.tight_layout()
    return fig


def devset_figure(entries: Sequence[dict], root: str | Path, ncols: int = 5, tile: float = 2.0):
    """The real-photograph dev set as a grid, each image titled with its digest and labels."""
    setup_fonts()
    nrows = (len(entries) + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(tile * ncols, (tile + 0.4) * nrows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, e in zip(axes.flat, entries):
        _show_image(ax, Path(root) / e["file"])
        label = f"eye {e['eye']}, lesions: {e['lesions']}" if e["is_fundus"] else f"not fundus: {e.get('kind', '')}"
        ax.set_title(f"{e['digest'][:8]}\n{label}", fontsize=7)
    fig.suptitle("Real photographs from fundus-image-toolbox 0.1.3 and scikit-image 0.26.0 "
                 "(development and the book only, never training)", fontsize=9)
    fig.tight_layout()
    return fig


def devset_prediction_figure(table: pd.DataFrame, entries: Sequence[dict], root: str | Path, examples: dict,
                              ncols: int = 5, tile: float = 2.0):
    """Each real dev-set image titled with the model's top class and p(fundus); below them one rendered
    benchmark image per class ({class name: path}), the classes the model chooses between."""
    setup_fonts()
    nreal = (len(entries) + ncols - 1) // ncols
    nrows = nreal + (len(examples) + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(tile * ncols, (tile + 0.7) * nrows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    rows = {r["image"]: r for r in table.to_dict("records")}
    for ax, e in zip(axes.flat, entries):
        r = rows[e["digest"]]
        _show_image(ax, Path(root) / e["file"])
        predicted = textwrap.shorten(str(r["predicted"]), 30, placeholder="…")
        ax.set_title(f"REAL {r['real image']}\n{predicted} ({r['p(predicted)']:.2f})\np(fundus) {r['p_is_fundus']:.2f}",
                     fontsize=7)
    for ax, (name, path) in zip(axes.flat[nreal * ncols:], examples.items()):
        _show_image(ax, path)
        ax.set_title(f"RENDERED: {name}", fontsize=7)
    fig.suptitle("The model on real photographs (top rows) and rendered examples of its classes (bottom row)",
                 fontsize=9)
    fig.tight_layout()
    return fig


def realism_figure(stats: dict[str, pd.DataFrame], ncols: int = 5):
    """One small panel per image statistic: each set's values (points), their quartiles (box) and
    5th-95th percentiles (whiskers)."""
    from ..data.image_stats import STATISTICS

    setup_fonts()
    names = list(STATISTICS)
    nrows = (len(names) + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.6 * ncols, 2.3 * nrows), squeeze=False)
    for ax in axes.flat[len(names):]:
        ax.axis("off")
    sets = list(stats)
    for ax, stat in zip(axes.flat, names):
        values = [stats[s][stat].dropna().to_numpy() for s in sets]
        ax.boxplot(values, widths=0.5, showfliers=False, whis=(5, 95))
        for k, v in enumerate(values, 1):
            ax.scatter(np.full(len(v), k) + np.linspace(-0.15, 0.15, len(v)), v, s=6, alpha=0.6)
        ax.set_xticks(range(1, len(sets) + 1), sets, fontsize=7)
        ax.set_title(stat, fontsize=8)
        ax.set_xlabel("images", fontsize=7)
        ax.set_ylabel("value", fontsize=7)
        ax.tick_params(labelsize=6)
    fig.suptitle("Rendered against real: image statistics (each point one image; box: quartiles, "
                 "whiskers: 5th-95th percentiles)", fontsize=9)
    fig.tight_layout()
    return fig


def real_rendered_sheet(stats: dict[str, pd.DataFrame], size: int, per_row: int = 8, tile: float = 1.3,
                        title: str = "Real photographs and rendered corpus images"):
    """Each set's images in rows of `per_row` (up to two rows a set; real photographs above rendered
    corpus images), as the model sees them: preprocessed to `size`."""
    from ..data.datasets import read_image
    from ..data.transforms import Preprocess

    setup_fonts()
    preprocess = Preprocess(size)
    groups = [(name, list(frame["path"])[:per_row * 2]) for name, frame in stats.items()]
    rows = [(name, paths[k:k + per_row]) for name, paths in groups for k in range(0, len(paths), per_row)]
    fig, axes = plt.subplots(len(rows), per_row, figsize=(tile * per_row, tile * len(rows) + 0.4), squeeze=False)
    for r, (name, paths) in enumerate(rows):
        for j in range(per_row):
            ax = axes[r, j]
            ax.axis("off")
            if j < len(paths):
                ax.imshow(np.asarray(read_image(paths[j], preprocess)))
        axes[r, 0].set_title(name.upper(), fontsize=8, loc="left")
    fig.suptitle(f"{title} at the training size ({size} px)", fontsize=9)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- one dataset's panels

def dataset_panels(data: dict, key: str):
    """Confusion matrix and per-class sensitivity/specificity of one setting, numbers printed too."""
    from IPython.display import display

    from ..eval.metrics import format_interval

    rep = data["results"][key]["report"]
    names = data["class_names"]
    title = f"{data['dataset']} ({key}): ACA {format_interval(rep['aca'])}"
    print(title)
    display(pd.DataFrame([{"class": c["class"], "support": c["support"], "predicted": c["predicted"],
                           "sensitivity": format_interval(c["sensitivity"]),
                           "specificity": format_interval(c["specificity"])} for c in rep["per_class"]]))
    cm = confusion_matrix_figure(rep["confusion_matrix"], names, title=f"Confusion matrix: {title}")
    ss = sensitivity_specificity_figure(rep, title=f"Sensitivity and specificity: {data['dataset']} ({key})")
    return cm, ss


__all__ = ["setup_fonts", "confusion_matrix_figure", "sensitivity_specificity_figure", "grouped_bars_figure",
           "prompt_comparison_figure", "paper_table_figure", "umap_figure", "corpus_maps", "benchmark_maps",
           "read_jsonl", "training_curves_figure", "fewshot_figure", "separability_figure", "retrieval_examples_figure",
           "interval_figure", "curve_figure", "prevalence_figure", "cooccurrence_figure", "token_length_figure",
           "benchmark_examples_figure", "devset_figure", "devset_prediction_figure", "realism_figure", "real_rendered_sheet",
           "dataset_panels"]
