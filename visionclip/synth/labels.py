"""Label rows in the SynFundus-1M schema, with clinically coherent priors.

Rules every sampler keeps: DR > 0 implies diabetes; DME only with DR >= 1 (mostly >= 2);
readability flags are mostly 1; is_fundus = 0 rows carry no disease and no readable region;
eye_side (0 right, 1 left) decides on which side the renderer puts the disc.
"""
from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..schema import COLUMNS, DISEASE_FLAGS, FLAG_COLUMNS, READABILITY_FLAGS
from ..seeding import rng as make_rng

# Primary conditions of the "balanced" prior: every disease and every DR grade gets a substantial
# share, healthy eyes the largest one.
BALANCED_PRIMARY: dict[str, float] = {
    "healthy": 0.22, "dr1": 0.07, "dr2": 0.07, "dr3": 0.06, "dr4": 0.06, "amd": 0.06, "gc": 0.06,
    "aon": 0.05, "crp": 0.05, "em": 0.05, "htr": 0.05, "pm": 0.05, "rvo": 0.05, "dm_only": 0.04,
    "nonfundus": 0.03, "unreadable": 0.03,
}
# "natural": a screening population (healthy-heavy, DR the common disease).
NATURAL_PRIMARY: dict[str, float] = {
    "healthy": 0.56, "dr1": 0.07, "dr2": 0.06, "dr3": 0.02, "dr4": 0.015, "amd": 0.05, "gc": 0.04,
    "aon": 0.01, "crp": 0.015, "em": 0.02, "htr": 0.03, "pm": 0.03, "rvo": 0.015, "dm_only": 0.06,
    "nonfundus": 0.01, "unreadable": 0.01,
}
# Co-occurrence: probability of an extra finding given the primary condition.
CO_OCCURRENCE: dict[str, dict[str, float]] = {
    "dr1": {"is_dme": 0.05, "is_htr": 0.10},
    "dr2": {"is_dme": 0.30, "is_htr": 0.15},
    "dr3": {"is_dme": 0.45, "is_htr": 0.20, "is_rvo": 0.03},
    "dr4": {"is_dme": 0.45, "is_htr": 0.20},
    "amd": {"is_em": 0.05, "is_gc": 0.05},
    "gc": {"is_pm": 0.10, "is_amd": 0.05},
    "pm": {"is_gc": 0.10, "is_amd": 0.03},
    "htr": {"is_rvo": 0.10},
    "rvo": {"is_htr": 0.30, "is_gc": 0.05},
    "em": {"is_amd": 0.05},
    "healthy": {},
}
P_UNREADABLE_REGION = 0.03  # each of the three regions, independent, in ordinary rows


def _empty_row(file_name: str, eye_side: int) -> dict[str, Any]:
    row: dict[str, Any] = {c: 0 for c in COLUMNS}
    row["file_name"] = file_name
    row["eye_side"] = eye_side
    for f in READABILITY_FLAGS:
        row[f] = 1
    return row


def file_name_for(index: int) -> str:
    return f"{index + 1:07d}.jpg"


def _row_for(primary: str, r: np.random.Generator, file_name: str) -> dict[str, Any]:
    row = _empty_row(file_name, int(r.integers(0, 2)))
    if primary == "nonfundus":
        for f in READABILITY_FLAGS:
            row[f] = 0
        return row
    if primary.startswith("dr"):
        row["dr_grade"] = int(primary[2])
        row["is_dm"] = 1
    elif primary == "dm_only":
        row["is_dm"] = 1
    elif primary not in ("healthy", "unreadable"):
        row[f"is_{primary}"] = 1
    for flag, p in CO_OCCURRENCE.get(primary, {}).items():
        if r.random() < p:
            row[flag] = 1
    if primary in ("htr", "rvo", "gc", "amd") and r.random() < 0.08:   # diabetics have them too
        row["is_dm"] = 1
        if r.random() < 0.5:
            row["dr_grade"] = int(r.integers(1, 3))
    if primary == "unreadable":
        region = int(r.integers(0, 3))
        row[READABILITY_FLAGS[1 + region]] = 0
    else:
        for f in READABILITY_FLAGS[1:]:
            if r.random() < P_UNREADABLE_REGION:
                row[f] = 0
    return coherent(row)


def coherent(row: dict[str, Any]) -> dict[str, Any]:
    """Enforce the schema's clinical rules on a row (used after every random draw)."""
    if row["is_fundus"] == 0:
        for f in DISEASE_FLAGS:
            row[f] = 0
        row["dr_grade"] = 0
        for f in READABILITY_FLAGS[1:]:
            row[f] = 0
    if row["dr_grade"] > 0:
        row["is_dm"] = 1
    if row["dr_grade"] == 0:
        row["is_dme"] = 0
    return row


