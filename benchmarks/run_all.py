"""`make bench`: run the benchmarks once on this machine and write benchmarks/results.md.

    python benchmarks/run_all.py [--quick] [--out benchmarks/results.md]

Every figure in the file comes from this one run (ratios where a ratio means something):
  renderer      images/s per core at 256 px and the 1 -> 2 process speed-up (bench_renderer.py)
  training      streaming input path / compute ceiling, bf16 / fp32 on CPU (bench_train.py, cpu profile)
  prepare       input path per core, prepared shards / JPEGs at the cpu profile's 128 px and at 224 px,
                with and without augmentation; the prepare stage's rate and size (bench_prepare.py)
  embedding     evaluation embedding, bf16 / fp32 on CPU and the cosine between the two (bench_embed.py)
  memory        peak RSS of a data-loading pass at 2k and 8k annotation rows; peak RSS of a few
                cpu-profile training steps, which must stay < 8 GiB (bench_memory.py)
  retrieval     peak RSS minus the embeddings and time per 10k queries of recall_at_k at 10k and 50k
                simulated embeddings, beside the full N x N argsort it replaced at 10k (bench_retrieval.py)
  notebooks     wall time per notebook on the ci and cpu profiles, read from the papermill metadata
                of the newest executed notebooks under runs/*/notebooks ("not run" when none)
The training benchmarks read runs/cpu/data/corpus when it exists, else they render a small
cpu-profile corpus into a temporary directory first (its rendering time is reported too).
Timings are wall-clock on whatever else the machine is doing: the load average is recorded.
Budget: about 13 minutes on 2 cores (--quick: about 5, fewer steps, images and embeddings).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("VISIONCLIP_QUIET", "1")

from visionclip.io import write_text  # noqa: E402

RSS_LIMIT_GIB = 8.0


def say(msg: str) -> None:
    print(f"[bench] {msg}", flush=True)


def run_script(args: list[str], timeout: int = 900) -> tuple[str, float]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc.stdout, time.perf_counter() - start


# ---------------------------------------------------------------------------------------- renderer

def bench_renderer(n: int) -> dict:
    out, secs = run_script([str(HERE / "bench_renderer.py"), "--size", "256", "--n", str(n), "--procs", "1", "2"])
    rows = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 9 and parts[0] in ("1", "2"):
            rows[int(parts[0])] = {"img_s": float(parts[1]), "img_s_per_core": float(parts[2]),
                                   "img_per_cpu_s": float(parts[3]), "speedup": float(parts[4]),
                                   "efficiency": float(parts[5])}
    if set(rows) != {1, 2}:
        raise SystemExit(f"bench_renderer.py output not understood:\n{out}")
    return {"rows": rows, "raw": out, "seconds": secs, "n": n}


# ---------------------------------------------------------------------------------------- training

def _growth(slope_kib: float) -> str:
    """The main process's memory per annotation row, in words: flat below 0.05 KiB a row (noise)."""
    if abs(slope_kib) < 0.05:
        return f"flat: the main process changes {slope_kib:+.2f} KiB per row (peak-RSS noise)"
    return f"the main process grows {slope_kib:.2f} KiB per row, about {slope_kib * 1e6 / 2**20:.2f} GiB at 1M rows"


def cpu_run_dir(tmp: Path, images: int) -> tuple[Path, str]:
    """A run dir with a cpu-profile corpus: runs/cpu when it has one, else a small rendered one."""
    existing = ROOT / "runs" / "cpu"
    if (existing / "data" / "corpus" / "annotations.csv").is_file():
        return existing, "runs/cpu/data/corpus (existing)"
    from visionclip.config import load_profile
    from visionclip.synth.writers import render_corpus

    run = tmp / "cpu-run"
    start = time.perf_counter()
    profile = load_profile("cpu", {"synth.corpus_size": images})
    render_corpus(profile, run / "data" / "corpus", progress=False)
    return run, (f"{images} images rendered for the benchmark at the cpu profile's {profile.synth.render_size} px "
                 f"in {time.perf_counter() - start:.0f} s")


