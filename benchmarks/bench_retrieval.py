"""Retrieval at scale: peak memory and time of eval.retrieval on simulated embeddings.

    python benchmarks/bench_retrieval.py [--sizes 10000 50000] [--dim 256] [--full 10000]

Each size runs in a fresh subprocess: N seeded unit-length image embeddings, N caption embeddings
near their images whose second half repeats the first (generated captions repeat, so similarities
tie exactly), label-set keys; then recall_at_k both ways (R@1/5/10, exact and by label set), what
run_retrieval and notebook 04 call. It reports the peak RSS minus the embeddings themselves (the
interpreter, torch and retrieval's working memory: flat in N is the goal) and the time per 10k
queries (each query is scored against all N items, so that time grows with N). --full runs the
same at the given sizes with the full N x N stable argsort retrieval used before it was chunked.
One JSON line per run.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def unit_rows(x):
    x /= np.sqrt(np.einsum("ij,ij->i", x, x))[:, None]  # in place: no N x D temporary
    return x


def simulated(n: int, dim: int, seed: int = 0):
    """Image and caption embeddings, float32, built in place (the peak stays the embeddings)."""
    g = np.random.default_rng(seed)
    img = unit_rows(g.standard_normal((n, dim), dtype=np.float32))
    txt = g.standard_normal((n, dim), dtype=np.float32)
    txt *= 0.8
    txt += img
    txt[n // 2:] = txt[:n - n // 2]  # repeated captions: exact ties
    keys = g.integers(0, 50, n)
    keys[n // 2:] = keys[:n - n // 2]
    return img, unit_rows(txt), keys


def full_recall(img, txt, keys, ks=(1, 5, 10)) -> dict:
    """Retrieval as it was: one N x N similarity matrix, argsorted, keys gathered for every rank."""
    sim = img @ txt.T
    out = {}
    for direction, s in (("image_to_text", sim), ("text_to_image", sim.T)):
        order = np.argsort(-s, axis=1, kind="stable")
        target = np.arange(len(s))[:, None]
        items = keys[order]
        out[direction] = {"exact": {f"R@{k}": float((order[:, :k] == target).any(1).mean()) for k in ks},
                          "label_set": {f"R@{k}": float((items[:, :k] == keys[:, None]).any(1).mean()) for k in ks}}
    return out


def vm_rss_mib() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def child(n: int, dim: int, full: bool) -> dict:
    import torch

    from visionclip.eval.retrieval import CHUNK_BYTES, recall_at_k

    img, txt, keys = simulated(n, dim)
    ready = vm_rss_mib()
    start = time.perf_counter()
    result = full_recall(img, txt, keys) if full else recall_at_k(img, txt, keys, keys)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    emb = (img.nbytes + txt.nbytes) / 2**20
    return {"n": n, "dim": dim, "method": "full argsort" if full else "chunked", "chunk_mib": CHUNK_BYTES / 2**20,
            "embeddings_mib": emb, "rss_ready_mib": ready, "peak_mib": peak, "peak_minus_embeddings_mib": peak - emb,
            "seconds": seconds, "s_per_10k_queries": seconds / (2 * n / 1e4), "threads": torch.get_num_threads(),
            "i2t_label_set_R@1": result["image_to_text"]["label_set"]["R@1"]}


def measure(n: int, dim: int, full: bool = False) -> dict:
    args = [sys.executable, str(Path(__file__).resolve()), "--child", str(n), "--dim", str(dim)]
    proc = subprocess.run(args + (["--child-full"] if full else []), capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"bench_retrieval {n}{' full' if full else ''} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10000, 50000])
    ap.add_argument("--dim", type=int, default=256, help="embedding size (the cpu profile's 256)")
    ap.add_argument("--full", type=int, nargs="*", default=[10000],
                    help="sizes to run the full N x N argsort at too (memory ~20 bytes x N^2)")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--child-full", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        print(json.dumps(child(a.child, a.dim, a.child_full)))
        return 0
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)
    for n in a.sizes:
        print(json.dumps(measure(n, a.dim)), flush=True)
    for n in a.full:
        print(json.dumps(measure(n, a.dim, full=True)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
