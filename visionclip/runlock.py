"""One job per run directory: a lock file (RunLayout.lock) naming its holder.

Two jobs writing one run directory (a resubmitted job beside a zombie one) would prune each
other's checkpoints and interleave their logs. `visionclip train|synth|prepare|book` hold the lock
while they work; library calls do not take it, so a notebook run by the pipeline (which holds
it) calls the library freely.

A job is TORCHELASTIC_RUN_ID under torchrun (every rank of a job, and its elastic restarts, share
it), else the process; the holder exports its id as JOB_ENV, so whatever it starts (the pipeline's
notebook kernels, a torchrun from a notebook) is the same job and passes too. The lock file is
created with O_CREAT | O_EXCL, which is atomic on local disks and NFS alike (flock is not reliable
on NFS or Lustre); it holds the host, pid, job and start time. A lock whose holder's pid is gone
on this host is stale (a killed job) and is taken over with a warning; a holder on another host
cannot be checked from here, so it is refused with the lock file to delete.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from .errors import VisionCLIPError
from .paths import RunLayout

JOB_ENV = "VISIONCLIP_JOB_ID"
UNREADABLE_WAIT_S = 2.0   # a holder writes its lock file right after creating it: wait that long for the text


class RunLockError(VisionCLIPError):
    """The run directory is in use by another job (or its lock file cannot be read)."""


def job_id() -> str:
    """This process's job: the holder's (inherited), else torchrun's run id, else the rendezvous address of a
    multi-rank job, else the pid."""
    inherited = os.environ.get(JOB_ENV)
    if inherited:
        return inherited
    run_id = os.environ.get("TORCHELASTIC_RUN_ID", "")
    if run_id and run_id != "none":  # torchrun's default id without --rdzv-id: every job would share it
        return f"torchrun:{run_id}"
    # torchrun without --rdzv-id, or ranks started by hand (Slurm's srun, a test) with the env:// variables:
    # the same job's ranks meet at one rendezvous address
    if run_id or int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return f"torchrun:{os.environ.get('MASTER_ADDR', '')}:{os.environ.get('MASTER_PORT', '')}"
    return f"pid:{socket.gethostname()}:{os.getpid()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _read(path: Path) -> dict | None:
    """The holder's record; None when the lock vanished meanwhile."""
    deadline = time.monotonic() + UNREADABLE_WAIT_S
    while True:
        try:
            holder = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(holder, dict) and {"host", "pid", "job", "since"} <= set(holder):
                return holder
            problem = "not a lock record"
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError, ValueError) as e:
            problem = str(e)
        if time.monotonic() > deadline:
            raise RunLockError(f"{path}: unreadable run-directory lock ({problem}); if no job is working in "
                               f"{path.parent}, delete {path}")
        time.sleep(0.05)


def describe(holder: dict) -> str:
    return f"host {holder['host']}, pid {holder['pid']}, job {holder['job']}, since {holder['since']}"


def _remove_stale(path: Path, holder: dict) -> None:
    """Move the stale lock aside, then check it was the one judged stale: a job that took it over in
    between would otherwise lose its fresh lock to this one."""
    aside = path.with_name(f".{path.name}.{os.getpid()}.stale")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return
    try:
        moved = json.loads(aside.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        moved = None
    if moved != holder:
        with contextlib.suppress(OSError):
            os.link(aside, path)  # put the newer lock back (fails if yet another job holds one now)
    aside.unlink(missing_ok=True)


def _create(path: Path, record: dict) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:  # a full disk: no half-written lock left behind, and the error names it
        path.unlink(missing_ok=True)
        raise OSError(e.errno, e.strerror, e.filename or str(path)) from None
    return True


def acquire(run_dir: str | os.PathLike) -> bool:
    """Take the run directory's lock for this job: True when this process created it (and must
    release it), False when this job already holds it. RunLockError names another job's holder."""
    path = RunLayout(run_dir).lock
    path.parent.mkdir(parents=True, exist_ok=True)
    me = {"host": socket.gethostname(), "pid": os.getpid(), "job": job_id(),
          "since": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")}
    for _ in range(5):  # each round either creates the lock or removes a stale one
        if _create(path, me):
            return True
        holder = _read(path)
        if holder is None:
            continue
        dead = holder["host"] == me["host"] and not _alive(int(holder["pid"]))
        if holder["job"] == me["job"] and not dead:
            return False
        if not dead:
            raise RunLockError(f"{Path(run_dir)}: in use by another job ({describe(holder)}); wait for it to "
                               f"end, or, if it is no longer running, delete {path}")
        if holder["job"] != me["job"]:
            warnings.warn(f"{path}: taking over the stale lock of a job that is no longer running "
                          f"({describe(holder)})", RuntimeWarning, stacklevel=2)
        _remove_stale(path, holder)
    raise RunLockError(f"{path}: could not take the run-directory lock (other jobs keep taking it)")


def release(run_dir: str | os.PathLike) -> None:
    """Remove the lock if this process holds it."""
    path = RunLayout(run_dir).lock
    with contextlib.suppress(RunLockError):
        holder = _read(path)
        if holder is not None and holder["pid"] == os.getpid() and holder["host"] == socket.gethostname():
            path.unlink(missing_ok=True)


@contextlib.contextmanager
def run_lock(run_dir: str | os.PathLike) -> Iterator[None]:
    """Hold run_dir's lock for this job while inside (released on errors and on Preempted too); the
    job id is exported (JOB_ENV) for the processes started inside."""
    created = acquire(run_dir)
    saved = os.environ.get(JOB_ENV)
    os.environ[JOB_ENV] = job_id()
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(JOB_ENV, None)
        else:
            os.environ[JOB_ENV] = saved
        if created:
            release(run_dir)


__all__ = ["JOB_ENV", "RunLockError", "acquire", "describe", "job_id", "release", "run_lock"]
