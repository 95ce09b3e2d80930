"""Pre-training: CLIP on the corpus's image-caption pairs, and the label-supervised ceiling.

One loop serves one CPU, one GPU and torchrun's many processes:

    AdamW (no decay on norms, biases, logit scale) · warm-up + cosine lr · gradient clipping
    bf16 autocast where native (fp16 + GradScaler on GPU on request) · channels_last
    a non-finite guard that skips a bad step on every rank and stops after train.max_nonfinite
    atomic, pickle-free checkpoints every train.checkpoint_every steps; exact resume
    per-step metrics (metrics/train.jsonl) and validation (metrics/val.jsonl)
    train.max_steps: stop after N steps of the full schedule (a short run of any profile)

Exact resume rests on four things: the batch order is a pure function of (seed, epoch) and the
sampler starts at the checkpoint's step; augmentation is seeded per (seed, epoch, index), by the
dataset or, under train.augment_on: batches, by data.batch_augment on the device; DataLoader
workers are seeded from their own generator, never the global RNG; every rank's global RNG states
(dropout) are saved and restored, each rank its own. Rank 0 chooses the checkpoint and the other
ranks load the same one. Metric logs are cut back to the checkpoint's step so a replayed step is
logged once.

Under torchrun rank 0 builds the corpus table once (data.table_cache) while the others wait; per
step the ranks meet once besides DDP's gradient all-reduce (distributed.reduce_step: the step's
flags and logged scalars in one vector, read once on the host).

Run it: `visionclip train --profile cpu`, `python -m visionclip train --profile cpu`, or
`torchrun --nproc_per_node N -m visionclip train --profile paper` (multi-node: add torchrun's
`--nnodes/--node_rank/--rdzv_endpoint`). The tasks (what is trained) are in training/tasks.py.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..config import Profile
from ..data.datasets import val_pool
from ..data.batch_augment import BatchAugment
from ..data.prepare import BAD_LIST, PreparedImages, prepare_run, without_bad
from ..errors import CheckpointError, ConfigError, DataError
from ..paths import RunLayout
from ..precision import choose_precision
from ..preempt import Preempted, StopRequest, requested, stop_signals_from_parent_only
from ..progress import progress as progress_bar
from ..seeding import derive_seed, seed_everything
from . import checkpoint as ckpt
from . import distributed as dist_utils
from .guard import NonFiniteGuard, NormBuffers
from .logs import JsonlLog
from .optim import build_optimizer
from .sampler import EpochTagged, ResumableBatchSampler
from .schedule import build_scheduler
from .tasks import ClipTask, SupervisedTask

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # tokenisation runs inside forked workers

# Profile values that must match for a checkpoint to be resumed into this run.
RESUME_KEYS = ("seed", "model", "train.batch_size", "train.image_size", "train.loss",
               "train.caption_language", "train.augment", "train.augment_on", "train.hard_negatives",
               "data.captions", "data.min_quality")
# What checkpoints saved before a key existed trained with.
RESUME_DEFAULTS = {"train.augment_on": "items", "train.hard_negatives": False, "data.captions": "generated",
                   "data.min_quality": 0.0}


# ------------------------------------------------------------------ batches

def seed_worker(base_seed: int, parent: int, worker_id: int) -> None:
    """Worker RNGs from (run seed, epoch, rank, worker): independent of the parent's global RNG.
    A stop is the trainer's decision: the worker ignores SIGTERM and SIGUSR1 sent to its whole process
    group by a scheduler, and ends on its parent's (preempt.stop_signals_from_parent_only says why)."""
    stop_signals_from_parent_only(parent)
    s = derive_seed(base_seed, worker_id)
    torch.manual_seed(s)
    np.random.seed(s % 2**32)
    random.seed(s)


def make_loader(dataset, *, batch_sampler=None, batch_size: int | None = None, collate, num_workers: int,
                device: torch.device, seed_key: tuple, persistent: bool = False) -> DataLoader:
    seed = derive_seed(*seed_key)
    kwargs: dict[str, Any] = {}
    if num_workers > 0:
        kwargs.update(worker_init_fn=partial(seed_worker, seed, os.getpid()), prefetch_factor=4,
                      persistent_workers=persistent)
    if batch_sampler is not None:
        kwargs["batch_sampler"] = batch_sampler
    else:
        kwargs.update(batch_size=batch_size, shuffle=False)
    return DataLoader(dataset, collate_fn=collate, num_workers=num_workers,
                      pin_memory=device.type == "cuda",
                      generator=torch.Generator().manual_seed(seed),  # never the global RNG
                      **kwargs)


