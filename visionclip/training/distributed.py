"""torchrun / DDP helpers: one process group per run, gloo on CPU and NCCL on GPU.

Per step the loop meets the other ranks once besides DDP's own gradient all-reduce: `reduce_step`
sums one float64 vector holding the step's flags (non-finite, stop requested) and its logged
scalars, and reads it back in one device -> host copy.
"""
from __future__ import annotations

import datetime as dt
import gc
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import ConfigError, TrainingError


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


def launched_world_size() -> int:
    """The number of ranks torchrun started (1 outside torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def setup(device: str | None = None, timeout_min: float = 60.0) -> DistContext:
    """Join the torchrun group when WORLD_SIZE > 1, pick this rank's device.

    `timeout_min` bounds every collective, the first included: it must cover rank 0 building the
    corpus table while the other ranks wait for it (torch's default is 10 minutes for NCCL).
    """
    world = launched_world_size()
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        if world > 1:  # every rank would pick cuda:0
            raise ConfigError(f"--device {device}: under torchrun ({world} ranks) name no GPU (each rank takes "
                              "cuda:LOCAL_RANK) or a full cuda:N")
        dev = torch.device("cuda", torch.cuda.current_device())
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    owns = False
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo",
                                timeout=dt.timedelta(minutes=timeout_min))
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


def peer_left(ctx: DistContext, error: BaseException) -> TrainingError:
    """The one-line error of a rank whose collective failed because another rank stopped: the failing
    rank exits after its own one-line error, which closes its connections, so this rank is released
    at once instead of at the collective timeout."""
    detail = (str(error).strip().splitlines() or [type(error).__name__])[0]
    detail = detail.rsplit("] ", 1)[-1].split(". ")[0]  # gloo: '[.../pair.cc:561] Connection closed by peer [ip]:port. ...'
    return TrainingError(f"rank {ctx.rank} stopped: another rank left the run, its own message says why "
                         f"({detail[:200]})")


def is_peer_failure(error: BaseException) -> bool:
    """A collective that failed because a peer went away (not a bug of this rank's own)."""
    return isinstance(error, dist.DistError) or "Connection closed" in str(error) or "Connection reset" in str(error)


def collective(ctx: DistContext, run):
    """run() (a collective); a peer that left becomes peer_left's one-line error."""
    try:
        return run()
    except RuntimeError as e:  # gloo: 'Connection closed by peer'; NCCL: a DistBackendError
        if not is_peer_failure(e):
            raise
        raise peer_left(ctx, e) from None


def reduce_step(flags: list[torch.Tensor], values: list[torch.Tensor], ctx: DistContext
                ) -> tuple[list[bool], list[float]]:
    """Flags true on any rank, and values averaged over the ranks: one all-reduce of one vector
    and one read of it on the host (the step's only synchronisation besides DDP's gradients)."""
    parts = [f.detach().reshape(()).to(ctx.device, torch.float64) for f in flags]
    parts += [v.detach().reshape(()).to(ctx.device, torch.float64) for v in values]
    fused = torch.stack(parts)
    if ctx.enabled:
        collective(ctx, lambda: dist.all_reduce(fused))
    host = fused.tolist()
    k = len(flags)
    means = [x / ctx.world_size for x in host[k:]] if ctx.enabled else host[k:]
    return [x > 0 for x in host[:k]], means


def broadcast_int(value: int, ctx: DistContext) -> int:
    """Rank 0's value on every rank."""
    if not ctx.enabled:
        return value
    t = torch.tensor([value], dtype=torch.int64, device=ctx.device)
    collective(ctx, lambda: dist.broadcast(t, src=0))
    return int(t.item())


def gather_to_main(obj, ctx: DistContext) -> list | None:
    """Every rank's `obj` (small, picklable) on rank 0, in rank order; None elsewhere."""
    if not ctx.enabled:
        return [obj]
    out = [None] * ctx.world_size if ctx.is_main else None
    collective(ctx, lambda: dist.gather_object(obj, out, dst=0))
    return out


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        collective(ctx, dist.barrier)
