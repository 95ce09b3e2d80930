"""Training throughput: the streaming input path against the compute ceiling, and bf16 against fp32.

    python benchmarks/bench_train.py --profile cpu [--run-dir runs/cpu] [--steps 20]

compute ceiling: the profile's model, batch and image size, fed from batches decoded, augmented
                 and tokenised beforehand and held in memory (what the model alone can do).
streaming:       the trainer's own input path (visionclip.training.loop.make_loader): JPEGs decoded,
                 preprocessed and augmented in train.num_workers DataLoader workers, captions
                 tokenised in the workers' collate, the seeded resumable sampler.
preloaded:       the trainer's path with train.preload (what the cpu profile uses): the train split
                 prepared once (data.prepare: decoded and cropped into memory-mapped shards), items and
                 captions collated in the main process; reported separately, it does not count for the
                 streaming goal (the time to prepare is printed).
Both time forward + backward + clipping + AdamW step, after warm-up steps, in alternating rounds. The goal is
streaming / ceiling >= 0.9. The "compute ceiling" is empirical (what this model does from memory), not a
physical limit; the physical one is measured too:
matmul peak:     square fp32 and bf16 matrix products on the torch threads (best of several), GFLOP/s;
model FLOP/s:    one training step's floating-point operations (torch.utils.flop_counter: forward and
                 backward, matmuls and convolutions) times the steps per second, and its share of the
                 matmul peak in the precision the step runs in.
--compile adds torch.compile's model (train.compile) against the eager one on the in-memory batches. The corpus is run_dir/data/corpus; without one, a small corpus is
rendered into a temporary directory (visionclip.synth.writers.render_corpus).
Timings are wall-clock on whatever else the machine is doing: report them with the load.
"""
from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from visionclip.config import load_profile, parse_override  # noqa: E402
from visionclip.data.datasets import ImageTextDataset, file_names  # noqa: E402
from visionclip.data.prepare import PreparedImages, corpus_paths, prepare_images  # noqa: E402
from visionclip.data.transforms import Preprocess  # noqa: E402
from visionclip.data.readers import read_synfundus_table  # noqa: E402
from visionclip.data.splits import split_corpus  # noqa: E402
from visionclip.paths import corpus_dir  # noqa: E402
from visionclip.training.loop import make_loader  # noqa: E402
from visionclip.training.tasks import ClipTask  # noqa: E402
from visionclip.training.optim import build_optimizer  # noqa: E402
from visionclip.precision import Precision, choose_precision  # noqa: E402
from visionclip.training.sampler import ResumableBatchSampler  # noqa: E402


def corpus_records(profile, run_dir: Path | None, tmp: Path, images: int):
    root = corpus_dir(profile, run_dir) if run_dir else None
    if root is None or not (root / "annotations.csv").is_file():
        from visionclip.synth.writers import render_corpus

        small = load_profile(profile.name, {"synth.corpus_size": images})
        root = tmp / "corpus"
        print(f"no corpus under {run_dir}: rendering {images} images into {root}", flush=True)
        render_corpus(small, root, progress=False)
    return split_corpus(read_synfundus_table(root), profile.seed)["train"]  # as the trainer reads it


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_steps(task: ClipTask, model, optimizer, batches, precision: Precision, steps: int, warmup: int,
                batch_size: int, grad_clip: float, device: torch.device = torch.device("cpu")) -> float:
    """images/s of `steps` optimizer steps after `warmup` untimed ones."""
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    it = iter(batches)
    for i in range(warmup + steps):
        if i == warmup:
            _sync(device)
            start = time.perf_counter()
        batch = next(it)
        with precision.autocast():
            loss, _ = task.step_loss(model, batch, device)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, grad_clip or float("inf"))
        optimizer.step()
    _sync(device)
    return steps * batch_size / (time.perf_counter() - start)