def shut_down_workers(loader) -> None:
    """End a DataLoader's (or one of its iterators') worker processes now; nothing when it has none
    or they are already gone. The trainer calls it on every way out, error included: an exception's
    traceback keeps the loader alive, and its workers would then live until interpreter exit."""
    it = getattr(loader, "_iterator", loader)  # a persistent loader keeps its one iterator
    shutdown = getattr(it, "_shutdown_workers", None)  # torch's own, idempotent (also its __del__)
    if shutdown is not None:
        shutdown()


# ------------------------------------------------------------------ the loop

def resume_signature(profile: Profile) -> dict:
    value = {k: profile.get(k) for k in RESUME_KEYS}
    return json.loads(json.dumps({k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v
                                  for k, v in value.items()}))  # as it reads back from state.json


def _check_resumable(state: ckpt.TrainState, profile: Profile) -> None:
    saved = state.extra.get("signature")
    now = resume_signature(profile)
    if saved is not None:  # keys newer than the checkpoint read as what it trained with
        saved = {**RESUME_DEFAULTS, **saved}
    if saved is not None and saved != now:
        diff = sorted(k for k in now if saved.get(k) != now[k])
        raise CheckpointError(f"{state.path}: saved by a run with different {diff}; resume with the same "
                              f"profile, or start over with --restart")


def _total_steps(profile: Profile, steps_per_epoch: int) -> int:
    return max(1, int(round(profile.train.epochs * steps_per_epoch)))


def _prepared_splits(profile: Profile, run_dir: Path, records, splits: dict, ctx, progress: bool):
    """The corpus prepared for training (each rank its shards, then all meet), and the train and val
    splits without the images that could not be read: said once, never a stop mid-epoch."""
    summary = prepare_run(profile, run_dir, records, rank=ctx.rank, world_size=ctx.world_size,
                          progress=progress and ctx.is_main)
    dist_utils.barrier(ctx)
    prepared = PreparedImages(summary["folder"])
    dropped = 0
    for name in ("train", "val"):
        splits[name], n = without_bad(splits[name], prepared)
        dropped += n
    if dropped and ctx.is_main:
        print(f"train: skipping {dropped} unreadable image(s) of the train and val splits "
              f"({len(prepared.bad)} in the corpus); the list, with reasons: {prepared.folder / BAD_LIST}",
              file=sys.stderr, flush=True)
    return prepared


def _read_corpus_once(profile: Profile, run_dir: Path, ctx):
    """The corpus table: rank 0 builds it (and saves it, data.table_cache), then the other ranks load
    rank 0's file instead of walking a million files each. Rank 0's failure releases them at once."""
    from ..data.readers import read_corpus

    if not ctx.enabled:
        return read_corpus(profile, run_dir)
    if ctx.is_main:
        try:
            records = read_corpus(profile, run_dir)
        except BaseException:
            dist_utils.broadcast_int(1, ctx)
            raise
        dist_utils.broadcast_int(0, ctx)
        return records
    if dist_utils.broadcast_int(0, ctx):
        raise DataError(f"{run_dir}: rank 0 could not read the corpus (its error says why); rank {ctx.rank} stops too")
    return read_corpus(profile, run_dir, save=False)


def _resume_state(layout, resume: bool, profile: Profile, ctx) -> ckpt.TrainState | None:
    """Rank 0 picks the newest valid checkpoint and every rank loads that one (not each its own
    newest: a checkpoint being pruned or sealed could differ between ranks' listings)."""
    step = -1
    state = None
    if ctx.is_main:
        if resume:
            state = ckpt.load_latest(layout.checkpoints)
        else:
            ckpt.prune_checkpoints(layout.checkpoints, keep=0)
        step = state.step if state is not None else -1
    step = dist_utils.broadcast_int(step, ctx)
    if step >= 0 and state is None:
        state = ckpt.load_checkpoint(layout.checkpoints / ckpt.step_dir_name(step))
    if state is not None:
        _check_resumable(state, profile)
        saved_world = int(state.extra.get("world_size", 1))
        if saved_world != ctx.world_size and ctx.is_main:
            print(f"train: resuming {state.path.name}, saved by {saved_world} rank(s), on {ctx.world_size}: the "
                  "batch order and schedule continue exactly, but gradients are summed in another order and "
                  f"ranks without saved random streams start fresh ones: not bit-identical to an uninterrupted "
                  f"{saved_world}-rank run", file=sys.stderr, flush=True)
    return state


