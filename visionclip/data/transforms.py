"""Image preprocessing shared by training, evaluation and prediction, and the training augmentation.

One function prepares every photograph, rendered or real: RGB, crop to the fundus disk (the
camera's black surround, overlays and timestamps dropped), long side resized, zero-padded to
a square. The same function serves the stand-ins and the real releases, so the domain gap
measured in the book is the images', not the preprocessing's.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageChops, ImageFilter
from scipy import ndimage

from ..seeding import rng

_WORK_SIDE = 128          # long side of the thumbnail the foreground mask is computed on
_MIN_LEVEL = MIN_LEVEL = 15  # 8-bit level under which a pixel is camera black, whatever the exposure
_REL_LEVEL = 0.10         # ... or under this share of the image's bright level (99th percentile)
_MIN_AREA = 0.01          # a foreground smaller than this share of the frame is not a fundus disk

# ndimage.label's default 4-connectivity, built once: label() would rebuild it on every call.
_CROSS = ndimage.generate_binary_structure(2, 1)


def to_rgb(img: Image.Image) -> Image.Image:
    """8-bit RGB from any PIL mode (16-bit TIFFs are rescaled, palettes and alpha dropped)."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        img = _to_8bit(img)
    return img.convert("RGB")


_BLOCK_PIXELS = 1 << 19  # float64 work per block: 4 MiB


