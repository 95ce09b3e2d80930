"""The real-photograph dev set: panels found in figures, processed renderings dropped, repeats
dropped, labels only from the manifest; on small wheels the test writes, and on the pinned real
wheels when `make devset-wheels` has fetched them."""
from __future__ import annotations

import base64
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from visionclip.data import devset
from visionclip.errors import DataError
from visionclip.paths import DEVSET_WHEELS


def _disk(size: int, seed: int = 0, tint=(200, 90, 40)) -> Image.Image:
    """A red-orange fundus-like disk with seeded vessels on black."""
    img = Image.new("RGB", (size, size))
    d = ImageDraw.Draw(img)
    d.ellipse((4, 4, size - 5, size - 5), fill=tint)
    r = np.random.default_rng(seed)
    for _ in range(6):
        x0, y0, x1, y1 = r.integers(size // 4, 3 * size // 4, 4)
        d.line((x0, y0, x1, y1), fill=(120, 30, 20), width=max(2, size // 40))
    return img


def _figure() -> tuple[bytes, dict]:
    """A matplotlib-like figure: white background, a 2 x 3 grid of panels. Row 1: a colour eye, its
    grey rendering, the same eye with a blue and a green marker. Row 2: the colour eye again at a
    smaller size (a repeat), a near-white blank frame, a second eye."""
    fig = Image.new("RGB", (3 * 220 + 40, 2 * 220 + 40), "white")
    eye = _disk(200, seed=1)
    grey = eye.convert("L").convert("RGB")
    marked = eye.copy()
    d = ImageDraw.Draw(marked)
    d.ellipse((60, 60, 72, 72), fill=(0, 0, 255))
    d.ellipse((120, 90, 132, 102), fill=(0, 128, 0))
    cells = [(eye, 0, 0), (grey, 0, 1), (marked, 0, 2),
             (eye.resize((200, 200)), 1, 0), (Image.new("RGB", (200, 200), (250, 240, 245)), 1, 1),
             (_disk(200, seed=7, tint=(180, 110, 30)), 1, 2)]
    for img, row, col in cells:
        fig.paste(img, (20 + col * 220, 20 + row * 220))
    # the blank frame carries a camera time stamp, as real blank flashes do
    ImageDraw.Draw(fig).text((20 + 220 + 120, 20 + 220 + 5), "00:00", fill=(0, 200, 0))
    buf = io.BytesIO()
    fig.save(buf, format="PNG")
    return buf.getvalue(), {"eye": eye}


def _wheels(folder: Path) -> Path:
    png, _ = _figure()
    nb = {"cells": [{"cell_type": "markdown", "source": []},
                    {"cell_type": "code", "outputs": [{"data": {"image/png": base64.b64encode(png).decode()}}]}]}
    with zipfile.ZipFile(folder / devset.TOOLBOX_WHEEL, "w") as z:
        z.writestr("0_example_usage/usage_demo.ipynb", json.dumps(nb))
    retina = io.BytesIO()
    _disk(300, seed=3).save(retina, format="JPEG", quality=95)
    with zipfile.ZipFile(folder / f"{devset.SKIMAGE_WHEEL_PREFIX}cp311-none-any.whl", "w") as z:
        z.writestr(devset.SKIMAGE_RETINA, retina.getvalue())
        for k, member in enumerate(devset.SKIMAGE_HELD_OUT):  # bright grey frames, one per held-out file
            frame = io.BytesIO()
            Image.new("L", (60 + k, 50), 230).save(frame, format="PNG")
            z.writestr(member, frame.getvalue())
    return folder


def _built(tmp_path) -> tuple[Path, list]:
    """The dev set of the test's own wheels built into tmp_path/dev; the near-white frame is labelled
    not a fundus photograph. Returns (its folder, its entries)."""
    wheels = _wheels(tmp_path)
    toolbox, skimage = devset.find_wheels(wheels)
    photos = devset.drop_repeats([p for p, r in devset.notebook_panels(toolbox) if r is None])
    photos += devset.skimage_photographs(skimage)
    labels = {p.digest: ({"is_fundus": 1, "eye": str(i), "lesions": "not assessed"} if p.pixels.mean() < 200
                         else {"is_fundus": 0, "kind": "blank_flash"}) for i, p in enumerate(photos)}
    licences = {"fundus-image-toolbox": "MIT", **{p.package: "CC0" for p in photos if p.package != "fundus-image-toolbox"}}
    return tmp_path / "dev", devset.build_devset(wheels, tmp_path / "dev", {"licences": licences, "images": labels})


def test_panels_are_found_processed_ones_named_and_repeats_dropped(tmp_path):
    toolbox, _ = devset.find_wheels(_wheels(tmp_path))
    found = list(devset.notebook_panels(toolbox))
    assert len(found) == 6  # the blank frame too: the grid is completed
    reasons = [reason for _, reason in found]
    assert sum(r is not None and r.startswith("grey") for r in reasons) == 1
    assert sum(r is not None and r.startswith("annotated") for r in reasons) == 1
    clean = [p for p, r in found if r is None]
    assert len(clean) == 4  # the eye, its repeat, the blank frame, the second eye
    kept = devset.drop_repeats(clean)
    assert len(kept) == 3
    assert all("cell 1, output 0" in p.where for p in kept)


def test_build_writes_images_and_labels_from_the_manifest_only(tmp_path):
    wheels = _wheels(tmp_path)
    toolbox, skimage = devset.find_wheels(wheels)
    photos = devset.drop_repeats([p for p, r in devset.notebook_panels(toolbox) if r is None])
    photos += devset.skimage_photographs(skimage)
    assert [p.package for p in photos[-4:]] == ["scikit-image retina.jpg", "scikit-image coins.png",
                                                "scikit-image clock_motion.png", "scikit-image ihc.png"]
    manifest = {"licences": {"fundus-image-toolbox": "MIT", **{p.package: "CC0" for p in photos[-4:]}},
                "images": {p.digest: {"is_fundus": 1, "eye": str(i)} for i, p in enumerate(photos)}}
    out = tmp_path / "out"
    entries = devset.build_devset(wheels, out, manifest)
    assert [e["digest"] for e in entries] == [p.digest for p in photos]
    assert entries[-1]["licence"] == "CC0" and entries[0]["licence"] == "MIT" and entries[-1]["height"] == 50
    for e in entries:
        img = np.asarray(Image.open(out / e["file"]))
        assert img.shape == (e["height"], e["width"], 3)
    assert json.loads((out / "devset.json").read_text()) == entries
    again = devset.build_devset(wheels, tmp_path / "again", manifest)  # the same bytes from the same wheels
    assert [e["sha256"] for e in again] == [e["sha256"] for e in entries]

    unlabelled = dict(manifest, images={k: v for k, v in list(manifest["images"].items())[1:]})
    with pytest.raises(DataError, match=photos[0].digest):
        devset.build_devset(wheels, tmp_path / "x", unlabelled)
    extra = dict(manifest, images={**manifest["images"], "0123456789abcdef": {"is_fundus": 1}})
    with pytest.raises(DataError, match="0123456789abcdef.*not extracted"):
        devset.build_devset(wheels, tmp_path / "y", extra)


def test_missing_wheels_say_how_to_fetch_them(tmp_path):
    with pytest.raises(DataError, match="make devset-wheels"):
        devset.find_wheels(tmp_path)
    wheel = tmp_path / f"{devset.SKIMAGE_WHEEL_PREFIX}x.whl"
    retina = io.BytesIO()
    _disk(40, seed=1).save(retina, format="JPEG")
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr(devset.SKIMAGE_RETINA, retina.getvalue())
    with pytest.raises(DataError, match="coins.png is missing"):
        devset.skimage_photographs(wheel)


def test_held_out_photographs_never_enter_the_corpus():
    import skimage.data
    from visionclip.synth.nonfundus import NATURAL_PHOTOS, _natural_photo

    # pixel for pixel: none of the corpus's source photographs is one the dev set holds out
    folder = Path(skimage.data.__file__).parent
    held_out = [np.asarray(Image.open(folder / Path(m).name).convert("RGB")) for m in devset.SKIMAGE_HELD_OUT]
    for name in NATURAL_PHOTOS:
        source = np.asarray(_natural_photo(name))
        assert not any(h.shape == source.shape and np.array_equal(h, source) for h in held_out), name
    # and the comparison can match: skimage.data.coins() is the held-out coins.png
    assert np.array_equal(held_out[0], np.asarray(Image.fromarray(skimage.data.coins()).convert("RGB")))


@pytest.mark.skipif(not (DEVSET_WHEELS / devset.TOOLBOX_WHEEL).is_file(),
                    reason="the pinned wheels are fetched by `make devset-wheels` (make unit does it)")
def test_the_real_wheels_give_the_labelled_dev_set(tmp_path):
    entries = devset.build_devset(DEVSET_WHEELS, tmp_path)
    assert len(entries) == 18
    assert sorted(e.get("kind") for e in entries if not e["is_fundus"]) == [
        "blank_flash", "micrograph", "object_photo", "object_photo", "room_scene", "test_chart"]
    assert len({e["eye"] for e in entries if e["is_fundus"]}) == 10
    assert {e["licence"].split(" ")[0] for e in entries} == {"MIT", "CC0", "no", "public"}


def test_the_model_reads_the_dev_set_and_the_figures_name_what_is_real(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    from test_eval_fixtures import save_tiny_model
    from visionclip.report import figures, tables

    root, entries = _built(tmp_path)
    save_tiny_model(tmp_path / "model")
    table = tables.devset_predictions(entries, root, tmp_path / "model", "fives", "en", "plain")
    assert list(table["image"]) == [e["digest"] for e in entries]
    assert table["p_is_fundus"].between(0, 1).all() and table["p(predicted)"].between(0.25, 1).all()
    assert list(table["is_fundus (label)"]) == [e["is_fundus"] for e in entries]
    auc = tables.fundus_check_auc(table)
    assert 0.0 <= auc <= 1.0
    assert tables.fundus_check_auc(table[table["is_fundus (label)"] == 1]) is None
    fig = figures.devset_prediction_figure(table, entries, root, {"normal": root / entries[0]["file"]})
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert sum(t.startswith("REAL") for t in titles) == len(entries) and "RENDERED: normal" in titles
    fig = figures.devset_figure(entries, root)
    assert "never training" in fig._suptitle.get_text()


def test_rendered_against_real_statistics_and_figures(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    from test_eval_fixtures import make_corpus
    from visionclip.data.readers import read_synfundus
    from visionclip.report import figures, tables

    root, entries = _built(tmp_path)
    corpus = read_synfundus(make_corpus(tmp_path / "corpus", n=12))
    stats = tables.realism_statistics(entries, root, corpus, 64, n_rendered=8, seed=0)
    assert len(stats["real"]) == sum(e["is_fundus"] for e in entries) and len(stats["rendered"]) == 8
    again = tables.realism_statistics(entries, root, corpus, 64, n_rendered=8, seed=0)
    assert list(again["rendered"]["path"]) == list(stats["rendered"]["path"])  # a seeded sample
    table = tables.realism_table(stats)
    assert {"real median", "rendered median", "gap (reference IQRs)", "spread ratio"} <= set(table.columns)
    fig = figures.realism_figure(stats)
    assert all(ax.get_xlabel() and ax.get_title() for ax in fig.axes if ax.get_visible() and ax.has_data())
    fig = figures.real_rendered_sheet(stats, 64)
    assert {"REAL", "RENDERED"} <= {ax.get_title(loc="left") for ax in fig.axes}
