"""Contact sheet: one row per disease, one column per camera profile, for the data-exploration notebook."""
from __future__ import annotations

import math
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


# (title, label overrides, the scene item to centre on: (layer, shape), or "disc")
CLOSEUP_ROWS: tuple[tuple[str, dict[str, int], tuple[str, str] | str], ...] = (
    ("microaneurysms", {"dr_grade": 2, "is_dm": 1}, ("red", "dot")),
    ("dot-blot haemorrhage", {"dr_grade": 3, "is_dm": 1}, ("red", "blot")),
    ("hard exudates", {"dr_grade": 2, "is_dm": 1, "is_dme": 1}, ("yellow", "waxy")),
    ("cotton-wool spot", {"dr_grade": 3, "is_dm": 1}, ("white", "fluffy")),
    ("IRMA", {"dr_grade": 3, "is_dm": 1}, ("red", "tuft")),
    ("new vessels", {"dr_grade": 4, "is_dm": 1}, ("red", "frond")),
    ("preretinal haemorrhage", {"dr_grade": 4, "is_dm": 1}, ("red", "boat")),
    ("flame haemorrhages (RVO)", {"is_rvo": 1}, ("red", "flame")),
    ("drusen (AMD)", {"is_amd": 1}, ("drusen", "soft")),
    ("normal disc", {}, "disc"),
    ("glaucomatous disc", {"is_gc": 1}, "disc"),
    ("optic atrophy", {"is_aon": 1}, "disc"),
)


def closeup_scene(overrides: dict[str, int], target: tuple[str, str] | str, seed: int, size: int,
                  camera: str, tries: int = 60) -> tuple[dict[str, Any], tuple[float, float]]:
    """The first eye (index 0, 1, ...) whose plan holds `target` well inside the field, and where to
    look: its largest such lesion, or its disc. Raises LookupError when none of `tries` eyes has one."""
    from .renderer import plan_fundus

    for index in range(tries):
        scene = plan_fundus(sheet_row(overrides), seed, index, size, camera)["scene"]
        if target == "disc":
            return scene, tuple(scene["disc"])
        # well inside the field of view, so that the crop shows retina around it
        items = [it for it in scene["lesions"] if tuple(it[:2]) == target
                 and math.hypot(it[2] - size / 2, it[3] - size / 2) < 0.3 * size]
        if items:
            largest = max(items, key=lambda it: it[4])
            return scene, (largest[2], largest[3])
    raise LookupError(f"no {target} in {tries} eyes of {overrides}")


def lesion_closeups(seed: int = 0, size: int = 768, camera: str = "canon_cr2", width_dd: float = 1.5,
                    rows: Sequence[tuple[str, dict[str, int], tuple[str, str] | str]] = CLOSEUP_ROWS,
                    columns: int = 6, tile_inches: float = 1.7):
    """A matplotlib Figure: each sign up close, a crop `width_dd` disc diameters wide of an eye rendered
    at `size` px, centred on its largest lesion of that kind (the contact sheet's tiles are too small
    to show a lesion's shape)."""
    import matplotlib.pyplot as plt

    from .renderer import rasterise

    n_rows = -(-len(rows) // columns)
    fig, axes = plt.subplots(n_rows, columns, squeeze=False,
                             figsize=(tile_inches * columns, tile_inches * n_rows + 0.5))
    for ax in axes.flat:
        ax.axis("off")
    for ax, (title, overrides, target) in zip(axes.flat, rows):
        scene, (x, y) = closeup_scene(overrides, target, seed, size, camera)
        half = scene["dd"] * width_dd / 2
        crop = rasterise(scene).crop((round(x - half), round(y - half), round(x + half), round(y + half)))
        ax.imshow(np.asarray(crop))
        ax.set_title(title, fontsize=8)
    fig.suptitle(f"Rendered signs up close ({camera}, {size} px, crops {width_dd:g} disc diameters wide, "
                 f"seed {seed})", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    return fig
