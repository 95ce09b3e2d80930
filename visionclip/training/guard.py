"""Non-finite guard: skip a step whose loss or gradient is NaN/inf, stop after too many in a row."""
from __future__ import annotations

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
