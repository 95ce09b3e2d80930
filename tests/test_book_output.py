"""The built book as a reader gets it (issue 25): the PDF, the citations, the provenance page, no
row the model cannot read printed as a result, no path of the build machine; and notebook 01 run
top to bottom as JupyterLab runs it (nbclient, no papermill) gives what papermill gave.

Runs after `make notebooks-ci book-ci` (make book-checks sets VISIONCLIP_BOOK_RUN to the ci run
directory); skipped without it, so the unit stage, which runs before the book is built, skips it.
"""
from __future__ import annotations

import json
import os
import re
import sys
from collections import defaultdict
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
RUN = os.environ.get("VISIONCLIP_BOOK_RUN", "")
pytestmark = pytest.mark.skipif(not RUN, reason="needs the built ci book: make book-checks (after book-ci)")

BOOK = ROOT / "book"
HTML = BOOK / "_build" / "html"
SANITISER = ROOT / "tests" / "nbval_sanitize.cfg"
CJK = re.compile(r"[\u4e00-\u9fff]{4,}")


def run_dir() -> Path:
    return (ROOT / RUN).resolve() if not Path(RUN).is_absolute() else Path(RUN)


def page_text(path: Path) -> str:
    html = path.read_text(encoding="utf-8")
    html = re.sub(r"<(script|style)\b.*?</\1>", " ", html, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def book_pages() -> list[Path]:
    return sorted(p for p in HTML.rglob("*.html") if "_static" not in p.parts and "_sources" not in p.parts)


# ----------------------------------------------------------------------------- the PDF

@pytest.fixture(scope="module")
def pdf():
    from pypdf import PdfReader

    from visionclip.report.pdf import PDF_NAME

    path = HTML / PDF_NAME
    assert path.is_file(), f"{path}: no PDF; the book build prints it (report.pdf)"
    return PdfReader(path)


def test_pdf_holds_every_page_in_toc_order_with_embedded_fonts(pdf):
    from visionclip.report.pdf import toc_files

    docs = toc_files(BOOK)
    titles = [o.title for o in pdf.outline]
    assert len(titles) == len(docs), f"bookmarks {titles} against the toc's {len(docs)} pages"
    assert titles[0].startswith("VisionCLIP") and titles[-1].startswith("Provenance")
    assert len(pdf.pages) >= len(docs)
    fonts, not_embedded = set(), set()
    for page in pdf.pages:
        for font in (page.get("/Resources") or {}).get("/Font", {}).values():
            font = font.get_object()
            fonts.add(str(font.get("/BaseFont", font.get("/Subtype"))))
            if font.get("/Subtype") == "/Type3":
                continue  # glyphs drawn in the page itself
            desc = font.get("/FontDescriptor") or (font["/DescendantFonts"][0].get_object().get("/FontDescriptor")
                                                   if "/DescendantFonts" in font else None)
            desc = desc.get_object() if desc is not None else {}
            if not any(k in desc for k in ("/FontFile", "/FontFile2", "/FontFile3")):
                not_embedded.add(str(font.get("/BaseFont")))
    assert fonts and not not_embedded, f"fonts not embedded: {sorted(not_embedded)}"


def test_pdf_shows_the_chinese_text_and_typeset_maths(pdf):
    text = "\n".join(p.extract_text() for p in pdf.pages)
    # Chinese captions of notebook 01's page, as the browser shows them, are in the PDF's text
    shown = set(CJK.findall(page_text(HTML / "notebooks" / "01_data_exploration.html")))
    assert shown, "notebook 01's page shows no Chinese text"
    found = [s for s in shown if s in text.replace("\n", "")]
    assert len(found) >= min(5, len(shown)), f"Chinese text of the book missing from the PDF: {sorted(shown)[:5]}"
    assert "眼底" in text
    # MathJax had typeset the method page: no TeX source left in the printed text
    assert "InfoNCE" in text
    for raw in ("\\frac", "\\sum", "$$", "\\lVert"):
        assert raw not in text, f"raw TeX {raw!r} in the PDF: MathJax had not finished"


def test_intro_links_the_pdf():
    assert 'href="visionclip-book.pdf"' in (HTML / "index.html").read_text(encoding="utf-8") or \
        'href="visionclip-book.pdf"' in (HTML / "intro.html").read_text(encoding="utf-8")


# ----------------------------------------------------------------------------- citations

def test_citations_resolve_and_the_references_page_lists_them():
    bib = (BOOK / "references.bib").read_text(encoding="utf-8")
    titles = re.findall(r"^\s*title\s*=\s*\{(.+)\},\s*$", bib, flags=re.M)
    refs = page_text(HTML / "references.html")
    for title in titles:
        words = " ".join(re.sub(r"[{}\\]", "", title).split()[:4])
        # the bibliography style sets titles in sentence case
        assert words.lower() in refs.lower(), f"references page lacks {words!r}"
    for page in book_pages():
        text = page_text(page)
        assert "{cite}" not in text, f"{page.name}: an unrendered {{cite}} role"
    intro = (HTML / "intro.html").read_text(encoding="utf-8")
    assert intro.count('href="references.html#') >= 5


# ----------------------------------------------------------------------------- provenance

def test_provenance_page_and_every_notebook_page_links_it():
    record = json.loads((run_dir() / "notebooks" / "provenance.json").read_text(encoding="utf-8"))
    page = page_text(HTML / "provenance.html")
    assert record["git"]["commit"] in page and record["profile"]["digest"] in page
    assert f" {record['profile']['name']} " in page and "native bf16" in page
    for nb in record["notebooks"]:
        assert nb["notebook"] in page and f"{nb['seconds']:.1f}" in page and str(nb["peak_rss_mib"]) in page
    for name in record["data_manifests"]:
        assert name in page
    for nb_page in sorted((HTML / "notebooks").glob("*.html")):
        # in the article, not only in the navigation every page has
        article = nb_page.read_text(encoding="utf-8").split('<article class="bd-article"', 1)[-1]
        assert re.search(r'numbers:\s*<a [^>]*href="\.\./provenance\.html', article), f"{nb_page.name}: no provenance link"


# ----------------------------------------------------------------------------- rows

def test_no_setting_the_model_cannot_read_is_printed_as_a_result():
    from visionclip.data.benchmarks import load_dataset_manifest
    from visionclip.eval.benchmark import PROMPT_SETTINGS
    from visionclip.eval.readable import unreadable_settings
    from visionclip.eval.zeroshot import build_prompts
    from visionclip.paths import STANDIN_BENCHMARKS, RunLayout
    from visionclip.pretrained import load_clip

    model, tokenizer = load_clip(RunLayout(run_dir()).model, "cpu")
    prompts = {(lang, mode): [p for ds in STANDIN_BENCHMARKS for c in build_prompts(load_dataset_manifest(ds), lang, mode)
                              for p in c] for lang, mode in PROMPT_SETTINGS}
    unreadable = unreadable_settings(model, tokenizer, prompts)
    html = (HTML / "notebooks" / "03_zero_shot_evaluation.html").read_text(encoding="utf-8")
    rows = [page_text_of(r) for r in re.findall(r"<tr\b.*?</tr>", html, flags=re.S)]
    assert any("this run, " in r for r in rows), "notebook 03's page shows no result row of this run"
    for key in unreadable:
        lang, mode = key.split("_", 1)
        name = f"this run, {lang}, {'EK' if mode == 'ek' else 'plain'} prompts"
        assert not [r for r in rows if name in r or r.strip().startswith(key + " ")], f"{key} printed as a result"
        assert f"Left out (not a result): VisionCLIP ({name}" in page_text(HTML / "notebooks" / "03_zero_shot_evaluation.html")
    # the ci model trains on Chinese captions only: the English settings must be among them
    assert model.training_captions and ("en" in model.training_captions or {"en_plain", "en_ek"} <= set(unreadable))


def page_text_of(fragment: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", fragment))


# ----------------------------------------------------------------------------- paths

def test_no_page_shows_a_path_of_the_build_machine():
    machine = {str(ROOT), str(run_dir()), str(Path(sys.prefix).resolve()), str(Path.home())}
    machine = {m for m in machine if len(m) > 1}
    for page in book_pages():
        text = page.read_text(encoding="utf-8")
        shown = [m for m in machine if m in text]
        assert not shown, f"{page.relative_to(HTML)} shows {shown}"


# ----------------------------------------------------------------------------- JupyterLab

def _sanitised(cell, patterns) -> dict:
    """A code cell's outputs as nbval compares them (streams coalesced, since a kernel may flush one
    print in two messages; its skipped keys; the sanitiser applied)."""
    import copy

    from nbval.plugin import coalesce_streams, transform_streams_for_comparison

    skip = {"metadata", "traceback", "prompt_number", "output_type", "name", "execution_count",
            "application/vnd.jupyter.widget-view+json", "image/png", "image/jpeg"}

    def clean(s):
        s = s if isinstance(s, str) else json.dumps(s, sort_keys=True)
        for regex, replace in patterns:
            s = re.sub(regex, replace, s)
        return s

    out = defaultdict(list)
    outputs = coalesce_streams(copy.deepcopy(cell.get("outputs", [])))
    for o in transform_streams_for_comparison(outputs):
        for key, value in o.items():
            if key in skip:
                continue
            if key == "data":
                for mime, v in value.items():
                    if mime not in skip:
                        out[mime].append(clean(v))
            else:
                out[key].append(clean(value))
    return dict(out)


def test_notebook_01_in_jupyterlab_gives_what_papermill_gave(tmp_path, monkeypatch):
    """Top to bottom through nbclient, in notebooks/ (where JupyterLab starts its kernels), the
    parameters cell edited to the ci profile as a reader would; compared with papermill's run of
    make notebooks-ci under the nbval sanitiser."""
    from nbclient import NotebookClient
    from nbval.plugin import get_sanitize_patterns

    from visionclip.report import pipeline

    reference = nbformat.read(run_dir() / "notebooks" / "01_data_exploration.ipynb", as_version=4)
    params = reference.metadata["papermill"]["parameters"]
    nb = nbformat.read(ROOT / "notebooks" / "01_data_exploration.ipynb", as_version=4)
    target = tmp_path / Path(params["run_dir"]).name  # the notebook prints runs/<name>
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    cell.source = f'profile = "{params["profile"]}"\nrun_dir = "{target}"\noverrides = {{}}'
    for key, value in pipeline.KERNEL_ENV.items():  # what make lab gives the kernels
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(ROOT / "notebooks")}},
                   kernel_manager_class=pipeline.ipc_kernel_manager()).execute()
    patterns = get_sanitize_patterns(SANITISER.read_text(encoding="utf-8"))
    ref_cells = {c.id: c for c in reference.cells if c.cell_type == "code"}
    compared = 0
    for c in nb.cells:
        if c.cell_type != "code" or "parameters" in c.metadata.get("tags", []):
            continue
        mine, theirs = _sanitised(c, patterns), _sanitised(ref_cells[c.id], patterns)
        if mine != theirs:
            import difflib
            diff = difflib.unified_diff(json.dumps(theirs, indent=1).splitlines(), json.dumps(mine, indent=1).splitlines(),
                                        "papermill", "nbclient", lineterm="", n=1)
            pytest.fail(f"cell {c.id} differs:\n" + "\n".join(list(diff)[:40]))
        compared += 1
    assert compared >= 5
