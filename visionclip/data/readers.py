"""One reader per dataset, the same code for the rendered stand-ins and the real releases.

Every reader returns a list of records (`Record` for benchmarks, `CorpusRecord` for the corpus;
`read_synfundus_table` gives the corpus as columns, for training, and `read_corpus` reads a run's corpus
as its profile says), checks the layout it expects and says which one it expected when the root does
not match, and names the file, row and field of any bad value. When the root holds a manifest.json with a
"files" map (written by this project's renderer) every listed file's sha256 is verified first.
"""
from __future__ import annotations

import errno
import os
import re
from array import array
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from ..errors import DataError
from ..paths import RunLayout, corpus_dir
from ..schema import EXTRA_FLAGS
from .annotations import PAPER, RELEASE, Schema, check_md5, closest_schema, parse_labels, parse_release, schema_of
from .delimited import DelimitedRows, read_header, read_rows
from .fields import parse_int
from .file_index import IMAGE_EXTS, ImageFiles
from .manifests import class_names, load_manifest, verify_root
from . import table_cache
from .records import CorpusRecord, Record
from .table import LABEL_COLUMNS, CorpusTable, ReleaseColumns, StringColumn, StringIndex

BENCHMARKS: tuple[str, ...] = ("messidor2", "messidor", "fives", "refuge")
CAPTION_COLUMNS = ("file_name", "caption_zh", "caption_en")
SIDE_FILES = ("captions.csv", "render_meta.csv")
ANNOTATION_EXTS = (".csv", ".tsv", ".txt")
CAPTION_SOURCES = ("release", "generated", "both")  # data.captions: what each language's captions are


# --------------------------------------------------------------------------- helpers

def _layout_summary(layout: str) -> str:
    """The required entries of a manifest's layout text, on one line: the paths of its `<root>/...`
    lines that are not marked optional (the full text stays in data_manifests/<dataset>.yaml)."""
    entries = []
    for line in layout.splitlines():
        if line.startswith("<root>") and "optional" not in line:
            entries.append(re.split(r"\s{2,}", line.strip())[0].rstrip(";,. "))
    return "; ".join(entries) or layout.splitlines()[0]


def _layout_error(root: Path, dataset: str, problem: str) -> DataError:
    # One line (CLI errors are one line); the manifest holds the full description.
    summary = _layout_summary(load_manifest(dataset)["layout"])
    return DataError(f"{root}: {problem}. Expected the {dataset} layout: {summary} "
                     f"(see 'layout' in data_manifests/{dataset}.yaml)")


def _require_root(root: str | os.PathLike, dataset: str) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise _layout_error(root, dataset, "data root does not exist or is not a folder")
    return root


def _require_columns(path: Path, header: Iterable[str], required: Iterable[str]) -> None:
    missing = [c for c in required if c not in header]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; found {list(header)}")


class _ImageIndex:
    """Every image file under a root, found by name with a case-insensitive extension.

    Real releases mix .png/.PNG/.JPG and CSVs do not always agree with the disk
    (messidor_data.csv lists IM000001.jpg, the file is IM000001.JPG).
    """

    def __init__(self, root: Path, skip_dir: Callable[[str], bool] = lambda name: False):
        self.by_name: dict[str, list[Path]] = {}
        self.by_stem: dict[str, list[Path]] = {}
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and not skip_dir(d))
            for name in sorted(filenames):
                if name.startswith(".") or os.path.splitext(name)[1].lower() not in IMAGE_EXTS:
                    continue
                path = Path(dirpath) / name
                self.by_name.setdefault(name.lower(), []).append(path)
                self.by_stem.setdefault(os.path.splitext(name)[0].lower(), []).append(path)

    def find(self, name: str, where: str, field: str) -> Path:
        """The one file called `name` (any case), or with its stem and another image extension."""
        key = Path(name).name.lower()
        hits = self.by_name.get(key)
        if not hits:
            hits = self.by_stem.get(os.path.splitext(key)[0])
        if not hits:
            raise DataError(f"{where}, field '{field}': image {name!r} not found under the data root")
        if len(hits) > 1:  # prefer the file whose name matches exactly, case included
            exact = [h for h in hits if h.name == Path(name).name]
            hits = exact if len(exact) == 1 else hits
        if len(hits) > 1:
            raise DataError(f"{where}, field '{field}': image {name!r} is ambiguous, several files "
                            f"match: {[str(h) for h in hits]}")
        _check_not_empty(hits[0])
        return hits[0]


