"""Seeded, resumable, rank-sharded batches.

Epoch e visits a permutation drawn from derive_seed(seed, "train-order", e); global batch b of
the epoch is perm[b*G:(b+1)*G] (the tail that does not fill a batch is dropped). Under DDP
rank r reads the r-th contiguous slice of every global batch, so the gathered batch equals
the single-process batch, row for row. The sampler starts at any step: resuming needs only
the consumed-sample count, never the state of a DataLoader.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from ..errors import ConfigError
from ..seeding import derive_seed


class ResumableBatchSampler:
    def __init__(self, num_samples: int, global_batch: int, seed: int, *, rank: int = 0,
                 world_size: int = 1):
        if global_batch % world_size:
            raise ConfigError(f"train.batch_size: {global_batch} does not split over {world_size} ranks")
        if num_samples < global_batch:
            raise ConfigError(f"train.batch_size: {global_batch} is larger than the train split "
                              f"({num_samples} images)")
        self.num_samples = num_samples
        self.global_batch = global_batch
        self.local_batch = global_batch // world_size
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.steps_per_epoch = num_samples // global_batch
        self.epoch = 0
        self.start_step = 0  # batch index inside the epoch to start from

    def permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng(derive_seed(self.seed, "train-order", epoch)).permutation(self.num_samples)

    def set_position(self, global_step: int) -> None:
        """Place the sampler at optimizer step `global_step` (epoch and batch inside it)."""
        self.epoch, self.start_step = divmod(global_step, self.steps_per_epoch)

    def global_batch_indices(self, epoch: int, batch: int) -> np.ndarray:
        return self.permutation(epoch)[batch * self.global_batch:(batch + 1) * self.global_batch]

    def __iter__(self) -> Iterator[list[int]]:
        perm = self.permutation(self.epoch)
        lo = self.rank * self.local_batch
        for b in range(self.start_step, self.steps_per_epoch):
            chunk = perm[b * self.global_batch:(b + 1) * self.global_batch]
            yield chunk[lo:lo + self.local_batch].tolist()

    def __len__(self) -> int:
        return self.steps_per_epoch - self.start_step


class EpochTagged:
    """The sampler's batches as (epoch, index) keys (ImageTextDataset reads the epoch from them), so
    persistent DataLoader workers, whose dataset copy never sees set_epoch, draw each epoch's items."""

    def __init__(self, sampler: ResumableBatchSampler):
        self.sampler = sampler

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch = self.sampler.epoch
        return ([(epoch, i) for i in batch] for batch in self.sampler)

    def __len__(self) -> int:
        return len(self.sampler)