def _to_8bit(img: Image.Image) -> Image.Image:
    """A 16-bit, 32-bit integer or float grey image as 8-bit, its brightest finite level at 255.

    Scaled a block of rows at a time: the whole image in float64 (and its clipped copy) was 16 bytes
    a pixel, 400 MB for a 24 MP photograph in every decoding worker; now 1 byte a pixel and 4 MiB."""
    arr = np.asarray(img)  # the stored width: 2 bytes a pixel for I;16
    rows = max(1, _BLOCK_PIXELS // max(1, arr.shape[1]))
    blocks = [slice(r, r + rows) for r in range(0, arr.shape[0], rows)]
    top = 0.0
    for b in blocks:
        part = arr[b]
        if part.dtype.kind == "f":
            part = part[np.isfinite(part)]
        if part.size:
            top = max(top, float(part.max()))
    scale = 255.0 / (top or 1.0)
    out = np.empty(arr.shape, dtype=np.uint8)
    for b in blocks:
        x = arr[b] * scale  # float64, as before: the same levels
        np.nan_to_num(x, copy=False, nan=0.0, posinf=255.0, neginf=0.0)
        out[b] = np.clip(x, 0, 255, out=x)  # assignment truncates towards zero, as astype did
    return Image.fromarray(out, "L")


def _channel_max(img: Image.Image) -> Image.Image:
    r, g, b = img.split()
    return ImageChops.lighter(ImageChops.lighter(r, g), b)


def _rank3_rows(a: np.ndarray, op) -> np.ndarray:
    """op over each pixel and its upper and lower neighbour, edge rows replicated.

    Each neighbouring pair is combined once and shared by the two outputs that need it, and the
    replicated edge needs no padded copy: at the border op(a[0], a[0], a[1]) is just the pair.
    """
    if len(a) < 2:
        return a
    pair = op(a[:-1], a[1:])
    out = np.empty_like(a)
    out[0], out[-1] = pair[0], pair[-1]
    op(pair[:-1], pair[1:], out=out[1:-1])
    return out


def _rank3(a: np.ndarray, op) -> np.ndarray:
    """3x3 min or max filter (separable, edges replicated): the grey opening's two halves."""
    return _rank3_rows(_rank3_rows(a, op).T, op).T  # rows, then columns as the rows of the transpose


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """Background components that do not touch the frame are holes (dark lesions, the fovea)."""
    bg, n = ndimage.label(~mask, _CROSS)
    if n == 0:
        return mask
    # Per-label table instead of np.isin over every pixel: True for labels that are holes.
    hole = np.ones(n + 1, dtype=bool)
    hole[0] = False
    for edge in (bg[0], bg[-1], bg[:, 0], bg[:, -1]):
        hole[edge] = False
    if not hole.any():
        return mask
    return mask | hole[bg]


def _largest_component(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """The largest 4-connected component of `mask` and its pixel count (0 when `mask` is empty)."""
    labels, n = ndimage.label(mask, _CROSS)
    if n <= 1:  # the usual case: the mask is one component, so per-label counting is not needed
        return mask, int(np.count_nonzero(mask))
    sizes = np.bincount(labels.ravel())[1:]
    biggest = int(np.argmax(sizes))
    return labels == biggest + 1, int(sizes[biggest])


def _foreground(img: Image.Image) -> tuple[tuple[int, int, int, int], np.ndarray] | None:
    """Box of the fundus disk in `img`'s pixels and its mask on a thumbnail, or None when there is none.

    Threshold the per-pixel max channel of a box-filtered thumbnail (the red channel carries a
    fundus, and box filtering averages sensor noise away) after a 3x3 grey opening that cuts
    thin strokes (timestamps, overlay text), and keep the largest connected component.
    """
    rgb = to_rgb(img)
    w, h = rgb.size
    scale = min(1.0, _WORK_SIDE / max(w, h))
    small = rgb.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BOX) if scale < 1 else rgb
    level = _rank3(_rank3(np.asarray(_channel_max(small)), np.minimum), np.maximum)
    bright = float(np.percentile(level, 99))
    if bright < 2 * _MIN_LEVEL:
        return None  # a blank or black frame
    bright_enough = level > max(_MIN_LEVEL, _REL_LEVEL * bright)
    disk, area = _largest_component(bright_enough)
    if area < _MIN_AREA * bright_enough.size:
        return None
    disk = _fill_holes(disk)
    # One thumbnail pixel of margin: rim pixels are partly dark (vignetting, box-filter mixing).
    disk = _rank3(disk, np.logical_or)
    rows = np.flatnonzero(disk.any(axis=1))
    cols = np.flatnonzero(disk.any(axis=0))
    sw, sh = small.size
    fx, fy = w / sw, h / sh
    box = (max(0, math.floor(cols[0] * fx)), max(0, math.floor(rows[0] * fy)),
           min(w, math.ceil((cols[-1] + 1) * fx)), min(h, math.ceil((rows[-1] + 1) * fy)))
    return box, disk


def foreground_box(img: Image.Image) -> tuple[int, int, int, int] | None:
    """(left, top, right, bottom) of the fundus disk in `img`'s pixels, or None when there is none."""
    found = _foreground(img)
    return None if found is None else found[0]


def _nonzero_to_255(mask: Image.Image) -> Image.Image:
    """An L image with every non-zero level set to 255.

    ImageChops.add computes (a + b) / scale clipped to 0..255, so with scale 1/255 any a > 0
    saturates at 255 and 0 stays 0: one C pass, where Image.point would first call a lambda or
    round a 256-entry table in Python on every image.
    """
    return ImageChops.add(mask, mask, scale=1 / 255)


def _crop_and_mask(rgb: Image.Image, found, out_size: tuple[int, int] | None) -> Image.Image:
    """Crop to the disk, resize to `out_size` (long side) when given, black out the surround.

    The mask is applied at the output resolution, so a 2048-px photograph costs no full-size
    compositing.
    """
    if found is None:
        return rgb if out_size is None else rgb.resize(out_size, Image.BICUBIC, reducing_gap=3.0)
    box, disk = found
    crop = rgb if box == (0, 0) + rgb.size else rgb.crop(box)
    if out_size is not None and out_size != crop.size:
        crop = crop.resize(out_size, Image.BICUBIC, reducing_gap=3.0)
    if disk.all():
        return crop
    sh, sw = disk.shape
    fx, fy = rgb.size[0] / sw, rgb.size[1] / sh
    keep = Image.fromarray(disk.astype(np.uint8) * 255, "L").resize(
        crop.size, Image.BILINEAR, box=(box[0] / fx, box[1] / fy, box[2] / fx, box[3] / fy))
    return Image.composite(crop, Image.new("RGB", crop.size), _nonzero_to_255(keep))


def crop_fundus(img: Image.Image) -> Image.Image:
    """`img` in RGB cropped to the fundus disk, everything outside the disk set to black.

    Blacking out the surround removes overlay text and banners that sit in the corners of the
    disk's bounding box (a camera signature the model must not learn). Unchanged (RGB) when no
    disk is found.
    """
    rgb = to_rgb(img)
    return _crop_and_mask(rgb, _foreground(rgb), None)


def preprocess_fundus(img: Image.Image, size: int, flair_exact: bool = False) -> Image.Image:
    """RGB, foreground crop, long side resized to `size`, zero-padded to `size` x `size`.

    The padding is centred by default; `flair_exact` pads at the bottom and right as FLAIR does,
    so the two can be compared. The surround of the disk is black in both.
    """
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    rgb = to_rgb(img)
    found = _foreground(rgb)
    box = found[0] if found is not None else (0, 0) + rgb.size
    w, h = box[2] - box[0], box[3] - box[1]
    s = size / max(w, h)
    nw, nh = max(1, min(size, round(w * s))), max(1, min(size, round(h * s)))
    disk = _crop_and_mask(rgb, found, (nw, nh))
    if (nw, nh) == (size, size):
        return disk
    canvas = Image.new("RGB", (size, size))
    offset = (0, 0) if flair_exact else ((size - nw) // 2, (size - nh) // 2)
    canvas.paste(disk, offset)
    return canvas


@dataclass(frozen=True)
class Preprocess:
    """Everything that decides an image's pixels before the towers, as one value: the side, and
    FLAIR's bottom-right padding (centred otherwise). Training, evaluation, embedding, predict and
    the robustness perturbations all go through data.datasets.read_image with one of these, so
    their preprocessing cannot drift apart."""
    size: int
    flair_exact: bool = False

    def __post_init__(self):
        if int(self.size) < 1:
            raise ValueError(f"Preprocess: size must be positive, got {self.size}")

    def __call__(self, img: Image.Image) -> Image.Image:
        return preprocess_fundus(img, self.size, self.flair_exact)

    @classmethod
    def for_evaluation(cls, profile) -> "Preprocess":
        """What a run's evaluation uses: the training size, FLAIR's padding under eval.flair_exact."""
        return cls(int(profile.train.image_size), bool(profile.eval.flair_exact))


LUMA = (0.299, 0.587, 0.114)  # grey level of an RGB pixel (ITU-R 601), for contrast and saturation


@dataclass(frozen=True)
class AugmentDraw:
    """One image's augmentation: the crop box in pixels of the square, the rotation in degrees
    (counter-clockwise), a vertical flip, the photometric factors, and the blur radius (0: none)."""
    crop: tuple[float, float, float, float]
    rotation: float
    vflip: bool
    brightness: float
    contrast: float
    saturation: float
    cast: np.ndarray
    gamma: float
    blur_radius: float


class TrainAugment:
    """Fundus-suited augmentation of a preprocessed square image, a pure function of (seed, epoch, index).

    Each call draws from its own generator seeded by (seed, epoch, index), never from a global
    RNG, so a resumed run or a different worker count sees exactly the same images.

    No horizontal flip: mirroring turns a right eye into a left one (the disc moves to the other
    side of the macula) while the label eye_side and captions that name the eye stay unchanged,
    so it would teach image-text pairs that contradict each other. A vertical flip keeps the
    disc nasal and the eye side intact; it only swaps the superior and inferior hemifields,
    which no label of the schema encodes, so it is allowed.
    """

    def __init__(self, size: int, seed: int, *, max_rotation: float = 15.0, min_area: float = 0.80,
                 vflip_p: float = 0.5, brightness: float = 0.2, contrast: float = 0.2,
                 saturation: float = 0.15, gamma: float = 0.25, colour_cast: float = 0.07,
                 blur_p: float = 0.25):
        self.size, self.seed = int(size), int(seed)
        self.max_rotation, self.min_area, self.vflip_p = max_rotation, min_area, vflip_p
        self.brightness, self.contrast, self.saturation = brightness, contrast, saturation
        self.gamma, self.colour_cast, self.blur_p = gamma, colour_cast, blur_p

    def draw(self, epoch: int, index: int) -> AugmentDraw:
        """Every random number of one image's augmentation, from its own (seed, epoch, index) generator;
        the per-item (PIL) and the batched (data.batch_augment) versions apply the same draws."""
        g = rng(self.seed, "augment", int(epoch), int(index))
        s = self.size
        area = g.uniform(self.min_area, 1.0)
        aspect = math.exp(g.uniform(math.log(0.9), math.log(1.1)))
        cw, ch = min(s, s * math.sqrt(area * aspect)), min(s, s * math.sqrt(area / aspect))
        x0, y0 = g.uniform(0, s - cw), g.uniform(0, s - ch)
        rotation = g.uniform(-self.max_rotation, self.max_rotation)
        vflip = g.random() < self.vflip_p
        brightness = g.uniform(1 - self.brightness, 1 + self.brightness)
        contrast = g.uniform(1 - self.contrast, 1 + self.contrast)
        saturation = g.uniform(1 - self.saturation, 1 + self.saturation)
        cast = g.uniform(1 - self.colour_cast, 1 + self.colour_cast, size=3).astype(np.float32)
        gamma = math.exp(g.uniform(-self.gamma, self.gamma))
        blur = g.random() < self.blur_p
        radius = g.uniform(0.2, 0.8) * s / 128.0  # drawn always, so later draws do not shift
        return AugmentDraw((x0, y0, x0 + cw, y0 + ch), rotation, vflip, brightness, contrast, saturation, cast,
                           gamma, radius if blur else 0.0)

    def __call__(self, img: Image.Image, epoch: int, index: int) -> Image.Image:
        img = to_rgb(img)
        if img.size != (self.size, self.size):
            img = preprocess_fundus(img, self.size)
        d, s = self.draw(epoch, index), self.size

        # Random resized crop with mild scale and aspect, resampled once back to size.
        img = img.resize((s, s), Image.BILINEAR, box=d.crop)
        img = img.rotate(d.rotation, Image.BILINEAR, fillcolor=(0, 0, 0))
        if d.vflip:
            img = img.transpose(Image.Transpose.FLIP_TOP_BOTTOM)

        # Photometric jitter on the disk only: the camera surround stays black.
        inside = (np.asarray(_channel_max(img)) > _MIN_LEVEL)[..., None].astype(np.float32)
        x = np.asarray(img, dtype=np.float32) * (1.0 / 255.0)
        x = x * d.brightness
        grey = x @ np.array(LUMA, np.float32)
        mean = float((grey * inside[..., 0]).sum()) / max(float(inside.sum()), 1.0)
        x = (x - mean) * d.contrast + mean
        grey = x @ np.array(LUMA, np.float32)
        x = grey[..., None] + (x - grey[..., None]) * d.saturation
        x = x * d.cast
        x = np.clip(x, 0.0, 1.0) ** d.gamma
        x = x * inside
        img = Image.fromarray(np.rint(x * 255.0).astype(np.uint8), "RGB")

        if d.blur_radius:
            img = img.filter(ImageFilter.GaussianBlur(d.blur_radius))
        return img


__all__ = ["AugmentDraw", "LUMA", "MIN_LEVEL", "Preprocess", "TrainAugment", "crop_fundus", "foreground_box",
           "preprocess_fundus", "to_rgb"]