def _check_not_empty(path: Path) -> None:
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty image file (truncated download?)")


def _domain_lookup(root: Path, dataset: str) -> Callable[[Path], str]:
    """Camera name per image from render_meta.csv when the stand-in wrote one, else the dataset name.

    The corpus's render_meta.csv has a row per image: its keys are held as a StringIndex and its
    cameras as small codes, not as a dict of a million str (a later row for the same key wins, as in a dict).
    """
    meta_path = root / "render_meta.csv"
    if not meta_path.is_file():
        return lambda path: dataset
    keys, codes, cameras = StringColumn(), array("i"), {}
    with DelimitedRows(meta_path) as rows:
        try:
            key_col = "path" if "path" in rows.header else "file_name"
            _require_columns(meta_path, rows.header, (key_col, "camera"))
            for line, row in rows:
                key, camera = row.get(key_col) or "", row.get("camera") or ""
                if not key or not camera:
                    raise DataError(f"{meta_path}: line {line}, field '{key_col if not key else 'camera'}': empty")
                keys.append(key.replace("\\", "/"))
                codes.append(cameras.setdefault(camera, len(cameras)))
        except DataError as e:
            rows.fail(e)
    index, camera_names = StringIndex(keys), list(cameras)

    def lookup(path: Path) -> str:
        rel = path.relative_to(root).as_posix()
        for key in (rel, path.name):
            row = index.find_last(key)
            if row >= 0:
                return camera_names[codes[row]]
        raise DataError(f"{meta_path}: no row for image {rel!r} (field '{key_col}')")
    return lookup


def _natural_key(path: Path) -> tuple:
    return tuple(int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.as_posix()))


def _records(paths_labels: list[tuple[Path, int]], dataset: str, root: Path) -> list[Record]:
    if not paths_labels:
        raise _layout_error(root, dataset, "no labelled images found")
    names = class_names(dataset)
    domain = _domain_lookup(root, dataset)
    return [Record(path=p, label=y, class_names=names, dataset=dataset, domain=domain(p))
            for p, y in paths_labels]


# --------------------------------------------------------------------------- SynFundus-1M

def _annotation_candidates(root: Path) -> list[tuple[Path, Schema]]:
    """Files at the root (.csv, .tsv, .txt) whose header holds the paper's or the release's columns."""
    with os.scandir(root) as entries:  # the root may hold the images too: filter before sorting
        paths = sorted(Path(e.path) for e in entries if e.is_file() and e.name not in SIDE_FILES
                       and os.path.splitext(e.name)[1].lower() in ANNOTATION_EXTS)
    found = [(p, schema_of(read_header(p))) for p in paths]
    return [(p, s) for p, s in found if s is not None]


def _find_annotations(root: Path) -> tuple[Path, Schema]:
    """annotations.csv when present, else the one file whose header is a schema's (found by header)."""
    preferred = root / "annotations.csv"
    if preferred.is_file():  # even with a wrong header: its missing columns are then named
        header = read_header(preferred)
        return preferred, schema_of(header) or closest_schema(header)
    candidates = _annotation_candidates(root)
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise _layout_error(root, "synfundus", "no annotation file (.csv, .tsv or .txt at the root) with the "
                            f"paper's {len(PAPER.columns)} columns or the release's {len(RELEASE.columns)} columns")
    raise DataError(f"{root}: no annotations.csv and several annotation files "
                    f"({[p.name for p, _ in candidates]}); rename the one to use to annotations.csv")


def _raise_first_repeat(csv_path: Path, names: StringColumn, lines: array, images: array,
                        files: ImageFiles) -> None:
    """The error for the first row whose file_name an earlier row has, if any; then for the first
    row whose file_name is spelled otherwise (another folder, another case) but finds the same image:
    two label rows for one photograph, of which training would silently use both."""
    repeat = StringIndex(names).first_repeat()
    if repeat is not None:
        row, first = repeat
        raise DataError(f"{csv_path}: row {row + 1} (line {lines[row]}), field 'file_name': "
                        f"{names[row]!r} already listed on row {first + 1}") from None
    found = np.frombuffer(images, dtype=np.intc)
    order = np.argsort(found, kind="stable")  # equal images side by side, in row order
    same = np.flatnonzero(found[order][1:] == found[order][:-1])
    if len(same):
        k = int(same[np.argmin(order[same + 1])])  # the earliest row that repeats an image
        first, row = int(order[k]), int(order[k + 1])
        raise DataError(f"{csv_path}: row {row + 1} (line {lines[row]}), field 'file_name': {names[row]!r} is "
                        f"the image of row {first + 1} (line {lines[first]}, {names[first]!r}): "
                        f"{files.path(found[row])}; one row per image") from None


