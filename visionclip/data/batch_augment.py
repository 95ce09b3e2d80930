"""TrainAugment on a whole batch of tensors, on whatever device the batch is on (train.augment_on: batches).

The per-item augmentation (data.transforms.TrainAugment) runs in PIL on each image in the loader, and
costs more than reading a prepared crop (benchmarks/bench_prepare.py). Here the same draws, from the
same (seed, epoch, index) generators, are applied to a uint8 [B, 3, S, S] batch at once: the random
resized crop, the rotation and the vertical flip as one sampling grid (grid_sample, bilinear, black
outside the crop as PIL's rotate fills it), then the photometric jitter on the disk only, then a
per-image Gaussian blur. Same distribution, not the same pixels as the PIL version (one resampling
instead of two, no rounding to 8 bits between steps). A function of (seed, epoch, indices) and the
batch only, so a resumed run sees the same images.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .transforms import LUMA, MIN_LEVEL, TrainAugment


class BatchAugment:
    """`BatchAugment(size, seed)(images, epoch, indices)` -> float [B, 3, S, S] in [0, 1] on images' device."""

    def __init__(self, size: int, seed: int):
        self.draws = TrainAugment(size, seed)  # the per-item version's parameters and generators
        self.size = int(size)

    def __call__(self, images: torch.Tensor, epoch: int, indices: Sequence[int] | torch.Tensor) -> torch.Tensor:
        b, c, h, w = images.shape
        if (c, h, w) != (3, self.size, self.size):
            raise ValueError(f"BatchAugment({self.size}): expected [B, 3, {self.size}, {self.size}], "
                             f"got {list(images.shape)}")
        draws = [self.draws.draw(epoch, int(i)) for i in indices]
        dev = images.device
        x = images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()

        # Geometry: output p -> flipped (y -> -y) -> rotated (PIL's rotate, counter-clockwise) -> crop box.
        s = float(self.size)
        theta = np.zeros((b, 2, 3), np.float32)
        half = np.zeros((b, 2), np.float32)  # the crop box's half-sides, normalised
        for k, d in enumerate(draws):
            x0, y0, x1, y1 = d.crop
            rad = math.radians(d.rotation)
            rot = np.array([[math.cos(rad), -math.sin(rad)], [math.sin(rad), math.cos(rad)]])
            flip = np.diag([1.0, -1.0 if d.vflip else 1.0])
            half[k] = (x1 - x0) / s, (y1 - y0) / s
            theta[k, :, :2] = np.diag(half[k]) @ rot @ flip
            theta[k, :, 2] = [(x0 + x1) / s - 1.0, (y0 + y1) / s - 1.0]
        theta_t = torch.from_numpy(theta).to(dev)
        grid = F.affine_grid(theta_t, [b, 3, h, w], align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        # Where the rotation reaches outside the crop box PIL fills black; the grid would read on past it.
        half_t = torch.from_numpy(half).to(dev)[:, None, None, :]
        in_box = ((grid - theta_t[:, None, None, :, 2]).abs() <= half_t + 1e-6).all(-1)
        x = x * in_box[:, None].to(x.dtype)

        # Photometric jitter on the disk only: the camera surround stays black.
        def per_image(name: str) -> torch.Tensor:
            return torch.tensor([getattr(d, name) for d in draws], dtype=torch.float32, device=dev).view(b, 1, 1, 1)

        luma = torch.tensor(LUMA, dtype=torch.float32, device=dev).view(1, 3, 1, 1)
        inside = (x.amax(1, keepdim=True) > MIN_LEVEL / 255.0).to(x.dtype)
        x = x * per_image("brightness")
        grey = (x * luma).sum(1, keepdim=True)
        mean = (grey * inside).sum((1, 2, 3), keepdim=True) / inside.sum((1, 2, 3), keepdim=True).clamp_min(1.0)
        x = (x - mean) * per_image("contrast") + mean
        grey = (x * luma).sum(1, keepdim=True)
        x = grey + (x - grey) * per_image("saturation")
        x = x * torch.from_numpy(np.stack([d.cast for d in draws])).to(dev).view(b, 3, 1, 1)
        x = x.clamp(0.0, 1.0) ** per_image("gamma")
        x = x * inside
        return _gaussian_blur(x, [d.blur_radius for d in draws]).clamp_(0.0, 1.0)


def _gaussian_blur(x: torch.Tensor, radii: Sequence[float]) -> torch.Tensor:
    """Each image blurred with its own standard deviation (0: unchanged), separably, edges replicated;
    only the images that are blurred go through the convolution (a quarter of them, blur_p)."""
    chosen = [k for k, r in enumerate(radii) if r]
    if not chosen:
        return x
    if len(chosen) < len(radii):
        x = x.clone()
        x[chosen] = _gaussian_blur(x[chosen], [radii[k] for k in chosen])
        return x
    b, c, h, w = x.shape
    half = max(1, math.ceil(3 * max(radii)))
    offsets = torch.arange(-half, half + 1, dtype=torch.float32, device=x.device)
    sigma = torch.tensor(radii, dtype=torch.float32, device=x.device).clamp_min(1e-6)[:, None]
    kernel = torch.exp(-0.5 * (offsets[None] / sigma) ** 2)
    kernel = kernel / kernel.sum(1, keepdim=True)  # a radius of 0 leaves a unit impulse
    kernel = kernel.repeat_interleave(c, 0)  # one per channel of each image: [B * 3, K]
    y = F.pad(x.reshape(1, b * c, h, w), (half, half, half, half), mode="replicate")
    y = F.conv2d(y, kernel[:, None, None, :], groups=b * c)
    y = F.conv2d(y, kernel[:, None, :, None], groups=b * c)
    return y.reshape(b, c, h, w)


__all__ = ["BatchAugment"]
