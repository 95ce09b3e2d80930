"""Readers on hand-made fixtures in each real layout, with the real releases' quirks, and bad input."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from visionclip.data.manifests import class_names
from visionclip.data import captions as captions_module
from visionclip.data.readers import (BENCHMARKS, read_benchmark, read_fives, read_messidor, read_messidor2,
                                     read_refuge, read_synfundus)
from visionclip.data.records import CorpusRecord, Record
from visionclip.errors import DataError
from visionclip.io import sha256_file
from visionclip.schema import COLUMNS

FIXTURES = Path(__file__).parent / "fixtures"


def write_image(path: Path, size=(24, 20)) -> Path:
    """A tiny fundus-like picture (a red disk on black) in the format the extension names."""
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    yy, xx = np.mgrid[:h, :w]
    disk = ((xx - w / 2) ** 2 + (yy - h / 2) ** 2) < (min(w, h) / 2.2) ** 2
    arr = np.zeros((h, w, 3), np.uint8)
    arr[disk] = (180, 80, 40)
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".tif": "TIFF", ".bmp": "BMP"}[path.suffix.lower()]
    Image.fromarray(arr).save(path, format=fmt)
    return path


def write_csv(path: Path, header, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


# --------------------------------------------------------------------------- SynFundus-1M

def label_row(name: str, dr: int = 0, **flags) -> dict:
    row = {c: 0 for c in COLUMNS}
    row.update(file_name=name, dr_grade=dr, is_fundus=1, is_macular_readable=1,
               is_optic_disc_readable=1, is_retinal_region_readable=1)
    row.update(flags)
    return row


def make_corpus(root: Path, rows: list[dict], captions: bool = True, meta: bool = True) -> Path:
    for r in rows:
        write_image(root / "Fundus" / r["file_name"])
    write_csv(root / "annotations.csv", COLUMNS, [[r[c] for c in COLUMNS] for r in rows])
    if captions:
        write_csv(root / "captions.csv", ("file_name", "caption_zh", "caption_en"),
                  [[r["file_name"], f"眼底照片{i}", f"fundus photo {i}"] for i, r in enumerate(rows)])
    if meta:
        write_csv(root / "render_meta.csv", ("file_name", "camera", "cdr"),
                  [[r["file_name"], f"cam{i % 2}", "0.3"] for i, r in enumerate(rows)])
    return root


CORPUS_ROWS = [label_row("000001.jpg", 0), label_row("000002.jpg", 2, is_dm=1, is_dme=1, eye_side=1),
               label_row("000003.jpg", 0, is_gc=1, is_optic_disc_readable=0)]


def test_synfundus_reads_back_exactly(tmp_path):
    root = make_corpus(tmp_path / "corpus", CORPUS_ROWS)
    recs = read_synfundus(root)
    assert [type(r) for r in recs] == [CorpusRecord] * 3
    assert [r.labels for r in recs] == CORPUS_ROWS
    assert all(type(v) is int for r in recs for k, v in r.labels.items() if k != "file_name")
    assert [r.path for r in recs] == [root / "Fundus" / r["file_name"] for r in CORPUS_ROWS]
    assert [(r.caption_zh, r.caption_en) for r in recs] == [(f"眼底照片{i}", f"fundus photo {i}") for i in range(3)]
    assert [r.domain for r in recs] == ["cam0", "cam1", "cam0"]


def test_synfundus_real_release_quirks(tmp_path, monkeypatch):
    # A real release: no captions, no render_meta, the CSV under another name, a BOM, an extra
    # index column, integers written as floats by pandas.
    root = tmp_path / "SynFundus-1M"
    for r in CORPUS_ROWS:
        write_image(root / "Fundus" / r["file_name"])
    path = root / "labels_v1.csv"
    header = ("",) + COLUMNS
    rows = [[i] + [f"{r[c]}.0" if c != "file_name" else r[c] for c in COLUMNS] for i, r in enumerate(CORPUS_ROWS)]
    write_csv(path, header, rows)
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())

    calls = []

    def caption(row, seed, index, lang):
        calls.append((row["file_name"], seed, index, lang))
        return f"{lang}:{row['file_name']}:{index}"
    monkeypatch.setattr(captions_module, "caption", caption)
    recs = read_synfundus(root, caption_seed=7)
    assert [r.labels for r in recs] == CORPUS_ROWS
    assert recs[1].caption_zh == "zh:000002.jpg:1" and recs[1].caption_en == "en:000002.jpg:1"
    assert ("000003.jpg", 7, 2, "en") in calls
    assert {r.domain for r in recs} == {"synfundus"}


def test_synfundus_generates_captions_with_the_real_captioner(tmp_path):
    root = make_corpus(tmp_path / "c", CORPUS_ROWS, captions=False)
    a, b = read_synfundus(root, caption_seed=3), read_synfundus(root, caption_seed=3)
    assert [r.caption_zh for r in a] == [r.caption_zh for r in b]
    assert all(r.caption_zh and r.caption_en for r in a)


@pytest.mark.parametrize("field,value,needle", [
    ("dr_grade", "5", "field 'dr_grade'"),
    ("dr_grade", "", "field 'dr_grade'"),
    ("is_gc", "2", "field 'is_gc'"),
    ("eye_side", "x", "field 'eye_side'"),
    ("file_name", "missing.jpg", "missing.jpg"),
])
def test_synfundus_bad_rows_name_file_row_and_field(tmp_path, field, value, needle):
    root = make_corpus(tmp_path / "c", CORPUS_ROWS)
    rows = [dict(r) for r in CORPUS_ROWS]
    rows[1][field] = value
    write_csv(root / "annotations.csv", COLUMNS, [[r[c] for c in COLUMNS] for r in rows])
    with pytest.raises(DataError) as e:
        read_synfundus(root)
    msg = str(e.value)
    assert "annotations.csv" in msg and "row 2" in msg and needle in msg


def test_synfundus_bad_layouts(tmp_path):
    root = make_corpus(tmp_path / "c", CORPUS_ROWS)
    # missing column
    cols = [c for c in COLUMNS if c != "is_pm"]
    write_csv(root / "annotations.csv", cols, [[r[c] for c in cols] for r in CORPUS_ROWS])
    with pytest.raises(DataError, match=r"annotations.csv.*missing column.*is_pm"):
        read_synfundus(root)
    # no annotation file at all: the message says what was expected
    (root / "annotations.csv").unlink()
    with pytest.raises(DataError, match=r"no annotation file.*paper's 17 columns or the release's 26.*annotations"):
        read_synfundus(root)
    write_csv(root / "labels_a.csv", COLUMNS, [[r[c] for c in COLUMNS] for r in CORPUS_ROWS])
    write_csv(root / "labels_b.tsv", ["x", "y"], [])  # a header of neither schema: not a candidate
    assert len(read_synfundus(root)) == 3
    write_csv(root / "labels_c.txt", COLUMNS, [[r[c] for c in COLUMNS] for r in CORPUS_ROWS])
    with pytest.raises(DataError, match=r"several annotation files.*labels_a.csv.*labels_c.txt"):
        read_synfundus(root)
    # an annotation file and no image anywhere below the root
    write_csv(tmp_path / "c2" / "annotations.csv", COLUMNS, [[r[c] for c in COLUMNS] for r in CORPUS_ROWS])
    with pytest.raises(DataError, match=r"c2: no image files .*below the root"):
        read_synfundus(tmp_path / "c2")
    # a caption missing for one image
    root = make_corpus(tmp_path / "d", CORPUS_ROWS)
    write_csv(root / "captions.csv", ("file_name", "caption_zh", "caption_en"), [["000001.jpg", "a", "b"]])
    with pytest.raises(DataError, match=r"captions.csv.*000002.jpg"):
        read_synfundus(root)
    # an empty (truncated) image
    root = make_corpus(tmp_path / "e", CORPUS_ROWS)
    (root / "Fundus" / "000003.jpg").write_bytes(b"")
    with pytest.raises(DataError, match=r"row 3.*000003.jpg.*empty"):
        read_synfundus(root)


def test_checksums_verified_on_read(tmp_path):
    root = make_corpus(tmp_path / "c", CORPUS_ROWS)
    files = {p.relative_to(root).as_posix(): sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file()}
    (root / "manifest.json").write_text(json.dumps({"generator": "test", "files": files}))
    assert len(read_synfundus(root)) == 3
    write_image(root / "Fundus" / "000002.jpg", size=(30, 30))  # changed after rendering
    with pytest.raises(DataError, match=r"000002.jpg.*sha256.*manifest.json"):
        read_synfundus(root)
    assert len(read_synfundus(root, verify=False)) == 3
    (root / "Fundus" / "000002.jpg").unlink()
    with pytest.raises(DataError, match=r"000002.jpg.*missing"):
        read_synfundus(root)


# --------------------------------------------------------------------------- MESSIDOR-2

def make_messidor2(root: Path) -> Path:
    write_image(root / "IMAGES" / "IM000001.JPG")              # CSV says .jpg
    write_image(root / "IMAGES" / "IM000002.JPG")
    write_image(root / "IMAGES" / "IM000003.jpg")              # ungradable, still on disk
    write_image(root / "IMAGES" / "IM000004.JPG")              # empty grade
    write_image(root / "part2" / "20051020_43808_0100_PP.png")
    write_image(root / "part2" / "20051020_45050_0100_PP.png")
    write_csv(root / "messidor_data.csv",
              ("image_id", "adjudicated_dr_grade", "adjudicated_dme", "adjudicated_gradable"),
              [["IM000001.jpg", "0.0", "0.0", "1"],
               ["IM000002.jpg", "4", "1", "1"],
               ["IM000003.jpg", "", "", "0"],
               ["IM000004.jpg", "", "", "1"],
               ["20051020_43808_0100_PP.png", "2", "0", "1"],
               ["20051020_45050_0100_PP.png", "3.0", "1.0", "1.0"]])
    return root


def test_messidor2_reads_back_exactly(tmp_path):
    root = make_messidor2(tmp_path / "messidor-2")
    recs = read_messidor2(root)
    assert [(r.path.relative_to(root).as_posix(), r.label) for r in recs] == [
        ("IMAGES/IM000001.JPG", 0), ("IMAGES/IM000002.JPG", 4),
        ("part2/20051020_43808_0100_PP.png", 2), ("part2/20051020_45050_0100_PP.png", 3)]
    assert recs[0].class_names == ("no diabetic retinopathy", "mild diabetic retinopathy",
                                   "moderate diabetic retinopathy", "severe diabetic retinopathy",
                                   "proliferative diabetic retinopathy")
    assert {(r.dataset, r.domain) for r in recs} == {("messidor2", "messidor2")}
    assert read_benchmark("messidor2", root) == recs


def test_messidor2_stand_in_domain_from_render_meta(tmp_path):
    root = make_messidor2(tmp_path / "m")
    write_csv(root / "render_meta.csv", ("path", "camera"),
              [["IMAGES/IM000001.JPG", "nidek_afc"], ["IMAGES/IM000002.JPG", "nidek_afc"],
               ["part2/20051020_43808_0100_PP.png", "handheld_pictor"],
               ["part2/20051020_45050_0100_PP.png", "handheld_pictor"]])
    assert [r.domain for r in read_messidor2(root)] == ["nidek_afc"] * 2 + ["handheld_pictor"] * 2


def test_messidor2_duplicate_file_names(tmp_path):
    root = make_messidor2(tmp_path / "m")
    write_image(root / "copy" / "IM000002.jpg")               # spelled as in the CSV: this one wins
    assert read_messidor2(root)[1].path == root / "copy" / "IM000002.jpg"
    write_image(root / "copy" / "im000001.JPG")               # two case variants, neither exact: refuse
    with pytest.raises(DataError, match=r"row 1 .*IM000001.jpg.*ambiguous"):
        read_messidor2(root)


def test_messidor2_bad_input(tmp_path):
    root = make_messidor2(tmp_path / "m")
    header = ("image_id", "adjudicated_dr_grade", "adjudicated_dme", "adjudicated_gradable")
    write_csv(root / "messidor_data.csv", header, [["IM000001.jpg", "0", "0", "1"], ["IM000002.jpg", "5", "0", "1"]])
    with pytest.raises(DataError, match=r"messidor_data.csv: row 2 .*field 'adjudicated_dr_grade'.*5"):
        read_messidor2(root)
    write_csv(root / "messidor_data.csv", header, [["IM000009.jpg", "1", "0", "1"]])
    with pytest.raises(DataError, match=r"row 1 .*field 'image_id'.*IM000009.jpg.*not found"):
        read_messidor2(root)
    write_csv(root / "messidor_data.csv", ("image_id", "adjudicated_dme"), [["IM000001.jpg", "0"]])
    with pytest.raises(DataError, match=r"missing column.*adjudicated_dr_grade"):
        read_messidor2(root)
    (root / "messidor_data.csv").unlink()
    with pytest.raises(DataError, match=r"messidor_data.csv.*Expected the messidor2 layout"):
        read_messidor2(root)


# --------------------------------------------------------------------------- MESSIDOR (original)

def make_messidor(root: Path) -> Path:
    (root / "Base11").mkdir(parents=True)
    shutil.copy(FIXTURES / "messidor" / "Base11" / "Annotation_Base11.xls", root / "Base11")
    write_image(root / "Base11" / "20051019_38557_0100_PP.tif")
    write_image(root / "Base11" / "20051020_43808_0100_PP.TIF")
    write_image(root / "Base11" / "20051020_43832_0100_PP.tif")
    write_image(root / "Base11" / "20051020_43882_0100_PP.TIF")
    return root


def test_messidor_reads_committed_xls_fixture(tmp_path):
    root = make_messidor(tmp_path / "Messidor")
    recs = read_messidor(root)
    assert [(r.path.name, r.label) for r in recs] == [
        ("20051019_38557_0100_PP.tif", 0), ("20051020_43808_0100_PP.TIF", 1),
        ("20051020_43832_0100_PP.tif", 2), ("20051020_43882_0100_PP.TIF", 3)]  # duplicate row read once
    assert recs[0].class_names == class_names("messidor") and len(recs[0].class_names) == 4
    assert read_benchmark("messidor", root) == recs


def _write_xls(path: Path, rows, header=("Image name", "Ophthalmologic department", "Retinopathy grade",
                                          "Risk of macular edema")) -> None:
    import xlwt
    book = xlwt.Workbook()
    sheet = book.add_sheet("s")
    for c, h in enumerate(header):
        sheet.write(0, c, h)
    for r, row in enumerate(rows, start=1):
        for c, v in enumerate(row):
            sheet.write(r, c, v)
    book.save(str(path))


def test_messidor_bad_input(tmp_path):
    root = make_messidor(tmp_path / "M")
    bad = root / "Base12" / "Annotation_Base12.xls"
    bad.parent.mkdir()
    _write_xls(bad, [("20051019_38557_0100_PP.tif", "x", 0.0, 0.0), ("b.tif", "x", 4.0, 0.0)])
    with pytest.raises(DataError, match=r"Annotation_Base12.xls: row 3, field 'Retinopathy grade'.*got 4"):
        read_messidor(root)
    _write_xls(bad, [("20051019_38557_0100_PP.tif", "x", 2.0, 0.0)])
    with pytest.raises(DataError, match=r"Annotation_Base12.xls: row 2.*grade 2 here and 0"):
        read_messidor(root)
    _write_xls(bad, [("nothere.tif", "x", 1.0, 0.0)])
    with pytest.raises(DataError, match=r"Annotation_Base12.xls: row 2, field 'Image name'.*nothere.tif"):
        read_messidor(root)
    _write_xls(bad, [("a.tif", 1.0)], header=("Image name", "Risk of macular edema"))
    with pytest.raises(DataError, match=r"Annotation_Base12.xls: missing column.*Retinopathy grade"):
        read_messidor(root)
    bad.write_bytes(b"not a spreadsheet")
    with pytest.raises(DataError, match=r"Annotation_Base12.xls: not a readable .xls"):
        read_messidor(root)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"Annotation_BaseXX.xls"):
        read_messidor(tmp_path / "empty")


# --------------------------------------------------------------------------- FIVES

def make_fives(root: Path) -> Path:
    for name in ("1_A.png", "2_N.PNG", "10_G.png", "3_D.png"):
        write_image(root / "train" / "Original" / name)
    write_image(root / "train" / "Ground truth" / "1_A.png")   # vessel masks: not read
    (root / "train" / "Original" / "Thumbs.db").write_bytes(b"junk")
    for name in ("200_D.png", "201_N.png"):
        write_image(root / "test" / "Original" / name)
    return root


def test_fives_reads_back_exactly(tmp_path):
    root = make_fives(tmp_path / "FIVES")
    recs = read_fives(root)
    assert [(r.path.relative_to(root).as_posix(), r.label) for r in recs] == [
        ("train/Original/1_A.png", 1), ("train/Original/2_N.PNG", 0), ("train/Original/3_D.png", 2),
        ("train/Original/10_G.png", 3), ("test/Original/200_D.png", 2), ("test/Original/201_N.png", 0)]
    assert recs[0].class_names == ("normal", "age related macular degeneration", "diabetic retinopathy",
                                   "glaucoma")
    # the unzipped release wraps everything in one more folder
    make_fives(tmp_path / "dl" / "FIVES A Fundus Image Dataset")
    assert [r.label for r in read_fives(tmp_path / "dl")] == [r.label for r in recs]


def test_fives_bad_input(tmp_path):
    root = make_fives(tmp_path / "F")
    write_image(root / "test" / "Original" / "7_X.png")
    with pytest.raises(DataError, match=r"7_X.png: file name suffix _X is not a FIVES label"):
        read_fives(root)
    with pytest.raises(DataError, match=r"train/Original"):
        read_fives(tmp_path / "F" / "train")


# --------------------------------------------------------------------------- REFUGE

def test_refuge_folders_and_prefixes(tmp_path):
    root = tmp_path / "REFUGE"
    write_image(root / "Training400" / "Glaucoma" / "g0001.jpg")
    write_image(root / "Training400" / "Glaucoma" / "g0002.JPG")
    write_image(root / "Training400" / "Non-Glaucoma" / "n0001.jpg")
    write_image(root / "Training400" / "Non-Glaucoma" / "N0002.jpg")
    write_image(root / "Annotation-Training400" / "Disc_Cup_Masks" / "Glaucoma" / "g0001.bmp")
    write_image(root / "Annotation-Training400" / "Disc_Cup_Fovea_Illustration" / "g0001.jpg")
    write_image(root / "Validation400" / "V0001.jpg")           # unlabelled: skipped
    recs = read_refuge(root)
    assert [(r.path.relative_to(root).as_posix(), r.label) for r in recs] == [
        ("Training400/Glaucoma/g0001.jpg", 1), ("Training400/Glaucoma/g0002.JPG", 1),
        ("Training400/Non-Glaucoma/n0001.jpg", 0), ("Training400/Non-Glaucoma/N0002.jpg", 0)]
    assert recs[0].class_names == ("no glaucoma", "glaucoma")


def test_refuge_flat_prefix_layout_and_conflict(tmp_path):
    root = tmp_path / "flat"
    write_image(root / "g0040.png")
    write_image(root / "n0100.jpg")
    assert [(r.path.name, r.label) for r in read_refuge(root)] == [("g0040.png", 1), ("n0100.jpg", 0)]
    write_image(root / "Glaucoma" / "n0003.jpg")
    with pytest.raises(DataError, match=r"n0003.jpg: prefix 'n' says no glaucoma but the folder 'Glaucoma'"):
        read_refuge(root)


# --------------------------------------------------------------------------- dispatch and stand-in shape

def test_read_benchmark_unknown_and_empty(tmp_path):
    with pytest.raises(DataError, match=r"unknown benchmark 'idrid'.*messidor2.*refuge"):
        read_benchmark("idrid", tmp_path)
    for name in BENCHMARKS:
        with pytest.raises(DataError, match=rf"Expected the {name} layout"):
            read_benchmark(name, tmp_path)
        with pytest.raises(DataError, match=r"does not exist"):
            read_benchmark(name, tmp_path / "nowhere")


def test_stand_in_layouts_with_render_meta_and_manifest(tmp_path):
    """What visionclip.synth.writers writes (per ARCHITECTURE.md), read back with cameras and checksums."""
    fives = tmp_path / "fives"
    for split, name in (("train", "1_A.png"), ("train", "2_N.png"), ("test", "3_G.png"), ("test", "4_D.png")):
        write_image(fives / split / "Original" / name)
    refuge = tmp_path / "refuge"
    write_image(refuge / "Training400" / "Glaucoma" / "g0001.jpg")
    write_image(refuge / "Training400" / "Non-Glaucoma" / "n0001.jpg")
    for root in (fives, refuge):
        images = sorted(p for p in root.rglob("*.*") if p.suffix in (".png", ".jpg"))
        write_csv(root / "render_meta.csv", ("path", "camera"),
                  [[p.relative_to(root).as_posix(), "centervue_eidon"] for p in images])
        files = {p.relative_to(root).as_posix(): sha256_file(p) for p in root.rglob("*") if p.is_file()}
        (root / "manifest.json").write_text(json.dumps({"files": files, "cameras": ["centervue_eidon"]}))
    assert {r.domain for r in read_fives(fives)} == {"centervue_eidon"}
    assert [r.label for r in read_refuge(refuge)] == [1, 0]
    with open(refuge / "render_meta.csv", "a") as f:
        f.write("x,y\n")
    with pytest.raises(DataError, match=r"render_meta.csv.*sha256"):
        read_refuge(refuge)


def test_corpus_records_are_hashable_values():
    r = Record(Path("a.png"), 1, ("x", "y"), "fives", "fives")
    assert r == Record(Path("a.png"), 1, ("x", "y"), "fives", "fives") and hash(r)
    c = CorpusRecord(Path("a.jpg"), {"dr_grade": 1}, "zh", "en", "cam")
    assert hash(c) == hash(CorpusRecord(Path("a.jpg"), {"dr_grade": 2}, "zh", "en", "cam"))
