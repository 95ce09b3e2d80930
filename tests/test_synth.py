"""The synthetic side: labels, the honesty contract, captions, cameras, writers, resume."""
from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from visionclip.config import load_profile
from visionclip.data.manifests import verify_root
from visionclip.data.readers import read_benchmark
from visionclip.errors import ConfigError, DataError
from visionclip.schema import COLUMNS, DISEASE_FLAGS, READABILITY_FLAGS
from visionclip.synth import clinical as C
from visionclip.data.captions import caption
from visionclip.synth.labels import sample_labels
from visionclip.synth.renderer import render_fundus
from visionclip.synth.writers import render_benchmarks, render_corpus
from visionclip.synth.cameras import CAMERAS, HELDOUT_CAMERAS, TRAIN_CAMERAS, check_disjoint
from visionclip.data.captions import (DIAG_EN, DIAG_ZH, DR_EN, DR_ZH, F, caption_diversity, is_impression_only, ngram_overlap)
from visionclip.synth.labels import (MESSIDOR2_GRADE_MIX, fives_labels, messidor2_labels, prevalence_table,
                                     refuge_labels, scaled_counts)
from visionclip.synth.nonfundus import CORPUS_KINDS, RESERVED_KINDS
from visionclip.synth.renderer import _draw_lesion, encode_jpeg, plan_fundus, rasterise
from visionclip.synth.sheet import CLOSEUP_ROWS, SHEET_ROWS, closeup_scene, lesion_closeups, sheet_row
from visionclip.synth.writers import STAMP, render_nonfundus

TINY = {"synth.corpus_size": 24, "synth.render_size": 64, "synth.messidor2_size": 12,
        "synth.fives_size": 8, "synth.refuge_size": 10, "synth.workers": 1}


def tiny_profile(**extra):
    return load_profile("ci", {**TINY, **extra})


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ---- labels ------------------------------------------------------------------------------------

@pytest.mark.parametrize("balance", ["balanced", "natural"])
def test_labels_follow_schema_and_clinical_rules(balance):
    rows = sample_labels(600, seed=5, balance=balance)
    assert rows == sample_labels(600, seed=5, balance=balance)
    for r in rows:
        assert tuple(r) == COLUMNS
        assert r["dr_grade"] in range(5) and r["eye_side"] in (0, 1)
        assert all(r[f] in (0, 1) for f in DISEASE_FLAGS + READABILITY_FLAGS)
        if r["dr_grade"] > 0:
            assert r["is_dm"] == 1
        if r["is_dme"]:
            assert r["dr_grade"] >= 1
        if r["is_fundus"] == 0:
            assert r["dr_grade"] == 0 and not any(r[f] for f in DISEASE_FLAGS)
    table = prevalence_table(rows)
    assert 0.005 < 1 - table["prevalence"]["is_fundus"] < 0.06
    assert table["prevalence"]["is_macular_readable"] > 0.9
    dme_grades = Counter(r["dr_grade"] for r in rows if r["is_dme"])
    assert sum(v for g, v in dme_grades.items() if g >= 2) > dme_grades[1]   # mostly with DR >= 2
    if balance == "balanced":   # every disease and every DR grade learnable, plenty of healthy eyes
        assert all(table["prevalence"][f] > 0.04 for f in DISEASE_FLAGS)
        assert all(table["dr_grade"][str(g)] > 0.04 for g in range(1, 5))
        assert table["healthy"] > 0.15
        assert table["co_occurrence"]


def test_benchmark_label_mixes():
    assert scaled_counts(1744, MESSIDOR2_GRADE_MIX) == [1017, 270, 347, 75, 35]
    rows = messidor2_labels(100, 3)
    counts = Counter(r["dr_grade"] for r in rows)
    assert sum(counts.values()) == 100 and all(counts[g] >= 1 for g in range(5))
    assert counts[0] > counts[2] > counts[1] > counts[3] >= counts[4]
    assert all(r["is_dm"] == 1 and (r["is_dme"] == 0 or r["dr_grade"] >= 1) for r in rows)
    f = fives_labels(40, 3)
    assert Counter(r["fives_class"] for r in f) == {"A": 10, "D": 10, "G": 10, "N": 10}
    for r in f:
        n_dis = (r["dr_grade"] > 0) + r["is_amd"] + r["is_gc"]
        assert n_dis == (0 if r["fives_class"] == "N" else 1)
    with pytest.raises(ConfigError):
        fives_labels(10, 3)
    ref = refuge_labels(400, 3)
    assert sum(r["is_gc"] for r in ref) == 40


# ---- renderer: determinism and the honesty contract ---------------------------------------------

