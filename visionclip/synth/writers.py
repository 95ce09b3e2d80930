"""Write the rendered corpus and the benchmark stand-ins in the real releases' layouts.

Every image is a pure function of (seed, index), so rendering is split over processes in chunks,
each file is written atomically, and a re-run skips files that exist (their measurements are
rebuilt from the plan alone, without drawing). CSVs and manifest.json are written last, also
atomically, so a resumed run ends byte-identical to an uninterrupted one.

Skipping is only safe when the existing files were rendered with the same settings, so before
drawing anything each dataset folder gets a stamp (.render_params.json) of what decides its pixels;
a re-run with other settings, or into a folder of unstamped images, is refused.
"""
from __future__ import annotations

import csv
import io as _io
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, NamedTuple, Sequence

from ..errors import ConfigError, DataError
from ..io import clean_stale_temps, sha256_file, write_bytes, write_json, write_text
from ..preempt import Preempted, StopRequest, map_unordered, requested
from ..progress import progress as progress_bar
from ..schema import COLUMNS, DISEASE_FLAGS, EYE_SIDES, RELEASE_COLUMNS
from ..seeding import derive_seed
from . import clinical
from .cameras import camera_record, check_disjoint
from ..data.advice import standin_sentence
from ..data.annotations import file_md5
from ..data.captions import caption, caption_diversity, flair_ek_prompts_zh, ngram_overlap
from .labels import (file_name_for, fives_labels, messidor2_labels, prevalence_table, refuge_labels,
                     sample_labels)
from .nonfundus import CORPUS_KINDS, RESERVED_KINDS, render_nonfundus as _render_nonfundus_frame
from .renderer import PHOTOMETRIC, encode_jpeg, plan_fundus, rasterise

META_COLUMNS = ("camera", "jpeg_quality", "dd_px", "cdr", "disc_aspect", "disc_pallor",
                "artery_calibre_factor", "vein_dilation_factor", "glaucoma_notch", "n_microaneurysm",
                "n_haemorrhage", "n_hard_exudate", "n_cotton_wool_spot", "n_drusen", "nonfundus_kind",
                "defects", "lesions")
HAEMORRHAGES = ("dot_blot_haemorrhage", "flame_haemorrhage", "preretinal_haemorrhage")
STAMP = ".render_params.json"   # hidden: readers and predict skip dot files; not in manifest "files"
# The corpus's annotation file in each synth.corpus_format (the reader finds either by its header).
ANNOTATION_FILES = {"paper": "annotations.csv", "release": "metadata.tsv"}


# ---- one image ------------------------------------------------------------------------------------

class _Job(NamedTuple):
    """One image to render: plan_fundus's arguments, where it goes and in which format."""
    index: int
    row: dict[str, Any]
    seed: int
    size: int
    camera: str
    dest: str | os.PathLike
    fmt: str
    kinds: tuple[str, ...]
    randomise: bool


def _task(job: _Job) -> tuple[int, dict[str, Any]]:
    """Render (or, when the file exists, only plan) one image; returns its measurements."""
    index, row, seed, size, camera, dest, fmt, kinds, randomise = job
    plan = plan_fundus(row, seed, index, size, camera, kinds, randomise=randomise)
    dest = Path(dest)
    if not dest.exists():
        img = rasterise(plan["scene"])
        if fmt == "png":
            buf = _io.BytesIO()
            img.save(buf, format="PNG", compress_level=1)  # same pixels, 3-4x faster
            data = buf.getvalue()
        else:
            data = encode_jpeg(img, plan["measurements"]["jpeg_quality"])
        write_bytes(dest, data)
    return index, plan["measurements"]


