"""What produced a run's numbers, in one record: the commit, the profile, the packages, the machine,
each notebook's wall time and peak memory, the data manifests' checksums.

The pipeline writes it beside the executed notebooks (run_dir/notebooks/provenance.json: nbval
clears the rest of a run directory, and the record describes those notebooks) and renders it as the
book's provenance page. The same seed gives slightly different numbers on another CPU, so the
reader needs the machine beside the numbers.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import threading
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..io import sha256_file, write_json
from ..paths import REPOSITORY, RunLayout

PROVENANCE_FILE = "provenance.json"
PACKAGES = ("torch", "torchvision", "transformers", "tokenizers", "numpy", "scikit-learn", "umap-learn",
            "pandas", "matplotlib", "papermill", "nbclient", "ipykernel", "jupyter-book", "sphinx",
            "sphinxcontrib-bibtex", "myst-nb", "pypdf", "selenium")
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def provenance_path(run_dir: str | Path) -> Path:
    return RunLayout(run_dir).notebooks / PROVENANCE_FILE


# ----------------------------------------------------------------------------- peak memory

def _children() -> dict[int, list[int]]:
    """{ppid: [pid, ...]} of every process /proc shows (Linux)."""
    tree: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])  # the command name may hold spaces and ")"
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def _hwm_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


class PeakMemory:
    """Peak resident memory (VmHWM) of the largest process below this one, while it is running.

    The kernel papermill starts is a child of the pipeline; VmHWM is the kernel's own high-water
    mark, so sampling it four times a second loses at most the last quarter second. None where /proc is
    missing (not Linux)."""

    def __init__(self, every: float = 0.25):
        self.every, self.peak_kib = every, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        tree, todo = _children(), [os.getpid()]
        while todo:
            for child in tree.get(todo.pop(), []):
                self.peak_kib = max(self.peak_kib, _hwm_kib(child))
                todo.append(child)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self._sample()

    def __enter__(self) -> "PeakMemory":
        if Path("/proc/self/status").exists():
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._thread.is_alive():
            self._stop.set()
            self._thread.join()

    @property
    def peak_mib(self) -> float | None:
        return round(self.peak_kib / 1024, 1) if self.peak_kib else None


# ----------------------------------------------------------------------------- the record

def git_state(root: Path = REPOSITORY) -> dict:
    """{"commit", "dirty"} of the repository; None for each where git or the repository is absent."""
    def git(*args: str) -> str | None:
        try:
            return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True,
                                  timeout=30).stdout
        except (OSError, subprocess.SubprocessError):
            return None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit.strip() if commit else None, "dirty": bool(status.strip()) if status is not None else None}


def package_versions(names: Sequence[str] = PACKAGES) -> dict[str, str]:
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def cpu_info() -> dict:
    """Model name, logical CPUs, whether bf16 is native (the flags precision.choose_precision reads)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model in ("", platform.machine(), platform.processor()):
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    return {"model": model, "logical_cpus": os.cpu_count(), "machine": platform.machine(),
            "bf16_flags": [f for f in BF16_FLAGS if f in flags], "native_bf16": any(f in flags for f in BF16_FLAGS),
            "avx512f": "avx512f" in flags, "avx2": "avx2" in flags}