def test_render_is_a_pure_function():
    row = sheet_row({"dr_grade": 2, "is_dm": 1, "is_dme": 1})
    a, ma = render_fundus(row, 7, 3, 96, "kowa_nonmyd")
    b, mb = render_fundus(row, 7, 3, 96, "kowa_nonmyd")
    assert a.mode == "RGB" and a.size == (96, 96)
    assert encode_jpeg(a, 90) == encode_jpeg(b, 90) and ma == mb
    c, _ = render_fundus(row, 7, 4, 96, "kowa_nonmyd")
    assert np.asarray(a).tobytes() != np.asarray(c).tobytes()


def _in(v, lo_hi, tol=1e-9):
    return lo_hi[0] - tol <= v <= lo_hi[1] + tol


def _active_sources(row) -> dict[str, str]:
    """{measurement source: its LESIONS key} of every lesion-drawing condition the row has."""
    grade = row["dr_grade"]
    flags = {"dr": grade > 0, "dme": row["is_dme"] and grade > 0, "amd": row["is_amd"], "htr": row["is_htr"],
             "rvo": row["is_rvo"], "csc": row["is_crp"], "erm": row["is_em"], "pm": row["is_pm"]}
    return {src: (f"dr{grade}" if src == "dr" else src) for src, on in flags.items() if on}


def _count_ok(n, spec) -> bool:
    lo, hi = spec["count"]
    if "p" in spec:            # drawn with probability p: none, or at least one up to hi
        return n == 0 or max(lo, 1) <= n <= hi
    return lo <= n <= hi


def _blot_quadrants(plan) -> set[tuple[bool, bool]]:
    """Quadrants around the fovea (split by its horizontal and vertical lines) that hold a dot-blot
    haemorrhage; the plan's scene lists every blot as ('red', 'blot', x, y, ...)."""
    fx, fy = plan["scene"]["fovea"]
    return {(it[2] > fx, it[3] > fy) for it in plan["scene"]["lesions"] if it[:2] == ("red", "blot")}


@pytest.mark.parametrize("randomised", [False, True], ids=["plain", "randomised"])
@pytest.mark.parametrize("title,overrides", [r for r in SHEET_ROWS if r[0] not in ("non-fundus",)])
def test_rendered_lesions_stay_inside_clinical_bounds(title, overrides, randomised, monkeypatch):
    from visionclip.synth import renderer

    monkeypatch.setitem(renderer.PHOTOMETRIC, "share", 1.0)   # randomised: every photograph's own field of view
    for i in range(6):
        row = sheet_row(overrides, eye_side=i % 2)
        plan = plan_fundus(row, 11, i, 96, TRAIN_CAMERAS[i % len(TRAIN_CAMERAS)], randomise=randomised)
        m = plan["measurements"]
        grade = row["dr_grade"]
        cdr_kind = "glaucoma" if row["is_gc"] else "normal"
        assert _in(m["cdr"], (C.CDR[cdr_kind]["lo"], C.CDR[cdr_kind]["hi"]))
        fov = (plan["scene"]["photo"]["fov_dd"],) * 2 if randomised else C.GEOMETRY["fov_diameter_dd"]
        assert _in(m["dd_px"], (0.94 * 96 / fov[1], 0.94 * 96 / fov[0]), tol=1e-3)
        # the disc sits on the nasal side: right of the fovea in a right eye
        assert (m["disc_xy"][0] > m["fovea_xy"][0]) == (row["eye_side"] == 0)
        les = m["lesions"]
        active = _active_sources(row)
        assert set(les) <= set(active), (title, sorted(les))
        for source, key in active.items():
            spec = C.LESIONS[key]
            drawn = les.get(source, {})
            assert set(drawn) <= set(spec), (title, source, sorted(drawn))
            # every counted sign of the condition, including the ones it must have: count in [lo, hi]
            for kind, bounds in spec.items():
                if not (isinstance(bounds, dict) and "count" in bounds):
                    continue
                got = drawn.get(kind, {"count": 0})
                assert _count_ok(got["count"], bounds), (title, source, kind, got["count"], bounds["count"])
                if kind not in drawn:
                    continue
                assert _in(got["size_dd"][0], bounds["size_dd"]) and _in(got["size_dd"][1], bounds["size_dd"])
                if "within_dd_of_fovea" in bounds:
                    assert got["max_fovea_dd"] <= bounds["within_dd_of_fovea"] + 1e-6
        if grade == 1:
            assert set(les["dr"]) == {"microaneurysm"}              # mild DR: microaneurysms only
        if grade == 3:   # severe NPDR (4-2-1 rule): haemorrhages in all four quadrants
            assert C.LESIONS["dr3"]["dot_blot_haemorrhage"]["quadrants"] == 4
            assert len(_blot_quadrants(plan)) == 4, (title, i)
        if row["is_aon"]:
            assert _in(m["disc_pallor"], C.LESIONS["aon"]["disc_pallor"])
        if row["is_htr"]:
            assert _in(m["artery_calibre_factor"], C.LESIONS["htr"]["arteriole_calibre_factor"])
        if row["is_rvo"]:
            assert _in(m["vein_dilation_factor"], C.LESIONS["rvo"]["vein_dilation_factor"])
        if row["is_pm"]:
            assert _in(m["disc_aspect"], C.LESIONS["pm"]["disc_aspect"])
        if row["is_retinal_region_readable"] == 0:
            assert any(d.startswith("retina:") for d in m["defects"])


