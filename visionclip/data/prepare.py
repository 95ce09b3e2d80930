"""The prepare stage: every corpus image decoded, checked and preprocessed once, stored as uint8 crops
in memory-mapped shards that training reads instead of the image files.

    <folder>/                 RunLayout.prepared(size): run_dir/data/prepared/<size>px
      .prepare_params.json    what decides the crops, and which files in which order (a stamp)
      shard_00000.npy         uint8 [n, S, S, 3] crops of images [0, SHARD_IMAGES) (np.load(mmap_mode="r"))
      shard_00000.json        written after its .npy, so it marks the shard complete: its file names,
                              and the ones that could not be read with the reason
      bad_images.csv          every unreadable image and why, written once every shard is complete

A crop is `read_image(path, Preprocess(size))`, the function evaluation and the streaming path use,
so a prepared crop is byte-identical to a decoded one. The stored side is the training size plus a
random-crop margin of 0 px (MARGIN): TrainAugment's random resized crop takes 80-100 % of the
preprocessed square and resamples it back to the size, so it needs no border; a wider crop would
change every pixel the cpu book trains on.

Shard k holds images [k * SHARD_IMAGES, (k + 1) * SHARD_IMAGES) of the corpus order. Like rendering,
the shards are split over processes, and over torchrun's ranks and nodes (rank r does the shards
k % WORLD_SIZE == r); every file is written atomically, so a killed prepare resumes at the first
shard without its .json. A folder stamped with other parameters or another file list is refused.
"""
from __future__ import annotations

import csv
import hashlib
import io as _io
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import DataError
from ..io import atomic_path, clean_stale_temps, write_json, write_text
from ..paths import RunLayout
from ..preempt import Preempted, StopRequest, map_unordered, requested
from ..progress import progress as progress_bar
from .datasets import file_names, read_image
from .readers import read_corpus
from .records import CorpusRecord
from .table import CorpusTable
from .transforms import Preprocess

FORMAT_VERSION = 1
MARGIN = 0                 # px added to the training size (see the module docstring)
SHARD_IMAGES = 1024        # 154 MB a shard at 224 px; what a killed prepare redoes at most per process
STAMP = ".prepare_params.json"
BAD_LIST = "bad_images.csv"


def prepare_params(preprocess: Preprocess, names: Sequence[str], shard_images: int = SHARD_IMAGES) -> dict:
    """What decides a prepared folder's contents: the preprocessing, the layout and the file list."""
    digest = hashlib.sha256("\n".join(names).encode("utf-8")).hexdigest()
    return {"format_version": FORMAT_VERSION, "size": int(preprocess.size) + MARGIN, "margin": MARGIN,
            "preprocess": {"flair_exact": bool(preprocess.flair_exact), "size": int(preprocess.size)},
            "shard_images": int(shard_images), "images": len(names), "file_names_sha256": digest}


def _shard_path(folder: Path, k: int, suffix: str) -> Path:
    return folder / f"shard_{k:05d}{suffix}"


def _shard_done(folder: Path, k: int) -> bool:
    return _shard_path(folder, k, ".json").is_file() and _shard_path(folder, k, ".npy").is_file()


def _write_shard(job: tuple) -> tuple[int, int, int]:
    """Decode, check and crop one shard's images; the .npy first, then the .json that marks it done."""
    folder, k, names, paths, preprocess = job
    s = preprocess.size + MARGIN
    bad: dict[str, str] = {}
    with atomic_path(_shard_path(folder, k, ".npy")) as tmp:
        crops = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(paths), s, s, 3))
        with open(tmp, "rb+") as f:  # the blocks now: a full disk is an OSError here, not a SIGBUS mid-shard
            os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)
        for i, path in enumerate(paths):
            try:
                crops[i] = np.asarray(read_image(path, Preprocess(s, preprocess.flair_exact)), dtype=np.uint8)
            except (DataError, OSError, ValueError) as e:  # listed with its reason; its row stays black
                prefix = f"{path}: "
                bad[names[i]] = str(e)[len(prefix):] if str(e).startswith(prefix) else str(e)
        crops.flush()
        del crops
    write_json(_shard_path(folder, k, ".json"), {"names": list(names), "bad": bad})
    return k, len(paths), len(bad)


def _read_json(path: Path, what: str) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: unreadable {what} ({e}); delete {path.parent} and prepare again") from None
    if not isinstance(value, dict):
        raise DataError(f"{path}: expected a JSON object ({what}), got {type(value).__name__}")
    return value


