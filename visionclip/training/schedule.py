"""Learning-rate schedule: linear warm-up to the peak, then cosine decay to zero."""
from __future__ import annotations

import math

import torch


def warmup_cosine_factor(step: int, total_steps: int, warmup_steps: int) -> float:
    """Multiplier of the peak lr at optimizer step `step` (0-based) of `total_steps`."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_steps_for(total_steps: int, warmup_fraction: float) -> int:
    return int(round(total_steps * warmup_fraction))


def build_scheduler(optimizer: torch.optim.Optimizer, total_steps: int,
                    warmup_fraction: float) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR whose state (last_epoch, base_lrs) is plain JSON, so checkpoints need no pickle."""
    warmup = warmup_steps_for(total_steps, warmup_fraction)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine_factor(step, total_steps, warmup))