def _lesion_shapes() -> set[tuple[str, str]]:
    """Every (layer, shape) the planner draws with _draw_lesion, from eyes with every sign."""
    rows = [{"dr_grade": g, "is_dm": 1, "is_dme": 1} for g in (2, 3, 4)] + [{"is_amd": 1}, {"is_htr": 1}, {"is_rvo": 1}]
    return {tuple(it[:2]) for row in rows for i in range(12)
            for it in plan_fundus(sheet_row(row), 2, i, 256, "topcon_nw")["scene"]["lesions"]
            if it[0] in ("red", "yellow", "drusen", "white", "dark")}


def test_lesion_shapes_keep_their_drawn_size():
    # the honesty contract sets a sign's size in disc diameters: an irregular outline, a tuft of
    # tortuous vessels or a fan of streaks may reach at most a fifth beyond it, and a patch keeps,
    # on average, the area of a disc of that size (neither louder nor quieter than drawn)
    shapes = _lesion_shapes()
    assert {("red", "blot"), ("yellow", "waxy"), ("white", "fluffy"), ("red", "frond"), ("red", "tuft"),
            ("red", "flame"), ("red", "boat"), ("drusen", "soft"), ("red", "dot")} <= shapes
    c = 64.0
    for layer, shape in sorted(shapes):
        areas = []
        for k in range(60):
            r = np.random.default_rng(k)
            size, ang = float(r.uniform(3, 40)), float(r.uniform(0, np.pi))
            layer_im = Image.new("L", (128, 128), 0)
            _draw_lesion(ImageDraw.Draw(layer_im), (layer, shape, c, c, size, ang, 0.7), r)
            yy, xx = np.nonzero(np.asarray(layer_im))
            assert len(xx), (shape, size)
            reach = np.sqrt((xx - c) ** 2 + (yy - c) ** 2).max()
            assert reach <= 1.2 * size / 2 + 1.0, (shape, size, reach)
            if size > 10:
                areas.append(len(xx) / (np.pi * (size / 2) ** 2))
        if shape in ("dot", "blot", "waxy", "soft"):
            assert 0.75 < np.mean(areas) < 1.25, (shape, np.mean(areas))


def test_lesion_closeups_centre_on_their_sign():
    for title, overrides, target in CLOSEUP_ROWS:
        scene, (x, y) = closeup_scene(overrides, target, 5, 256, "canon_cr2")
        if target == "disc":
            assert (x, y) == tuple(scene["disc"])
        else:
            assert any(tuple(it[:2]) == target and (it[2], it[3]) == (x, y) for it in scene["lesions"]), title
    with pytest.raises(LookupError, match="no"):
        closeup_scene({}, ("red", "blot"), 5, 128, "canon_cr2", tries=3)   # a healthy eye has none
    fig = lesion_closeups(seed=5, size=256, rows=CLOSEUP_ROWS[:3], columns=3)
    assert [ax.get_title() for ax in fig.axes[:3]] == [t for t, _, _ in CLOSEUP_ROWS[:3]]
    assert all(ax.images and ax.images[0].get_array().shape[0] >= 0.9 * 1.5 * 256 * 0.94 / 8 for ax in fig.axes[:3])


def test_cdr_classes_overlap_but_differ():
    normal = [plan_fundus(sheet_row({}), 1, i, 64, "topcon_nw")["measurements"]["cdr"] for i in range(200)]
    glauc = [plan_fundus(sheet_row({"is_gc": 1}), 1, i, 64, "topcon_nw")["measurements"]["cdr"] for i in range(200)]
    assert 0.25 < np.mean(normal) < 0.45 and 0.65 < np.mean(glauc) < 0.85
    assert max(normal) > min(glauc)           # overlapping tails keep glaucoma honest


# flag -> (its defect's region, the windows it must obscure, the window it must leave alone, its defect kinds)
OBSCURED = {
    "is_optic_disc_readable": ("disc", ("disc",), ("macula",), {"glare", "shadow", "blur"}),
    "is_macular_readable": ("macula", ("macula",), ("disc",), {"shadow", "blur"}),
    "is_retinal_region_readable": ("retina", ("disc", "macula"), (), {"opacity", "underexposed", "blur"}),
}


