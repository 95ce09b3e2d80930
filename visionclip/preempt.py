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
DataLoader workers ignore them from anyone but their parent (`stop_signals_from_parent_only`).
"""
from __future__ import annotations

import multiprocessing as mp
import os
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


def stop_signals_from_parent_only(parent: int | None = None) -> None:
    """DataLoader-worker initializer: SIGTERM and SIGUSR1 from anyone but `parent` (the process that
    started this worker; default: os.getppid()) are ignored, and from `parent` they end the worker at
    once (exit 0), as torch's own worker handler does.

    Why not simply ignore them (`ignore_stop_signals`): a preemption signals the whole process group
    (Slurm; torchrun kills each rank's group), and a worker that died of it turned the trainer's clean
    stop into "DataLoader worker (pid N) exited unexpectedly", so others' signals must be ignored. But
    the parent itself ends workers with SIGTERM when they do not leave through their queues: torch's
    shutdown after its join timeout, and multiprocessing's atexit, which terminates daemonic children
    and then joins them (a loader kept alive by an error's traceback): a worker deaf to its parent hung
    interpreter exit. Only the sender tells the two apart, and a Python handler does not see it, so
    the signals are blocked and a thread takes them with sigwaitinfo. Where there is no sigwaitinfo
    (macOS) they are ignored, and the trainer shuts its loaders down on every way out instead."""
    if not hasattr(signal, "sigwaitinfo") or threading.current_thread() is not threading.main_thread():
        ignore_stop_signals()
        return
    senders = {os.getppid(), parent if parent is not None else os.getppid()}
    # Blocked before the thread starts, so that it inherits the mask too: a blocked process-directed
    # signal stays pending until sigwaitinfo takes it (no thread ever runs a handler for it).
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)

    def wait() -> None:
        while True:
            info = signal.sigwaitinfo(STOP_SIGNALS)
            if info.si_pid in senders:
                os._exit(0)

    threading.Thread(target=wait, name="visionclip-stop-signals", daemon=True).start()


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
           "requested", "stop_signals_from_parent_only"]
