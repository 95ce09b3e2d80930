"""Frames that are not fundus photographs (is_fundus = 0).

The corpus holds five kinds; two more (slit-lamp photo, document scan) are reserved for an
ablation and never appear in the corpus, so a model can be tested on unseen non-fundus frames.
One corpus kind is real: crops of the photographs that ship with scikit-image and matplotlib
(NATURAL_PHOTOS), so "not a fundus photograph" is learnt from photographs, not only from flat drawings.
"""
from __future__ import annotations

import functools

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from ..errors import ConfigError
from ..seeding import derive_seed

CORPUS_KINDS = ("external_eye", "blank_flash", "room_scene", "test_chart", "natural_photo")
RESERVED_KINDS = ("slit_lamp", "document_scan")
ALL_KINDS = CORPUS_KINDS + RESERVED_KINDS
# the colours fundus cameras print their date stamps and banners in
STAMP_COLOURS = ((230, 230, 230), (70, 230, 70), (230, 230, 80))
# a share of the sample photographs as a fundus camera takes them when it is pointed at the room:
# dim, under its warm light, with its date stamp
CAMERA_ROOM_P = 0.35


# scikit-image's bundled sample photographs (skimage.data names; licences in data_manifests/natural_photos.yaml),
# without its two fundus photographs (retina, microaneurysms) and those the dev set holds out
# (data.devset.SKIMAGE_HELD_OUT), and matplotlib's portrait photograph (a file of its sample data).
NATURAL_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "brick", "grass",
                  "gravel", "camera", "text", "cell", "grace_hopper.jpg")


@functools.lru_cache(maxsize=None)
def _natural_photo(name: str) -> Image.Image:
    if name.endswith(".jpg"):  # matplotlib's sample data
        from matplotlib.cbook import get_sample_data

        from ..data.datasets import open_image_bytes

        with get_sample_data(name) as f:
            return open_image_bytes(f.read(), f"matplotlib sample data {name}").convert("RGB")
    import skimage.data

    return Image.fromarray(np.asarray(getattr(skimage.data, name)())).convert("RGB")


def _natural_frame(r: np.random.Generator, s: int) -> Image.Image:
    """A seeded crop of one sample photograph, turned, tinted and softened; half of them inside a
    round field on black as a fundus camera frames its picture, so the frame alone says nothing."""
    img = _natural_photo(NATURAL_PHOTOS[int(r.integers(0, len(NATURAL_PHOTOS)))])
    w, h = img.size
    side = int(min(w, h) * r.uniform(0.35, 1.0))
    x0, y0 = int(r.integers(0, w - side + 1)), int(r.integers(0, h - side + 1))
    img = img.crop((x0, y0, x0 + side, y0 + side)).rotate(float(r.uniform(-25, 25)), Image.BILINEAR)
    img = img.resize((s, s), Image.BILINEAR)
    if r.random() < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    arr = np.asarray(img, np.float32) * np.exp(r.normal(0, 0.15, 3))[None, None, :] * r.uniform(0.6, 1.3)
    if r.random() < 0.5:
        yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
        arr *= (np.hypot(yy - (s - 1) / 2, xx - (s - 1) / 2) < s * r.uniform(0.4, 0.5))[..., None]
    out = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    out = out.filter(ImageFilter.GaussianBlur(float(r.uniform(0, 1.0)) * s / 128))
    if r.random() < CAMERA_ROOM_P:
        warm = np.array([1.0, r.uniform(0.5, 0.8), r.uniform(0.3, 0.6)], np.float32) * r.uniform(0.15, 0.5)
        out = Image.fromarray(np.clip(np.asarray(out, np.float32) * warm, 0, 255).astype(np.uint8))
        if s >= 64:
            stamp = f"{int(r.integers(1, 29)):02d}.{int(r.integers(1, 13)):02d}.20{int(r.integers(5, 25)):02d}"
            top = r.random() < 0.5
            ImageDraw.Draw(out).text((s * 0.55 if top else 3, 2 if top else s - 12), stamp,
                                     fill=STAMP_COLOURS[int(r.integers(0, len(STAMP_COLOURS)))])
    return out


def _c(r: np.random.Generator, base: tuple[int, int, int], jitter: int = 25) -> tuple[int, int, int]:
    return tuple(int(np.clip(b + r.integers(-jitter, jitter + 1), 0, 255)) for b in base)