@pytest.mark.parametrize("flag", list(OBSCURED))
def test_unreadable_region_is_obscured_exactly_there(flag):
    region, obscured, clear, kinds = OBSCURED[flag]
    yy, xx = np.mgrid[0:128, 0:128]
    seen = set()
    for i in range(16):   # enough eyes to draw every defect kind of the region
        plan = plan_fundus(sheet_row({flag: 0}, eye_side=i % 2), 3, i, 128, "topcon_nw")
        scene, m = plan["scene"], plan["measurements"]
        # the same eye without its defects: every other random choice stays as it was
        a = np.asarray(rasterise({**scene, "defects": []}), np.float32)
        b = np.asarray(rasterise(scene), np.float32)
        diff = np.abs(a - b).mean(axis=2)
        centres = {"disc": m["disc_xy"], "macula": m["fovea_xy"]}
        mean = {k: diff[(xx - x) ** 2 + (yy - y) ** 2 < (0.5 * m["dd_px"]) ** 2].mean()
                for k, (x, y) in centres.items()}
        untouched = max((mean[k] for k in clear), default=0.0)
        for k in obscured:
            assert mean[k] > 5 * (untouched + 0.5), (flag, i, m["defects"], mean)
        (defect,) = m["defects"]
        assert defect.split(":")[0] == region
        seen.add(defect.split(":")[1])
    assert seen == kinds


def test_nonfundus_kinds_and_reserved_kinds():
    row = sheet_row({"is_fundus": 0, "is_macular_readable": 0, "is_optic_disc_readable": 0,
                     "is_retinal_region_readable": 0})
    kinds = {render_fundus(row, 2, i, 48, "topcon_nw")[1]["nonfundus_kind"] for i in range(40)}
    assert kinds == set(CORPUS_KINDS) and not kinds & set(RESERVED_KINDS)
    _, m = render_fundus(row, 2, 0, 48, "topcon_nw", nonfundus_kinds=RESERVED_KINDS)
    assert m["nonfundus_kind"] in RESERVED_KINDS


def test_render_nonfundus_writer(tmp_path):
    out = render_nonfundus(tmp_path / "nf", 6, seed=3, size=48)
    rows = list(csv.DictReader(open(out / "labels.csv")))
    assert len(rows) == 6 and {r["kind"] for r in rows} <= set(RESERVED_KINDS)
    assert len(json.loads((out / "manifest.json").read_text())["files"]) == 7


# ---- captions -----------------------------------------------------------------------------------

def test_captions_deterministic_bilingual_and_name_findings():
    rows = sample_labels(300, seed=9)
    zh = [caption(r, 9, i, "zh") for i, r in enumerate(rows)]
    assert zh == [caption(r, 9, i, "zh") for i, r in enumerate(rows)]
    en = [caption(r, 9, i, "en") for i, r in enumerate(rows)]
    assert all(re.search(r"[\u4e00-\u9fff]", z) for z in zh)
    assert all(not re.search(r"[\u4e00-\u9fff]", e) for e in en)
    checks = {"is_gc": "cup", "is_amd": "drusen", "is_aon": "pale", "is_crp": "csc", "is_pm": "pm"}
    for r, z, e in zip(rows, zh, en):
        # a report names the findings, or gives its conclusion only: then the diagnosis names them
        z_says = (lambda flag, key: DIAG_ZH[flag]) if is_impression_only(z) else (lambda flag, key: F[key][0])
        e_says = (lambda flag, key: DIAG_EN[flag]) if is_impression_only(e) else (lambda flag, key: F[key][1])
        for flag, key in checks.items():
            if r[flag]:
                assert any(p in z for p in z_says(flag, key)), (z, flag)
                assert any(p.lower() in e.lower() for p in e_says(flag, key)), (e, flag)
        if r["dr_grade"] == 1:
            assert any(p in z for p in DR_ZH[1]) if is_impression_only(z) else "微血管瘤" in z
            assert any(p in e for p in DR_EN[1]) if is_impression_only(e) else "microaneurysm" in e
        if r["is_fundus"] == 0:
            assert "非眼底" in z or "不是眼底" in z
    glaucoma = sheet_row({"is_gc": 1})
    assert any("杯盘比增大" in caption(glaucoma, 0, i) for i in range(30))
    assert any("enlarged cup-to-disc ratio" in caption(glaucoma, 0, i, "en") for i in range(30))
    div = caption_diversity(zh, rows)
    assert div["distinct_captions"] > 2 * div["distinct_label_sets"]
    ov = ngram_overlap(en)
    assert 0 < ov["prompt_1gram_coverage"] <= 1 and ov["prompt_verbatim_share"] < 0.35
    with pytest.raises(DataError):
        caption({"file_name": "x.jpg", "dr_grade": 7}, 0, 0)