def _image_of(files: ImageFiles, name: str, where: str) -> int:
    """The one image file called `name` below the root (any case), checked not to be empty."""
    hits = files.find(name)
    if not hits:
        raise DataError(f"{where}, field 'file_name': image {name!r} not found below {files.root}")
    if len(hits) > 1:
        raise DataError(f"{where}, field 'file_name': image {name!r} is in several places: "
                        f"{sorted(str(files.path(k)) for k in hits)}")
    if hits[0] in files.empty:
        raise DataError(f"{where}, field 'file_name': image {files.path(hits[0])} is empty")
    return hits[0]


class _Annotations:
    """The annotation file's columns: file names, the int8 label matrix (LABEL_COLUMNS), each row's
    image (a file of `files`) and, for the release, its extra columns."""

    def __init__(self, path: Path, schema: Schema, files: ImageFiles, *, need_advice: bool, verify_md5: bool):
        self.path, self.schema = path, schema
        self.names, self.lines, self.images = StringColumn(), array("q"), array("i")
        labels, extras, quality, advice = array("b"), array("b"), array("f"), StringColumn()
        with DelimitedRows(path) as rows:
            try:
                _require_columns(path, rows.header, schema.columns)
                try:
                    for index, (line, row) in enumerate(rows):
                        where = f"{path}: row {index + 1} (line {line})"
                        name = row["file_name"]
                        if not name:
                            raise DataError(f"{where}, field 'file_name': empty")
                        self.names.append(name)
                        self.lines.append(line)
                        labels.extend(parse_labels(schema, row, where))
                        if schema is RELEASE:
                            more = parse_release(row, where)
                            if need_advice and not more.advice:
                                raise DataError(f"{where}, field 'diagnosticAdvice': empty (data.captions "
                                                "uses it as the Chinese caption; data.captions=generated does not)")
                            extras.extend(more.extras)
                            quality.append(more.quality)
                            advice.append(more.advice)
                        self.images.append(_image_of(files, name, where))
                        if verify_md5 and schema is RELEASE:
                            check_md5(files.path(self.images[-1]), more.md5, where)
                except DataError:
                    # Repeats are found at the end (no dict of every name); a row's repeated name
                    # was reported ahead of its other faults and of any later row's.
                    _raise_first_repeat(path, self.names, self.lines, self.images, files)
                    raise
                _raise_first_repeat(path, self.names, self.lines, self.images, files)
                if not len(self.names):
                    raise DataError(f"{path}: no data rows")
            except DataError as e:
                rows.fail(e)
        self.labels = np.frombuffer(labels, dtype=np.int8).reshape(-1, len(LABEL_COLUMNS))
        self.release = None if schema is not RELEASE else ReleaseColumns(
            np.frombuffer(extras, dtype=np.int8).reshape(len(self.names), -1),
            np.frombuffer(quality, dtype=np.float32), advice)


def _read_captions(path: Path, names: StringColumn) -> tuple[StringColumn, StringColumn]:
    """caption_zh and caption_en of each of `names` from captions.csv (a later row for a file wins)."""
    keys, zh, en = StringColumn(), StringColumn(), StringColumn()
    with DelimitedRows(path) as rows:
        try:
            _require_columns(path, rows.header, CAPTION_COLUMNS)
            for line, row in rows:
                for col in CAPTION_COLUMNS:
                    if not row.get(col):
                        raise DataError(f"{path}: line {line}, field '{col}': empty")
                keys.append(row["file_name"])
                zh.append(row["caption_zh"])
                en.append(row["caption_en"])
        except DataError as e:
            rows.fail(e)
    if keys.same_as(names):  # the renderer writes captions.csv in annotation order
        return zh, en
    index = StringIndex(keys)
    order, missing, first_missing = array("q"), 0, []
    for i in range(len(names)):
        row = index.find_last(names[i])
        if row < 0:
            missing += 1
            if len(first_missing) < 3:
                first_missing.append(names[i])
        order.append(row)
    if missing:
        raise DataError(f"{path}: no caption for {missing} image(s), first "
                        f"{first_missing} (field 'file_name')")
    return zh.take(order), en.take(order)


