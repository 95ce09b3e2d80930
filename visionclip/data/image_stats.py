"""What a fundus photograph looks like, in numbers: statistics computed alike on real and rendered
eyes, so the renderer can be judged against photographs (notebook 01) and tuned (synth).

Every statistic is computed on the preprocessed image (data.transforms.Preprocess: the disk cropped,
the surround black) inside the disk, so a camera's framing does not enter. The vessel map is a simple
one (a black top-hat of the green channel), enough to compare sets, not to segment; its skeleton
(scikit-image) gives the tree's shape: tortuosity, branch points and tapering away from the optic
disc, which is found as the brightest smooth spot. Branching angles are not measured.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import ndimage

# name: what it measures (the table's and the figure's words)
STATISTICS = {
    "red": "mean red level in the disk (0-255)",
    "green": "mean green level in the disk (0-255)",
    "blue": "mean blue level in the disk (0-255)",
    "hue": "mean hue in the disk (degrees; 0 red, 30 orange, 60 yellow)",
    "saturation": "mean saturation in the disk (0-1)",
    "brightness": "mean brightness (max channel) in the disk (0-255)",
    "falloff": "brightness of the rim (0.75-0.95 of the radius) over the centre (< 0.3)",
    "sharpness": "mean absolute Laplacian of the green channel over its mean level",
    "noise": "median absolute difference of green from its 3x3 median, over its mean level",
    "spectral_slope": "slope of the green channel's radial power spectrum (log-log; steeper is smoother)",
    "vessel_fraction": "share of the disk covered by the vessel map",
    "vessel_calibre": "typical vessel width on the map's centre lines, over the disk's diameter",
    "vessel_contrast": "green darkening of vessels relative to their local background",
    "vessel_taper": "vessel width within half a radius of the optic disc over the width farther out",
    "tortuosity": "centre-line length between branch points over the straight distance (1 = straight)",
    "branching": "branch points per disk diameter of vessel centre line",
    "disc_contrast": "brightness of the brightest 1% of the disk over its median",
    "disc_size": "diameter of the bright optic-disc region over the disk's diameter",
}
_NEIGHBOURS = np.array([[1, 1, 1], [1, 0, 1], [1, 1, 1]])
_CONNECTED = np.ones((3, 3), bool)  # 8-connectivity
STEP = 4  # pixels between the points of a centre line's polyline (tortuosity)


def _disk_mask(rgb: np.ndarray) -> np.ndarray:
    """The fundus disk of a preprocessed image: pixels that are not the black surround, filled."""
    lit = rgb.max(axis=2) > 12
    return ndimage.binary_fill_holes(ndimage.binary_opening(lit, iterations=2))


def _radius_map(mask: np.ndarray) -> np.ndarray:
    """Each pixel's distance from the disk's centre, as a share of its radius."""
    ys, xs = np.nonzero(mask)
    cy, cx = ys.mean(), xs.mean()
    radius = np.sqrt(mask.sum() / np.pi)
    yy, xx = np.indices(mask.shape)
    return np.hypot(yy - cy, xx - cx) / max(radius, 1.0)


def _spectral_slope(green: np.ndarray) -> float:
    """Least-squares slope of log power against log frequency over the central square's spectrum."""
    n = green.shape[0] // 2
    c = green.shape[0] // 2
    patch = green[c - n // 2:c + n // 2, c - n // 2:c + n // 2]
    patch = (patch - patch.mean()) * np.outer(np.hanning(patch.shape[0]), np.hanning(patch.shape[1]))
    power = np.abs(np.fft.fftshift(np.fft.fft2(patch))) ** 2
    yy, xx = np.indices(power.shape)
    r = np.hypot(yy - power.shape[0] / 2, xx - power.shape[1] / 2).astype(int)
    radial = np.bincount(r.ravel(), power.ravel()) / np.maximum(np.bincount(r.ravel()), 1)
    f = np.arange(2, min(power.shape) // 2)
    return float(np.polyfit(np.log(f), np.log(radial[f] + 1e-12), 1)[0])


def image_statistics(rgb: np.ndarray) -> dict[str, float]:
    """The STATISTICS of one preprocessed RGB image (H x W x 3 uint8, the disk on black)."""
    x = rgb.astype(np.float32)
    mask = _disk_mask(rgb)
    if mask.sum() < 100:
        return {name: float("nan") for name in STATISTICS}
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    value, low = x.max(axis=2), x.min(axis=2)
    sat = np.where(value > 0, (value - low) / np.maximum(value, 1e-6), 0.0)
    radius = _radius_map(mask)
    centre, rim = mask & (radius < 0.3), mask & (radius > 0.75) & (radius < 0.95)
    inner = ndimage.binary_erosion(mask, iterations=4)  # away from the disk's edge, where filters ring
    gmean = max(float(g[mask].mean()), 1.0)
    lap = np.abs(ndimage.laplace(g))
    noise = np.abs(g - ndimage.median_filter(g, size=3))
    background = ndimage.grey_closing(g, size=(max(3, rgb.shape[0] // 25),) * 2)  # g with thin dark lines filled
    tophat = background - g  # dark and thin: vessels
    vessels = inner & (tophat > tophat[inner].mean() + 1.5 * tophat[inner].std())
    half_width = ndimage.distance_transform_edt(vessels)
    ridge = vessels & (half_width >= ndimage.maximum_filter(half_width, size=3))  # the vessels' centre lines
    diameter = 2 * np.sqrt(mask.sum() / np.pi)
    bright = value[mask]
    disc_centre, disc_size = _optic_disc(value, inner, diameter)
    return {
        "red": float(r[mask].mean()), "green": float(g[mask].mean()), "blue": float(b[mask].mean()),
        "hue": _mean_hue(x, mask), "saturation": float(sat[mask].mean()), "brightness": float(bright.mean()),
        "falloff": float(value[rim].mean() / max(value[centre].mean(), 1.0)) if rim.any() and centre.any() else float("nan"),
        "sharpness": float(lap[inner].mean() / gmean),
        "noise": float(np.median(noise[inner]) / gmean),
        "spectral_slope": _spectral_slope(g),
        "vessel_fraction": float(vessels.sum() / max(inner.sum(), 1)),
        "vessel_calibre": float(2 * half_width[ridge].mean() / diameter) if ridge.any() else float("nan"),
        "vessel_contrast": float((tophat[vessels] / np.maximum(background[vessels], 1.0)).mean()) if vessels.any() else float("nan"),
        **_tree_shape(vessels, half_width, disc_centre, diameter),
        "disc_contrast": float(np.percentile(bright, 99) / max(np.median(bright), 1.0)),
        "disc_size": disc_size,
    }


def _optic_disc(value: np.ndarray, inner: np.ndarray, diameter: float) -> tuple[tuple[int, int], float]:
    """The optic disc as the brightest spot of the smoothed brightness: its centre (row, column) and
    the diameter of the connected region brighter than halfway from the median to that peak, over the
    disk's diameter."""
    smooth = ndimage.gaussian_filter(np.where(inner, value, 0.0), sigma=max(diameter / 40, 1.0))
    smooth[~inner] = 0
    centre = np.unravel_index(int(np.argmax(smooth)), smooth.shape)
    median = float(np.median(smooth[inner]))
    region, _ = ndimage.label(smooth > median + 0.5 * (smooth[centre] - median), structure=_CONNECTED)
    area = float((region == region[centre]).sum())
    return (int(centre[0]), int(centre[1])), float(2 * np.sqrt(area / np.pi) / diameter)


def _walk(segment: np.ndarray) -> np.ndarray | None:
    """The pixels of a one-pixel-wide open path in order from one end to the other, or None when the
    segment is not one (a loop, or a clump where the skeleton did not thin)."""
    pixels = {tuple(p) for p in np.argwhere(segment)}
    def around(p):
        return [(p[0] + dy, p[1] + dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)
                if (dy or dx) and (p[0] + dy, p[1] + dx) in pixels]
    ends = [p for p in pixels if len(around(p)) == 1]
    if len(ends) != 2:
        return None
    path, seen = [ends[0]], {ends[0]}
    while True:
        step = [q for q in around(path[-1]) if q not in seen]
        if not step:
            break
        # prefer the 4-neighbour where a corner offers both: the path does not skip a pixel
        step.sort(key=lambda q: abs(q[0] - path[-1][0]) + abs(q[1] - path[-1][1]))
        path.append(step[0])
        seen.add(step[0])
    return np.array(path) if len(path) == len(pixels) else None


def _tree_shape(vessels: np.ndarray, half_width: np.ndarray, disc_centre: tuple[int, int],
                diameter: float) -> dict[str, float]:
    """Tortuosity, branch points and tapering of the vessel map's skeleton.

    Tortuosity: on each skeleton segment between branch points, the length of the polyline through
    every STEP-th pixel over the straight distance between its ends (sampling sparsely keeps a
    digital straight line's staircase from reading as curvature)."""
    from skimage.morphology import skeletonize

    nan = float("nan")
    skeleton = skeletonize(vessels)
    if skeleton.sum() < 10:
        return {"vessel_taper": nan, "tortuosity": nan, "branching": nan}
    neighbours = ndimage.convolve(skeleton.astype(np.int32), _NEIGHBOURS, mode="constant") * skeleton
    junctions = skeleton & (neighbours >= 3)
    n_branch_points = ndimage.label(junctions, structure=_CONNECTED)[1]
    segments, _ = ndimage.label(skeleton & ~ndimage.binary_dilation(junctions, structure=_CONNECTED),
                                structure=_CONNECTED)
    arcs, chords = [], []
    for k, where in enumerate(ndimage.find_objects(segments), 1):
        path = _walk(segments[where] == k)
        if path is None or len(path) < 2 * STEP:
            continue
        points = np.vstack([path[::STEP], path[-1:]]).astype(np.float64)
        chord = float(np.hypot(*(points[-1] - points[0])))
        if chord >= 2 * STEP:
            arcs.append(float(np.hypot(*np.diff(points, axis=0).T).sum()))
            chords.append(chord)
    yy, xx = np.nonzero(skeleton)
    from_disc = np.hypot(yy - disc_centre[0], xx - disc_centre[1]) / (diameter / 2)
    width = 2 * half_width[yy, xx]
    near, far = width[from_disc < 0.5], width[from_disc >= 0.5]
    return {"vessel_taper": float(near.mean() / far.mean()) if len(near) >= 5 and len(far) >= 5 else nan,
            "tortuosity": float(np.sum(arcs) / np.sum(chords)) if chords else nan,
            "branching": float(n_branch_points / (skeleton.sum() / diameter))}


def _mean_hue(x: np.ndarray, mask: np.ndarray) -> float:
    """The circular mean hue (degrees) of the masked pixels."""
    r, g, b = x[mask, 0], x[mask, 1], x[mask, 2]
    angle = np.arctan2(np.sqrt(3) * (g - b), 2 * r - g - b)  # the hue angle of the RGB hexcone
    return float(np.degrees(np.arctan2(np.sin(angle).mean(), np.cos(angle).mean())) % 360)


def compare_sets(sets: Mapping[str, Sequence[Mapping[str, float]]], reference: str) -> pd.DataFrame:
    """One row per statistic: each set's median and interquartile range; how far each other set's
    median lies from the reference set's, in the reference's interquartile ranges (the 'gap'); and
    the other sets' interquartile range over the reference's (the 'spread ratio'); and the share of
    the reference's images whose value lies within the other sets' 5th-95th percentiles ('inside':
    1 when every reference image looks, on this statistic, like one the other set could produce).
    Rows are sorted by the largest gap first."""
    frames = {name: pd.DataFrame(list(rows)) for name, rows in sets.items()}
    ref = frames[reference]
    rows = []
    for stat, meaning in STATISTICS.items():
        row: dict = {"statistic": stat, "meaning": meaning}
        q1, med, q3 = (float(ref[stat].quantile(q)) for q in (0.25, 0.5, 0.75))
        for name, frame in frames.items():
            row[f"{name} median"] = float(frame[stat].median())
            row[f"{name} IQR"] = float(frame[stat].quantile(0.75) - frame[stat].quantile(0.25))
        others = [f for n, f in frames.items() if n != reference]
        row["gap (reference IQRs)"] = max((abs(float(f[stat].median()) - med) / max(q3 - q1, 1e-9) for f in others),
                                          default=0.0)
        # below 1: the other set varies less than the reference (every image alike)
        row["spread ratio"] = min((float(f[stat].quantile(0.75) - f[stat].quantile(0.25)) / max(q3 - q1, 1e-9)
                                   for f in others), default=1.0)
        values = ref[stat].dropna()
        row["inside"] = min((float(values.between(f[stat].quantile(0.05), f[stat].quantile(0.95)).mean())
                             for f in others), default=1.0) if len(values) else float("nan")
        rows.append(row)
    return pd.DataFrame(rows).sort_values("gap (reference IQRs)", ascending=False, kind="stable").reset_index(drop=True)


__all__ = ["STATISTICS", "compare_sets", "image_statistics"]
