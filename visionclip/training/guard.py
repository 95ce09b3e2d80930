"""Non-finite guard: skip a step whose loss, gradient or BatchNorm statistics are NaN/inf, stop
after too many in a row."""
from __future__ import annotations

import torch
from torch import nn

from ..errors import TrainingError


class NonFiniteGuard:
    def __init__(self, max_in_a_row: int):
        self.max_in_a_row = max_in_a_row
        self.in_a_row = 0
        self.total_skipped = 0

    def record(self, nonfinite: bool, step: int, what: str = "loss or gradient") -> bool:
        """Record one step; True means skip its update. Raises after max_in_a_row skips in a row."""
        if not nonfinite:
            self.in_a_row = 0
            return False
        self.in_a_row += 1
        self.total_skipped += 1
        if self.in_a_row >= self.max_in_a_row:
            raise TrainingError(
                f"training stopped at step {step}: non-finite {what} in {self.in_a_row} steps in a row "
                f"(train.max_nonfinite={self.max_in_a_row}); lower train.lr, raise train.warmup_fraction, "
                f"set train.grad_clip, or use train.precision=fp32")
        return True


class NormBuffers:
    """The running statistics of a model's BatchNorm layers, kept across a step that may be skipped.

    BatchNorm updates its running mean and variance in the forward pass, before the loss is known: a
    forward that overflows leaves NaN/inf there, which skipping the optimizer step does not undo, and
    which evaluation, the saved model and DDP's buffer broadcast then carry. Per step: `snapshot()`
    before the forward (one fused copy of the BatchNorm buffers only: ~0.2 MB for a ResNet-50),
    `bad()` after it (a 0-dim bool tensor on the model's device, no host sync: fuse it with the step's
    other flags), and `restore()` when the step is skipped. Buffers are shared with a DDP wrapper, so
    build it on the bare model.
    """

    def __init__(self, model: nn.Module):
        norms = [m for m in model.modules()
                 if isinstance(m, nn.modules.batchnorm._NormBase) and m.track_running_stats]
        self.stats = [b for m in norms for b in (m.running_mean, m.running_var) if b is not None]
        self.counters = [m.num_batches_tracked for m in norms if m.num_batches_tracked is not None]
        self._live = self.stats + self.counters
        self._saved = [b.detach().clone() for b in self._live]
        self.device = next(iter(self._live), next(model.parameters(), torch.empty(0))).device

    def __bool__(self) -> bool:
        return bool(self._live)

    def snapshot(self) -> None:
        if self._live:
            torch._foreach_copy_(self._saved, self._live)

    def bad(self) -> torch.Tensor:
        """True (as a tensor) when any running statistic is NaN or infinite."""
        if not self.stats:
            return torch.zeros((), dtype=torch.bool, device=self.device)
        return ~torch.isfinite(torch.cat([b.reshape(-1) for b in self.stats])).all()

    def restore(self) -> None:
        if self._live:
            with torch.no_grad():
                torch._foreach_copy_(self._live, self._saved)
