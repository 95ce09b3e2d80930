"""Contact sheet: one row per disease, one column per camera profile, for the data-exploration notebook."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .cameras import CAMERAS
from .labels import _empty_row

# (row title, label overrides)
SHEET_ROWS: tuple[tuple[str, dict[str, int]], ...] = (
    ("normal", {}),
    ("DR 1 mild", {"dr_grade": 1, "is_dm": 1}),
    ("DR 2 moderate", {"dr_grade": 2, "is_dm": 1}),
    ("DR 3 severe", {"dr_grade": 3, "is_dm": 1}),
    ("DR 4 proliferative", {"dr_grade": 4, "is_dm": 1}),
    ("DME (DR 2)", {"dr_grade": 2, "is_dm": 1, "is_dme": 1}),
    ("AMD", {"is_amd": 1}),
    ("glaucoma", {"is_gc": 1}),
    ("optic atrophy", {"is_aon": 1}),
    ("CSC", {"is_crp": 1}),
    ("ERM", {"is_em": 1}),
    ("hypertensive", {"is_htr": 1}),
    ("path. myopia", {"is_pm": 1}),
    ("RVO", {"is_rvo": 1}),
    ("unreadable", {"is_retinal_region_readable": 0}),
    ("non-fundus", {"is_fundus": 0, "is_macular_readable": 0, "is_optic_disc_readable": 0,
                    "is_retinal_region_readable": 0}),
)


def sheet_row(overrides: dict[str, int], eye_side: int = 0) -> dict[str, Any]:
    row = _empty_row("sheet.jpg", eye_side)
    row.update(overrides)
    return row


def contact_sheet(seed: int = 0, size: int = 192, cameras: Sequence[str] | None = None,
                  rows: Sequence[tuple[str, dict[str, int]]] = SHEET_ROWS, tile_inches: float = 1.6):
    """A matplotlib Figure: disease (rows) x camera profile (columns), each tile rendered at `size`."""
    import matplotlib.pyplot as plt

    from .renderer import render_fundus

    cameras = list(cameras or CAMERAS)
    fig, axes = plt.subplots(len(rows), len(cameras), squeeze=False,
                             figsize=(tile_inches * len(cameras) + 1.2, tile_inches * len(rows) + 0.6))
    for i, (title, overrides) in enumerate(rows):
        for j, cam in enumerate(cameras):
            img, _ = render_fundus(sheet_row(overrides, eye_side=(i + j) % 2), seed, i * 100 + j, size, cam)
            ax = axes[i][j]
            ax.imshow(np.asarray(img))
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(cam, fontsize=8)
            if j == 0:
                ax.set_ylabel(title, fontsize=8)
    fig.suptitle(f"Rendered fundus stand-ins: disease x camera profile (seed {seed}, {size} px)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.985))
    return fig