def _check_stamp(folder: Path, params: dict) -> bool:
    """True when the folder still needs its stamp; DataError when it was prepared otherwise."""
    path = folder / STAMP
    if path.is_file():
        stored = _read_json(path, "prepare-parameter stamp")
        diffs = [f"{k}: stored {stored.get(k)!r}, this run {params.get(k)!r}"
                 for k in sorted(set(stored) | set(params)) if stored.get(k) != params.get(k)]
        if diffs:
            raise DataError(f"{folder}: already prepared with other parameters ({'; '.join(diffs)}); "
                            f"prepare into another run directory or delete {folder}")
        return False
    # A rank writes the stamp before any shard, so shards next to no stamp, checked after them, are foreign.
    if folder.is_dir() and any(folder.glob("shard_*.npy")) and not path.is_file():
        raise DataError(f"{folder}: holds shards but no {STAMP}, so how they were made cannot be verified; "
                        f"delete {folder} and prepare again")
    return True


def _check_disk(folder: Path, need: int) -> None:
    probe = folder if folder.exists() else next(p for p in folder.parents if p.exists())
    free = shutil.disk_usage(probe).free
    if need > free:
        raise DataError(f"{folder}: preparing needs {need / 2**30:.1f} GiB more, only {free / 2**30:.1f} GiB "
                        "are free on that disk; free some, or set train.preload: false to decode the "
                        "images in DataLoader workers every epoch instead")


