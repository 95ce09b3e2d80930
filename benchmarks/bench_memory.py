"""Peak memory: a data-loading pass at two corpus sizes (does memory stay flat as the corpus grows?)
and a few training steps of a profile (the cpu profile must stay under 8 GiB).

    python benchmarks/bench_memory.py data [--rows 2000 8000] [--image-size 32]
    python benchmarks/bench_memory.py train --profile cpu --run-dir DIR [--steps 5]

Each measurement runs in a fresh subprocess and reads resource.getrusage: ru_maxrss of the process
itself (RUSAGE_SELF) and of its largest finished child (RUSAGE_CHILDREN: the DataLoader workers).
The data corpus is the SynFundus-1M layout with one tiny JPEG copied under every file name, so
the figures measure the bookkeeping (records, splits, sampler, workers), not image decoding.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("VISIONCLIP_QUIET", "1")
HERE = Path(__file__).resolve()


def _peak() -> dict:
    """Peak resident set sizes in MiB (Linux reports ru_maxrss in KiB)."""
    return {"self_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "children_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}


def write_corpus(root: Path, rows: int, seed: int = 0) -> Path:
    """SynFundus-1M layout with `rows` annotation rows, every image the same 32-px JPEG."""
    from PIL import Image, ImageDraw

    from visionclip.schema import COLUMNS
    from visionclip.synth.labels import sample_labels

    img = Image.new("RGB", (32, 32))
    ImageDraw.Draw(img).ellipse((2, 2, 29, 29), fill=(170, 70, 40))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    data = buf.getvalue()
    (root / "Fundus").mkdir(parents=True, exist_ok=True)
    labels = sample_labels(rows, seed)
    for row in labels:
        (root / "Fundus" / row["file_name"]).write_bytes(data)
    with open(root / "annotations.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(COLUMNS))
        w.writeheader()
        w.writerows(labels)
    with open(root / "captions.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["file_name", "caption_zh", "caption_en"])
        w.writerows([(r["file_name"], f"眼底照片，分级{r['dr_grade']}。", f"grade {r['dr_grade']}.") for r in labels])
    return root


def child_data(root: Path, image_size: int, batch_size: int, workers: int) -> dict:
    """Read the corpus, split it, and load every train image once through a DataLoader."""
    import torch
    from torch.utils.data import DataLoader

    from visionclip.data.datasets import ImageTextDataset
    from visionclip.data.readers import read_synfundus_table
    from visionclip.data.splits import split_corpus
    from visionclip.training.sampler import ResumableBatchSampler

    start = time.perf_counter()
    train = split_corpus(read_synfundus_table(root), 1234)["train"]  # the trainer's path
    dataset = ImageTextDataset(train, image_size, "zh", True, 1234)
    sampler = ResumableBatchSampler(len(dataset), batch_size, 1234)
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=workers,
                        collate_fn=lambda items: torch.stack([it["image"] for it in items]))
    images = sum(len(b) for b in loader)
    return {"train_images": images, "seconds": time.perf_counter() - start, **_peak()}


def child_train(profile_name: str, run_dir: Path, steps: int, overrides: dict) -> dict:
    """A few real training steps of `profile_name` (train_clip, its own loader, validation, saving)."""
    from visionclip.config import load_profile
    from visionclip.data.readers import read_synfundus_table
    from visionclip.data.splits import split_corpus
    from visionclip.paths import corpus_dir
    from visionclip.training.loop import train_clip

    probe = load_profile(profile_name, overrides)
    n_train = len(split_corpus(read_synfundus_table(corpus_dir(probe, run_dir)), probe.seed)["train"])
    steps_per_epoch = n_train // probe.train.batch_size
    overrides = {**overrides, "train.epochs": max(steps / steps_per_epoch, 0.01),
                 "train.val_size": min(probe.train.val_size, 64)}
    profile = load_profile(profile_name, overrides)
    start = time.perf_counter()
    summary = train_clip(profile, run_dir, resume=False, progress=False)
    return {"steps": summary["steps"], "batch_size": profile.train.batch_size,
            "image_size": profile.train.image_size,
            "workers": profile.train.num_workers, "preload": profile.train.preload,
            "precision": summary["precision"], "seconds": time.perf_counter() - start, **_peak()}


def _in_subprocess(args: list[str]) -> dict:
    proc = subprocess.run([sys.executable, str(HERE), *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"bench_memory {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure_data(rows: list[int], image_size: int = 32, batch_size: int = 64, workers: int = 1) -> list[dict]:
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in rows:
            root = write_corpus(Path(tmp) / f"corpus_{n}", n)
            r = _in_subprocess(["--child-data", str(root), "--image-size", str(image_size),
                                "--batch-size", str(batch_size), "--workers", str(workers)])
            out.append({"rows": n, **r})
    return out


def measure_train(profile: str, run_dir: Path, steps: int, overrides: dict | None = None) -> dict:
    return _in_subprocess(["--child-train", profile, "--run-dir", str(run_dir), "--steps", str(steps),
                           "--overrides", json.dumps(overrides or {})])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", nargs="?", choices=["data", "train"])
    ap.add_argument("--rows", type=int, nargs="+", default=[2000, 8000])
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--run-dir", type=Path)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--overrides", default="{}")
    ap.add_argument("--child-data", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--child-train", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child_data:
        print(json.dumps(child_data(a.child_data, a.image_size, a.batch_size, a.workers)))
    elif a.child_train:
        print(json.dumps(child_train(a.child_train, a.run_dir, a.steps, json.loads(a.overrides))))
    elif a.mode == "data":
        for r in measure_data(a.rows, a.image_size, a.batch_size, a.workers):
            print(json.dumps(r))
    elif a.mode == "train":
        if a.run_dir is None:
            ap.error("train needs --run-dir with data/corpus")
        print(json.dumps(measure_train(a.profile, a.run_dir, a.steps, json.loads(a.overrides))))
    else:
        ap.error("give a mode: data or train")
    return 0


if __name__ == "__main__":
    sys.exit(main())
