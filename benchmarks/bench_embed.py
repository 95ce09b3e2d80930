"""Evaluation embedding speed: bf16 autocast against fp32 (both channels-last), and how far apart they land.

    python benchmarks/bench_embed.py --profile cpu [--run-dir runs/cpu] [--images 512] [--rounds 3]
    python benchmarks/bench_embed.py --profile cpu --workers 0 1 2    (decoding workers instead)

Times visionclip.eval.embed.embed_images as the evaluation notebooks call it (JPEG decode, fundus
preprocessing and the image tower, batch eval.batch_size) with precision "auto" (what training uses:
bf16 where the CPU computes it natively) and "fp32", in alternating rounds, and compares the medians.
The model is run_dir/model when a finished run is there, else an untrained one of the profile's
configuration (speed does not depend on the weights). The smallest cosine between an image's two
embeddings says how much the cheaper arithmetic moves them. With --workers, the same passes compare
DataLoader workers (eval.num_workers) at the "auto" precision instead.
"""
from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench_train import corpus_records, load_profile_args, profile_parser  # noqa: E402
from visionclip.data.transforms import Preprocess  # noqa: E402
from visionclip.eval.embed import embed_images  # noqa: E402
from visionclip.precision import choose_precision  # noqa: E402


def load_model(profile, run_dir: Path):
    if (run_dir / "model" / "config.json").is_file():
        from visionclip.pretrained import load_clip

        return load_clip(run_dir / "model")[0], f"{run_dir / 'model'} (trained)"
    from visionclip.model import build_model

    model = build_model(profile.model, profile.model.vocab_size, profile.train.image_size)
    return model, "untrained, the profile's configuration"


def timed_embed(model, records, image_size: int, batch_size: int, precision: str,
                workers: int = 0) -> tuple[float, np.ndarray]:
    """images/s of one embed_images pass, and its embeddings."""
    start = time.perf_counter()
    emb = embed_images(model, records, Preprocess(image_size), batch_size, precision=precision,
                       desc=f"embed ({precision})", num_workers=workers)
    return len(records) / (time.perf_counter() - start), emb


def compare_workers(model, records, size: int, batch: int, workers: list[int], rounds: int) -> int:
    """Alternating rounds of each worker count; medians, each against the first count."""
    timed_embed(model, records[:batch], size, batch, "auto")  # warm-up: first-call allocations
    speeds: dict[int, list[float]] = {w: [] for w in workers}
    for _ in range(rounds):
        for w in workers:
            speeds[w].append(timed_embed(model, records, size, batch, "auto", w)[0])
    base = statistics.median(speeds[workers[0]])
    for w in workers:
        m = statistics.median(speeds[w])
        print(f"workers {w}: {m:.1f} img/s (rounds: {', '.join(f'{x:.1f}' for x in speeds[w])}); "
              f"/ workers {workers[0]}: {m / base:.2f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = profile_parser(__doc__.splitlines()[0], "corpus (and model)")
    ap.add_argument("--images", type=int, default=512, help="corpus images embedded per pass")
    ap.add_argument("--rounds", type=int, default=3, help="alternating auto / fp32 rounds (medians compared)")
    ap.add_argument("--workers", type=int, nargs="+", help="compare these DataLoader worker counts instead")
    args = ap.parse_args(argv)

    profile, run_dir = load_profile_args(args)
    size, batch = profile.train.image_size, profile.eval.batch_size
    auto = choose_precision("auto", torch.device("cpu")).name
    with tempfile.TemporaryDirectory() as tmp:
        records = list(corpus_records(profile, run_dir, Path(tmp), args.images))[:args.images]
        model, origin = load_model(profile, run_dir)
        print(f"profile {profile.name}: {profile.model.image_tower}, {size} px, batch {batch}, {len(records)} "
              f"images, model {origin}; auto = {auto}, torch threads {torch.get_num_threads()}, "
              f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)
        if args.workers:
            return compare_workers(model, records, size, batch, args.workers, args.rounds)
        if auto == "fp32":
            print("this CPU has no native bf16: auto is fp32, nothing to compare")
            return 0
        timed_embed(model, records[:batch], size, batch, "auto")  # warm-up: first-call allocations
        fast, full = [], []
        for _ in range(args.rounds):
            speed, emb_auto = timed_embed(model, records, size, batch, "auto")
            fast.append(speed)
            speed, emb_fp32 = timed_embed(model, records, size, batch, "fp32")
            full.append(speed)
    a, f = statistics.median(fast), statistics.median(full)
    cos = (emb_auto * emb_fp32).sum(axis=1)
    print(f"embedding ({auto}): {a:.1f} img/s (rounds: {', '.join(f'{x:.1f}' for x in fast)})")
    print(f"embedding (fp32): {f:.1f} img/s (rounds: {', '.join(f'{x:.1f}' for x in full)})")
    print(f"{auto} / fp32: {a / f:.2f}; cosine between the two embeddings of an image: min {cos.min():.4f}, "
          f"median {np.median(cos):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