def _generated_captions(ann: _Annotations, caption_seed: int, keep: np.ndarray,
                        languages: tuple[str, ...]) -> dict[str, StringColumn]:
    """Captions generated from each kept row's labels (and the release's extra flags, through
    captions.EXTRA_FINDINGS); a row left out by data.min_quality gets an empty one."""
    from .captions import caption  # lazy: the captioner is only needed for corpora without captions.csv

    out = {lang: StringColumn() for lang in languages}
    for i in range(len(ann.names)):
        row = {"file_name": ann.names[i], **dict(zip(LABEL_COLUMNS, ann.labels[i].tolist()))}
        if ann.release is not None:
            row.update(zip(EXTRA_FLAGS, ann.release.extras[i].tolist()))
        for lang in languages:
            out[lang].append(caption(row, caption_seed, i, lang) if keep[i] else "")
    return out


def _captions(root: Path, ann: _Annotations, source: str, caption_seed: int,
              keep: np.ndarray) -> tuple[StringColumn, StringColumn, dict[str, str]]:
    """(zh, en, {language: source}) for data.captions = `source`: the release's sentence is the
    Chinese caption under release and both; generated captions are captions.csv's (the stand-in
    writes them) or made from the labels."""
    wanted = {"release": (), "generated": ("zh", "en"), "both": ("en",)}[source]
    generated: dict[str, StringColumn] = {}
    if wanted and (root / "captions.csv").is_file():
        generated = dict(zip(("zh", "en"), _read_captions(root / "captions.csv", ann.names)))
    elif wanted:
        generated = _generated_captions(ann, caption_seed, keep, wanted)
    if source == "generated":
        return generated["zh"], generated["en"], {"zh": "generated", "en": "generated"}
    if ann.release is None:
        raise DataError(f"{ann.path}: data.captions={source} needs the release's diagnosticAdvice column; "
                        f"this file has the paper's {len(PAPER.columns)} columns (set data.captions=generated)")
    if source == "release":  # the release has no English text
        return ann.release.advice, StringColumn.blanks(len(ann.names)), {"zh": "release", "en": "none"}
    return ann.release.advice, generated["en"], {"zh": "release", "en": "generated"}


def _quality_rows(ann: _Annotations, min_quality: float) -> np.ndarray:
    """Which rows data.min_quality keeps (a bool per row)."""
    if min_quality <= 0:
        return np.ones(len(ann.names), dtype=bool)
    if ann.release is None:
        raise DataError(f"{ann.path}: data.min_quality={min_quality} needs the release's "
                        f"retinal_region_quality_score column; this file has the paper's {len(PAPER.columns)} columns")
    keep = ann.release.quality >= min_quality
    if not keep.any():
        raise DataError(f"{ann.path}: no row has retinal_region_quality_score >= data.min_quality={min_quality} "
                        f"(the highest is {float(ann.release.quality.max()):g})")
    return keep


def read_synfundus_table(root: str | os.PathLike, caption_seed: int = 0, verify: bool = True, *,
                         captions: str = "generated", min_quality: float = 0.0,
                         verify_md5: bool = False, annotations: tuple[Path, Schema] | None = None) -> CorpusTable:
    """The corpus in either schema (the paper's 17 columns, the release's 26), in annotation-file
    order, as columns (what training uses).

    The annotation file is found by its header; each image by its file_name anywhere below the root,
    in any case. `captions` is data.captions (see `_captions`); generated captions use
    `visionclip.data.captions.caption(row, caption_seed, index, lang)`. `min_quality` keeps the rows
    whose retinal_region_quality_score reaches it (0: every row); `verify_md5` checks each image
    against the release's file_md5. The files are read a row at a time, so no per-row Python
    objects exist at any point. `annotations`: the annotation file and its schema when the caller
    has found them already (read_corpus, for its cache key).
    """
    if captions not in CAPTION_SOURCES:
        raise DataError(f"captions: expected one of {list(CAPTION_SOURCES)}, got {captions!r}")
    root = _require_root(root, "synfundus")
    if verify:
        verify_root(root)
    path, schema = annotations or _find_annotations(root)
    files = ImageFiles(root)
    if not len(files):
        raise _layout_error(root, "synfundus", f"no image files ({', '.join(IMAGE_EXTS)}) below the root")
    ann = _Annotations(path, schema, files, need_advice=captions != "generated", verify_md5=verify_md5)
    files.forget_index()
    keep = _quality_rows(ann, min_quality)
    zh, en, sources = _captions(root, ann, captions, caption_seed, keep)
    domain = _domain_lookup(root, "synfundus")
    codes, domains = array("i"), {}
    for row in range(len(ann.names)):
        name = domain(files.path(ann.images[row]))
        codes.append(domains.setdefault(name, len(domains)))
    table = CorpusTable(files, np.frombuffer(ann.images, dtype=np.intc), ann.names, ann.labels, zh, en,
                        np.frombuffer(codes, dtype=np.intc), list(domains), ann.release, sources)
    return table if keep.all() else table.subset(np.flatnonzero(keep))