def bench_train(run_dir: Path, steps: int, rounds: int) -> dict:
    out, secs = run_script([str(HERE / "bench_train.py"), "--profile", "cpu", "--run-dir", str(run_dir),
                            "--steps", str(steps), "--warmup", "3", "--rounds", str(rounds)])
    def num(pattern: str) -> float | None:
        m = re.search(pattern, out)
        return float(m.group(1)) if m else None
    return {"ratio": num(r"streaming / ceiling: ([\d.]+)"), "bf16_fp32": num(r"bf16 / fp32: ([\d.]+)"),
            "ceiling": num(r"compute ceiling \(\w+\): ([\d.]+) img/s"), "streaming": num(r"streaming\s+\(\w+\): ([\d.]+)"),
            "per_round": (re.search(r"per round: ([\d., ]+)\)", out) or [None, "?"])[1],
            "fp32": num(r"compute ceiling \(fp32\): ([\d.]+)"), "preloaded": num(r"preloaded\s+\(\w+\): ([\d.]+)"),
            "preload_ratio": num(r"preloaded / ceiling: ([\d.]+)"), "preload_s": num(r"prepared \(one process\) in ([\d.]+) s"),
            "peak_fp32": num(r"matmul peak: fp32 ([\d.]+) GFLOP/s"), "peak_bf16": num(r"bf16 ([\d.]+) GFLOP/s \(2048"),
            "step_gflop": num(r"\(([\d.]+) GFLOP per step"),
            "share_ceiling": num(r"model FLOP/s, compute ceiling: [\d.]+ GFLOP/s = ([\d.]+) of"),
            "share_preloaded": num(r"model FLOP/s, preloaded: [\d.]+ GFLOP/s = ([\d.]+) of"),
            "share_streaming": num(r"model FLOP/s, streaming: [\d.]+ GFLOP/s = ([\d.]+) of"),
            "step_precision": (re.search(r"of the (\w+) matmul peak", out) or [None, "?"])[1],
            "raw": out, "seconds": secs}


def torch_threads(t: dict) -> str:
    m = re.search(r"torch threads (\d+)", t["raw"])
    return f"{m.group(1)} torch threads" if m else "the torch threads"


def bench_prepare(images: int) -> dict:
    out, secs = run_script([str(HERE / "bench_prepare.py"), "--images", str(images)])
    rows = {r["corpus"]: r for r in (json.loads(line) for line in out.splitlines() if line.startswith("{"))}
    if set(rows) != {"cpu", "paper_like"}:
        raise SystemExit(f"bench_prepare.py output not understood:\n{out}")
    return {"rows": rows, "raw": out, "seconds": secs}


def prepare_rows(p: dict) -> list[str]:
    """Per-core input path rows: prepared / JPEG with and without augmentation, and the prepare stage."""
    out = []
    for key, label in (("cpu", "cpu profile, 128 px"), ("paper_like", "224 px from 512-px JPEGs")):
        r = p["rows"][key]
        out.append(f"| Input path per core, prepared shards / JPEGs ({label}) | {r['ratio_plain']:.1f}x "
                   f"(augmented per item: {r['ratio_augment']:.2f}x, in batches on this CPU: "
                   f"{r['ratio_batched']:.2f}x) | "
                   f"goal >= 10x at 224 px; {r['prepared_plain_img_s']:.0f} vs {r['jpeg_plain_img_s']:.0f} img/s; "
                   f"augmented: prepared {r['prepared_augment_img_s']:.0f} per item, {r['prepared_batched_img_s']:.0f} "
                   f"in batches, vs JPEG {r['jpeg_augment_img_s']:.0f} per item (on a GPU the augmentation "
                   f"leaves the cores: not measured here) |")
    r = p["rows"]["cpu"]
    out.append(f"| Prepare stage, cpu profile (128 px) | {r['prepare_img_s']:.0f} img/s per core | its "
               f"{r['cpu_corpus_images']}-image corpus: about "
               f"{r['cpu_corpus_prepare_s']:.0f} s on one core, {r['cpu_corpus_gib']:.2f} GiB of shards |")
    return out


def bench_embed(run_dir: Path, images: int) -> dict:
    out, secs = run_script([str(HERE / "bench_embed.py"), "--profile", "cpu", "--run-dir", str(run_dir),
                            "--images", str(images)])
    m = re.search(r"(\w+) / fp32: ([\d.]+); cosine .*min ([\d.]+)", out)
    found = {"precision": m.group(1), "ratio": float(m.group(2)), "min_cos": float(m.group(3))} if m else {}
    return {**found, "raw": out, "seconds": secs}


# ---------------------------------------------------------------------------------------- memory