def test_caption_works_on_a_real_annotation_row():
    # a row as read from the real SynFundus-1M CSV: strings, no measurements
    real = {c: "0" for c in COLUMNS}
    real.update(file_name="000123.jpg", dr_grade="3", is_dm="1", is_fundus="1", is_macular_readable="0",
                is_optic_disc_readable="1", is_retinal_region_readable="1")
    z = caption(real, 1, 123, "zh")
    assert "重度" in z or "NPDR" in z
    assert "黄斑区" in z


# ---- cameras ------------------------------------------------------------------------------------

def test_camera_sets_disjoint_and_profiles_named():
    assert len(TRAIN_CAMERAS) >= 6 and len(HELDOUT_CAMERAS) >= 3
    assert not set(TRAIN_CAMERAS) & set(HELDOUT_CAMERAS)
    p = load_profile("cpu")
    assert set(p.synth.train_cameras) == set(TRAIN_CAMERAS)
    assert set(p.synth.heldout_cameras) == set(HELDOUT_CAMERAS)
    assert {c.fov_shape for c in CAMERAS.values()} == {"circle", "circle_cut", "rect"}
    with pytest.raises(ConfigError):
        check_disjoint(["topcon_nw"], ["topcon_nw"])
    with pytest.raises(ConfigError):
        check_disjoint(["no_such_camera"], [])


# ---- writers: layout, determinism, resume --------------------------------------------------------

def test_corpus_layout_and_byte_identical_runs(tmp_path):
    a = render_corpus(tiny_profile(), tmp_path / "a", progress=False)
    b = render_corpus(tiny_profile(**{"synth.workers": 2}), tmp_path / "b", progress=False)
    ta, tb = tree_bytes(a), tree_bytes(b)
    assert ta == tb                                   # same seed: same bytes, serial or parallel
    with open(a / "annotations.csv", newline="") as f:
        reader = csv.reader(f)
        assert tuple(next(reader)) == COLUMNS
        assert len(list(reader)) == 24
    assert sorted(p.name for p in (a / "Fundus").iterdir()) == [f"{i:07d}.jpg" for i in range(1, 25)]
    with open(a / "captions.csv", newline="") as f:
        assert next(csv.reader(f)) == ["file_name", "caption_zh", "caption_en"]
    man = json.loads((a / "manifest.json").read_text())
    assert set(man["cameras"]["used"]) <= set(TRAIN_CAMERAS)
    assert man["generator_version"] == C.GENERATOR_VERSION and man["clinical_parameters"]["cdr"]
    assert len(man["files"]) == 27 and "labels" in man and "captions" in man
    c = render_corpus(tiny_profile(**{"seed": 99}), tmp_path / "c", progress=False)
    assert tree_bytes(c) != ta


def test_release_format_stand_in_reads_as_the_same_table(tmp_path):
    """synth.corpus_format=release writes the release's metadata instead of annotations.csv; read back,
    it gives the 17-column corpus's table (so the book may take that path), with the release's columns."""
    from visionclip.data.advice import agreement
    from visionclip.data.readers import read_synfundus_table
    from visionclip.data.splits import split_corpus
    from visionclip.schema import EXTRA_FLAGS

    def rows(table, root):
        return [(r.path.relative_to(root), r.labels, r.caption_zh, r.caption_en, r.domain) for r in table]

    paper = render_corpus(tiny_profile(), tmp_path / "paper", progress=False)
    release = render_corpus(tiny_profile(**{"synth.corpus_format": "release"}), tmp_path / "release", progress=False)
    assert (release / "metadata.tsv").is_file() and not (release / "annotations.csv").exists()
    a, b = read_synfundus_table(paper), read_synfundus_table(release)
    assert a.release is None and b.release is not None
    assert rows(a, paper) == rows(b, release)
    assert [list(t.file_names) for t in split_corpus(b, 7).values()] == \
        [list(t.file_names) for t in split_corpus(a, 7).values()]
    labels = {c: a.label_matrix()[:, i] for i, c in enumerate(COLUMNS[1:])}
    assert (b.extras_matrix()[:, EXTRA_FLAGS.index("is_tessellated")] == labels["is_pm"]).all()
    flags = {"dr": labels["dr_grade"] > 0, **{c: labels[c] for c in DISEASE_FLAGS}, "is_tessellated": labels["is_pm"]}
    assert {r["agree"] for r in agreement(flags, b.advice())} == {1.0}  # the stand-in's sentences agree
    assert list(read_synfundus_table(release, captions="release").captions("zh")) == list(b.advice())
    render_corpus(tiny_profile(**{"synth.corpus_format": "release"}), paper, progress=False)  # the other format
    assert not (paper / "annotations.csv").exists() and rows(read_synfundus_table(paper), paper) == rows(a, paper)


