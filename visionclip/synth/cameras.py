"""Camera profiles: what a fundus camera does to the light before the file exists.

Six profiles render the training corpus and three others are kept for the benchmark stand-ins,
so that zero-shot evaluation happens on a camera domain never seen in pre-training.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..errors import ConfigError


@dataclass(frozen=True)
class CameraProfile:
    name: str
    fov_shape: str                      # "circle" | "circle_cut" (flat top/bottom) | "rect" (crop)
    fov_radius: float                   # FOV radius as a fraction of half the image side
    cut: float                          # circle_cut / rect: kept half-height as a fraction of half side
    gain: tuple[float, float, float]    # white balance / colour cast, per RGB channel
    gamma: float
    exposure: tuple[float, float]       # per-image brightness range
    vignette: float                     # darkening at the FOV rim (0..1)
    blur: float                         # optical softness, px at 256 px
    resolution: float                   # sensor resolution relative to the output (<1 = upscaled)
    noise: float                        # sensor noise sigma (0..255 scale)
    jpeg_quality: tuple[int, int]
    overlay: str                        # "" | "timestamp" | "banner"
    artefact: str                       # "" | "flare" | "dust" | "ring"
    role: str                           # "train" | "heldout"


CAMERAS: dict[str, CameraProfile] = {c.name: c for c in [
    CameraProfile("topcon_nw", "circle", 0.94, 1.0, (1.00, 0.97, 0.92), 1.00, (0.95, 1.08), 0.35,
                  0.4, 1.0, 2.0, (88, 95), "", "", "train"),
    CameraProfile("canon_cr2", "circle_cut", 1.02, 0.90, (1.04, 0.95, 0.85), 0.95, (0.9, 1.05), 0.45,
                  0.5, 1.0, 2.5, (85, 93), "timestamp", "", "train"),
    CameraProfile("zeiss_visucam", "circle", 0.90, 1.0, (0.97, 1.00, 1.00), 1.05, (0.95, 1.1), 0.30,
                  0.3, 1.0, 1.5, (90, 96), "banner", "ring", "train"),
    CameraProfile("kowa_nonmyd", "circle", 0.96, 1.0, (1.06, 0.92, 0.80), 0.90, (0.85, 1.0), 0.55,
                  0.7, 0.85, 3.5, (80, 90), "", "dust", "train"),
    CameraProfile("optos_crop", "rect", 1.45, 0.80, (0.92, 1.02, 0.90), 1.10, (0.9, 1.05), 0.15,
                  0.5, 0.9, 3.0, (82, 92), "", "", "train"),
    CameraProfile("smartphone_lens", "circle", 0.70, 1.0, (1.08, 0.98, 0.95), 0.85, (0.8, 1.15), 0.70,
                  1.1, 0.6, 6.0, (70, 85), "", "flare", "train"),
    CameraProfile("nidek_afc", "circle_cut", 0.98, 0.85, (1.00, 1.00, 0.96), 1.00, (0.92, 1.08), 0.40,
                  0.45, 0.95, 2.5, (84, 94), "timestamp", "", "heldout"),
    CameraProfile("centervue_eidon", "rect", 1.30, 0.86, (0.95, 0.98, 1.05), 1.15, (0.95, 1.1), 0.20,
                  0.25, 1.0, 1.5, (88, 96), "", "", "heldout"),
    CameraProfile("handheld_pictor", "circle", 0.82, 1.0, (1.10, 0.93, 0.84), 0.88, (0.8, 1.1), 0.60,
                  0.9, 0.7, 5.0, (72, 88), "banner", "flare", "heldout"),
]}

TRAIN_CAMERAS = tuple(n for n, c in CAMERAS.items() if c.role == "train")
HELDOUT_CAMERAS = tuple(n for n, c in CAMERAS.items() if c.role == "heldout")


def get_camera(name: str) -> CameraProfile:
    try:
        return CAMERAS[name]
    except KeyError:
        raise ConfigError(f"camera profile {name!r} is unknown; expected one of {sorted(CAMERAS)}") from None


def check_disjoint(train: list[str] | tuple[str, ...], heldout: list[str] | tuple[str, ...]) -> None:
    """Benchmarks must be rendered by cameras the corpus never used."""
    for n in list(train) + list(heldout):
        get_camera(n)
    both = sorted(set(train) & set(heldout))
    if both:
        raise ConfigError(f"synth.train_cameras and synth.heldout_cameras share {both}; they must be disjoint")


def camera_record(name: str) -> dict:
    return dataclasses.asdict(get_camera(name))