def read_synfundus(root: str | os.PathLike, caption_seed: int = 0, verify: bool = True,
                   **options) -> list[CorpusRecord]:
    """`read_synfundus_table` as a list of records (~3 KiB a row: for small corpora and tests)."""
    return list(read_synfundus_table(root, caption_seed, verify, **options))


def read_corpus(profile, run_dir: str | os.PathLike, *, save: bool = True) -> CorpusTable:
    """A run's corpus as its profile reads it: the configured release or the stand-in, with the
    profile's caption source (data.captions), quality filter (data.min_quality) and md5 check.

    Built once and saved under the run directory (data.table_cache); later calls with the same
    annotation file, options and code load it. `save=False` builds without writing (a torchrun
    rank that missed rank 0's file: one writer is enough).
    """
    d = profile.data
    root = _require_root(corpus_dir(profile, run_dir), "synfundus")
    options = {"caption_seed": int(profile.seed), "captions": d.captions, "min_quality": float(d.min_quality),
               "verify_md5": bool(d.verify_md5)}
    folder = RunLayout(run_dir).corpus_tables
    annotations = _find_annotations(root)  # once: it reads the header of every candidate file
    path = table_cache.cache_path(folder, table_cache.cache_key(annotations[0], options))
    table = table_cache.load_table(path)
    if table is not None:
        return table
    table = read_synfundus_table(root, **options, annotations=annotations)
    if save:
        try:
            table_cache.save_table(table, path)
            table_cache.prune(folder, keep=path)
        except OSError as e:
            # a run directory one may only read (a finished run on shared storage) costs the next reader a
            # rebuild, nothing more; any other failure (a full disk) is the run's, said as one line by the CLI
            if e.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
                raise OSError(e.errno, e.strerror, e.filename or str(path)) from None
    return table

# --------------------------------------------------------------------------- MESSIDOR-2

MESSIDOR2_CSV = "messidor_data.csv"
MESSIDOR2_COLUMNS = ("image_id", "adjudicated_dr_grade", "adjudicated_gradable")


def read_messidor2(root: str | os.PathLike, verify: bool = True) -> list[Record]:
    """Kaggle MESSIDOR-2: gradable images only, 5 ICDR classes, images anywhere under root."""
    root = _require_root(root, "messidor2")
    csv_path = root / MESSIDOR2_CSV
    if not csv_path.is_file():
        found = sorted(p for p in root.rglob("*") if p.name.lower() == MESSIDOR2_CSV)
        if len(found) != 1:
            raise _layout_error(root, "messidor2", f"no {MESSIDOR2_CSV} at the root"
                                + (f" (several below it: {[str(p) for p in found]})" if found else ""))
        csv_path = found[0]
    if verify:
        verify_root(root)
    header, rows = read_rows(csv_path)
    _require_columns(csv_path, header, MESSIDOR2_COLUMNS)
    label_map = {int(k): v for k, v in load_manifest("messidor2")["label_map"]["adjudicated_dr_grade"].items()}
    index = _ImageIndex(root)
    out = []
    for i, (line, row) in enumerate(rows):
        where = f"{csv_path}: row {i + 1} (line {line})"
        if not row["image_id"]:
            raise DataError(f"{where}, field 'image_id': empty")
        gradable = row["adjudicated_gradable"]
        if gradable and parse_int(gradable, where, "adjudicated_gradable", (0, 1)) == 0:
            continue  # ungradable: FLAIR's partition keeps gradable images only
        if not row["adjudicated_dr_grade"]:
            continue  # no adjudicated grade (the release's ungradable rows)
        grade = parse_int(row["adjudicated_dr_grade"], where, "adjudicated_dr_grade", label_map)
        out.append((index.find(row["image_id"], where, "image_id"), label_map[grade]))
    return _records(out, "messidor2", root)


