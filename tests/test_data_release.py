"""The corpus reader on the release's metadata format: its quirks, its extra columns, the caption
sources, the quality filter, the md5 check, and a bad row of each kind."""
from __future__ import annotations

import os

import pytest

from release_fixture import ROWS, write_release, write_table
from visionclip.data import file_index
from visionclip.data.file_index import ImageFiles
from visionclip.data.readers import read_synfundus, read_synfundus_table
from visionclip.errors import DataError
from visionclip.schema import EXTRA_FLAGS


def test_release_metadata_reads_with_its_quirks(tmp_path):
    root = tmp_path / "SynFundus-1M"
    write_release(root)  # tab-separated, BOM, CRLF, .png (one .PNG on disk), two folders, words for sides
    table = read_synfundus_table(root)
    assert [table.file_name(i) for i in range(len(table))] == [r[0] for r in ROWS]
    assert [table.path(i).relative_to(root).as_posix() for i in range(len(table))] == [
        "Fundus/000001.png", "Fundus/000002.png", "part2/000003.png", "part2/000004.png", "Fundus/000005.PNG",
        "Fundus/000006.png"]
    labels = [table.label_row(i) for i in range(len(table))]
    assert [r["eye_side"] for r in labels] == [0, 1, 1, 0, 0, 1]  # right 0, left 1, in any case
    assert [r["dr_grade"] for r in labels] == [0, 2, 0, 0, 0, 0]
    assert labels[3]["is_gc"] == 1 and labels[2]["is_htr"] == 0 and labels[1]["is_dme"] == 1
    extras = table.extras_matrix()
    assert extras.shape == (6, len(EXTRA_FLAGS))
    assert extras[:, EXTRA_FLAGS.index("is_tessellated")].tolist() == [0, 0, 0, 0, 1, 0]
    assert extras[:, EXTRA_FLAGS.index("is_md")].tolist() == [0, 0, 0, 0, 0, 1]
    assert table.quality_scores().tolist() == pytest.approx([r[5] for r in ROWS])
    assert list(table.advice()) == [r[6] for r in ROWS]
    assert {r.domain for r in table} == {"synfundus"}


def test_caption_sources(tmp_path):
    root = tmp_path / "r"
    write_release(root)
    generated = read_synfundus_table(root, caption_seed=3)  # the default: captions from the labels
    assert generated.caption_sources == {"zh": "generated", "en": "generated"}
    assert "豹纹" in generated[4].caption_zh and "tessellat" in generated[4].caption_en  # EXTRA_FINDINGS
    assert not any("黄斑区域病变" in c for c in generated.captions("zh"))  # is_md is never captioned
    release = read_synfundus_table(root, caption_seed=3, captions="release")
    assert list(release.captions("zh")) == [r[6] for r in ROWS]
    assert set(release.captions("en")) == {""}
    assert release.caption_sources == {"zh": "release", "en": "none"}
    assert release.caption_record("zh") == {"zh": "release"}
    both = read_synfundus_table(root, caption_seed=3, captions="both")
    assert list(both.captions("zh")) == [r[6] for r in ROWS]
    assert list(both.captions("en")) == list(generated.captions("en"))
    assert both.caption_record("both") == {"zh": "release", "en": "generated"}


@pytest.mark.parametrize("delimiter,newline,bom,name", [
    (",", "\n", False, "labels.csv"), ("\t", "\r\n", True, "labels.tsv"), ("\t", "\r", False, "labels.txt"),
    (",", "\r\n", True, "annotations.csv")])
def test_release_found_by_header_with_any_delimiter_line_end_and_bom(tmp_path, delimiter, newline, bom, name):
    root = tmp_path / "r"
    rows = write_release(root, table_name=name, delimiter=delimiter, newline=newline, bom=bom)
    (root / "notes.txt").write_text("downloaded from the project page\n", encoding="utf-8")  # not a candidate
    records = read_synfundus(root, captions="release")
    assert [r.labels["file_name"] for r in records] == [r["file_name"] for r in rows]
    assert [r.caption_zh for r in records] == [r["diagnosticAdvice"] for r in rows]


@pytest.mark.parametrize("field,value,needle", [
    ("eyes_side", "up", "field 'eyes_side': expected one of ['left', 'right'], got 'up'"),
    ("is_tessellated", "2", "field 'is_tessellated'"),
    ("has_lesion", "yes", "field 'has_lesion'"),
    ("dr_grade", "5", "field 'dr_grade'"),
    ("is_htr", "", "field 'is_htr'"),
    ("retinal_region_quality_score", "high", "field 'retinal_region_quality_score': expected a number"),
    ("retinal_region_quality_score", "nan", "field 'retinal_region_quality_score'"),
    ("file_md5", "xyz", "field 'file_md5': expected 32 hexadecimal digits"),
    ("file_name", "missing.png", "field 'file_name': image 'missing.png' not found"),
    ("file_name", "000001.png", "field 'file_name': '000001.png' already listed on row 1"),
    ("file_name", "", "field 'file_name': empty"),
    ("diagnosticAdvice", "", "field 'diagnosticAdvice': empty"),
])
def test_release_bad_rows_name_file_row_and_field(tmp_path, field, value, needle):
    root = tmp_path / "r"
    rows = write_release(root)
    rows[1][field] = value
    write_table(root / "SynFundus-1M_metadata.txt", rows)
    with pytest.raises(DataError) as e:
        read_synfundus(root, captions="release")
    msg = str(e.value)
    assert "SynFundus-1M_metadata.txt: row 2 (line 3)" in msg and needle in msg
    assert "\n" not in msg


