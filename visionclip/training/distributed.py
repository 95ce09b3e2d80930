"""torchrun / DDP helpers: one process group per run, gloo on CPU and NCCL on GPU.

Per step the loop meets the other ranks once besides DDP's own gradient all-reduce: `reduce_step`
sums one float64 vector holding the step's flags (non-finite, stop requested) and its logged
scalars, and reads it back in one device -> host copy.
"""
from __future__ import annotations

import datetime as dt
import gc
import os
import time
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


# Before init_process_group the ranks meet in torchrun's rendezvous store and each says whether it
# starts. A rank refused there (a --device this machine lacks, a profile or lock error of its own)
# still says so before it exits, and the others stop with it at once: otherwise they would wait in
# init_process_group, or in the first collective, for train.dist_timeout_min (an hour) for a rank that
# is gone. Failures every rank meets alike need it too: ranks do not fail at the same moment.
START_PREFIX = "visionclip/start"
REFUSAL_WAIT_S = 300.0   # the longest a refused rank waits for the others to read its refusal
_started: list[int] = []  # setups (and refusals) this process posted: each one's own keys in the store


def _device(device: str | None, world: int, local_rank: int) -> torch.device:
    """This rank's device; ConfigError for one that cannot be used (before any rank meets)."""
    chosen = device is None  # this rank's GPU, else the CPU
    if chosen:
        if not torch.cuda.is_available():
            return torch.device("cpu")
        device = f"cuda:{local_rank}"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ConfigError(f"--device {device}: not a torch device ({str(e).splitlines()[0][:120]})") from None
    if dev.type == "cuda":
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if dev.index is None and world > 1:  # every rank would pick cuda:0
            raise ConfigError(f"--device {device}: under torchrun ({world} ranks) name no GPU (each rank takes "
                              "cuda:LOCAL_RANK) or a full cuda:N")
        if (dev.index or 0) >= gpus:
            raise ConfigError(f"LOCAL_RANK {local_rank}: this machine has {gpus} GPU(s), fewer than its ranks"
                              if chosen else f"--device: {device} asked for, but this machine has {gpus} GPU(s)")
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(dev)
    return dev


def _meet(refusal: str | None, timeout: dt.timedelta):
    """Post this rank's answer (None: it starts; else why not) in the rendezvous store and read every
    rank's. Returns (store, rank, world) to start the group with; raises when any rank refused."""
    store, rank, world = next(dist.rendezvous("env://", timeout=timeout))
    store.set_timeout(timeout)
    meeting = dist.PrefixStore(f"{START_PREFIX}/{len(_started)}", store)
    _started.append(rank)
    meeting.set(f"rank_{rank}", "start" if refusal is None else f"refused: {refusal}")
    keys = [f"rank_{r}" for r in range(world)]
    meeting.wait(keys, timeout)
    answers = [meeting.get(k).decode() for k in keys]
    meeting.add("read", 1)
    refused = {r: a.split(": ", 1)[1] for r, a in enumerate(answers) if a != "start"}
    if not refused:
        return store, rank, world
    if rank == 0:  # it may hold the store (plain env://, no torchrun agent): it stays until every rank
        # has read the answers, else a slower rank would meet a closed connection instead of the reason
        deadline = time.monotonic() + min(timeout.total_seconds(), REFUSAL_WAIT_S)
        while meeting.add("read", 0) < world and time.monotonic() < deadline:
            time.sleep(0.02)
    if refusal is not None:
        return None  # the caller raises its own error
    first = min(refused)
    raise TrainingError(f"rank {rank} stopped: rank {first} refused to start ({refused[first][:300]})")


def refuse(reason: str, timeout_min: float = 60.0) -> None:
    """Under torchrun, for a rank that fails before it could start (the CLI's profile, lock or
    argument errors): tell the other ranks, which stop with a one-line error naming this rank and
    `reason`, and return once they have read it (REFUSAL_WAIT_S at most). Nothing outside torchrun,
    or when this process already said whether it starts (its failure is then a running rank's)."""
    if launched_world_size() > 1 and not _started and not dist.is_initialized():
        _refuse_now(reason, timeout_min)


def _refuse_now(reason: str, timeout_min: float) -> None:
    try:
        _meet(reason, dt.timedelta(seconds=min(timeout_min * 60, REFUSAL_WAIT_S)))
    except Exception:  # the rendezvous is gone or never came: this rank's own error is said all the same
        pass


def setup(device: str | None = None, timeout_min: float = 60.0) -> DistContext:
    """Join the torchrun group when WORLD_SIZE > 1, pick this rank's device.

    `timeout_min` bounds every collective, the first included: it must cover rank 0 building the
    corpus table while the other ranks wait for it (torch's default is 10 minutes for NCCL). Under
    torchrun every rank first says whether it starts (`_meet`): one refused (its device) stops all.
    """
    world = launched_world_size()
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    joining = world > 1 and not dist.is_initialized()
    try:
        dev = _device(device, world, local_rank)
    except Exception as e:
        if joining:
            _refuse_now(str(e), timeout_min)
        raise
    owns = False
    if joining:
        timeout = dt.timedelta(minutes=timeout_min)
        try:
            store, rank, world = _meet(None, timeout)
        except RuntimeError as e:  # the store: a rank that never came, or went
            raise TrainingError(f"rank {rank} stopped: the ranks did not all meet before starting "
                                f"({str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__})"
                                ) from None
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo", store=store, rank=rank,
                                world_size=world, timeout=timeout)
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