def bench_memory_data(rows: list[int]) -> list[dict]:
    out, _ = run_script([str(HERE / "bench_memory.py"), "data", "--rows", *map(str, rows)])
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def bench_memory_train(run_dir: Path, steps: int) -> dict:
    out, _ = run_script([str(HERE / "bench_memory.py"), "train", "--profile", "cpu", "--run-dir", str(run_dir),
                         "--steps", str(steps)])
    return json.loads(out.strip().splitlines()[-1])


def bench_retrieval(sizes: list[int], full: list[int]) -> list[dict]:
    out, _ = run_script([str(HERE / "bench_retrieval.py"), "--sizes", *map(str, sizes), "--full", *map(str, full)])
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def retrieval_rows(runs: list[dict]) -> list[str]:
    """Two table rows: memory of the smallest and largest chunked size, time per 10k queries, with
    the full argsort beside them where it ran at the smallest size."""
    chunked = [x for x in runs if x["method"] == "chunked"]
    a, b = chunked[0], chunked[-1]
    full = next((x for x in runs if x["method"] != "chunked" and x["n"] == a["n"]), None)
    growth = b["peak_minus_embeddings_mib"] / a["peak_minus_embeddings_mib"]
    return [
        f"| Peak RSS of retrieval minus the embeddings, {a['n']:,} -> {b['n']:,} simulated pairs (dim {a['dim']}, "
        f"recall_at_k both ways, chunks of {a['chunk_mib']:.0f} MiB) | {a['peak_minus_embeddings_mib']:.0f} -> "
        f"{b['peak_minus_embeddings_mib']:.0f} MiB ({growth:.3f}x) | goal within 10%: "
        f"{'yes' if abs(growth - 1) <= 0.10 else 'NO'}; above the RSS before it (interpreter, torch and "
        f"embeddings): {a['peak_mib'] - a['rss_ready_mib']:.0f} -> {b['peak_mib'] - b['rss_ready_mib']:.0f} MiB"
        + (f"; the full N x N argsort at {full['n']:,}: {full['peak_minus_embeddings_mib']:.0f} MiB "
           f"({full['peak_minus_embeddings_mib'] / a['peak_minus_embeddings_mib']:.1f}x the chunked) |" if full else " |"),
        f"| Retrieval time per 10k queries (each against all N items) | {a['s_per_10k_queries']:.2f} s at "
        f"{a['n']:,} items, {b['s_per_10k_queries']:.2f} s at {b['n']:,} "
        f"({b['s_per_10k_queries'] / a['s_per_10k_queries']:.1f}x for {b['n'] / a['n']:.0f}x the items) | "
        + (f"full argsort at {full['n']:,}: {full['s_per_10k_queries']:.2f} s "
           f"({full['s_per_10k_queries'] / a['s_per_10k_queries']:.1f}x the chunked) |" if full else "|"),
    ]


# ---------------------------------------------------------------------------------------- notebooks

def notebook_times() -> dict[str, dict]:
    """{profile: {"dir", "notebooks": {stem: seconds}}} from the newest executed set per profile."""
    found: dict[str, dict] = {}
    for nb_dir in sorted((ROOT / "runs").glob("*/notebooks")):
        times, profile, newest = {}, None, ""
        for nb in sorted(nb_dir.glob("[0-9][0-9]_*.ipynb")):
            if nb.name.endswith(".failed.ipynb"):
                continue
            try:
                meta = json.loads(nb.read_text(encoding="utf-8"))["metadata"].get("papermill", {})
            except (OSError, ValueError, KeyError):
                continue
            if meta.get("exception") or meta.get("duration") is None:
                continue
            profile = str(meta.get("parameters", {}).get("profile", profile))
            times[nb.stem] = float(meta["duration"])
            newest = max(newest, meta.get("end_time") or "")
        if profile in ("ci", "cpu") and times and newest > found.get(profile, {}).get("end", ""):
            found[profile] = {"dir": nb_dir.relative_to(ROOT).as_posix(), "notebooks": times, "end": newest}
    return found


# ---------------------------------------------------------------------------------------- report

