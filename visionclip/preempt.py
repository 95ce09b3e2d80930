"""Stop on request: SIGTERM and SIGUSR1 (what Slurm, Kubernetes and torchrun send before a kill)
become a flag that long stages read between items, so they stop where a re-run resumes exactly.

    with StopRequest() as stop:
        for item in items:
            if stop.requested:
                raise Preempted(f"{stop.signal_name} received: stopped ... with 3 of 8 shards finished")
            do(item)

A library stage says where it stopped; the `visionclip` command around it appends "; resume with:
<the command>" and exits with PREEMPTED_EXIT (75, EX_TEMPFAIL: "try again") on Preempted, distinct from
2 (bad input). Worker processes ignore both signals (`ignore_stop_signals`, a pool initializer): a
whole process group is signalled at once, and the parent, not each worker, decides when to stop.
"""
from __future__ import annotations

import multiprocessing as mp
import signal
import threading
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, Callable, Iterable, Iterator

PREEMPTED_EXIT = 75              # EX_TEMPFAIL: stopped on request; the same command resumes
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class Preempted(Exception):
    """A stage stopped on a signal with its finished files intact; str(e) says how to resume."""
    exit_code = PREEMPTED_EXIT


class StopRequest:
    """Context manager: while inside, SIGTERM and SIGUSR1 only set `requested` (and `signal_name`);
    the previous handlers come back on exit. Outside the main thread Python cannot install signal
    handlers, so there it installs nothing and `requested` stays False."""

    def __init__(self) -> None:
        self.requested = False
        self.signal_name: str | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame) -> None:
        # A second signal while stopping lands here again and changes nothing: the flag is already set,
        # so a repeated SIGTERM cannot kill the process half-way through its last write. SIGKILL (the
        # scheduler's final word after its grace period) cannot be caught, as it should be.
        if not self.requested:
            self.requested = True
            self.signal_name = signal.Signals(signum).name

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, previous in self._previous.items():  # None: a handler installed outside Python
            signal.signal(sig, signal.SIG_DFL if previous is None else previous)
        self._previous.clear()


def ignore_stop_signals() -> None:
    """Pool-worker initializer: a worker finishes what it was given; its parent decides to stop."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


def requested(stop: StopRequest | None) -> bool:
    """True when `stop` (None: no stop request, as in a library call) has seen a signal."""
    return stop is not None and stop.requested


def _apply(fn: Callable[[Any], Any], chunk: list) -> list:
    return [fn(job) for job in chunk]


def map_unordered(fn: Callable[[Any], Any], jobs: Iterable, workers: int, stop: StopRequest | None = None,
                  chunksize: int = 1) -> Iterator[Any]:
    """fn(job) of every job, as they finish: in this process when workers <= 1, else in `workers`
    processes (fork where there is one) that ignore the stop signals. Once `stop` is requested the
    jobs not yet handed to a worker are cancelled, the running ones (and the executor's one queued
    call) finish, their files complete, and the iteration ends early: the caller checks `stop`.
    concurrent.futures, not multiprocessing.Pool: Pool.terminate stops workers with SIGTERM, which
    they ignore (it would hang), and a worker killed from outside breaks the executor (an error)
    where Pool.imap would wait forever for its result."""
    jobs = list(jobs)
    if workers <= 1:
        for job in jobs:
            if requested(stop):
                return
            yield fn(job)
        return
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=ignore_stop_signals)
    try:
        futures = [pool.submit(_apply, fn, jobs[i:i + chunksize]) for i in range(0, len(jobs), chunksize)]
        for future in as_completed(futures):
            yield from future.result()
            if requested(stop):
                return
    finally:  # on a stop or an error: what has not started is cancelled, what runs finishes
        pool.shutdown(wait=True, cancel_futures=True)


__all__ = ["PREEMPTED_EXIT", "Preempted", "STOP_SIGNALS", "StopRequest", "ignore_stop_signals", "map_unordered",
           "requested"]