def torch_info() -> dict:
    import torch

    from ..precision import cpu_has_native_bf16

    return {"threads": torch.get_num_threads(), "interop_threads": torch.get_num_interop_threads(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cpu_bf16": "native" if cpu_has_native_bf16() else "emulated (fp32 used under precision: auto)",
            "cuda": torch.cuda.is_available(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def profile_digest(profile_dict: Mapping) -> str:
    """sha256 of the resolved profile (canonical JSON): two runs with one digest ran on one profile."""
    return hashlib.sha256(json.dumps(profile_dict, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def manifest_checksums(root: Path = REPOSITORY / "data_manifests") -> dict[str, str]:
    return {p.name: sha256_file(p) for p in sorted(Path(root).glob("*.yaml"))}


def notebook_record(executed: Path, peak_mib: float | None) -> dict:
    """Wall time (papermill's own measure, in the executed notebook) and the kernel's peak memory."""
    try:
        meta = json.loads(Path(executed).read_text(encoding="utf-8")).get("metadata", {}).get("papermill", {})
    except (OSError, json.JSONDecodeError):
        meta = {}
    return {"notebook": Path(executed).stem, "seconds": meta.get("duration"), "peak_rss_mib": peak_mib,
            "started": meta.get("start_time"), "ended": meta.get("end_time")}


def collect(profile, overrides: Mapping[str, Any], notebooks: Sequence[Mapping]) -> dict:
    """The whole record; `profile` is the resolved Profile, `notebooks` notebook_record()s."""
    resolved = profile.to_dict()
    return {"git": git_state(), "profile": {"name": profile.name, "digest": profile_digest(resolved),
                                            "overrides": dict(overrides), "seed": profile.seed},
            "python": platform.python_version(), "platform": platform.platform(),
            "packages": package_versions(), "cpu": cpu_info(), "torch": torch_info(),
            "notebooks": list(notebooks), "data_manifests": manifest_checksums()}


def write(run_dir: str | Path, record: Mapping) -> Path:
    path = provenance_path(run_dir)
    write_json(path, dict(record))
    return path


def read(run_dir: str | Path) -> dict | None:
    path = provenance_path(run_dir)
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def merge_notebooks(old: Sequence[Mapping], new: Sequence[Mapping]) -> list[dict]:
    """Records of this run's notebooks replace those of the same name (a --resume or --only run)."""
    by_name = {r["notebook"]: dict(r) for r in old}
    by_name.update({r["notebook"]: dict(r) for r in new})
    return [by_name[k] for k in sorted(by_name)]


# ----------------------------------------------------------------------------- the page

def _fmt(v: Any) -> str:
    if v is None:
        return "not recorded"
    if isinstance(v, bool):
        return "yes" if v else "no"
    return str(v)


def render_markdown(record: Mapping | None) -> str:
    """The book's provenance page (book/provenance.md, generated; never hand-edited)."""
    head = ("# Provenance of the numbers\n\n"
            "Every number in the notebooks was computed on the machine and the code below; the same seed "
            "gives slightly different numbers on another CPU (arithmetic order, native bf16 or not), so "
            "compare numbers only beside this page. The pipeline (`visionclip book`) writes it as "
            "`notebooks/provenance.json` in the run directory.\n\n")
    if not record:
        return head + "```{note}\nThis build's run directory holds no provenance record "\
                      "(its notebooks were executed before the pipeline wrote one).\n```\n"
    git, prof, cpu, tor = record.get("git", {}), record.get("profile", {}), record.get("cpu", {}), record.get("torch", {})
    commit = git.get("commit")
    lines = [head, "## Code and profile\n\n| what | value |\n| --- | --- |",
             f"| git commit | `{_fmt(commit)}` |",
             f"| uncommitted changes to tracked files | {'yes: the numbers may come from code that is not in that commit' if git.get('dirty') else _fmt(git.get('dirty'))} |",
             f"| profile | `{_fmt(prof.get('name'))}` (seed {_fmt(prof.get('seed'))}) |",
             f"| profile digest (sha256 of the resolved profile) | `{_fmt(prof.get('digest'))}` |",
             f"| overrides | {('`' + json.dumps(prof.get('overrides'), ensure_ascii=False) + '`') if prof.get('overrides') else 'none'} |",
             "", "## Machine\n\n| what | value |\n| --- | --- |",
             f"| CPU | {_fmt(cpu.get('model'))} ({_fmt(cpu.get('logical_cpus'))} logical CPUs, {_fmt(cpu.get('machine'))}) |",
             f"| native bf16 (`{'`, `'.join(BF16_FLAGS)}`) | {_fmt(cpu.get('native_bf16'))}"
             f"{' (' + ', '.join(cpu.get('bf16_flags', [])) + ')' if cpu.get('bf16_flags') else ''} |",
             f"| AVX2 / AVX-512F | {_fmt(cpu.get('avx2'))} / {_fmt(cpu.get('avx512f'))} |",
             f"| torch CPU kernels | {_fmt(tor.get('cpu_capability'))}; bf16 {_fmt(tor.get('cpu_bf16'))} |",
             f"| torch threads (intra-op / inter-op) | {_fmt(tor.get('threads'))} / {_fmt(tor.get('interop_threads'))} |",
             f"| GPU | {_fmt(tor.get('gpu')) if tor.get('cuda') else 'none'} |",
             f"| Python | {_fmt(record.get('python'))} on {_fmt(record.get('platform'))} |",
             "", "## Notebooks\n\nWall time as papermill measured it; peak memory is the kernel's resident "
             "high-water mark (VmHWM).\n\n| notebook | wall time (s) | peak memory (MiB) |\n| --- | ---: | ---: |"]
    for nb in record.get("notebooks", []):
        secs = nb.get("seconds")
        lines.append(f"| {nb.get('notebook')} | {f'{secs:.1f}' if isinstance(secs, (int, float)) else 'not recorded'} "
                     f"| {_fmt(nb.get('peak_rss_mib'))} |")
    lines += ["", "## Packages\n\n| package | version |\n| --- | --- |"]
    lines += [f"| {k} | {v} |" for k, v in sorted(record.get("packages", {}).items())]
    lines += ["", "## Data manifests\n\nsha256 of `data_manifests/*.yaml` (the sources, licences and "
              "checksums of every dataset the run can read).\n\n| manifest | sha256 |\n| --- | --- |"]
    lines += [f"| {k} | `{v}` |" for k, v in sorted(record.get("data_manifests", {}).items())]
    return "\n".join(lines) + "\n"