# --------------------------------------------------------------------------- MESSIDOR (original)

_MESSIDOR_SHEET = re.compile(r"^annotation[ _]?base\w*\.xls$", re.IGNORECASE)
MESSIDOR_COLUMNS = ("Image name", "Retinopathy grade")


def _read_messidor_sheet(path: Path) -> list[tuple[int, str, object]]:
    """(sheet row number, image name, grade cell) from one Annotation_BaseXX.xls."""
    import xlrd  # only this reader needs it

    try:
        book = xlrd.open_workbook(str(path))
    except Exception as e:  # xlrd raises its own XLRDError, or struct/compdoc errors on junk
        raise DataError(f"{path}: not a readable .xls spreadsheet ({type(e).__name__}: {e})") from None
    sheet = book.sheet_by_index(0)
    header_row, columns = None, {}
    for r in range(min(sheet.nrows, 10)):
        values = [str(v).strip().lower() for v in sheet.row_values(r)]
        if "image name" in values:
            header_row, columns = r, {v: c for c, v in enumerate(values)}
            break
    if header_row is None:
        raise DataError(f"{path}: no header row with column 'Image name'; expected columns "
                        "'Image name', 'Ophthalmologic department', 'Retinopathy grade', 'Risk of macular edema'")
    missing = [c for c in MESSIDOR_COLUMNS if c.lower() not in columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing} in header row {header_row + 1}")
    name_col, grade_col = columns["image name"], columns["retinopathy grade"]
    out = []
    for r in range(header_row + 1, sheet.nrows):
        values = sheet.row_values(r)
        if all(str(v).strip() == "" for v in values):
            continue
        out.append((r + 1, str(values[name_col]).strip(), values[grade_col]))
    return out


def read_messidor(root: str | os.PathLike, verify: bool = True) -> list[Record]:
    """The original MESSIDOR: Annotation_BaseXX.xls sheets anywhere under root, grades 0-3."""
    root = _require_root(root, "messidor")
    sheets = sorted((p for p in root.rglob("*") if _MESSIDOR_SHEET.match(p.name)), key=_natural_key)
    if not sheets:
        xlsx = sorted(p.name for p in root.rglob("*.xlsx") if p.name.lower().startswith("annotation"))
        hint = f" (found {xlsx[:3]}: xlrd reads the release's .xls format only; save them as .xls)" if xlsx else ""
        raise _layout_error(root, "messidor", f"no Annotation_BaseXX.xls spreadsheet{hint}")
    if verify:
        verify_root(root)
    label_map = {int(k): v for k, v in load_manifest("messidor")["label_map"]["retinopathy_grade"].items()}
    index = _ImageIndex(root)
    out: list[tuple[Path, int]] = []
    seen: dict[str, tuple[int, str]] = {}
    for sheet in sheets:
        for row_no, name, grade_cell in _read_messidor_sheet(sheet):
            where = f"{sheet}: row {row_no}"
            if not name:
                raise DataError(f"{where}, field 'Image name': empty")
            grade = parse_int(grade_cell, where, "Retinopathy grade", label_map)
            key = name.lower()
            if key in seen:
                # The release lists a few images twice; identical rows are harmless, conflicts are not.
                if seen[key][0] != grade:
                    raise DataError(f"{where}, field 'Retinopathy grade': {name!r} has grade {grade} "
                                    f"here and {seen[key][0]} at {seen[key][1]}")
                continue
            seen[key] = (grade, where)
            out.append((index.find(name, where, "Image name"), label_map[grade]))
    return _records(out, "messidor", root)


# --------------------------------------------------------------------------- FIVES

_FIVES_NAME = re.compile(r"^(?P<id>.+)_(?P<suffix>[^_]+)$")