def render_nonfundus(kind: str, seed: int, index: int, size: int) -> Image.Image:
    """One non-fundus frame of `kind`, a pure function of (kind, seed, index, size)."""
    if kind not in ALL_KINDS:
        raise ConfigError(f"non-fundus kind {kind!r} is unknown; expected one of {ALL_KINDS}")
    r = np.random.default_rng(derive_seed(seed, index, "nonfundus", kind))
    s = size
    if kind == "natural_photo":
        return _natural_frame(r, s)
    if kind == "blank_flash":
        yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) / s
        cx, cy = r.uniform(0.3, 0.7, 2)
        glow = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / r.uniform(0.05, 0.3))
        tint = np.array(_c(r, (200, 180, 150), 50), np.float32)
        arr = tint[None, None, :] * (r.uniform(0.1, 0.5) + 0.8 * glow[..., None])
        return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    img = Image.new("RGB", (s, s), _c(r, (60, 50, 45), 40))
    d = ImageDraw.Draw(img)
    if kind == "external_eye":
        img.paste(_c(r, (200, 150, 125), 30), (0, 0, s, s))
        cx, cy = s * r.uniform(0.4, 0.6), s * r.uniform(0.42, 0.58)
        w, h = s * r.uniform(0.32, 0.45), s * r.uniform(0.13, 0.2)
        d.ellipse((cx - w, cy - h, cx + w, cy + h), fill=_c(r, (235, 230, 225), 12))
        ir = h * r.uniform(0.85, 1.1)
        d.ellipse((cx - ir, cy - ir, cx + ir, cy + ir), fill=_c(r, (90, 70, 50), 40))
        pr = ir * r.uniform(0.3, 0.5)
        d.ellipse((cx - pr, cy - pr, cx + pr, cy + pr), fill=(15, 12, 12))
        d.ellipse((cx + pr * 0.3, cy - pr * 0.8, cx + pr * 0.7, cy - pr * 0.4), fill=(250, 250, 250))
        d.arc((cx - w * 1.1, cy - h * 2.2, cx + w * 1.1, cy + h * 1.2), 200, 340,
              fill=_c(r, (90, 60, 45)), width=max(1, s // 40))
    elif kind == "room_scene":
        for _ in range(int(r.integers(4, 9))):
            x0, y0 = r.uniform(0, s, 2)
            x1, y1 = x0 + r.uniform(s * 0.1, s * 0.6), y0 + r.uniform(s * 0.1, s * 0.6)
            d.rectangle((x0, y0, x1, y1), fill=_c(r, (140, 130, 120), 80))
        d.rectangle((0, s * r.uniform(0.6, 0.8), s, s), fill=_c(r, (110, 90, 70), 30))
    elif kind == "test_chart":
        img.paste((235, 235, 230), (0, 0, s, s))
        n = int(r.integers(4, 9))
        for i in range(n):
            for j in range(n):
                if (i + j) % 2 == 0:
                    d.rectangle((i * s / n, j * s / n, (i + 1) * s / n, (j + 1) * s / n),
                                fill=_c(r, (30, 30, 30), 20))
        rr = s * r.uniform(0.15, 0.3)
        d.ellipse((s / 2 - rr, s / 2 - rr, s / 2 + rr, s / 2 + rr), outline=(200, 40, 40),
                  width=max(1, s // 50))
    elif kind == "slit_lamp":
        img.paste((8, 8, 10), (0, 0, s, s))
        cx, cy = s * r.uniform(0.4, 0.6), s / 2
        rr = s * r.uniform(0.25, 0.35)
        d.ellipse((cx - rr, cy - rr, cx + rr, cy + rr), fill=_c(r, (60, 70, 90), 20))
        x = cx + r.uniform(-rr / 2, rr / 2)
        d.rectangle((x - s * 0.015, cy - rr * 1.2, x + s * 0.015, cy + rr * 1.2), fill=(240, 235, 220))
    elif kind == "document_scan":
        img.paste(_c(r, (245, 243, 235), 8), (0, 0, s, s))
        y = s * 0.08
        while y < s * 0.92:
            d.line((s * 0.08, y, s * r.uniform(0.5, 0.92), y), fill=(40, 40, 40), width=max(1, s // 90))
            y += s * r.uniform(0.04, 0.07)
    return img.filter(ImageFilter.GaussianBlur(max(0.3, s / 400)))
