"""Resumable training state, atomic and pickle-free.

A checkpoint is a directory `checkpoints/step_XXXXXXX/`:
    model.safetensors       weights
    optimizer.safetensors   every optimizer-state tensor, keyed "state.<param index>.<key>"
    rng.safetensors         torch (CPU and CUDA), numpy and python RNG states as tensors (rank 0's)
    rng_rank<r>.safetensors the same for rank r >= 1 of a torchrun run (each rank has its own streams)
    state.json              step, consumed samples, config, scheduler / scaler state, the optimizer's
                            param groups and the non-tensor parts of the RNG states, file checksums
It is written into a hidden temporary sibling and renamed into place, so a killed process leaves
either a complete checkpoint or none. state.json is written last and holds the sha256 of every
other file: a checkpoint whose files do not match is treated as corrupt.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from ..errors import CheckpointError
from ..io import sha256_file, write_bytes, write_json

STEP_PREFIX = "step_"
FORMAT_VERSION = 1


def step_dir_name(step: int) -> str:
    return f"{STEP_PREFIX}{step:07d}"


# ---------------------------------------------------------------- tensors <-> flat dicts

def _contiguous_cpu(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to("cpu").contiguous().clone()


def model_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: _contiguous_cpu(v) for k, v in model.state_dict().items()}


def flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """torch optimizer state_dict -> (tensors, JSON structure)."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, pstate in state["state"].items():
        for key, value in pstate.items():
            if torch.is_tensor(value):
                tensors[f"state.{pid}.{key}"] = _contiguous_cpu(value)
            else:
                scalars.setdefault(str(pid), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def unflatten_optimizer(tensors: dict[str, torch.Tensor], structure: dict) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        _, pid, key = name.split(".", 2)
        state.setdefault(int(pid), {})[key] = value
    for pid, extra in structure.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(extra)
    return {"state": state, "param_groups": structure["param_groups"]}


def capture_rng() -> tuple[dict[str, torch.Tensor], dict]:
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = s
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    tensors["numpy"] = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    version, py_state, gauss = random.getstate()
    tensors["python"] = torch.tensor(py_state, dtype=torch.int64)
    meta = {"numpy": [kind, int(pos), int(has_gauss), float(cached)], "python": [version, gauss]}
    return tensors, meta


def restore_rng(tensors: dict[str, torch.Tensor], meta: dict) -> None:
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted((k for k in tensors if k.startswith("cuda.")),
                                       key=lambda k: int(k.split(".")[1]))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    kind, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((kind, tensors["numpy"].numpy().astype(np.uint32), pos, has_gauss, cached))
    version, gauss = meta["python"]
    random.setstate((version, tuple(int(x) for x in tensors["python"].tolist()), gauss))


# ---------------------------------------------------------------- save

@dataclass
class TrainState:
    """Everything a resumed run needs besides the model's own construction."""
    step: int
    samples: int
    model: dict[str, torch.Tensor]
    optimizer: dict
    scheduler: dict
    scaler: dict | None
    rng: tuple[dict[str, torch.Tensor], dict]
    extra: dict
    path: Path | None = None
    rank_rngs: dict[int, tuple[dict[str, torch.Tensor], dict]] = field(default_factory=dict)  # ranks >= 1

    def rng_of(self, rank: int) -> tuple[dict[str, torch.Tensor], dict] | None:
        """Rank `rank`'s RNG states, None when the saving run had fewer ranks."""
        return self.rng if rank == 0 else self.rank_rngs.get(rank)


def save_checkpoint(root: str | os.PathLike, *, step: int, samples: int, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer, scheduler, scaler=None, extra: dict | None = None,
                    keep: int = 2, write_side_files=None, rng_states: list | None = None) -> Path:
    """Write checkpoint `step` under `root` atomically; keep the `keep` newest ones.

    `write_side_files(tmp_dir)` may add files (the tokenizer) before the checkpoint is sealed.
    `rng_states`: every rank's capture_rng(), in rank order (default: this process's alone).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / step_dir_name(step)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=root))
    try:
        opt_tensors, opt_structure = flatten_optimizer(optimizer.state_dict())
        (rng_tensors, rng_meta), *other_ranks = rng_states or [capture_rng()]
        files = [("model.safetensors", model_tensors(model)), ("optimizer.safetensors", opt_tensors),
                 ("rng.safetensors", rng_tensors)]
        files += [(f"rng_rank{r}.safetensors", t) for r, (t, _) in enumerate(other_ranks, start=1)]
        digests = {}
        for name, tensors in files:
            data = st_save(tensors)
            write_bytes(tmp / name, data)
            digests[name] = hashlib.sha256(data).hexdigest()  # from memory: no second read of the file
        if write_side_files is not None:
            write_side_files(tmp)
        for p in tmp.rglob("*"):
            rel = str(p.relative_to(tmp))
            if p.is_file() and rel not in digests:
                digests[rel] = sha256_file(p)
        state = {
            "format_version": FORMAT_VERSION, "step": step, "samples": samples,
            "optimizer": opt_structure, "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "rng": rng_meta, "rng_ranks": [meta for _, meta in other_ranks], "extra": extra or {},
            "sha256": dict(sorted(digests.items())),
        }
        write_json(tmp / "state.json", state)
        if final.exists():  # a replay after resume re-saves the same step: replace it
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    prune_checkpoints(root, keep, known_good=[final])
    return final


def list_checkpoints(root: str | os.PathLike) -> list[Path]:
    """Sealed checkpoint directories, newest first (temporary ones are ignored)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        if p.is_dir() and p.name.startswith(STEP_PREFIX) and p.name[len(STEP_PREFIX):].isdigit():
            found.append((int(p.name[len(STEP_PREFIX):]), p))
    return [p for _, p in sorted(found, reverse=True)]


def prune_checkpoints(root: str | os.PathLike, keep: int, known_good: Sequence[str | os.PathLike] = ()) -> None:
    """Keep the `keep` newest checkpoints that verify (verify_checkpoint; `known_good` ones, just
    written, are not read again) and delete every checkpoint older than the last of them: a corrupt
    newer one never pushes a good one out. Corrupt ones newer than that stay (a resume re-saves their
    step). keep=0 deletes them all."""
    root = Path(root)
    good = {Path(p) for p in known_good}
    found = list_checkpoints(root)
    kept = 0
    cut = 0 if keep <= 0 else len(found)  # index of the first checkpoint to delete
    for i, p in enumerate(found):
        if keep <= 0:
            break
        try:
            if p not in good:
                verify_checkpoint(p)
        except CheckpointError:
            continue
        kept += 1
        if kept == keep:
            cut = i + 1
            break
    for p in found[cut:]:
        shutil.rmtree(p, ignore_errors=True)
    # Leftovers of a killed save. They cannot be another job's save in progress: the run-directory
    # lock (runlock, held by `visionclip train` and the pipeline) admits one job per run directory,
    # and within a job only the main rank saves, after its own temporary was renamed into place.
    for p in root.glob(f".{STEP_PREFIX}*.tmp"):
        shutil.rmtree(p, ignore_errors=True)


# ---------------------------------------------------------------- load

def verify_checkpoint(path: str | os.PathLike) -> dict:
    """A checkpoint's state.json once every file it lists matches its checksum; CheckpointError
    names the file that is wrong."""
    path = Path(path)
    state_file = path / "state.json"
    try:
        state = json.loads(state_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{state_file}: unreadable checkpoint state ({e})") from None
    if not isinstance(state, dict) or state.get("format_version") != FORMAT_VERSION:
        found = state.get("format_version") if isinstance(state, dict) else state
        raise CheckpointError(f"{state_file}: format_version {found!r}, expected {FORMAT_VERSION}")
    for rel, digest in state.get("sha256", {}).items():
        f = path / rel
        if not f.is_file():
            raise CheckpointError(f"{f}: missing from checkpoint")
        if sha256_file(f) != digest:
            raise CheckpointError(f"{f}: checksum mismatch (truncated or corrupted file)")
    return state


def load_checkpoint(path: str | os.PathLike) -> TrainState:
    """Read and verify one checkpoint; CheckpointError names the file that is wrong."""
    path = Path(path)
    state = verify_checkpoint(path)

    def tensors(name: str) -> dict[str, torch.Tensor]:
        try:
            return st_load((path / name).read_bytes())
        except Exception as e:  # safetensors raises its own error types
            raise CheckpointError(f"{path / name}: not a readable safetensors file ({e})") from None

    return TrainState(
        step=int(state["step"]), samples=int(state["samples"]), model=tensors("model.safetensors"),
        optimizer=unflatten_optimizer(tensors("optimizer.safetensors"), state["optimizer"]),
        scheduler=state["scheduler"], scaler=state.get("scaler"),
        rng=(tensors("rng.safetensors"), state["rng"]), extra=state.get("extra", {}), path=path,
        rank_rngs={r: (tensors(f"rng_rank{r}.safetensors"), meta)
                   for r, meta in enumerate(state.get("rng_ranks", []), start=1)})


def load_latest(root: str | os.PathLike) -> TrainState | None:
    """The newest checkpoint that verifies; the corrupt ones newer than it are named in a warning.
    None when there is no checkpoint; CheckpointError naming each one when none verifies: starting
    again at step 0 would truncate the metrics logs."""
    problems = []
    for path in list_checkpoints(root):
        try:
            state = load_checkpoint(path)
        except CheckpointError as e:
            problems.append((path, e))
            continue
        for skipped, e in problems:
            warnings.warn(f"skipping corrupt checkpoint {skipped}: {e}; falling back to an older one",
                          RuntimeWarning, stacklevel=2)
        return state
    if problems:
        raise CheckpointError(f"{root}: no checkpoint verifies ({'; '.join(str(e) for _, e in problems)}); "
                              "resuming would start again at step 0: restore them, or start over with --restart")
    return None


def apply_optimizer_state(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Load optimizer state and give each state tensor its parameter's memory layout
    (channels_last kernels), so that resumed arithmetic matches an uninterrupted run."""
    optimizer.load_state_dict(state)
    for group in optimizer.param_groups:
        for p in group["params"]:
            pstate = optimizer.state.get(p, {})
            for key, value in list(pstate.items()):
                if torch.is_tensor(value) and value.shape == p.shape and value.stride() != p.stride():
                    pstate[key] = torch.empty_like(p, dtype=value.dtype).copy_(value)