def render(results: dict) -> str:
    r, t, e, md, mt, nbs, rt, pr = (results[k] for k in ("renderer", "train", "embed", "memory_data",
                                                         "memory_train", "notebooks", "retrieval", "prepare"))
    one, two = r["rows"][1], r["rows"][2]
    lines = [
        "# Benchmarks",
        "",
        f"Generated by `python benchmarks/run_all.py{' --quick' if results['quick'] else ''}` (`make bench`) on "
        f"{results['date']}: {results['machine']}.",
        f"Load average {results['load_start']:.1f} at the start and {results['load_end']:.1f} at the end "
        f"on {os.cpu_count()} cores; wall-clock figures move with the load, ratios less so. Every figure below "
        f"comes from this one run ({results['total_s'] / 60:.1f} min).",
        "",
        "| What | Figure | Goal / note |",
        "|---|---|---|",
        f"| Renderer, 256 px, 1 process | {one['img_s_per_core']:.1f} img/s per core "
        f"({one['img_per_cpu_s']:.1f} per CPU-second) | goal >= 80 img/s per core: {one['img_s_per_core'] / 80:.2f}x |",
        f"| Renderer scaling 1 -> 2 processes | speed-up {two['speedup']:.2f}x, efficiency {two['efficiency']:.2f} | "
        f"2 processes: {two['img_s']:.1f} img/s |",
        f"| Training data path / compute ceiling (cpu profile) | {t['ratio']:.3f} | goal >= 0.9; streaming "
        f"{t['streaming']:.1f} img/s vs ceiling {t['ceiling']:.1f} img/s, medians of alternating rounds "
        f"(per-round ratios {t['per_round']}: their spread is the machine's noise) |",
        (f"| Preloaded train split / compute ceiling (cpu profile, train.preload; not the streaming goal) | "
         f"{t['preload_ratio']:.3f} | preloaded {t['preloaded']:.1f} img/s, after {t['preload_s']:.1f} s preparing "
         f"the split once (one process) |" if t.get("preload_ratio") else "| Preloaded train split | not measured | |"),
        (f"| Physical ceiling: matmul peak on {torch_threads(t)} | fp32 {t['peak_fp32']:.0f} GFLOP/s, bf16 "
         f"{t['peak_bf16']:.0f} GFLOP/s | 2048 x 2048 products, best of 5 |" if t.get("peak_fp32") else
         "| Physical ceiling: matmul peak | not measured | |"),
        (f"| Training step's model FLOP/s / {t['step_precision']} matmul peak (cpu profile) | "
         f"{t['share_preloaded']:.3f} preloaded, {t['share_streaming']:.3f} streaming, {t['share_ceiling']:.3f} "
         f"from memory | {t['step_gflop']:.1f} GFLOP per step (forward + backward, torch.utils.flop_counter); the "
         f"rest of the peak goes to what is not a large matmul (normalisation, activations, the optimizer) |"
         if t.get("share_preloaded") is not None else "| Step's share of the matmul peak | not measured | |"),
        *prepare_rows(pr),
        (f"| bf16 / fp32 training speed on CPU | {t['bf16_fp32']:.2f}x | fp32 ceiling {t['fp32']:.1f} img/s |"
         if t["bf16_fp32"] else "| bf16 / fp32 training speed on CPU | not measured | this CPU has no native bf16: auto chose fp32 |"),
        (f"| {e['precision']} / fp32 evaluation embedding speed (cpu profile, decode + preprocess included) | "
         f"{e['ratio']:.2f}x | smallest cosine between an image's two embeddings {e['min_cos']:.4f} |"
         if e.get("ratio") else "| bf16 / fp32 evaluation embedding speed | not measured | this CPU has no native bf16 |"),
        f"| Peak RSS, cpu-profile training ({mt['steps']} steps, batch {mt['batch_size']}, {mt['image_size']} px, "
        f"{'corpus prepared, ' if mt.get('preload') else ''}{mt['workers']} worker"
        f"{' for the val pool' if mt.get('preload') else ''}, "
        f"{mt['precision']}) | {mt['self_mib'] / 1024:.2f} GiB trainer + "
        f"{mt['children_mib'] / 1024:.2f} GiB largest worker | must stay < {RSS_LIMIT_GIB:.0f} GiB: "
        f"{'yes' if (mt['self_mib'] + mt['children_mib']) / 1024 < RSS_LIMIT_GIB else 'NO'} (sum) |",
    ]
    a, b = md[0], md[-1]
    slope_kib = (b["self_mib"] - a["self_mib"]) * 1024 / max(b["rows"] - a["rows"], 1)
    lines += [
        f"| Peak RSS of a data-loading pass, {a['rows']} -> {b['rows']} annotation rows | "
        f"{a['self_mib']:.0f} -> {b['self_mib']:.0f} MiB main process ({b['self_mib'] / a['self_mib']:.3f}x), "
        f"{a['children_mib']:.0f} -> {b['children_mib']:.0f} MiB worker | {b['rows'] / a['rows']:.0f}x the rows; "
        f"{_growth(slope_kib)} |",
        *retrieval_rows(rt),
        "",
        "## Notebooks: wall time per notebook",
        "",
    ]
    for profile in ("ci", "cpu"):
        info = nbs.get(profile)
        if not info:
            lines.append(f"- {profile} profile: not run (no executed notebooks with papermill metadata under runs/*/notebooks)")
            continue
        total = sum(info["notebooks"].values())
        lines.append(f"- {profile} profile ({info['dir']}, finished {info['end'][:19]} UTC): total {total:.0f} s")
        lines += [f"  - {stem}: {sec:.1f} s" for stem, sec in info["notebooks"].items()]
    lines += [
        "",
        "## GPU",
        "",
        "Not measured: no GPU was lent to this run (the paper profile's bf16 + channels_last vs fp32 images/s",
        "and its data path / ceiling need one).",
        "",
        "## Details",
        "",
        f"Training corpus: {results['train_corpus']}.",
        "",
        "### bench_renderer.py",
        "",
        "```",
        r["raw"].rstrip(),
        "```",
        "",
        "### bench_train.py --profile cpu",
        "",
        "```",
        t["raw"].rstrip(),
        "```",
        "",
        "### bench_prepare.py",
        "",
        "```",
        pr["raw"].rstrip(),
        "```",
        "",
        "### bench_embed.py --profile cpu",
        "",
        "```",
        e["raw"].rstrip(),
        "```",
        "",
        "### bench_memory.py",
        "",
        "```",
        *[json.dumps(x) for x in md],
        json.dumps(mt),
        "```",
        "",
        "### bench_retrieval.py",
        "",
        "```",
        *[json.dumps(x) for x in rt],
        "```",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=HERE / "results.md")
    ap.add_argument("--quick", action="store_true", help="fewer images and steps (about 4 minutes)")
    a = ap.parse_args(argv)
    start = time.perf_counter()
    results: dict = {"date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                     "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU(s), "
                                f"Python {platform.python_version()}",
                     "load_start": os.getloadavg()[0], "quick": a.quick}
    say("renderer ...")
    results["renderer"] = bench_renderer(80 if a.quick else 200)
    with tempfile.TemporaryDirectory() as tmp:
        run_dir, results["train_corpus"] = cpu_run_dir(Path(tmp), 800 if a.quick else 1200)
        say(f"training throughput ({results['train_corpus']}) ...")
        # Single rounds of the data path / ceiling ratio swing by +-0.05 on two shared cores: five
        # alternating rounds of 20 steps each make the medians steadier.
        results["train"] = bench_train(run_dir, 6 if a.quick else 20, 3 if a.quick else 5)
        say("input path per core: prepared shards against JPEGs ...")
        results["prepare"] = bench_prepare(80 if a.quick else 160)
        say("evaluation embedding, bf16 against fp32 ...")
        results["embed"] = bench_embed(run_dir, 256 if a.quick else 512)
        say("training peak RSS ...")
        mem_run = Path(tmp) / "rss-run"  # a scratch run dir pointing at the corpus: never trains into runs/cpu
        (mem_run / "data").mkdir(parents=True)
        os.symlink(run_dir / "data" / "corpus", mem_run / "data" / "corpus")
        results["memory_train"] = bench_memory_train(mem_run, 4 if a.quick else 6)
    say("data-loading peak RSS at two corpus sizes ...")
    results["memory_data"] = bench_memory_data([2000, 8000])
    say("retrieval peak RSS and time at two sizes of simulated embeddings ...")
    results["retrieval"] = bench_retrieval([5000, 25000] if a.quick else [10000, 50000], [5000 if a.quick else 10000])
    results["notebooks"] = notebook_times()
    results["load_end"] = os.getloadavg()[0]
    results["total_s"] = time.perf_counter() - start
    write_text(a.out, render(results))
    say(f"wrote {a.out} in {results['total_s'] / 60:.1f} min")
    print(render(results).split("## Notebooks")[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
