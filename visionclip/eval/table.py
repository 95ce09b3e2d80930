"""The paper's Table 1 layout with this run's rows beside the paper's, each row saying where its
numbers come from."""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import pandas as pd

from ..io import write_json, write_text
from ..paths import RunLayout, benchmark_dir, is_standin
from .metrics import format_interval


TABLE_COLUMNS = {"messidor2": "MESSIDOR", "fives": "FIVES", "refuge": "REFUGE"}


# shown only when a run evaluated the original MESSIDOR (real data only: it has no stand-in)
EXTRA_COLUMNS = {"messidor": "MESSIDOR (original, grades 0-3)"}


PAPER_SOURCE = "reported in the paper"


PAPER_ROWS: tuple[tuple[str, tuple[float, float, float]], ...] = (
    ("CLIP", (0.237, 0.250, 0.470)),
    ("BiomedCLIP", (0.224, 0.416, 0.540)),
    ("FLAIR", (0.545, 0.732, 0.899)),
    ("FLAIR EK", (0.604, 0.735, 0.920)),
    ("VisionCLIP (paper)", (0.431, 0.739, 0.925)),
)


CHANCE_ROW = "Chance (untrained model, same configuration and seed)"


CEILING_ROW = "Supervised ceiling (same image encoder, cross-entropy on corpus labels)"


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


def table_json(results: Iterable[Mapping], left_out: Mapping[str, str] | None = None) -> dict:
    rows = [{"model": m, "source": PAPER_SOURCE, "aca": dict(zip(TABLE_COLUMNS, vals))} for m, vals in PAPER_ROWS]
    rows += [{"model": r["model"], "source": r["source"], "aca": dict(r.get("scores", {}))} for r in results]
    # a list of [dataset, column] pairs: JSON objects are written with sorted keys, the order matters here
    return {"metric": "ACA (balanced accuracy) with bootstrap 95% interval",
            "columns": [[ds, col] for ds, col in TABLE_COLUMNS.items()], "rows": rows,
            "left_out": [[name, reason] for name, reason in (left_out or {}).items()]}


def left_out_lines(left_out: Mapping[str, str]) -> str:
    """One line per row left out of the table because the model cannot read its prompts."""
    return "\n".join(f"Left out: {name}: {reason}." for name, reason in left_out.items())


def write_table(results: Sequence[Mapping], run_dir: str | Path, variant: str = "test",
                left_out: Mapping[str, str] | None = None) -> pd.DataFrame:
    """The table as CSV, Markdown and JSON in the run's evaluation folder of `variant` (atomic);
    `left_out` ({row name: reason}) are rows not shown as results, said under the Markdown table."""
    layout = RunLayout(run_dir)
    df = paper_table(results)
    buf = io.StringIO()
    df.to_csv(buf, index=False, quoting=csv.QUOTE_MINIMAL)
    write_text(layout.table(variant, ".csv"), buf.getvalue())
    note = f"\n{left_out_lines(left_out)}\n" if left_out else ""
    write_text(layout.table(variant, ".md"), df.to_markdown(index=False) + "\n" + note)
    write_json(layout.table(variant, ".json"), table_json(results, left_out))
    return df


def source_label(profile, run_dir, dataset: str, variant: str) -> str:
    if not is_standin(profile, dataset) and variant == "test":
        return f"real {dataset} at {benchmark_dir(profile, run_dir, dataset, variant)}"
    cams = "training" if variant == "seen" else "held-out"
    return f"synthetic stand-in, {cams} camera profiles ({variant} rendering)"


def row_source(sources: Mapping[str, str]) -> str:
    distinct = set(sources.values())
    if len(distinct) == 1:
        return distinct.pop()
    return "; ".join(f"{TABLE_COLUMNS.get(ds, ds)}: {s}" for ds, s in sources.items())