def read_fives(root: str | os.PathLike, verify: bool = True) -> list[Record]:
    """FIVES: train/Original and test/Original, the file suffix (_A/_D/_G/_N) is the label."""
    root = _require_root(root, "fives")
    folders = []
    for dirpath, dirnames, _ in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        here = Path(dirpath)
        # root/train/Original, or the same inside up to two wrapping folders of an unzipped release
        if here.name.lower() == "original" and here.parent.name.lower() in ("train", "test") \
                and 2 <= len(here.relative_to(root).parts) <= 4:
            folders.append(here)
    if not folders:
        raise _layout_error(root, "fives", "no train/Original or test/Original folder")
    if verify:
        verify_root(root)
    suffix_map = load_manifest("fives")["label_map"]["suffix"]
    folders.sort(key=lambda p: (p.parent.name.lower() != "train", _natural_key(p)))
    out = []
    for folder in folders:
        files = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
                 and p.suffix.lower() in IMAGE_EXTS]
        for path in sorted(files, key=_natural_key):
            m = _FIVES_NAME.match(path.stem)
            suffix = m.group("suffix").upper() if m else None
            if suffix not in suffix_map:
                raise DataError(f"{path}: file name suffix {('_' + m.group('suffix')) if m else '(none)'} "
                                f"is not a FIVES label; expected <id>_A, _D, _G or _N "
                                f"(A AMD, D diabetic retinopathy, G glaucoma, N normal)")
            _check_not_empty(path)
            out.append((path, suffix_map[suffix]))
    return _records(out, "fives", root)


# --------------------------------------------------------------------------- REFUGE

_REFUGE_NAME = re.compile(r"^(?P<prefix>[gn])\d+$", re.IGNORECASE)
_REFUGE_EXTS = (".jpg", ".jpeg", ".png")


def _refuge_skip_dir(name: str) -> bool:
    # Segmentation masks and illustrations reuse the image names (g0001.bmp / .png / .jpg).
    low = name.lower()
    return low.startswith("annotation") or "mask" in low or "illustration" in low


def read_refuge(root: str | os.PathLike, verify: bool = True) -> list[Record]:
    """REFUGE: g*/n* images anywhere under root; Glaucoma/ and Non-Glaucoma/ folders also label."""
    root = _require_root(root, "refuge")
    if verify:
        verify_root(root)
    lm = load_manifest("refuge")["label_map"]
    prefix_map = {k.lower(): v for k, v in lm["prefix"].items()}
    folder_map = {k.lower(): v for k, v in lm["folder"].items()}
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and not _refuge_skip_dir(d))
        here = Path(dirpath)
        folder_label = next((folder_map[part.lower()] for part in reversed(here.relative_to(root).parts)
                             if part.lower() in folder_map), None)
        for name in filenames:
            path = here / name
            if name.startswith(".") or path.suffix.lower() not in _REFUGE_EXTS:
                continue
            m = _REFUGE_NAME.match(path.stem)
            prefix_label = prefix_map[m.group("prefix").lower()] if m else None
            if folder_label is not None and prefix_label is not None and folder_label != prefix_label:
                raise DataError(f"{path}: prefix {m.group('prefix')!r} says "
                                f"{'glaucoma' if prefix_label else 'no glaucoma'} but the folder "
                                f"{here.name!r} says {'glaucoma' if folder_label else 'no glaucoma'}")
            label = prefix_label if prefix_label is not None else folder_label
            if label is None:
                continue  # unlabelled images (REFUGE's V0001.jpg / T0001.jpg validation and test sets)
            _check_not_empty(path)
            found.append((path, label))
    found.sort(key=lambda pl: _natural_key(pl[0]))
    return _records(found, "refuge", root)


# --------------------------------------------------------------------------- dispatch

_READERS = {"messidor2": read_messidor2, "messidor": read_messidor, "fives": read_fives,
            "refuge": read_refuge}


def read_benchmark(name: str, root: str | os.PathLike, verify: bool = True) -> list[Record]:
    """Records of benchmark `name` (one of BENCHMARKS) read from `root`."""
    if name not in _READERS:
        raise DataError(f"unknown benchmark {name!r}; known: {list(BENCHMARKS)}")
    return _READERS[name](root, verify=verify)


__all__ = ["BENCHMARKS", "CAPTION_SOURCES", "read_benchmark", "read_corpus", "read_fives", "read_messidor",
           "read_messidor2", "read_refuge", "read_synfundus", "read_synfundus_table"]