def _restore_rng(state: ckpt.TrainState, profile: Profile, task_name: str, rank: int) -> None:
    saved = state.rng_of(rank)
    if saved is not None:
        ckpt.restore_rng(*saved)
    else:  # a rank the saving run did not have: a fresh stream of its own (said by _resume_state)
        seed_everything(derive_seed(profile.seed, "train", task_name, rank, "resumed", state.step))


def _run(task_cls, profile: Profile, run_dir: str | os.PathLike, *, resume: bool, progress: bool,
         device: str | None = None, stop: StopRequest | None = None) -> dict:
    from ..data.datasets import ImageTextDataset
    from ..data.splits import split_corpus

    cfg = profile.train
    ctx = dist_utils.setup(device, timeout_min=cfg.dist_timeout_min)
    finished = False
    logs: list[JsonlLog] = []
    loaders: list = []  # whatever has worker processes: shut down on every way out (shut_down_workers)
    try:
        run_dir = Path(run_dir)
        records = _read_corpus_once(profile, run_dir, ctx)  # columns, not a record per row; data.captions applied
        splits = split_corpus(records, profile.seed)
        layout = RunLayout(run_dir).training(task_cls.name)  # final model, checkpoints, logs
        state = _resume_state(layout, resume, profile, ctx)

        prepared = None
        if cfg.preload:  # decoded and cropped once (data.prepare): no worker decodes, every epoch reads the shards
            prepared = _prepared_splits(profile, run_dir, records, splits, ctx, progress)
        task = task_cls(profile, splits["train"], state)
        model = task.model.to(ctx.device, memory_format=torch.channels_last)
        if cfg.sync_batchnorm and ctx.enabled:
            if ctx.device.type != "cuda":
                raise ConfigError("train.sync_batchnorm: torch's SyncBatchNorm runs on CUDA devices only; "
                                  "set it false for CPU ranks")
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        if task.name == ClipTask.name:  # its saved config says which captions it learned from
            model.training_captions = records.caption_record(cfg.caption_language)
        optimizer = build_optimizer(model, cfg.lr, cfg.weight_decay)
        # train.augment_on: batches augments each batch on the device with the same (seed, epoch, index) draws
        batch_augment = (BatchAugment(cfg.image_size, profile.seed) if cfg.augment and cfg.augment_on == "batches"
                         else None)
        item_augment = cfg.augment and batch_augment is None
        train_ds = ImageTextDataset(splits["train"], cfg.image_size, cfg.caption_language, item_augment,
                                    profile.seed, hard_negatives=task.hard_negatives)
        if prepared is not None:
            train_ds.use_prepared(prepared)
        # Prepared crops cost a copy: workers earn their start-up only when they augment.
        train_workers = 0 if prepared is not None and not item_augment else cfg.num_workers
        sampler = ResumableBatchSampler(len(train_ds), cfg.batch_size, profile.seed,
                                        rank=ctx.rank, world_size=ctx.world_size)
        total_steps = _total_steps(profile, sampler.steps_per_epoch)
        # train.max_steps stops early; the schedule stays the whole budget's, so these steps are the
        # first steps of the full run (and a later run without the limit resumes into it exactly)
        stop_step = min(total_steps, cfg.max_steps) if cfg.max_steps else total_steps
        scheduler = build_scheduler(optimizer, total_steps, cfg.warmup_fraction)
        precision = choose_precision(cfg.precision, ctx.device)
        if ctx.device.type == "cuda":  # fixed shapes: let cuDNN pick its fastest kernels (exactness is a CPU promise)
            torch.backends.cudnn.benchmark = True
        scaler = torch.amp.GradScaler("cuda") if precision.uses_scaler else None
        guard = NonFiniteGuard(cfg.max_nonfinite)
        norms = NormBuffers(model)  # after .to(device): moving a model replaces its buffer tensors

        step = 0
        if state is not None:
            model.load_state_dict(state.model)
            ckpt.apply_optimizer_state(optimizer, state.optimizer)
            scheduler.load_state_dict(state.scheduler)
            if scaler is not None and state.scaler:
                scaler.load_state_dict(state.scaler)
            guard.in_a_row = int(state.extra.get("nonfinite_in_a_row", 0))
            guard.total_skipped = int(state.extra.get("nonfinite_total", 0))
            step = state.step
            _restore_rng(state, profile, task.name, ctx.rank)
        else:  # dropout streams differ per rank, like independent workers
            seed_everything(derive_seed(profile.seed, "train", task.name, ctx.rank))

        train_log = JsonlLog(layout.train_log, enabled=ctx.is_main)
        val_log = JsonlLog(layout.val_log, enabled=ctx.is_main)
        logs += [train_log, val_log]
        train_log.truncate_after(step if state is not None else -1)
        val_log.truncate_after(step if state is not None else -1)

        val_batches: list = []
        if ctx.is_main:
            val_ds = val_pool(profile, splits)
            if prepared is not None:
                val_ds.use_prepared(prepared)
            val_loader = make_loader(val_ds, batch_size=sampler.local_batch, collate=task.collate,
                                     num_workers=0 if prepared is not None else cfg.num_workers, device=ctx.device,
                                     seed_key=(profile.seed, "val-loader"))
            # Decoded once and kept (val_size images, unaugmented): every validation sees the same
            # batches without decoding them again or starting a worker.
            val_iter = iter(val_loader)
            loaders.append(val_iter)  # its workers go when it is spent, or on an error (the finally below)
            val_batches = list(val_iter)

        ddp_model = model
        if ctx.enabled:
            ddp_model = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[ctx.device] if ctx.device.type == "cuda" else None)
        if cfg.compile:  # checkpoints keep saving `model`: its parameter names carry no compile prefix
            ddp_model = torch.compile(ddp_model)
        params = [p for p in model.parameters() if p.requires_grad]

        def validate() -> dict:
            row: dict = {}
            if ctx.is_main:
                model.eval()
                row = {"step": step, "epoch": step / sampler.steps_per_epoch,
                       **task.validate(model, val_batches, ctx.device, precision)}
                model.train()
                val_log.append(row)
            dist_utils.barrier(ctx)
            return row

        def save() -> None:
            rng_states = dist_utils.gather_to_main(ckpt.capture_rng(), ctx)  # each rank's own streams
            if ctx.is_main:
                ckpt.save_checkpoint(
                    layout.checkpoints, step=step, samples=step * cfg.batch_size, model=model,
                    optimizer=optimizer, scheduler=scheduler, scaler=scaler, keep=cfg.keep_checkpoints,
                    write_side_files=task.save_side_files, rng_states=rng_states,
                    extra={"signature": resume_signature(profile), "profile": profile.to_dict(),
                           "task": task.name, "total_steps": total_steps, "world_size": ctx.world_size,
                           "nonfinite_in_a_row": guard.in_a_row, "nonfinite_total": guard.total_skipped})
            dist_utils.barrier(ctx)

        bar = (progress_bar(desc=f"train {task.name}", total=stop_step, initial=step, unit="step")
               if progress and ctx.is_main else None)
        model.train()
        started = time.perf_counter()
        last_row: dict = {}
        last_val: dict = {}
        start_step = step
        stopping = False  # a stop requested on any rank (SIGTERM, SIGUSR1): checkpoint at this step, raise Preempted
        # One loader for the run: its workers live across epochs (the epoch travels with each index,
        # EpochTagged) and never touch the global RNG, so they need no per-epoch seed.
        loader = make_loader(train_ds, batch_sampler=EpochTagged(sampler), collate=task.collate,
                             num_workers=train_workers, device=ctx.device, persistent=True,
                             seed_key=(profile.seed, "train-loader", task.name, ctx.rank))
        loaders.append(loader)
        while step < stop_step:
            sampler.set_position(step)
            epoch = sampler.epoch  # this loader's epoch, whatever the sampler does while prefetching
            train_ds.set_epoch(epoch)
            tick = time.perf_counter()
            for batch in loader:
                if batch_augment is not None:
                    batch["image"] = batch_augment(batch["image"].to(ctx.device, non_blocking=True), epoch,
                                                   batch["index"].tolist())
                norms.snapshot()  # BatchNorm's statistics before this step's forward updates them
                with precision.autocast():
                    loss, extras = task.step_loss(ddp_model, batch, ctx.device)
                optimizer.zero_grad(set_to_none=True)
                try:
                    if scaler is not None:
                        scaler.scale(loss).backward()
                        scaler.unscale_(optimizer)
                    else:
                        loss.backward()
                except RuntimeError as e:  # DDP's gradient all-reduce meets a rank that left
                    if not (ctx.enabled and dist_utils.is_peer_failure(e)):
                        raise
                    raise dist_utils.peer_left(ctx, e) from None
                max_norm = cfg.grad_clip if cfg.grad_clip > 0 else math.inf
                grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
                # BatchNorm statistics too: fp16 overflow can spoil them even when the scaler skips the step
                bad = ~torch.isfinite(loss.detach()) | norms.bad()
                if scaler is None:  # fp16: an overflowing gradient is the scaler's business (it skips, lowers the scale)
                    bad = bad | ~torch.isfinite(grad_norm)
                # the step's one meeting and one host read: the skip decision needs it before the update
                (nonfinite, stopping), (loss_value, grad_value, *extra_values) = dist_utils.reduce_step(
                    [bad, torch.tensor(float(requested(stop)))], [loss.detach().float(), grad_norm, *extras.values()],
                    ctx)
                if guard.record(nonfinite, step + 1, "loss, gradient or BatchNorm statistics"):
                    optimizer.zero_grad(set_to_none=True)
                    norms.restore()
                    if scaler is not None:
                        scaler.update()
                elif scaler is not None:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                lr = optimizer.param_groups[0]["lr"]
                scheduler.step()
                step += 1

                now = time.perf_counter()
                last_row = {"step": step, "epoch": step / sampler.steps_per_epoch, "loss": loss_value,
                            "lr": lr, "grad_norm": grad_value, "skipped": bool(nonfinite),
                            "images_per_s": cfg.batch_size / max(now - tick, 1e-9),
                            **dict(zip(extras.keys(), extra_values))}
                train_log.append(last_row)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss_value:.3f}", refresh=False)
                if step % cfg.val_every == 0 or step == stop_step:
                    last_val = validate()
                if step % cfg.checkpoint_every == 0 or step == stop_step or stopping:
                    save()
                if step >= stop_step or stopping:
                    break
                tick = time.perf_counter()  # images/s measures training, not validation or saving
            if stopping:
                break
        shut_down_workers(loader)
        if bar is not None:
            bar.close()
        if stopping:  # every rank stopped at this step and its checkpoint is written: nothing else to do
            finished = True
            why = stop.signal_name if requested(stop) else "a stop signal on another rank"
            raise Preempted(f"{why} received: stopped training {task.name} at step {step} of {stop_step}; "
                            f"checkpoint {layout.checkpoints / ckpt.step_dir_name(step)}")
        if ctx.is_main:
            task.save_final(model, layout.final)
        dist_utils.barrier(ctx)
        elapsed = time.perf_counter() - started
        finished = True
        return {"task": task.name, "steps": step, "total_steps": total_steps,
                "resumed_from": start_step if state else None,
                "epochs": step / sampler.steps_per_epoch, "samples": step * cfg.batch_size,
                "seconds": elapsed, "precision": precision.name, "world_size": ctx.world_size,
                "nonfinite_skipped": guard.total_skipped, "final_train": last_row, "final_val": last_val,
                "output": str(layout.final)}
    finally:
        for each in loaders:
            shut_down_workers(each)
        for log in logs:
            log.close()
        dist_utils.teardown(ctx, clean=finished)


def train_clip(profile: Profile, run_dir: str | os.PathLike, resume: bool = True, progress: bool = True,
               *, device: str | None = None, stop: StopRequest | None = None) -> dict:
    """Pre-train VisionCLIP on run_dir's corpus; the final model goes to RunLayout(run_dir).model.
    With `stop` (preempt.StopRequest), a signal ends the run at the next step, checkpointed: Preempted."""
    return _run(ClipTask, profile, run_dir, resume=resume, progress=progress, device=device, stop=stop)


def train_supervised(profile: Profile, run_dir: str | os.PathLike, resume: bool = True, progress: bool = True,
                     *, device: str | None = None, stop: StopRequest | None = None) -> dict:
    """Train the supervised ceiling with the CLIP run's budget; the model goes to RunLayout(run_dir).supervised."""
    return _run(SupervisedTask, profile, run_dir, resume=resume, progress=progress, device=device, stop=stop)
