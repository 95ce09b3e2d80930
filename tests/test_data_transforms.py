"""Preprocessing on the three field-of-view shapes, with noise and overlays; seeded augmentation."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw
from scipy import ndimage

from visionclip.data.transforms import TrainAugment, crop_fundus, foreground_box, preprocess_fundus
from visionclip.data.transforms import _fill_holes, _rank3

H, W = 300, 400


def fundus(shape: str, seed: int = 0, overlay: bool = True) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """A synthetic photograph and the true box of its fundus: 'circle', 'cut' or 'rect'."""
    g = np.random.default_rng(seed)
    yy, xx = np.mgrid[:H, :W].astype(np.float32)
    if shape == "circle":
        cx, cy, r = 200, 150, 130
        box = (70, 20, 330, 280)
    elif shape == "cut":      # a circle taller than the sensor: cut at top and bottom
        cx, cy, r = 200, 150, 170
        box = (30, 0, 370, 300)
    else:                     # a rectangular crop: retina fills the frame
        cx, cy, r = 200, 150, 10_000
        box = (0, 0, W, H)
    dist = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2)
    inside = dist < r
    shade = np.clip(1.0 - 0.55 * (dist / min(r, 250)) ** 2, 0.35, 1.0)   # vignetting: dark rim
    arr = np.zeros((H, W, 3), np.float32)
    arr[..., 0], arr[..., 1], arr[..., 2] = 190 * shade, 90 * shade, 40 * shade
    arr += g.normal(0, 6, size=arr.shape)                               # sensor noise everywhere
    arr[~inside] = g.normal(3, 3, size=((~inside).sum(), 3))             # noisy camera black
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    if overlay and shape == "circle":
        d = ImageDraw.Draw(img)
        d.text((4, H - 14), "2024-05-01 10:32 OD", fill=(255, 255, 255))  # timestamp in the black corner
        d.text((W - 60, 4), "ID 00417", fill=(230, 230, 60))
    return img, box


@pytest.mark.parametrize("shape", ["circle", "cut", "rect"])
def test_foreground_box_finds_the_disk(shape):
    img, truth = fundus(shape)
    box = foreground_box(img)
    assert box is not None
    tol = 0.03 * W
    assert all(abs(a - b) <= tol for a, b in zip(box, truth)), (box, truth)
    assert crop_fundus(img).size == (box[2] - box[0], box[3] - box[1])


def test_overlay_inside_the_box_but_outside_the_disk_is_blacked_out():
    img, (l, t, r, b) = fundus("circle", overlay=False)
    ImageDraw.Draw(img).rectangle((l + 2, t + 2, l + 30, t + 12), fill=(255, 255, 255))  # banner in the corner
    crop = np.asarray(crop_fundus(img))
    assert crop[:16, :34].max() < 30                     # the banner is gone
    assert crop[crop.shape[0] // 2, crop.shape[1] // 2].max() > 100   # the disk is kept


def test_blank_frame_is_left_alone():
    black = Image.new("RGB", (50, 40))
    assert foreground_box(black) is None and crop_fundus(black).size == (50, 40)
    assert preprocess_fundus(black, 32).size == (32, 32)


@pytest.mark.parametrize("shape", ["circle", "cut", "rect"])
def test_preprocess_centred_and_flair_padding(shape):
    img, (l, t, r, b) = fundus(shape)
    out = np.asarray(preprocess_fundus(img, 64))
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    w, h = r - l, b - t
    content_h = round(h * 64 / max(w, h))
    rows = np.flatnonzero(out.max(axis=(1, 2)) > 40)
    cols = np.flatnonzero(out.max(axis=(0, 2)) > 40)
    # content spans the long side, and the padding is split evenly (centred)
    assert cols[0] <= 2 and cols[-1] >= 61
    assert abs(rows[0] - (63 - rows[-1])) <= 2
    assert abs((rows[-1] - rows[0] + 1) - content_h) <= 3
    flair = np.asarray(preprocess_fundus(img, 64, flair_exact=True))
    frows = np.flatnonzero(flair.max(axis=(1, 2)) > 40)
    assert frows[0] <= 2                                  # content at the top, padding at the bottom
    if content_h < 60:
        assert flair[-2:].max() == 0 and not np.array_equal(flair, out)


def test_preprocess_any_mode_and_size():
    grey = Image.fromarray((np.random.default_rng(0).random((30, 50)) * 255).astype(np.uint8), "L")
    assert preprocess_fundus(grey, 17).size == (17, 17)
    rgba = Image.new("RGBA", (20, 20), (200, 100, 50, 128))
    assert preprocess_fundus(rgba, 8).mode == "RGB"


def test_dark_lesion_inside_the_disk_is_kept():
    img, _ = fundus("circle", overlay=False)
    ImageDraw.Draw(img).ellipse((180, 130, 220, 170), fill=(9, 6, 4))  # under the threshold: a hole in the mask
    box = foreground_box(img)
    crop = np.asarray(crop_fundus(img))
    assert crop[150 - box[1], 200 - box[0]].tolist() == [9, 6, 4]    # filled, not blacked out


def test_fast_mask_helpers_match_their_plain_definitions():
    """The foreground's hand-tuned helpers give exactly what numpy's plain versions give."""
    g = np.random.default_rng(0)
    for i in range(300):
        shape = tuple(g.integers(1, 70, size=2))
        a = (g.integers(0, 256, size=shape) // g.integers(1, 80)).astype(np.uint8)  # ties, like dark frames
        padded = np.pad(a, 1, mode="edge")
        windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3))
        assert np.array_equal(_rank3(a, np.minimum), windows.min(axis=(2, 3)))
        assert np.array_equal(_rank3(a, np.maximum), windows.max(axis=(2, 3)))
        mask = a > np.median(a)
        assert np.array_equal(_rank3(mask, np.logical_or),
                              np.lib.stride_tricks.sliding_window_view(np.pad(mask, 1), (3, 3)).any(axis=(2, 3)))
        assert np.array_equal(_fill_holes(mask), ndimage.binary_fill_holes(mask))


def test_augment_is_a_pure_function_of_seed_epoch_index():
    img = preprocess_fundus(fundus("circle")[0], 64)
    aug = TrainAugment(64, seed=5)
    a = np.asarray(aug(img, epoch=0, index=3))
    assert a.shape == (64, 64, 3)
    assert np.array_equal(a, np.asarray(TrainAugment(64, seed=5)(img, epoch=0, index=3)))
    assert not np.array_equal(a, np.asarray(aug(img, epoch=1, index=3)))
    assert not np.array_equal(a, np.asarray(aug(img, epoch=0, index=4)))
    assert not np.array_equal(a, np.asarray(TrainAugment(64, seed=6)(img, epoch=0, index=3)))
    # mild: the image stays a fundus on black, roughly as bright
    assert a[:3, :3].max() == 0
    assert 0.6 < a.mean() / np.asarray(img).mean() < 1.6


def test_augment_never_mirrors_left_right():
    # A bright spot on the right half (the disc of one eye) must stay on the right.
    arr = np.zeros((64, 64, 3), np.uint8)
    yy, xx = np.mgrid[:64, :64]
    arr[(xx - 32) ** 2 + (yy - 32) ** 2 < 30 ** 2] = (150, 70, 30)
    arr[(xx - 48) ** 2 + (yy - 32) ** 2 < 6 ** 2] = (255, 240, 200)
    img = Image.fromarray(arr)
    aug = TrainAugment(64, seed=1, blur_p=0.0)
    for i in range(20):
        out = np.asarray(aug(img, 0, i)).astype(float).sum(axis=2)
        bright = np.argwhere(out >= np.percentile(out, 99.5))
        assert bright[:, 1].mean() > 36, i
