"""GPU check: the paper profile's training step on one device, from prepared shards, in a few minutes.

    make gpu-check                                   # = python benchmarks/gpu_check.py (cuda)
    python benchmarks/gpu_check.py --device cpu --steps 1 --warmup 1 --images 40 --batch 4 ...   # smoke:
                                                     # tests/test_gpu_check.py has its arguments

A small stand-in corpus in the paper profile's format is rendered into a temporary directory and
prepared (data.prepare) at the profile's training size; then, on --device, with the paper model
(ResNet-50 + 12-layer BERT) and the per-device batch (--batch, default: the profile's global batch
split over 8 GPUs), it prints:
  ceiling bf16 / fp32   images/s of forward + backward + clip + AdamW on one batch held on the device,
                        under the profile's precision (bf16 autocast, channels_last) and in fp32;
  data path             images/s of the same steps fed by the trainer's loader from the prepared shards
                        (train.num_workers workers) with the batched augmentation on the device, and its
                        ratio to the ceiling (goal >= 0.9);
  matmul peak           the device's bf16 and fp32 matmul GFLOP/s and the step's share of it;
  peak memory           torch.cuda.max_memory_allocated (GPU only).
Run it whenever a GPU is at hand and paste its output into the issue or the note.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import matmul_peak, step_flops, timed_steps  # noqa: E402

from visionclip.config import load_profile, parse_override  # noqa: E402
from visionclip.data.batch_augment import BatchAugment  # noqa: E402
from visionclip.data.datasets import ImageTextDataset  # noqa: E402
from visionclip.data.prepare import PreparedImages, prepare_run  # noqa: E402
from visionclip.data.readers import read_corpus  # noqa: E402
from visionclip.data.splits import split_corpus  # noqa: E402
from visionclip.paths import RunLayout  # noqa: E402
from visionclip.precision import Precision, choose_precision  # noqa: E402
from visionclip.synth.writers import render_corpus  # noqa: E402
from visionclip.training.loop import make_loader  # noqa: E402
from visionclip.training.optim import build_optimizer  # noqa: E402
from visionclip.training.sampler import ResumableBatchSampler  # noqa: E402
from visionclip.training.tasks import ClipTask  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (the smoke run)")
    ap.add_argument("--profile", default="paper")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    ap.add_argument("--steps", type=int, default=30, help="timed steps per measurement")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--batch", type=int, help="images per step on this device (default: global batch / 8)")
    ap.add_argument("--images", type=int, default=2048, help="stand-in images to render and prepare")
    args = ap.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA device here; for the smoke run pass --device cpu")
    overrides = dict(parse_override(o) for o in args.overrides)
    batch = args.batch or max(2, load_profile(args.profile, overrides).train.batch_size // 8)
    profile = load_profile(args.profile, {**overrides, "synth.corpus_size": args.images, "train.batch_size": batch,
                                          "synth.workers": min(16, load_profile(args.profile, overrides).synth.workers)})
    cfg = profile.train
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True
        name = torch.cuda.get_device_name(device)
    else:
        name = "CPU"
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp)
        t = time.perf_counter()
        render_corpus(profile, RunLayout(run_dir).corpus, progress=False)
        records = read_corpus(profile, run_dir)
        train = split_corpus(records, profile.seed)["train"]
        summary = prepare_run(profile, run_dir, records, progress=False)
        print(f"{args.images} stand-in images rendered and prepared at {summary['size']} px in "
              f"{time.perf_counter() - t:.0f} s; device {name}; batch {batch} per device", flush=True)

        task = ClipTask(profile, train, None)
        model = task.model.to(device, memory_format=torch.channels_last)
        optimizer = build_optimizer(model, cfg.lr, cfg.weight_decay)
        dataset = ImageTextDataset(train, cfg.image_size, cfg.caption_language, False, profile.seed)
        dataset.use_prepared(PreparedImages(summary["folder"]))
        sampler = ResumableBatchSampler(len(dataset), batch, profile.seed)
        if sampler.steps_per_epoch < args.warmup + args.steps:
            sys.exit(f"gpu_check: {sampler.steps_per_epoch} batches of {batch} in the train split; render more "
                     f"images (--images) for --warmup + --steps = {args.warmup + args.steps}")
        augment = BatchAugment(cfg.image_size, profile.seed) if cfg.augment else None

        def batches(loader):
            for b in loader:  # what the trainer does with train.augment_on: batches
                if augment is not None:
                    b["image"] = augment(b["image"].to(device, non_blocking=True), 0, b["index"].tolist())
                yield b

        def loader():
            return batches(make_loader(dataset, batch_sampler=sampler, collate=task.collate,
                                       num_workers=cfg.num_workers, device=device, seed_key=(profile.seed, "gpu")))

        held = next(iter(loader()))
        held = {k: v.to(device) if torch.is_tensor(v) else v for k, v in held.items()}
        forever = lambda: iter(lambda: held, None)  # noqa: E731  the same batch, already on the device
        auto = choose_precision(cfg.precision, device)
        common = dict(steps=args.steps, warmup=args.warmup, batch_size=batch, grad_clip=cfg.grad_clip, device=device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        ceiling = timed_steps(task, model, optimizer, forever(), auto, **common)
        fed = timed_steps(task, model, optimizer, loader(), auto, **common)
        fp32 = timed_steps(task, model, optimizer, forever(), Precision("fp32", device.type), **common)
        print(f"ceiling ({auto.name}, channels_last): {ceiling:.1f} img/s; fp32: {fp32:.1f} img/s; "
              f"{auto.name} / fp32: {ceiling / fp32:.2f}")
        print(f"data path (prepared shards, {cfg.num_workers} workers, augmentation "
              f"{'on the device' if augment else 'off'}): {fed:.1f} img/s = {fed / ceiling:.3f} of the ceiling")
        peaks = {n: matmul_peak(d, device=device) for n, d in (("fp32", torch.float32), ("bf16", torch.bfloat16))}
        flops = step_flops(task, model, held, auto, device=device)
        peak = peaks["bf16" if auto.name == "bf16" else "fp32"]
        print(f"matmul peak: fp32 {peaks['fp32']:.0f} GFLOP/s, bf16 {peaks['bf16']:.0f} GFLOP/s; the step: "
              f"{flops / 1e9:.1f} GFLOP, {flops / batch * ceiling / 1e9:.0f} GFLOP/s at the ceiling = "
              f"{flops / batch * ceiling / 1e9 / peak:.3f} of the {auto.name} peak")
        if device.type == "cuda":
            print(f"peak GPU memory: {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
