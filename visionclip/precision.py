"""Where and in what arithmetic the towers run: the device (the GPU when there is one) and the
autocast (bf16 where the hardware computes it natively, fp32 otherwise; fp16 on request)."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

from .errors import ConfigError


@lru_cache(maxsize=None)
def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX-BF16 (x86) — without them CPU bf16 is emulated and slower than fp32."""
    cap = ""
    try:
        cap = torch.backends.cpu.get_cpu_capability()
    except Exception:  # older torch
        pass
    if "AMX" in cap.upper():
        return True
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


@dataclass(frozen=True)
class Precision:
    name: str                      # "fp32" | "bf16" | "fp16"
    device_type: str               # "cpu" | "cuda"

    @property
    def dtype(self) -> torch.dtype | None:
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.name)

    @property
    def uses_scaler(self) -> bool:
        return self.name == "fp16"

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)


def choose_precision(requested: str, device: torch.device) -> Precision:
    kind = device.type
    if requested == "auto":
        if kind == "cuda":
            name = "bf16" if torch.cuda.is_bf16_supported() else "fp32"
        else:
            name = "bf16" if cpu_has_native_bf16() else "fp32"
        return Precision(name, kind)
    if requested == "fp16" and kind != "cuda":
        raise ConfigError("train.precision: fp16 needs a GPU (GradScaler); use bf16, fp32 or auto on CPU")
    return Precision(requested, kind)


def choose_device(requested: str, field: str = "eval.device") -> torch.device:
    """"auto": the GPU when there is one, as training chooses, else the CPU; "cpu", "cuda" or
    "cuda:N" as named, refused with the `field` named when this machine lacks it."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except (RuntimeError, TypeError):
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise ConfigError(f"{field}: expected auto, cpu, cuda or cuda:N, got {requested!r}")
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if device.type == "cuda" and (device.index or 0) >= gpus:
        raise ConfigError(f"{field}: {requested} asked for, but this machine has {gpus} GPU(s); use auto or cpu")
    return device
