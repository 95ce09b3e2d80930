"""The honesty contract, as data: how large and how many the signs of each disease may be.

Sizes are in disc diameters (DD, ~1.5-1.8 mm in an adult eye), the unit clinicians grade with.
The renderer draws only inside these bounds and reports what it drew (its measurements dict);
tests check the measurements against this table, and the manifest records it, so later work
cannot quietly make a disease louder than it is in real photographs.
"""
from __future__ import annotations

import copy
from typing import Any

# 1.1: pertinent negatives in captions; 1.2: translucent tapering vessels, domain-randomised corpus;
# 1.3: natural photographs (scikit-image's and matplotlib's) among the non-fundus frames;
# 1.4: domain randomisation widened to the real dev photographs' colour; 1.5: lesions drawn in their
# photographed shapes (irregular blots, waxy exudates, feathered cotton-wool spots, loops of new
# vessels), a disc that shades into the retina with its vessels leaving the cup
GENERATOR_VERSION = "visionclip-synth-1.5"

# Geometry of a 45-degree fundus photograph.
GEOMETRY: dict[str, Any] = {
    "fov_diameter_dd": (7.0, 8.0),       # field of view spans ~7-8 disc diameters
    "disc_fovea_distance_dd": (2.3, 2.7),
    "fovea_offset_dd": (0.0, 0.25),      # fovea sits near the image centre
    "disc_aspect": (0.88, 1.0),          # vertical oval; tilted discs go further (see pm)
}

# Each lesion kind: (min, max) count and (min, max) diameter (or length) in DD.
LESIONS: dict[str, dict[str, Any]] = {
    # ICDR grade 1: microaneurysms only, and few of them.
    "dr1": {"microaneurysm": {"count": (1, 5), "size_dd": (1 / 20, 1 / 12)}},
    "dr2": {
        "microaneurysm": {"count": (4, 15), "size_dd": (1 / 20, 1 / 12)},
        "dot_blot_haemorrhage": {"count": (2, 8), "size_dd": (1 / 10, 1 / 4)},
        "hard_exudate": {"count": (0, 12), "size_dd": (1 / 20, 1 / 8)},
        "cotton_wool_spot": {"count": (0, 3), "size_dd": (1 / 5, 1 / 2.5)},
    },
    "dr3": {
        "microaneurysm": {"count": (10, 25), "size_dd": (1 / 20, 1 / 12)},
        "dot_blot_haemorrhage": {"count": (16, 32), "size_dd": (1 / 8, 1 / 3), "quadrants": 4},
        "hard_exudate": {"count": (0, 16), "size_dd": (1 / 20, 1 / 8)},
        "cotton_wool_spot": {"count": (1, 5), "size_dd": (1 / 5, 1 / 2.5)},
        "venous_beading": {"count": (1, 3), "size_dd": (1.0, 2.5)},     # beaded segment length
        "irma": {"count": (1, 3), "size_dd": (0.3, 0.8)},               # tuft extent
    },
    "dr4": {
        "microaneurysm": {"count": (8, 25), "size_dd": (1 / 20, 1 / 12)},
        "dot_blot_haemorrhage": {"count": (10, 30), "size_dd": (1 / 8, 1 / 3)},
        "hard_exudate": {"count": (0, 16), "size_dd": (1 / 20, 1 / 8)},
        "cotton_wool_spot": {"count": (0, 4), "size_dd": (1 / 5, 1 / 2.5)},
        "neovascularisation": {"count": (1, 3), "size_dd": (0.3, 1.0)},  # NVD/NVE frond extent
        "preretinal_haemorrhage": {"count": (0, 1), "size_dd": (0.8, 2.5), "p": 0.5},
    },
    "dme": {"hard_exudate": {"count": (6, 24), "size_dd": (1 / 20, 1 / 8),
                             "within_dd_of_fovea": 1.0, "circinate_p": 0.5}},
    "amd": {
        "drusen": {"count": (6, 40), "size_dd": (1 / 24, 1 / 4), "within_dd_of_fovea": 1.5},
        "pigment_clump": {"count": (0, 6), "size_dd": (1 / 20, 1 / 8)},
        "geographic_atrophy": {"count": (0, 1), "size_dd": (0.5, 1.5), "p": 0.3},
    },
    "htr": {
        "flame_haemorrhage": {"count": (1, 6), "size_dd": (1 / 6, 1 / 2)},
        "cotton_wool_spot": {"count": (0, 4), "size_dd": (1 / 5, 1 / 2.5)},
        "av_nicking": {"count": (1, 3), "size_dd": (0.1, 0.25)},
        "arteriole_calibre_factor": (0.55, 0.75),
    },
    "rvo": {
        "flame_haemorrhage": {"count": (8, 40), "size_dd": (1 / 6, 1 / 2)},
        "vein_dilation_factor": (1.3, 1.7),
        "central_p": 0.35,                 # else a branch occlusion: one sector only
    },
    "csc": {"serous_detachment": {"count": (1, 1), "size_dd": (1.0, 2.5)}},
    "erm": {"membrane_sheen": {"count": (1, 1), "size_dd": (1.0, 2.5)}},
    "pm": {
        "peripapillary_atrophy": {"count": (1, 1), "size_dd": (0.3, 1.0)},   # crescent width
        "macular_atrophy": {"count": (0, 3), "size_dd": (0.3, 1.2)},
        "disc_aspect": (0.6, 0.8),
        "tessellation_strength": (0.5, 1.0),
    },
    "aon": {"disc_pallor": (0.55, 0.9)},   # mix of the disc colour towards white
}

# Cup-to-disc ratio (vertical), continuous; the tails overlap as they do in real eyes.
CDR: dict[str, dict[str, float]] = {
    "normal": {"mean": 0.35, "sd": 0.08, "lo": 0.15, "hi": 0.6},
    "glaucoma": {"mean": 0.75, "sd": 0.08, "lo": 0.55, "hi": 0.92},
}
GLAUCOMA_NOTCH_P = 0.5

# Contrast: how far a sign may move the local colour (0 = invisible, 1 = full lesion colour).
# Real lesions are low-contrast; mild DR is hard in reality and must stay hard here.
CONTRAST: dict[str, tuple[float, float]] = {
    "microaneurysm": (0.45, 0.75),
    "dot_blot_haemorrhage": (0.5, 0.8),
    "flame_haemorrhage": (0.45, 0.75),
    "hard_exudate": (0.45, 0.8),
    "drusen": (0.3, 0.65),
    "cotton_wool_spot": (0.35, 0.6),
}


def clinical_parameters() -> dict[str, Any]:
    """A JSON-ready copy of the contract, for the manifest."""
    def plain(x: Any) -> Any:
        if isinstance(x, dict):
            return {k: plain(v) for k, v in x.items()}
        if isinstance(x, tuple):
            return [plain(v) for v in x]
        return x
    return plain(copy.deepcopy({"generator_version": GENERATOR_VERSION, "geometry": GEOMETRY,
                                "lesions": LESIONS, "cdr": CDR, "glaucoma_notch_p": GLAUCOMA_NOTCH_P,
                                "contrast": CONTRAST}))