def test_empty_sentence_is_fine_when_captions_are_generated(tmp_path):
    root = tmp_path / "r"
    rows = write_release(root)
    rows[1]["diagnosticAdvice"] = ""
    write_table(root / "SynFundus-1M_metadata.txt", rows)
    assert read_synfundus_table(root).release.advice[1] == ""


def test_release_image_problems(tmp_path):
    root = tmp_path / "r"
    write_release(root)
    (root / "part3").mkdir()
    (root / "part3" / "000004.png").write_bytes((root / "part2" / "000004.png").read_bytes())
    with pytest.raises(DataError, match=r"row 4 .*'000004.png' is in several places: \[.*part2/000004.png.*"
                                        r"part3/000004.png"):
        read_synfundus(root)
    (root / "part3" / "000004.png").unlink()
    (root / "part2" / "000003.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"row 3 .*part2/000003.png is empty"):
        read_synfundus(root)


def test_md5_is_checked_only_on_request(tmp_path):
    root = tmp_path / "r"
    write_release(root)
    assert len(read_synfundus_table(root, verify_md5=True)) == len(ROWS)  # row 1's md5 is upper case
    changed = root / "part2" / "000004.png"
    changed.write_bytes(changed.read_bytes() + b"\0")
    assert len(read_synfundus_table(root)) == len(ROWS)
    with pytest.raises(DataError, match=rf"row 4 \(line 5\), field 'file_md5': {changed} has md5 [0-9a-f]{{32}}, "
                                        r"the metadata says [0-9a-f]{32}"):
        read_synfundus_table(root, verify_md5=True)


def test_min_quality_keeps_the_rows_at_or_above_it(tmp_path):
    root = tmp_path / "r"
    write_release(root)
    table = read_synfundus_table(root, min_quality=0.66, captions="both")
    assert [table.file_name(i) for i in range(len(table))] == ["000001.png", "000002.png", "000004.png",
                                                                "000005.png"]
    assert (table.quality_scores() >= 0.66).all() and table[3].caption_zh == ROWS[4][6]
    assert table.extras_matrix()[3, EXTRA_FLAGS.index("is_tessellated")] == 1
    with pytest.raises(DataError, match=r"no row has retinal_region_quality_score >= data.min_quality=0.95 "
                                        r"\(the highest is 0.91\)"):
        read_synfundus_table(root, min_quality=0.95)


def test_release_options_on_the_paper_schema_are_refused(tmp_path):
    from test_data_readers import CORPUS_ROWS, make_corpus

    root = make_corpus(tmp_path / "c", CORPUS_ROWS)
    with pytest.raises(DataError, match=r"annotations.csv: data.captions=release needs the release's "
                                        r"diagnosticAdvice column; this file has the paper's 17 columns"):
        read_synfundus_table(root, captions="release")
    with pytest.raises(DataError, match=r"annotations.csv: data.min_quality=0.5 needs the release's "
                                        r"retinal_region_quality_score column"):
        read_synfundus_table(root, min_quality=0.5)
    assert read_synfundus_table(root).release is None


def test_image_files_one_listing_pass(tmp_path, monkeypatch):
    for rel in ("a/x.png", "a/b/y.JPG", "c/z.jpeg", ".hidden/w.png", "a/.v.png", "a/notes.txt", "root.bmp"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"" if rel == "c/z.jpeg" else b"img")
    (tmp_path / "a" / "b" / "up").symlink_to(tmp_path / "a")  # a link back up the tree is listed once
    stats = []
    real_stat = os.stat
    monkeypatch.setattr(file_index.os, "stat", lambda p, *a, **k: stats.append(p) or real_stat(p, *a, **k))
    files = ImageFiles(tmp_path)
    assert len(stats) == len(files.folders) + 1  # os.stat per folder (+ the link); sizes come from DirEntry.stat
    found = sorted(files.path(k).relative_to(tmp_path).as_posix() for k in range(len(files)))
    assert found == ["a/b/y.JPG", "a/x.png", "c/z.jpeg", "root.bmp"]
    assert [files.names[k] for k in files.find("Y.jpg")] == ["y.JPG"]
    assert files.find("sub/x.png") == files.find("x.png") and files.find("nothing.png") == []
    assert [files.names[k] for k in files.empty] == ["z.jpeg"]
    (tmp_path / "a" / "X.png").write_bytes(b"img")  # differs in case only: the exact spelling wins
    files = ImageFiles(tmp_path)
    assert [files.names[k] for k in files.find("X.png")] == ["X.png"]
    assert len(files.find("x.PNG")) == 2
    assert sorted(files.folders) == ["", "a", "a/b", "c"]
