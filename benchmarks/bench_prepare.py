"""The training input path per core: today's JPEG path against prepared shards, and the prepare stage.

    python benchmarks/bench_prepare.py [--images 160] [--passes 3]

Two corpora are rendered into a temporary directory: the cpu profile's (128 px JPEGs, trained at
128 px) and one at 512 px (SynFundus-1M's size), read at 224 px. For each, one process (one core):
  jpeg:      ImageTextDataset items decoded, fundus-cropped and resized from the files (the streaming path)
  prepared:  the same items read from data.prepare's memory-mapped shards (the train.preload path)
  each without and with TrainAugment (per item, PIL); the prepared items with the same augmentation
  applied to batches of 32 (data.batch_augment, here on the CPU, one thread); and the prepare stage
  itself (one process):
  images/s, bytes on disk, and what the cpu corpus (synth.corpus_size images) takes at that rate.
The shards were just written, so they are read from the page cache, as during training on a
machine whose memory holds them. Timings are wall-clock on whatever else the machine is doing.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from visionclip.config import load_profile
from visionclip.data.batch_augment import BatchAugment
from visionclip.data.datasets import ImageTextDataset, file_names
from visionclip.data.prepare import PreparedImages, corpus_paths, prepare_images
from visionclip.data.readers import read_synfundus_table
from visionclip.data.transforms import Preprocess
from visionclip.synth.writers import render_corpus


def items_per_s(ds: ImageTextDataset, passes: int) -> float:
    """Items per second over `passes` passes (one epoch each, so augmentation draws differ)."""
    ds[0]  # first touch: imports, the first map of a shard
    start = time.perf_counter()
    for epoch in range(passes):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            ds[i]
    return passes * len(ds) / (time.perf_counter() - start)


def batched_per_s(ds: ImageTextDataset, augment: BatchAugment, passes: int, batch: int = 32) -> float:
    """Images per second of unaugmented prepared items stacked into batches and augmented as batches."""
    start = time.perf_counter()
    for epoch in range(passes):
        ds.set_epoch(epoch)
        for lo in range(0, len(ds) - batch + 1, batch):
            augment(torch.stack([ds[i]["image"] for i in range(lo, lo + batch)]), epoch, range(lo, lo + batch))
    return passes * (len(ds) // batch) * batch / (time.perf_counter() - start)


def measure(name: str, render_size: int, size: int, images: int, passes: int, tmp: Path, cpu_corpus: int) -> dict:
    profile = load_profile("cpu", {"synth.corpus_size": images, "synth.render_size": render_size, "synth.workers": 1})
    root = render_corpus(profile, tmp / name, progress=False)
    records = read_synfundus_table(root)
    start = time.perf_counter()
    summary = prepare_images(file_names(records), corpus_paths(records), tmp / f"{name}_prepared", Preprocess(size),
                             workers=1, progress=False)
    prepare_rate = images / (time.perf_counter() - start)
    prepared = PreparedImages(summary["folder"])
    row = {"corpus": name, "render_px": render_size, "train_px": size, "images": images,
           "prepare_img_s": round(prepare_rate, 1), "shard_bytes_per_image": summary["bytes"] / images,
           "cpu_corpus_images": cpu_corpus, "cpu_corpus_prepare_s": round(cpu_corpus / prepare_rate, 1),
           "cpu_corpus_gib": round(summary["bytes"] / images * cpu_corpus / 2**30, 3)}
    for augment in (False, True):
        jpeg = ImageTextDataset(records, size, "zh", augment=augment, seed=0)
        fast = ImageTextDataset(records, size, "zh", augment=augment, seed=0)
        fast.use_prepared(prepared)
        key = "augment" if augment else "plain"
        row[f"jpeg_{key}_img_s"] = round(items_per_s(jpeg, 1), 1)
        row[f"prepared_{key}_img_s"] = round(items_per_s(fast, passes), 1)
        row[f"ratio_{key}"] = round(row[f"prepared_{key}_img_s"] / row[f"jpeg_{key}_img_s"], 2)
    plain = ImageTextDataset(records, size, "zh", augment=False, seed=0)
    plain.use_prepared(prepared)
    row["prepared_batched_img_s"] = round(batched_per_s(plain, BatchAugment(size, 0), passes), 1)
    row["ratio_batched"] = round(row["prepared_batched_img_s"] / row["jpeg_augment_img_s"], 2)
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=160, help="images per corpus")
    ap.add_argument("--passes", type=int, default=3, help="passes over the prepared items (they are quick)")
    args = ap.parse_args(argv)
    cpu_corpus = int(load_profile("cpu").synth.corpus_size)
    torch.set_num_threads(1)  # per core
    print(f"one process, one torch thread, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs",
          flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name, render_size, size in (("cpu", 128, 128), ("paper_like", 512, 224)):
            row = measure(name, render_size, size, args.images, args.passes, Path(tmp), cpu_corpus)
            print(f"{name}: {size} px from {render_size}-px JPEGs, per core: jpeg {row['jpeg_plain_img_s']} img/s, "
                  f"prepared {row['prepared_plain_img_s']} img/s ({row['ratio_plain']}x); with TrainAugment: "
                  f"jpeg {row['jpeg_augment_img_s']}, prepared {row['prepared_augment_img_s']} "
                  f"({row['ratio_augment']}x), prepared + batched {row['prepared_batched_img_s']} "
                  f"({row['ratio_batched']}x); prepare {row['prepare_img_s']} img/s per core, "
                  f"{row['shard_bytes_per_image'] / 1024:.1f} KiB an image: the cpu corpus ({cpu_corpus} images) "
                  f"{row['cpu_corpus_prepare_s']} s on one core, {row['cpu_corpus_gib']} GiB", flush=True)
            print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