def sample_labels(n: int, seed: int, balance: str = "balanced") -> list[dict[str, Any]]:
    """n label rows keyed by schema.COLUMNS; row i depends only on (seed, i, balance)."""
    priors = {"balanced": BALANCED_PRIMARY, "natural": NATURAL_PRIMARY}.get(balance)
    if priors is None:
        raise ConfigError(f"synth.class_balance: expected 'balanced' or 'natural', got {balance!r}")
    names = list(priors)
    p = np.array([priors[k] for k in names], dtype=float)
    p /= p.sum()
    rows = []
    for i in range(n):
        r = make_rng(seed, "labels", balance, i)
        rows.append(_row_for(names[int(r.choice(len(names), p=p))], r, file_name_for(i)))
    return rows


# ---- benchmark label mixes -------------------------------------------------------------------

MESSIDOR2_GRADE_MIX = (1017, 270, 347, 75, 35)
FIVES_CLASSES = ("N", "A", "D", "G")   # normal, AMD, DR, glaucoma (file suffixes)
REFUGE_GLAUCOMA_SHARE = 0.10


def scaled_counts(total: int, mix: tuple[int, ...]) -> list[int]:
    """Largest-remainder apportionment of `total` over `mix`, every class at least 1 when possible."""
    weights = np.asarray(mix, dtype=float) / sum(mix)
    raw = weights * total
    counts = np.floor(raw).astype(int)
    for k in np.argsort(-(raw - counts), kind="stable")[: total - counts.sum()]:
        counts[k] += 1
    for k in range(len(counts)):           # keep rare grades present in small stand-ins
        if counts[k] == 0 and total >= len(counts):
            counts[int(np.argmax(counts))] -= 1
            counts[k] = 1
    return counts.tolist()


def _shuffled(rows: list[dict[str, Any]], seed: int, key: str) -> list[dict[str, Any]]:
    order = make_rng(seed, key, "order").permutation(len(rows))
    return [rows[i] for i in order]


def messidor2_labels(n: int, seed: int) -> list[dict[str, Any]]:
    """Rows for the MESSIDOR-2 stand-in: the real 1017/270/347/75/35 grade mix scaled to n."""
    rows = []
    for grade, count in enumerate(scaled_counts(n, MESSIDOR2_GRADE_MIX)):
        for j in range(count):
            r = make_rng(seed, "messidor2", grade, j)
            row = _empty_row("", int(r.integers(0, 2)))
            row["dr_grade"] = grade
            row["is_dm"] = 1                      # MESSIDOR-2 is a diabetic screening set
            row["is_dme"] = int(grade >= 1 and r.random() < (0.05, 0.05, 0.25, 0.45, 0.45)[grade])
            rows.append(row)
    return _shuffled(rows, seed, "messidor2")


def fives_labels(n: int, seed: int) -> list[dict[str, Any]]:
    """Rows for the FIVES stand-in: 4 equal classes, one disease each; `fives_class` holds A/D/G/N."""
    if n % 4:
        raise ConfigError(f"synth.fives_size: expected a multiple of 4, got {n}")
    rows = []
    for cls in FIVES_CLASSES:
        for j in range(n // 4):
            r = make_rng(seed, "fives", cls, j)
            row = _empty_row("", int(r.integers(0, 2)))
            if cls == "A":
                row["is_amd"] = 1
            elif cls == "G":
                row["is_gc"] = 1
            elif cls == "D":
                row["dr_grade"] = int(r.choice([1, 2, 3, 4], p=[0.15, 0.4, 0.25, 0.2]))
                row["is_dm"] = 1
            row["fives_class"] = cls
            rows.append(row)
    return _shuffled(rows, seed, "fives")


def refuge_labels(n: int, seed: int) -> list[dict[str, Any]]:
    """Rows for the REFUGE stand-in: 10% glaucoma."""
    n_g = max(1, int(round(n * REFUGE_GLAUCOMA_SHARE)))
    rows = []
    for j in range(n):
        r = make_rng(seed, "refuge", j)
        row = _empty_row("", int(r.integers(0, 2)))
        row["is_gc"] = int(j < n_g)
        rows.append(row)
    return _shuffled(rows, seed, "refuge")


# ---- tables for the manifest -------------------------------------------------------------------

def prevalence_table(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Prevalence of every flag and DR grade, and the pairwise co-occurrence counts of disease flags."""
    n = max(len(rows), 1)
    prevalence = {f: sum(r[f] for r in rows) / n for f in FLAG_COLUMNS}
    grades = {str(g): sum(r["dr_grade"] == g for r in rows) / n for g in range(5)}
    co = {}
    for a, b in itertools.combinations(DISEASE_FLAGS, 2):
        c = sum(1 for r in rows if r[a] and r[b])
        if c:
            co[f"{a}&{b}"] = c
    healthy = sum(1 for r in rows if r["is_fundus"] and r["dr_grade"] == 0
                  and not any(r[f] for f in DISEASE_FLAGS)) / n
    return {"n": len(rows), "prevalence": prevalence, "dr_grade": grades, "healthy": healthy,
            "co_occurrence": co}
