"""Images degraded on purpose for the robustness curves: blur and under-exposure by severity level."""
from __future__ import annotations


import numpy as np
from PIL import Image, ImageFilter

from ..errors import ConfigError

SEVERITIES = (0, 1, 2, 3)               # perturbation levels of the robustness curves
BLUR_SIGMA_PER_LEVEL = 0.01             # Gaussian blur sigma per level, as a share of the image side
EXPOSURE_STOPS_PER_LEVEL = 0.5          # under-exposure per level, in photographic stops (gain 2^-x)


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
