"""One seed drives everything: derived seeds are stable hashes of (seed, keys)."""
from __future__ import annotations

import hashlib
import random

import numpy as np


def derive_seed(seed: int, *keys: object) -> int:
    """A 63-bit seed that depends only on `seed` and `keys` (stable across processes and runs)."""
    text = "/".join([str(int(seed))] + [str(k) for k in keys])
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") >> 1


def rng(seed: int, *keys: object) -> np.random.Generator:
    return np.random.default_rng(derive_seed(seed, *keys))


def subsample(n: int, size: int, seed: int, *keys: object) -> np.ndarray:
    """Sorted indices of a seeded sample of `size` of n items without repeats; all n when n <= size."""
    if n <= size:
        return np.arange(n)
    return np.sort(rng(seed, "subsample", *keys).choice(n, size=size, replace=False))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    try:
        import torch
        torch.manual_seed(seed)
    except ImportError:  # the renderer alone does not need torch
        pass
