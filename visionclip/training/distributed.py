"""torchrun / DDP helpers: one process group per run, gloo on CPU and NCCL on GPU."""
from __future__ import annotations

import gc
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    owns_group: bool  # this process created the group and destroys it at the end

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup(device: str | None = None) -> DistContext:
    """Join the torchrun group when WORLD_SIZE > 1, pick this rank's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    owns = False
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
        owns = True
    if dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    return DistContext(rank, world, local_rank, dev, owns)


def teardown(ctx: DistContext, clean: bool = True) -> None:
    """Destroy the process group this run created. `clean=False` (a rank is failing) skips the
    meeting of all ranks, which would wait for peers that may never arrive."""
    if ctx.owns_group and dist.is_initialized():
        # gloo aborts ("terminate called without an active exception") when one rank tears its
        # pairs down while a peer is still using them, or when autograd graphs still hold pending
        # gloo work at exit: free those, and let all ranks meet first.
        gc.collect()
        if clean:
            dist.barrier()
        dist.destroy_process_group()


def any_true(flag: bool, ctx: DistContext) -> bool:
    """True on every rank when it is true on any rank (so all ranks skip a step together)."""
    if not ctx.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=ctx.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def mean(values: list[float], ctx: DistContext) -> list[float]:
    if not ctx.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=ctx.device)
    dist.all_reduce(t)
    return (t / ctx.world_size).tolist()


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()