def _run_jobs(jobs: list[_Job], workers: int, desc: str, show: bool,
              stop: StopRequest | None = None) -> list[dict[str, Any]]:
    """Every job's measurements, in job order. On a stop request the jobs not started are skipped
    and Preempted names the folder and how many of its images are finished (all kept)."""
    clean_stale_temps({Path(j.dest).parent for j in jobs})
    out: list[dict[str, Any] | None] = [None] * len(jobs)
    pos = {j.index: k for k, j in enumerate(jobs)}
    bar = progress_bar(total=len(jobs), desc=desc, unit="img") if show else None
    serial = workers <= 1 or len(jobs) < 8
    chunk = max(1, min(64, len(jobs) // (max(1, workers) * 8)))
    for index, m in map_unordered(_task, jobs, 1 if serial else workers, stop, chunk):
        out[pos[index]] = m
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    if requested(stop) and any(m is None for m in out):
        done = sum(Path(j.dest).exists() for j in jobs)
        folder = os.path.commonpath([str(Path(j.dest).parent) for j in jobs])
        raise Preempted(f"{stop.signal_name} received: stopped rendering {folder} with {done} of {len(jobs)} "
                        "images finished (kept; the tables and manifest.json are written once all are)")
    return out  # type: ignore[return-value]


# ---- tables ----------------------------------------------------------------------------------------

def _csv_text(header: Sequence[str], rows: Iterable[Sequence[Any]], delimiter: str = ",") -> str:
    buf = _io.StringIO()
    w = csv.writer(buf, delimiter=delimiter, lineterminator="\n")
    w.writerow(header)
    for r in rows:
        w.writerow(r)
    return buf.getvalue()


def meta_row(m: dict[str, Any]) -> list[Any]:
    """The render_meta.csv columns (META_COLUMNS) of one measurements dict."""
    les = m.get("lesions", {})

    def total(*kinds: str) -> int:
        return sum(src.get(k, {}).get("count", 0) for src in les.values() for k in kinds)
    return [m["camera"], m["jpeg_quality"], m.get("dd_px", ""), m.get("cdr", ""), m.get("disc_aspect", ""),
            m.get("disc_pallor", ""), m.get("artery_calibre_factor", ""), m.get("vein_dilation_factor", ""),
            int(m.get("glaucoma_notch", False)) if "cdr" in m else "", total("microaneurysm"),
            total(*HAEMORRHAGES), total("hard_exudate"), total("cotton_wool_spot"), total("drusen"),
            m.get("nonfundus_kind", ""), ";".join(m.get("defects", [])),
            json.dumps(les, sort_keys=True, separators=(",", ":")) if les else ""]


def _checksums(root: Path, rels: Iterable[str]) -> dict[str, str]:
    return {rel: sha256_file(root / rel) for rel in sorted(rels)}


def _camera_for(seed: int, key: str, index: int, cameras: Sequence[str]) -> str:
    return cameras[derive_seed(seed, key, "camera", index) % len(cameras)]


def _base_manifest(kind: str, seed: int, size: int, cameras: Sequence[str], used: Counter) -> dict[str, Any]:
    return {"generator_version": clinical.GENERATOR_VERSION, "kind": kind, "seed": seed, "render_size": size,
            "cameras": {"available": list(cameras), "used": dict(sorted(used.items())),
                        "profiles": {c: camera_record(c) for c in cameras}},
            "clinical_parameters": clinical.clinical_parameters()}


# ---- the render-parameter stamp -------------------------------------------------------------------

def _read_stamp(path: Path) -> dict[str, Any]:
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: unreadable render-parameter stamp ({e}); "
                        f"render into a fresh folder or delete {path.parent}") from None
    if not isinstance(stored, dict):
        raise DataError(f"{path}: expected a JSON object of render parameters, got {type(stored).__name__}")
    return stored


def _stamp_differences(stored: dict[str, Any], params: dict[str, Any]) -> list[str]:
    """'key: stored X, this run Y' for every key whose value differs (or exists on one side only)."""
    missing = "<absent>"
    keys = list(params) + sorted(set(stored) - set(params))
    return [f"{k}: stored {stored.get(k, missing)!r}, this run {params.get(k, missing)!r}"
            for k in keys if stored.get(k, missing) != params.get(k, missing)]


def _needs_stamp(root: Path, params: dict[str, Any], dests: Iterable[str | os.PathLike]) -> bool:
    """True when root has no stamp yet; DataError when its images may be from other settings."""
    path = root / STAMP
    if path.is_file():
        diffs = _stamp_differences(_read_stamp(path), params)
        if diffs:
            raise DataError(f"{root}: already rendered with other settings ({'; '.join(diffs)}); "
                            f"render into a fresh folder or delete {root}")
        return False
    if root.is_dir() and any(Path(d).exists() for d in dests):
        raise DataError(f"{root}: holds rendered images but no {STAMP} (rendered before stamps were "
                        f"written, or by something else), so their settings cannot be verified; "
                        f"render into a fresh folder or delete {root}")
    return True


def _stamp_all(stamps: Sequence[tuple[Path, dict[str, Any], Sequence[str]]]) -> None:
    """Check every folder before stamping any, so a refusal leaves nothing half-claimed."""
    todo = [(root, params) for root, params, dests in stamps if _needs_stamp(root, params, dests)]
    for root, params in todo:
        write_json(root / STAMP, params)


def _plain(params: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(params))   # tuples -> lists, as they read back from the stamp


def corpus_params(profile) -> dict[str, Any]:
    """What decides the corpus's pixels. corpus_size is left out on purpose: label row i and image i
    depend on (seed, i) only, so a corpus may grow in place and its first n images are a corpus of
    size n (ablations.subset_corpus links them)."""
    s = profile.synth
    return _plain({"generator_version": clinical.GENERATOR_VERSION, "kind": "synfundus_corpus",
                   "seed": int(profile.seed), "render_size": int(s.render_size),
                   "cameras": list(s.train_cameras), "class_balance": s.class_balance,
                   "photometric": PHOTOMETRIC})


def _corpus_dests(out: Path, n: int) -> list[str]:
    return [str(out / "Fundus" / file_name_for(i)) for i in range(n)]


def stamp_corpus(profile, out_dir: str | os.PathLike, write: bool = True) -> Path:
    """Check out_dir against the corpus stamp (and, with write, stamp it) without rendering: for
    callers that fill a corpus folder with images of their own (ablations.subset_corpus)."""
    out = Path(out_dir)
    params = corpus_params(profile)
    if _needs_stamp(out, params, _corpus_dests(out, int(profile.synth.corpus_size))) and write:
        write_json(out / STAMP, params)
    return out


# ---- the corpus ------------------------------------------------------------------------------------

def release_values(row: dict[str, Any], md5: str) -> dict[str, Any]:
    """A rendered eye's row of the release's metadata. The labels are the row's; the rest is derived,
    since the renderer draws no more: is_tessellated is is_pm (pathologic myopia is drawn tessellated),
    is_abnormal and has_lesion are any DR or disease but diabetes alone, is_md, is_mh and is_treated are
    0, the quality score is the share of the three regions that can be assessed, and the sentence is
    data.advice.standin_sentence's (it always agrees with the flags; the release's do not)."""
    abnormal = int(int(row["dr_grade"]) > 0 or any(int(row[f]) for f in DISEASE_FLAGS if f != "is_dm"))
    regions = ("is_macular_readable", "is_optic_disc_readable", "is_retinal_region_readable")
    values = {**row, "file_md5": md5, "eyes_side": EYE_SIDES[int(row["eye_side"])], "is_abnormal": abnormal,
              "has_lesion": abnormal, "is_md": 0, "is_mh": 0, "is_treated": 0, "is_tessellated": int(row["is_pm"]),
              "retinal_region_quality_score": round(sum(int(row[k]) for k in regions) / len(regions), 4)}
    values["diagnosticAdvice"] = standin_sentence(values)
    return values


def _annotation_text(fmt: str, rows: Sequence[dict[str, Any]], out: Path) -> str:
    """The corpus's annotation file: the paper's 17 columns (CSV) or the release's metadata (tab-separated)."""
    if fmt == "paper":
        return _csv_text(COLUMNS, ([r[c] for c in COLUMNS] for r in rows))
    release = (release_values(r, file_md5(out / "Fundus" / r["file_name"])) for r in rows)
    return _csv_text(RELEASE_COLUMNS, ([v[c] for c in RELEASE_COLUMNS] for v in release), delimiter="\t")


def _corpus_job(profile, index: int, row: dict[str, Any], dest, randomise: bool) -> _Job:
    """The job that draws the corpus's image `index` as render_corpus does (its seed, size and camera),
    with or without the domain randomisation."""
    s = profile.synth
    seed = int(profile.seed)
    return _Job(index, row, seed, int(s.render_size), _camera_for(seed, "corpus", index, s.train_cameras), dest,
                "jpg", CORPUS_KINDS, randomise)


def render_corpus(profile, out_dir: str | os.PathLike, progress: bool = True,
                  stop: StopRequest | None = None) -> Path:
    """Render profile.synth.corpus_size images in the SynFundus-1M layout under out_dir, annotated in
    synth.corpus_format (ANNOTATION_FILES); resumable. Preempted once `stop` is requested, before the
    tables and manifest are written (every finished image is kept; a re-run completes them)."""
    s = profile.synth
    check_disjoint(s.train_cameras, s.heldout_cameras)
    out = Path(out_dir)
    seed, size = int(profile.seed), int(s.render_size)
    rows = sample_labels(int(s.corpus_size), seed, s.class_balance)
    dests = _corpus_dests(out, len(rows))
    _stamp_all([(out, corpus_params(profile), dests)])
    # domain randomisation: the corpus alone; the benchmark stand-ins keep their cameras' own looks
    jobs = [_corpus_job(profile, i, row, dests[i], randomise=True) for i, row in enumerate(rows)]
    cams = [job.camera for job in jobs]
    meas = _run_jobs(jobs, int(s.workers), "render corpus", progress, stop)

    fmt = s.corpus_format
    write_text(out / ANNOTATION_FILES[fmt], _annotation_text(fmt, rows, out))
    for other in set(ANNOTATION_FILES.values()) - {ANNOTATION_FILES[fmt]}:
        (out / other).unlink(missing_ok=True)  # left by a rendering of this folder in the other format
    zh = [caption(r, seed, i, "zh") for i, r in enumerate(rows)]
    en = [caption(r, seed, i, "en") for i, r in enumerate(rows)]
    write_text(out / "captions.csv", _csv_text(("file_name", "caption_zh", "caption_en"),
                                               zip((r["file_name"] for r in rows), zh, en)))
    write_text(out / "render_meta.csv", _csv_text(("file_name",) + META_COLUMNS,
                                                  ([r["file_name"]] + meta_row(m) for r, m in zip(rows, meas))))
    manifest = _base_manifest("synfundus_corpus", seed, size, list(s.train_cameras), Counter(cams))
    manifest.update({
        "profile": profile.name, "class_balance": s.class_balance, "corpus_size": len(rows), "format": fmt,
        "heldout_cameras": list(s.heldout_cameras), "nonfundus_kinds": list(CORPUS_KINDS),
        "nonfundus_kinds_reserved": list(RESERVED_KINDS),
        "labels": prevalence_table(rows),
        "captions": {"zh": caption_diversity(zh, rows), "en": caption_diversity(en, rows),
                     "ngram_overlap_en_vs_flair_ek_prompts": ngram_overlap(en),
                     "ngram_overlap_zh_vs_flair_ek_prompts": ngram_overlap(zh, flair_ek_prompts_zh())},
        "licence_note": "synthetic stand-in in the SynFundus-1M schema (the real release is CC BY-NC-SA 4.0)",
    })
    rels = [f"Fundus/{r['file_name']}" for r in rows] + [ANNOTATION_FILES[fmt], "captions.csv", "render_meta.csv"]
    manifest["files"] = _checksums(out, rels)
    write_json(out / "manifest.json", manifest)
    return out


def render_corpus_without_randomisation(profile, file_names: Sequence[str], out_dir: str | os.PathLike,
                                         progress: bool = False) -> list[Path]:
    """The rendered corpus's images `file_names` drawn again as render_corpus draws them (the same
    labels, camera, seed and size) but in their camera's own look, without the domain randomisation
    (PHOTOMETRIC), and stored as the corpus stores them: the "before" of the randomisation, set beside
    the corpus in notebook 01. out_dir is emptied first, so the images always match this profile."""
    s = profile.synth
    seed = int(profile.seed)
    rows = sample_labels(int(s.corpus_size), seed, s.class_balance)
    index = {r["file_name"]: i for i, r in enumerate(rows)}
    unknown = [f for f in file_names if f not in index]
    if unknown:
        raise DataError(f"{unknown[0]}: not an image of the corpus this profile renders "
                        f"({s.corpus_size} images, seed {seed})")
    out = Path(out_dir)
    if out.is_dir():
        for old in out.glob("*.jpg"):
            old.unlink()
    out.mkdir(parents=True, exist_ok=True)
    jobs = [_corpus_job(profile, index[f], rows[index[f]], out / f, randomise=False) for f in file_names]
    _run_jobs(jobs, int(s.workers), "render without randomisation", progress)
    return [out / f for f in file_names]


# ---- the benchmark stand-ins -----------------------------------------------------------------------

def _variant(profile, variant: str) -> tuple[int, list[str]]:
    s = profile.synth
    if variant == "test":
        return int(s.benchmark_test_seed), list(s.heldout_cameras)
    if variant == "dev":
        return int(s.benchmark_dev_seed), list(s.heldout_cameras)
    if variant == "seen":
        return int(s.benchmark_test_seed), list(s.train_cameras)
    raise ConfigError(f"benchmark variant {variant!r} is unknown; expected 'test', 'dev' or 'seen'")


class _Set(NamedTuple):
    """One benchmark stand-in, planned: its label rows, image paths and side files."""
    name: str
    rows: list[dict]
    rels: list[str]
    fmt: str
    extra_files: dict[str, str]
    extra_manifest: dict[str, Any]


def _messidor2_set(n: int, seed: int) -> _Set:
    # as on Kaggle: messidor_data.csv (gradable rows) + IMAGES/IM000001.JPG
    rows = messidor2_labels(n, seed)
    ids = [f"IM{i + 1:06d}.JPG" for i in range(len(rows))]
    table = _csv_text(("image_id", "adjudicated_dr_grade", "adjudicated_dme", "adjudicated_gradable"),
                      ([iid, r["dr_grade"], r["is_dme"], 1] for iid, r in zip(ids, rows)))
    return _Set("messidor2", rows, [f"IMAGES/{iid}" for iid in ids], "jpg", {"messidor_data.csv": table},
                {"grade_counts": dict(sorted(Counter(str(r["dr_grade"]) for r in rows).items()))})


def _fives_set(n: int, seed: int) -> _Set:
    # train/Original/<n>_<A|D|G|N>.png, test/Original/...; 3:1 train/test within each class
    rows = fives_labels(n, seed)
    per_class: dict[str, int] = Counter(r["fives_class"] for r in rows)
    seen: Counter = Counter()
    counters = {"train": 0, "test": 0}
    rels = []
    for r in rows:
        c = r["fives_class"]
        split = "train" if seen[c] < per_class[c] * 3 // 4 else "test"
        seen[c] += 1
        counters[split] += 1
        rels.append(f"{split}/Original/{counters[split]}_{c}.png")
    return _Set("fives", rows, rels, "png", {},
                {"class_counts": dict(sorted(per_class.items())), "split_counts": counters})


def _refuge_set(n: int, seed: int) -> _Set:
    # Training400/Glaucoma/gXXXX.jpg and Training400/Non-Glaucoma/nXXXX.jpg
    rows = refuge_labels(n, seed)
    counts = {"g": 0, "n": 0}
    rels = []
    for r in rows:
        k = "g" if r["is_gc"] else "n"
        counts[k] += 1
        rels.append(f"Training400/{'Glaucoma' if k == 'g' else 'Non-Glaucoma'}/{k}{counts[k]:04d}.jpg")
    return _Set("refuge", rows, rels, "jpg", {},
                {"class_counts": {"glaucoma": counts["g"], "no_glaucoma": counts["n"]}})


def _benchmark_params(st: _Set, variant: str, seed: int, size: int, cameras: list[str]) -> dict[str, Any]:
    # n_images counts: a benchmark's label mix (hence image i) is apportioned over all n
    return _plain({"generator_version": clinical.GENERATOR_VERSION, "kind": f"{st.name}_standin",
                   "variant": variant, "seed": seed, "image_seed": derive_seed(seed, st.name),
                   "render_size": size, "cameras": cameras, "n_images": len(st.rows)})


def _write_dataset(root: Path, st: _Set, seed: int, size: int, cameras: list[str], workers: int,
                   show: bool, variant: str, stop: StopRequest | None = None) -> Path:
    img_seed = derive_seed(seed, st.name)          # each dataset holds different eyes
    cams = [_camera_for(seed, st.name, i, cameras) for i in range(len(st.rows))]
    jobs = [_Job(i, row, img_seed, size, cams[i], str(root / rel), st.fmt, CORPUS_KINDS, False)
            for i, (row, rel) in enumerate(zip(st.rows, st.rels))]
    meas = _run_jobs(jobs, workers, f"render {variant}/{st.name}", show, stop)
    for rel, text in st.extra_files.items():
        write_text(root / rel, text)
    write_text(root / "render_meta.csv", _csv_text(("path",) + META_COLUMNS,
                                                   ([rel] + meta_row(m) for rel, m in zip(st.rels, meas))))
    manifest = _base_manifest(f"{st.name}_standin", seed, size, cameras, Counter(cams))
    manifest.update({"dataset": st.name, "variant": variant, "image_seed": img_seed, "n_images": len(st.rows)},
                    **st.extra_manifest)
    manifest["files"] = _checksums(root, st.rels + list(st.extra_files) + ["render_meta.csv"])
    write_json(root / "manifest.json", manifest)
    return root


def render_benchmarks(profile, out_dir: str | os.PathLike, variant: str = "test",
                      progress: bool = True, stop: StopRequest | None = None) -> dict[str, Path]:
    """MESSIDOR-2, FIVES and REFUGE stand-ins in their real layouts under out_dir/<dataset>/;
    resumable, and Preempted between images once `stop` is requested (as render_corpus)."""
    s = profile.synth
    check_disjoint(s.train_cameras, s.heldout_cameras)
    seed, cameras = _variant(profile, variant)
    size, workers, out = int(s.render_size), int(s.workers), Path(out_dir)
    sets = [_messidor2_set(int(s.messidor2_size), seed), _fives_set(int(s.fives_size), seed),
            _refuge_set(int(s.refuge_size), seed)]
    _stamp_all([(out / st.name, _benchmark_params(st, variant, seed, size, cameras),
                 [str(out / st.name / rel) for rel in st.rels]) for st in sets])
    return {st.name: _write_dataset(out / st.name, st, seed, size, cameras, workers, progress, variant, stop)
            for st in sets}


def render_nonfundus(out_dir: str | os.PathLike, n: int, seed: int,
                     kinds: Sequence[str] = RESERVED_KINDS, size: int = 192) -> Path:
    """n non-fundus frames (by default the kinds the corpus never contains) for the ablation:
    out_dir/images/NNNNNNN.jpg, out_dir/labels.csv (file_name, kind), out_dir/manifest.json."""
    out = Path(out_dir)
    dests = [out / "images" / f"{i + 1:07d}.jpg" for i in range(n)]
    # frame i depends on (seed, i, kinds), not on n
    params = _plain({"generator_version": clinical.GENERATOR_VERSION, "kind": "nonfundus", "seed": seed,
                     "render_size": size, "kinds": list(kinds)})
    _stamp_all([(out, params, dests)])
    names, used = [], []
    for i in range(n):
        kind = kinds[derive_seed(seed, "nonfundus_kind", i) % len(kinds)]
        dest = dests[i]
        name = dest.name
        if not dest.exists():
            write_bytes(dest, encode_jpeg(_render_nonfundus_frame(kind, seed, i, size), 90))
        names.append(name)
        used.append(kind)
    write_text(out / "labels.csv", _csv_text(("file_name", "kind"), zip(names, used)))
    manifest = {"generator_version": clinical.GENERATOR_VERSION, "kind": "nonfundus", "seed": seed,
                "render_size": size, "kinds": dict(sorted(Counter(used).items()))}
    manifest["files"] = _checksums(out, [f"images/{x}" for x in names] + ["labels.csv"])
    write_json(out / "manifest.json", manifest)
    return out
