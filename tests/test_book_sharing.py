"""Issue 25, the parts a unit test can reach without the built book: quiet kernels, no build path on
a page, the provenance record, citations that resolve, and prompt settings the model cannot read
left out of the table with their reason. The built ci book itself is checked by
tests/test_book_output.py (make book-checks)."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from visionclip.config import load_profile
from visionclip.eval import readable
from visionclip.eval.table import write_table
from visionclip.report import pipeline, provenance
from visionclip.text import CaptionTokenizer

ROOT = Path(__file__).resolve().parent.parent
BIB = ROOT / "book" / "references.bib"
CITE = re.compile(r"\{cite(?::[a-z]+)?\}`([^`]+)`")


def test_kernels_start_without_the_tcp_warning(tmp_path, capfd):
    """ipykernel 7 warns on every TCP start; the pipeline's kernels talk over Unix sockets."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell("print(6 * 7)")]
    nb.cells[0]["id"] = "c0"
    source = tmp_path / "probe.ipynb"
    nbformat.write(nb, source)
    executed = tmp_path / "out" / "probe.ipynb"
    pipeline.execute_notebook(source, executed, {})
    out, err = capfd.readouterr()
    assert "42" in json.dumps(nbformat.read(executed, as_version=4).cells[0].outputs)
    assert "without encryption" not in out + err


def test_book_page_shows_no_build_path_and_links_the_provenance_page(tmp_path):
    run_dir = tmp_path / "repo" / "runs" / "test-ci"
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# Data"),
                nbformat.v4.new_code_cell('profile = "cpu"\nrun_dir = ""', metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell(f'# Parameters\nprofile = "ci"\nrun_dir = "{run_dir}"\n',
                                          metadata={"tags": ["injected-parameters"]})]
    page = pipeline.book_page(nbformat.writes(nb), run_dir, root=tmp_path / "repo")
    assert str(tmp_path) not in page
    shown = nbformat.reads(page, as_version=4)
    assert 'run_dir = "runs/test-ci"' in shown.cells[3].source
    assert shown.cells[1].source == pipeline.PROVENANCE_LINK and "{doc}`/provenance`" in shown.cells[1].source
    # staged twice (a rebuild): one link
    assert pipeline.book_page(page, run_dir, root=tmp_path / "repo").count("{doc}`/provenance`") == 1


def test_peak_memory_sees_the_child_process():
    with provenance.PeakMemory(every=0.1) as memory:
        subprocess.run([sys.executable, "-c", "import time; b = bytearray(300 * 2**20); time.sleep(0.6)"], check=True)
    assert memory.peak_mib is not None and memory.peak_mib >= 290


def test_provenance_record_round_trips_into_the_page(tmp_path):
    profile = load_profile("tiny")
    nb = tmp_path / "01_data.ipynb"
    nb.write_text(json.dumps({"metadata": {"papermill": {"duration": 12.5}}, "cells": []}), encoding="utf-8")
    record = provenance.collect(profile, {"train.epochs": 2}, [provenance.notebook_record(nb, 812.4)])
    provenance.write(tmp_path, record)
    back = provenance.read(tmp_path)
    assert back["profile"]["name"] == "tiny" and len(back["profile"]["digest"]) == 64
    assert back["cpu"]["native_bf16"] in (True, False) and back["torch"]["threads"] >= 1
    assert set(back["data_manifests"]) == {p.name for p in (ROOT / "data_manifests").glob("*.yaml")}
    page = provenance.render_markdown(back)
    commit = back["git"]["commit"]
    assert commit and commit in page
    assert "| 01_data | 12.5 | 812.4 |" in page
    assert '`{"train.epochs": 2}`' in page and "native bf16" in page
    assert "no provenance record" in provenance.render_markdown(None)


def _cited_keys() -> dict[str, set[str]]:
    """{key: pages} of every {cite} in the book's pages and the notebooks' Markdown cells."""
    found: dict[str, set[str]] = {}
    texts = [(p.name, p.read_text(encoding="utf-8")) for p in (ROOT / "book").glob("*.md")]
    for nb in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        cells = nbformat.read(nb, as_version=4).cells
        texts.append((nb.name, "\n".join(c.source for c in cells if c.cell_type == "markdown")))
    for name, text in texts:
        for group in CITE.findall(text):
            for key in group.split(","):
                found.setdefault(key.strip(), set()).add(name)
    return found


def test_every_citation_resolves_and_every_entry_is_cited():
    entries = set(re.findall(r"^@\w+\{([^,\s]+),", BIB.read_text(encoding="utf-8"), flags=re.M))
    cited = _cited_keys()
    assert not set(cited) - entries, f"{BIB}: no entry for {sorted(set(cited) - entries)}"
    assert not entries - set(cited), f"{BIB}: entries never cited (the references page would omit them): " \
                                     f"{sorted(entries - set(cited))}"
    for page in ("intro.md", "method.md", "01_data_exploration.ipynb", "03_zero_shot_evaluation.ipynb"):
        assert any(page in pages for pages in cited.values()), f"{page} cites nothing"
    assert "```{bibliography}" in (ROOT / "book" / "references.md").read_text(encoding="utf-8")


def test_an_unresolved_citation_key_fails_the_build_message():
    log = 'book/intro.md:3: WARNING: could not find bibtex key "nosuch2020" [bibtex.key_not_found]'
    assert pipeline.UNRESOLVED_CITATION.findall(log) == ["nosuch2020"]


class _Model:
    def __init__(self, captions):
        self.training_captions = captions


def test_a_prompt_language_the_model_never_read_is_unreadable():
    zh = ["右眼眼底照片：眼底未见明显异常。", "检查所见：多发微动脉瘤。"]
    en = ["A fundus photograph of glaucoma", "many small drusen"]
    zh_only = CaptionTokenizer.train(zh, 200)
    settings = {("zh", "plain"): zh, ("en", "plain"): en}
    # recorded training captions decide
    left = readable.unreadable_settings(_Model({"zh": "generated"}), zh_only, settings)
    assert list(left) == ["en_plain"] and "trained on zh captions only" in left["en_plain"]
    # a model saved before the record existed: its vocabulary decides
    left = readable.unreadable_settings(_Model(None), zh_only, settings)
    assert list(left) == ["en_plain"] and "[UNK]" in left["en_plain"]
    both = CaptionTokenizer.train(zh + en, 300)
    assert readable.unreadable_settings(_Model({"zh": "generated", "en": "generated"}), both, settings) == {}


def test_a_left_out_row_is_said_under_the_table_not_printed_as_a_result(tmp_path):
    scores = {"messidor2": {"value": 0.5, "lo": 0.4, "hi": 0.6}}
    rows = [{"model": "VisionCLIP (this run, zh, plain prompts)", "source": "stand-in", "scores": scores}]
    left = {"VisionCLIP (this run, en, plain prompts)": "the model was trained on zh captions only"}
    df = write_table(rows, tmp_path, left_out=left)
    assert not df["model"].str.contains(", en,").any()
    md = (tmp_path / "eval" / "table.md").read_text(encoding="utf-8")
    assert "Left out: VisionCLIP (this run, en, plain prompts): the model was trained on zh captions only." in md
    assert json.loads((tmp_path / "eval" / "table.json").read_text())["left_out"] == [list(x) for x in left.items()]