def test_interrupted_corpus_resumes_to_the_same_bytes(tmp_path):
    ref = tree_bytes(render_corpus(tiny_profile(), tmp_path / "ref", progress=False))
    out = tmp_path / "partial"
    render_corpus(tiny_profile(), out, progress=False)
    for name in ("manifest.json", "captions.csv", "Fundus/0000003.jpg", "Fundus/0000017.jpg"):
        (out / name).unlink()
    (out / "Fundus" / ".0000005.jpg.abc.tmp").write_bytes(b"half")   # what a SIGKILL leaves
    render_corpus(tiny_profile(), out, progress=False)
    assert tree_bytes(out) == ref


def test_killed_render_resumes_to_the_same_bytes(tmp_path):
    over = {**TINY, "synth.corpus_size": 160}
    code = ("import sys, json; from visionclip.config import load_profile; "
            "from visionclip.synth.writers import render_corpus; "
            f"render_corpus(load_profile('ci', json.loads(sys.argv[2])), sys.argv[1], progress=False)")
    out = tmp_path / "killed"
    env = {**os.environ, "VISIONCLIP_QUIET": "1"}
    proc = subprocess.Popen([sys.executable, "-c", code, str(out), json.dumps(over)], env=env)
    deadline = time.time() + 60
    while time.time() < deadline:
        if (out / "Fundus").is_dir() and len(list((out / "Fundus").glob("*.jpg"))) >= 30:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "manifest.json").exists()
    subprocess.run([sys.executable, "-c", code, str(out), json.dumps(over)], env=env, check=True)
    ref = render_corpus(load_profile("ci", over), tmp_path / "ref", progress=False)
    assert tree_bytes(out) == tree_bytes(ref)


def test_rerender_corpus_with_another_seed_is_refused(tmp_path):
    out = tmp_path / "corpus"
    out.mkdir()                                       # an empty folder just gets a stamp
    render_corpus(tiny_profile(), out, progress=False)
    before = tree_bytes(out)
    assert STAMP in before and STAMP not in json.loads(before["manifest.json"])["files"]
    assert verify_root(out) == 27                     # the stamp is no checksummed file
    with pytest.raises(DataError, match=rf"{re.escape(str(out))}: .*seed: stored 1234, this run 99.*fresh folder"):
        render_corpus(tiny_profile(seed=99), out, progress=False)
    assert tree_bytes(out) == before                  # refused before anything was written
    render_corpus(tiny_profile(), out, progress=False)   # the same settings resume as before
    assert tree_bytes(out) == before


def test_corpus_grows_in_place_but_unstamped_images_are_refused(tmp_path):
    # corpus_size is no stamp key: image i depends on (seed, i) alone
    out = render_corpus(tiny_profile(**{"synth.corpus_size": 12}), tmp_path / "grown", progress=False)
    render_corpus(tiny_profile(), out, progress=False)
    assert tree_bytes(out) == tree_bytes(render_corpus(tiny_profile(), tmp_path / "fresh", progress=False))
    (out / STAMP).unlink()                            # as rendered before stamps existed
    with pytest.raises(DataError, match=rf"{re.escape(str(out))}: holds rendered images but no {re.escape(STAMP)}"):
        render_corpus(tiny_profile(), out, progress=False)


@pytest.mark.parametrize("overrides,key", [
    ({"synth.render_size": 80}, "render_size"),
    ({"synth.heldout_cameras": list(HELDOUT_CAMERAS[:2])}, "cameras"),
    ({"synth.messidor2_size": 16}, "n_images"),
])
def test_rerender_benchmarks_with_other_settings_is_refused(tmp_path, overrides, key):
    out = tmp_path / "test"
    paths = render_benchmarks(tiny_profile(), out, "test", progress=False)
    before = tree_bytes(out)
    assert verify_root(paths["fives"]) == 9 and len(read_benchmark("fives", paths["fives"])) == 8
    with pytest.raises(DataError, match=rf"{re.escape(str(paths['messidor2']))}: .*{key}: stored .*fresh folder"):
        render_benchmarks(tiny_profile(**overrides), out, "test", progress=False)
    assert tree_bytes(out) == before                  # every set is checked before any is stamped or drawn
    with pytest.raises(DataError, match="variant: stored 'test', this run 'seen'"):
        render_benchmarks(tiny_profile(), out, "seen", progress=False)