def matmul_peak(dtype: torch.dtype, n: int = 2048, repeats: int = 5,
                device: torch.device = torch.device("cpu")) -> float:
    """GFLOP/s of the best of `repeats` n x n matrix products in `dtype` (2 n^3 operations each)."""
    if device.type == "cuda":
        n *= 4  # a GPU needs bigger products to reach its peak
    a, b = torch.randn(n, n, device=device).to(dtype), torch.randn(n, n, device=device).to(dtype)
    torch.mm(a, b)  # first call: kernel selection, page faults
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        torch.mm(a, b)
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best / 1e9


def step_flops(task: ClipTask, model, batch, precision: Precision, device: torch.device = torch.device("cpu")) -> float:
    """Floating-point operations of one training step's forward and backward (optimizer excluded)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        with precision.autocast():
            loss, _ = task.step_loss(model, batch, device)
        loss.backward()
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def profile_parser(description: str, reads: str) -> argparse.ArgumentParser:
    """--profile, --set and --run-dir, shared by the benchmarks that read a profile's run directory."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    ap.add_argument("--run-dir", type=Path, help=f"run directory whose {reads} to read (default runs/<profile>)")
    return ap


def load_profile_args(args):
    """The profile named by --profile with the --set overrides, and the run directory to read."""
    profile = load_profile(args.profile, dict(parse_override(o) for o in args.overrides))
    return profile, args.run_dir or Path("runs") / profile.name