def default_workers() -> int:
    """This machine's cores shared by the ranks torchrun started on it (LOCAL_WORLD_SIZE)."""
    return max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def prepare_images(names: Sequence[str], paths: Sequence[Path], folder: str | os.PathLike, preprocess: Preprocess,
                   *, workers: int = 1, rank: int = 0, world_size: int = 1, shard_images: int | None = None,
                   progress: bool = True, stop: StopRequest | None = None) -> dict:
    """Prepare this rank's shards of (names, paths) into folder; resumable. Returns a summary:
    shards done here and in all, images, unreadable images, and whether every shard is complete
    (then bad_images.csv is written). Once `stop` is requested no further shard starts, the ones
    being written finish, and Preempted says how many are done (a re-run does the rest)."""
    if len(names) != len(paths) or not len(names):
        raise DataError(f"{folder}: nothing to prepare ({len(names)} names, {len(paths)} paths)")
    folder = Path(folder)
    shard_images = SHARD_IMAGES if shard_images is None else int(shard_images)
    params = prepare_params(preprocess, names, shard_images)
    if _check_stamp(folder, params):
        write_json(folder / STAMP, params)
    n_shards = -(-len(names) // shard_images)
    todo = [k for k in range(rank, n_shards, world_size) if not _shard_done(folder, k)]
    # only this rank's leftovers: another rank may be writing its own shards into the folder now
    clean_stale_temps([folder], [_shard_path(folder, k, sfx).name for k in todo for sfx in (".npy", ".json")])
    s = params["size"]
    _check_disk(folder, sum(min(shard_images, len(names) - k * shard_images) for k in todo) * s * s * 3)
    jobs = [(folder, k, list(names[k * shard_images:(k + 1) * shard_images]),
             [Path(p) for p in paths[k * shard_images:(k + 1) * shard_images]], preprocess) for k in todo]
    bar = progress_bar(total=sum(len(j[2]) for j in jobs), desc="prepare images", unit="img") if progress else None
    for _, n, _ in map_unordered(_write_shard, jobs, min(workers, len(jobs)), stop):
        if bar is not None:
            bar.update(n)
    if bar is not None:
        bar.close()
    complete = all(_shard_done(folder, k) for k in range(n_shards))
    if requested(stop) and not all(_shard_done(folder, k) for k in todo):
        done = sum(_shard_done(folder, k) for k in range(n_shards))
        raise Preempted(f"{stop.signal_name} received: stopped preparing {folder} with {done} of {n_shards} "
                        "shards finished (kept; bad_images.csv is written once all are)")
    summary = {"folder": str(folder), "images": len(names), "shards": n_shards, "prepared_here": len(todo),
               "complete": complete, "size": s}
    if complete:  # every rank that finds it complete writes the same list, atomically
        prepared = PreparedImages(folder)
        prepared.write_bad_list()
        summary.update(bad=len(prepared.bad), bad_list=str(folder / BAD_LIST), bytes=prepared.nbytes)
    return summary


@dataclass(frozen=True)
class _Shard:
    path: Path
    length: int


class PreparedImages:
    """A complete prepared folder, read-only: crops by row, rows by file name, the unreadable images.

    The shards are memory-mapped on first use in each process (a DataLoader worker maps its own:
    the pages are shared through the page cache, and pickling never copies the crops).
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        stamp = self.folder / STAMP
        if not stamp.is_file():
            raise DataError(f"{self.folder}: not a prepared folder (no {STAMP}); run `visionclip prepare`")
        self.params = _read_json(stamp, "prepare-parameter stamp")
        per, n = int(self.params["shard_images"]), int(self.params["images"])
        self.size = int(self.params["size"])
        missing = [k for k in range(-(-n // per)) if not _shard_done(self.folder, k)]
        if missing:
            raise DataError(f"{self.folder}: {len(missing)} shard(s) not prepared yet (first: "
                            f"{_shard_path(self.folder, missing[0], '.npy').name}); run `visionclip prepare` "
                            "again to finish them")
        self.rows: dict[str, int] = {}
        self.bad: dict[str, str] = {}
        self._shards: list[_Shard] = []
        for k in range(-(-n // per)):
            meta = _read_json(_shard_path(self.folder, k, ".json"), "shard index")
            self._shards.append(_Shard(_shard_path(self.folder, k, ".npy"), len(meta["names"])))
            self.rows.update((name, k * per + i) for i, name in enumerate(meta["names"]))
            self.bad.update(meta["bad"])
        self._maps: list[np.ndarray] | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_maps": None}

    def __len__(self) -> int:
        return int(self.params["images"])

    @property
    def nbytes(self) -> int:
        return sum(sh.path.stat().st_size for sh in self._shards)

    def _open(self) -> list[np.ndarray]:
        if self._maps is None:
            maps = []
            for sh in self._shards:
                arr = np.load(sh.path, mmap_mode="r")
                if arr.shape != (sh.length, self.size, self.size, 3) or arr.dtype != np.uint8:
                    raise DataError(f"{sh.path}: holds {arr.dtype} {arr.shape}, expected uint8 "
                                    f"({sh.length}, {self.size}, {self.size}, 3); delete {self.folder}")
                maps.append(arr)
            self._maps = maps
        return self._maps

    def image(self, row: int) -> np.ndarray:
        """The crop of row `row` (corpus order), H x W x 3 uint8, a view into the mapped shard."""
        k, i = divmod(int(row), int(self.params["shard_images"]))
        return self._open()[k][i]

    def rows_of(self, names: Sequence[str]) -> np.ndarray:
        """The rows of these file names; a name that was never prepared is an error naming the folder."""
        try:
            return np.fromiter((self.rows[n] for n in names), dtype=np.int64, count=len(names))
        except KeyError as e:
            raise DataError(f"{self.folder}: {e.args[0]!r} was not prepared (the corpus changed since); "
                            f"delete {self.folder} and prepare again") from None

    def write_bad_list(self) -> Path:
        """bad_images.csv: file_name, reason of every image that could not be read, sorted by name."""
        buf = _io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["file_name", "reason"])
        w.writerows(sorted(self.bad.items()))
        path = self.folder / BAD_LIST
        write_text(path, buf.getvalue())
        return path


def corpus_paths(records: Sequence[CorpusRecord] | CorpusTable) -> list[Path]:
    """The image paths of a CorpusTable or of CorpusRecords, in their order."""
    if isinstance(records, CorpusTable):
        return [records.path(i) for i in range(len(records))]
    return [r.path for r in records]


def prepare_run(profile, run_dir: str | os.PathLike, records: CorpusTable | None = None, *,
                rank: int | None = None, world_size: int | None = None, workers: int | None = None,
                progress: bool = True, stop: StopRequest | None = None) -> dict:
    """A run's corpus (read_corpus: data.corpus_root, data.min_quality applied) prepared at
    train.image_size into RunLayout(run_dir).prepared(size), the way training reads it. rank and
    world_size default to torchrun's RANK and WORLD_SIZE, workers to default_workers()."""
    records = read_corpus(profile, run_dir) if records is None else records
    size = int(profile.train.image_size)
    rank = int(os.environ.get("RANK", "0")) if rank is None else rank
    world_size = int(os.environ.get("WORLD_SIZE", "1")) if world_size is None else world_size
    return prepare_images(file_names(records), corpus_paths(records), RunLayout(run_dir).prepared(size),
                          Preprocess(size), workers=default_workers() if workers is None else workers,
                          rank=rank, world_size=world_size, progress=progress, stop=stop)


def without_bad(records, prepared: PreparedImages):
    """(the records whose image was readable, how many were left out); a CorpusTable stays a view."""
    names = file_names(records)
    keep = [i for i, n in enumerate(names) if n not in prepared.bad]
    if len(keep) == len(names):
        return records, 0
    kept = records.subset(keep) if isinstance(records, CorpusTable) else [records[i] for i in keep]
    return kept, len(names) - len(keep)


def readable(records, profile, run_dir: str | os.PathLike):
    """The records without the images the run's prepare stage could not read (train.preload), for
    whoever reads the corpus after training (the readability checks' calibration); unchanged when
    the run has no complete prepared folder."""
    folder = RunLayout(run_dir).prepared(int(profile.train.image_size))
    if not profile.train.preload or not (folder / STAMP).is_file():
        return records
    return without_bad(records, PreparedImages(folder))[0]


__all__ = ["BAD_LIST", "MARGIN", "PreparedImages", "SHARD_IMAGES", "corpus_paths", "default_workers",
           "prepare_images", "prepare_params", "prepare_run", "readable", "without_bad"]