def test_benchmark_layouts(tmp_path):
    prof = tiny_profile()
    paths = render_benchmarks(prof, tmp_path / "test", "test", progress=False)
    m2 = paths["messidor2"]
    with open(m2 / "messidor_data.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["image_id", "adjudicated_dr_grade", "adjudicated_dme", "adjudicated_gradable"]
    assert len(rows) == 12 and all(r["adjudicated_gradable"] == "1" for r in rows)
    assert all(re.fullmatch(r"IM\d{6}\.JPG", r["image_id"]) and (m2 / "IMAGES" / r["image_id"]).is_file()
               for r in rows)
    assert Counter(int(r["adjudicated_dr_grade"]) for r in rows) == dict(enumerate(scaled_counts(12, MESSIDOR2_GRADE_MIX)))
    fives = paths["fives"]
    names = [p.name for p in fives.glob("*/Original/*.png")]
    assert len(names) == 8 and all(re.fullmatch(r"\d+_[ADGN]\.png", n) for n in names)
    assert Counter(n[-5] for n in names) == {"A": 2, "D": 2, "G": 2, "N": 2}
    assert {p.parent.parent.name for p in fives.glob("*/Original/*.png")} == {"train", "test"}
    refuge = paths["refuge"]
    g = sorted(p.name for p in (refuge / "Training400" / "Glaucoma").iterdir())
    n = sorted(p.name for p in (refuge / "Training400" / "Non-Glaucoma").iterdir())
    assert g == ["g0001.jpg"] and n == [f"n{i:04d}.jpg" for i in range(1, 10)]
    for root in paths.values():
        man = json.loads((root / "manifest.json").read_text())
        assert set(man["cameras"]["used"]) <= set(HELDOUT_CAMERAS)
        with open(root / "render_meta.csv", newline="") as f:
            meta = list(csv.DictReader(f))
        assert all((root / r["path"]).is_file() and r["camera"] in HELDOUT_CAMERAS for r in meta)
        assert set(man["files"]) >= {r["path"] for r in meta}
    seen = render_benchmarks(prof, tmp_path / "seen", "seen", progress=False)
    man = json.loads((seen["refuge"] / "manifest.json").read_text())
    assert set(man["cameras"]["used"]) <= set(TRAIN_CAMERAS)
    dev = render_benchmarks(prof, tmp_path / "dev", "dev", progress=False)
    assert tree_bytes(dev["refuge"]) != tree_bytes(refuge)
    with pytest.raises(ConfigError):
        render_benchmarks(prof, tmp_path / "x", "train")


def test_contact_sheet_draws_every_row():
    import matplotlib
    matplotlib.use("Agg")
    from visionclip.synth.sheet import contact_sheet
    fig = contact_sheet(seed=0, size=48, cameras=["topcon_nw", "nidek_afc"])
    assert len(fig.axes) == 2 * len(SHEET_ROWS)
    assert fig.axes[0].get_title() == "topcon_nw"


def test_domain_randomisation_changes_the_look_and_nothing_that_carries_a_label(monkeypatch):
    from visionclip.data.image_stats import image_statistics
    from visionclip.synth import renderer

    share = [bool(plan_fundus(sheet_row({}), 5, i, 64, "topcon_nw", randomise=True)["scene"].get("photo"))
             for i in range(200)]
    assert abs(np.mean(share) - renderer.PHOTOMETRIC["share"]) < 0.1   # the corpus's randomised share
    monkeypatch.setitem(renderer.PHOTOMETRIC, "share", 1.0)
    rows = [sheet_row({"dr_grade": 2} if i % 2 else {"is_gc": 1}, eye_side=i % 2) for i in range(24)]
    plain = [plan_fundus(row, 5, i, 128, "topcon_nw") for i, row in enumerate(rows)]
    varied = [plan_fundus(row, 5, i, 128, "topcon_nw", randomise=True) for i, row in enumerate(rows)]
    # the same disc, cup and signs: the look and the field of view differ; in another field the vessels
    # and lesions are drawn afresh within the same clinical bounds (test_rendered_lesions_... randomised)
    same = ("cdr", "disc_pallor", "glaucoma_notch", "disc_aspect", "artery_calibre_factor", "vein_dilation_factor")
    for a, b in zip(plain, varied):
        assert [a["measurements"][k] for k in same] == [b["measurements"][k] for k in same]
        assert set(a["measurements"]["lesions"]) == set(b["measurements"]["lesions"])   # the same conditions drawn
        assert "photo" in b["scene"] and "photo" not in a["scene"]
        assert b["measurements"]["dd_px"] == pytest.approx(128 * 0.94 / b["scene"]["photo"]["fov_dd"], abs=1e-3)
    fov = [p["scene"]["photo"]["fov_dd"] for p in varied]
    assert min(fov) < 6.5 and max(fov) > 9.0   # zoomed crops and wide fields, beyond the plain 7-8 DD
    monkeypatch.setitem(renderer.PHOTOMETRIC, "share", 0.5)
    for i, row in enumerate(rows):   # an eye left unrandomised is drawn exactly as without randomisation
        half = plan_fundus(row, 5, i, 128, "topcon_nw", randomise=True)
        if "photo" not in half["scene"]:
            assert half == plain[i]
    hue = {name: [image_statistics(np.asarray(rasterise(p["scene"])))["hue"] for p in plans]
           for name, plans in (("plain", plain), ("varied", varied))}
    spread = {k: np.subtract(*np.percentile(v, [90, 10])) for k, v in hue.items()}
    assert spread["varied"] > 3 * spread["plain"] and spread["varied"] > 10   # degrees of hue across photographs


def test_corpus_images_drawn_again_without_randomisation(tmp_path):
    from visionclip.synth.writers import render_corpus_without_randomisation

    corpus = render_corpus(tiny_profile(), tmp_path / "corpus", progress=False)
    names = sorted(p.name for p in (corpus / "Fundus").glob("*.jpg"))
    out = render_corpus_without_randomisation(tiny_profile(), names, tmp_path / "look")
    assert [p.name for p in out] == names
    plans = [plan_fundus(row, tiny_profile().seed, i, tiny_profile().synth.render_size, "topcon_nw", randomise=True)
             for i, row in enumerate(sample_labels(len(names), tiny_profile().seed, tiny_profile().synth.class_balance))]
    randomised = {n for n, plan in zip(names, plans) if "photo" in plan["scene"]}
    assert randomised and set(names) - randomised      # the corpus randomises a share of its photographs
    for name, again in zip(names, out):
        same = again.read_bytes() == (corpus / "Fundus" / name).read_bytes()
        assert same == (name not in randomised), name   # the rest are the corpus's own bytes
    # run again on fewer images: only those are left, so the folder always matches the request
    assert [p.name for p in render_corpus_without_randomisation(tiny_profile(), names[:2], tmp_path / "look")] == names[:2]
    assert sorted(p.name for p in (tmp_path / "look").glob("*.jpg")) == names[:2]
    with pytest.raises(DataError, match="not an image of the corpus"):
        render_corpus_without_randomisation(tiny_profile(), ["9999999.jpg"], tmp_path / "look")


def test_natural_photo_frames_are_seeded_crops_of_photographs_that_are_not_fundus():
    from visionclip.data.manifests import load_manifest
    from visionclip.synth.nonfundus import NATURAL_PHOTOS, _natural_photo, render_nonfundus

    assert not {"retina", "microaneurysms"} & set(NATURAL_PHOTOS)   # scikit-image's fundus photographs
    assert set(load_manifest("natural_photos")["licences"]) == set(NATURAL_PHOTOS)  # each one's licence stated
    assert all(min(_natural_photo(name).size) >= 150 for name in NATURAL_PHOTOS)   # every source loads offline
    a, b = (np.asarray(render_nonfundus("natural_photo", 3, i, 64)) for i in (0, 1))
    assert a.shape == (64, 64, 3) and np.array_equal(a, np.asarray(render_nonfundus("natural_photo", 3, 0, 64)))
    assert np.abs(a.astype(int) - b).mean() > 5   # another index, another crop
    frames = [np.asarray(render_nonfundus("natural_photo", 3, i, 64), np.float32) for i in range(12)]
    assert np.mean([f.std() for f in frames]) > 10   # photographs, not flat colour fields


def test_some_natural_photo_frames_are_dim_warm_and_stamped_like_a_fundus_camera_pointed_at_a_room():
    # a real fundus camera's frame of the room is dark and red-brown, with its date stamp: without such
    # frames "dark and red" alone would read as a fundus
    from visionclip.synth.nonfundus import CAMERA_ROOM_P, STAMP_COLOURS, render_nonfundus

    frames = [np.asarray(render_nonfundus("natural_photo", 4, i, 128), np.float32) for i in range(60)]
    dim_warm = [f for f in frames if f.mean() < 60 and f[..., 0].mean() > 1.4 * f[..., 2].mean()]
    assert 0.5 * CAMERA_ROOM_P < len(dim_warm) / len(frames) < 1.6 * CAMERA_ROOM_P
    stamped = [f for f in dim_warm if any((np.abs(f - np.array(c, np.float32)).max(axis=2) < 30).sum() >= 8
                                          for c in STAMP_COLOURS)]
    assert len(stamped) >= 0.8 * len(dim_warm)