def main(argv: list[str] | None = None) -> int:
    ap = profile_parser(__doc__.splitlines()[0], "data/corpus")
    ap.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps before each measurement")
    ap.add_argument("--rounds", type=int, default=3, help="alternating ceiling / streaming rounds (medians compared)")
    ap.add_argument("--render-images", type=int, default=600, help="corpus size when one must be rendered")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile's model (train.compile)")
    args = ap.parse_args(argv)

    profile, run_dir = load_profile_args(args)
    cfg = profile.train
    device = torch.device("cpu")
    with tempfile.TemporaryDirectory() as tmp:
        train = corpus_records(profile, run_dir, Path(tmp), args.render_images)
        task = ClipTask(profile, train, None)
        model = task.model.to(memory_format=torch.channels_last)
        optimizer = build_optimizer(model, cfg.lr, cfg.weight_decay)
        dataset = ImageTextDataset(train, cfg.image_size, cfg.caption_language, cfg.augment, profile.seed,
                                   hard_negatives=task.hard_negatives)
        sampler = ResumableBatchSampler(len(dataset), cfg.batch_size, profile.seed)
        n_steps = args.warmup + args.steps
        if sampler.steps_per_epoch < n_steps:
            sys.exit(f"the train split has {sampler.steps_per_epoch} batches of {cfg.batch_size}; "
                     f"--warmup + --steps = {n_steps}: render more images (--render-images)")

        def stream(ds=dataset, workers=cfg.num_workers):
            return make_loader(ds, batch_sampler=sampler, collate=task.collate, num_workers=workers,
                               device=device, seed_key=(profile.seed, "bench"))

        in_memory = ImageTextDataset(train, cfg.image_size, cfg.caption_language, cfg.augment, profile.seed,
                                   hard_negatives=task.hard_negatives)
        t = time.perf_counter()
        summary = prepare_images(file_names(train), corpus_paths(train), Path(tmp) / "prepared",
                                 Preprocess(cfg.image_size), workers=1, progress=False)
        in_memory.use_prepared(PreparedImages(summary["folder"]))
        print(f"train.preload: {len(in_memory)} images prepared (one process) in {time.perf_counter() - t:.1f} s",
              flush=True)

        auto = choose_precision(cfg.precision, device)
        print(f"profile {profile.name}: {profile.model.image_tower} + {profile.model.text_layers}-layer BERT, "
              f"{cfg.image_size} px, batch {cfg.batch_size}, workers {cfg.num_workers}, precision {auto.name}, "
              f"torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f} "
              f"on {os.cpu_count()} CPUs", flush=True)

        t = time.perf_counter()
        preloaded = list(itertools.islice(iter(stream()), 8))  # decoded + augmented + tokenised once
        print(f"preloaded {len(preloaded)} batches in {time.perf_counter() - t:.1f} s", flush=True)
        cycle = lambda: itertools.cycle(preloaded)  # noqa: E731

        common = dict(steps=args.steps, warmup=args.warmup, batch_size=cfg.batch_size, grad_clip=cfg.grad_clip)
        # Side by side: the machine's speed drifts by +-10% over a minute, so the two are measured in
        # alternating rounds and compared by their medians, not one after the other once.
        ceilings, streams, preloads = [], [], []
        for _ in range(args.rounds):
            ceilings.append(timed_steps(task, model, optimizer, cycle(), auto, **common))
            streams.append(timed_steps(task, model, optimizer, iter(stream()), auto, **common))
            preloads.append(timed_steps(task, model, optimizer, iter(stream(in_memory, 0)), auto, **common))
        ceiling, streaming, preloaded_rate = (statistics.median(x) for x in (ceilings, streams, preloads))
        print(f"compute ceiling ({auto.name}): {ceiling:.1f} img/s (median of {args.rounds} rounds: "
              f"{', '.join(f'{c:.1f}' for c in ceilings)})")
        print(f"streaming       ({auto.name}): {streaming:.1f} img/s (rounds: {', '.join(f'{s:.1f}' for s in streams)})")
        print(f"streaming / ceiling: {streaming / ceiling:.3f}  (goal >= 0.9; per round: "
              f"{', '.join(f'{s / c:.3f}' for s, c in zip(streams, ceilings))})")
        print(f"preloaded       ({auto.name}): {preloaded_rate:.1f} img/s (rounds: "
              f"{', '.join(f'{s:.1f}' for s in preloads)}); preloaded / ceiling: {preloaded_rate / ceiling:.3f}, "
              f"preloaded / streaming: {preloaded_rate / streaming:.3f}")
        if auto.name == "bf16":
            fp32 = timed_steps(task, model, optimizer, cycle(), Precision("fp32", "cpu"), **common)
            print(f"compute ceiling (fp32): {fp32:.1f} img/s; bf16 / fp32: {ceiling / fp32:.2f}")
        else:
            print("bf16 vs fp32: this CPU has no native bf16, auto chose fp32")

        # The physical ceiling: what the cores do on the operation the model is made of.
        peaks = {name: matmul_peak(dtype) for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))}
        print(f"matmul peak: fp32 {peaks['fp32']:.1f} GFLOP/s, bf16 {peaks['bf16']:.1f} GFLOP/s "
              f"(2048 x 2048, best of 5, {torch.get_num_threads()} threads)")
        flops = step_flops(task, model, preloaded[0], auto)
        peak = peaks["bf16" if auto.name == "bf16" else "fp32"]
        for name, rate in (("compute ceiling", ceiling), ("preloaded", preloaded_rate), ("streaming", streaming)):
            model_gflops = flops / cfg.batch_size * rate / 1e9
            print(f"model FLOP/s, {name}: {model_gflops:.1f} GFLOP/s = {model_gflops / peak:.3f} of the "
                  f"{auto.name} matmul peak ({flops / 1e9:.2f} GFLOP per step of {cfg.batch_size}, forward + backward)")

        if args.compile:
            compiled = torch.compile(model)
            t = time.perf_counter()
            timed_steps(task, compiled, optimizer, cycle(), auto, steps=1, warmup=1, batch_size=cfg.batch_size,
                        grad_clip=cfg.grad_clip)
            print(f"torch.compile: first steps (compiling) {time.perf_counter() - t:.0f} s", flush=True)
            eager = timed_steps(task, model, optimizer, cycle(), auto, **common)
            comp = timed_steps(task, compiled, optimizer, cycle(), auto, **common)
            print(f"compiled / eager ({auto.name}, in-memory batches): {comp / eager:.2f} "
                  f"({comp:.1f} vs {eager:.1f} img/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
