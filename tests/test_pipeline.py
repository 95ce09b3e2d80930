"""The pipeline runs the notebooks with papermill, atomically, after validating the profile."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import nbformat
import pytest

from visionclip import cli
from visionclip.report import pipeline
from visionclip.errors import ConfigError, VisionCLIPError

NOTEBOOKS = pipeline.NOTEBOOK_DIR


@pytest.fixture()
def tiny_profile(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text("extends: ci\nsynth:\n  corpus_size: 20\n", encoding="utf-8")
    return path


def env_probe_notebook(path: Path) -> None:
    """A notebook whose output shows the parameters and the kernel's environment."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        nbformat.v4.new_code_cell('profile: str = "cpu"  # profile\nrun_dir: str = ""  # run dir\n'
                                  'overrides: dict = {}  # overrides', metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("import os\nfrom visionclip.config import load_profile\n"
                                  "P = load_profile(profile, overrides)\n"
                                  "print(P.name, P.synth.corpus_size, P.train.epochs)\n"
                                  "print(*(os.environ.get(k) for k in "
                                  "('VISIONCLIP_QUIET', 'HF_HUB_OFFLINE', 'MPLBACKEND')))"),
    ]
    for i, c in enumerate(nb.cells):
        c["id"] = f"cell-{i}"
    nbformat.write(nb, path)


def skeleton_notebook(path: Path, title: str) -> None:
    """The shape of every book notebook: parameters cell, imports, profile validated and printed."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        nbformat.v4.new_markdown_cell(f"# {title}"),
        nbformat.v4.new_code_cell('profile: str = "cpu"  # profile\nrun_dir: str = ""  # run dir\n'
                                  'overrides: dict = {}  # overrides', metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("from visionclip.config import load_profile"),
        nbformat.v4.new_code_cell("P = load_profile(profile, overrides)\nprint(repr(P.name), P.synth)"),
    ]
    for i, c in enumerate(nb.cells):
        c["id"] = f"cell-{i}"
    nbformat.write(nb, path)


def outputs_text(path: Path) -> str:
    nb = nbformat.read(path, as_version=4)
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))


def test_notebooks_are_parameterised_and_committed_without_outputs():
    found = pipeline.discover_notebooks(NOTEBOOKS)
    assert [p.name[:2] for p in found] == sorted(p.name[:2] for p in found)
    assert {"01", "02", "03", "04", "05"} <= {p.name[:2] for p in found}
    for path in found:
        nb = nbformat.read(path, as_version=4)
        assert nb.metadata.kernelspec.name == "python3", path.name
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert "parameters" in code[0].metadata.get("tags", []), f"{path.name}: first code cell not tagged"
        for line in code[0].source.splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            assert ":" in line.split("=")[0] and "#" in line, f"{path.name}: untyped or undocumented: {line}"
        assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), \
            f"{path.name} is committed with outputs"


def test_selection_only_and_skip_ablations():
    stems = [p.stem for p in pipeline.discover_notebooks(NOTEBOOKS, skip_ablations=True)]
    assert pipeline.ABLATIONS not in stems
    assert [p.stem for p in pipeline.discover_notebooks(NOTEBOOKS, only=["02"])] == ["02_pretraining"]
    with pytest.raises(ConfigError, match="--only.*99"):
        pipeline.discover_notebooks(NOTEBOOKS, only=["99"])


def test_runs_notebooks_in_order_atomically_with_parameters_and_kernel_env(tmp_path, tiny_profile, capsys):
    nb_dir = tmp_path / "notebooks"
    nb_dir.mkdir()
    skeleton_notebook(nb_dir / "01_data_exploration.ipynb", "Data")
    env_probe_notebook(nb_dir / "02_probe.ipynb")
    run_dir = tmp_path / "run"

    executed = pipeline.run_notebooks(str(tiny_profile), run_dir, {"train.epochs": 3},
                                      notebook_dir=nb_dir)

    assert [p.name for p in executed] == ["01_data_exploration.ipynb", "02_probe.ipynb"]
    # only final names in the output directory: no temporary or failed leftovers; the provenance record
    assert sorted(p.name for p in (run_dir / "notebooks").iterdir()) == sorted(
        [p.name for p in executed] + ["provenance.json"])
    record = json.loads((run_dir / "notebooks" / "provenance.json").read_text())
    assert [r["notebook"] for r in record["notebooks"]] == ["01_data_exploration", "02_probe"]
    assert all(r["seconds"] > 0 and r["peak_rss_mib"] > 0 for r in record["notebooks"])
    probe = outputs_text(executed[1])
    assert "tiny 20 3.0" in probe                      # profile file + dotted override reached the kernel
    assert "1 1 module://matplotlib_inline.backend_inline" in probe
    meta = json.loads(executed[1].read_text())["metadata"]["papermill"]["parameters"]
    assert meta == {"profile": str(tiny_profile), "run_dir": str(run_dir.resolve()),
                    "overrides": {"train.epochs": 3}}
    assert "'tiny'" in outputs_text(executed[0])        # the skeleton validated and printed the profile
    log = capsys.readouterr().out
    assert "[1/2] 01_data_exploration: running" in log and "[2/2] 02_probe: done in" in log

    # --resume skips what is up to date, and re-runs a notebook whose source changed
    before = executed[0].stat().st_mtime_ns
    os.utime(nb_dir / "02_probe.ipynb")
    pipeline.run_notebooks(str(tiny_profile), run_dir, {"train.epochs": 3}, notebook_dir=nb_dir, resume=True)
    log = capsys.readouterr().out
    assert "01_data_exploration: up to date, skipped" in log and "02_probe: done in" in log
    assert executed[0].stat().st_mtime_ns == before


def test_wrong_type_parameter_fails_before_any_work(tmp_path, tiny_profile):
    run_dir = tmp_path / "run"
    with pytest.raises(ConfigError, match=r"train.epochs: expected a number, got 'two'"):
        pipeline.run_notebooks(str(tiny_profile), run_dir, {"train.epochs": "two"})
    assert not run_dir.exists()
    assert cli.main(["book", "--profile", str(tiny_profile), "--run-dir", str(run_dir),
                          "-p", "train.batch_size=1", "--no-book"]) == 2
    assert not run_dir.exists()


def test_wrong_type_given_to_papermill_directly_stops_in_the_notebook(tmp_path, tiny_profile):
    """papermill checks no type: the skeleton's load_profile does, and the failure keeps no final file."""
    source = NOTEBOOKS / "02_pretraining.ipynb"
    executed = tmp_path / "notebooks" / source.name
    with pytest.raises(Exception, match=r"train.epochs: expected a number, got 'two'"):
        pipeline.execute_notebook(source, executed, {"profile": str(tiny_profile),
                                                     "overrides": {"train.epochs": "two"}})
    assert not executed.exists()
    assert executed.with_suffix(".failed.ipynb").exists()
    assert sorted(p.name for p in executed.parent.iterdir()) == ["02_pretraining.failed.ipynb"]


def test_book_staging_writes_placeholders_for_what_did_not_run(tmp_path):
    book = tmp_path / "book"
    book.mkdir()
    shutil.copy(pipeline.BOOK_DIR / "_toc.yml", book)
    run_dir = tmp_path / "run"
    (run_dir / "notebooks").mkdir(parents=True)
    shutil.copy(NOTEBOOKS / "01_data_exploration.ipynb", run_dir / "notebooks")
    placeholders = pipeline.stage_book_notebooks(run_dir, book, skipped=[pipeline.ABLATIONS])
    assert "01_data_exploration" not in placeholders and pipeline.ABLATIONS in placeholders
    staged = {p.stem for p in (book / "notebooks").glob("*.ipynb")}
    assert staged == set(pipeline.toc_notebooks(book))
    note = nbformat.read(book / "notebooks" / f"{pipeline.ABLATIONS}.ipynb", as_version=4).cells[0].source
    assert "--skip-ablations" in note


def test_a_failing_notebook_names_itself(tmp_path, tiny_profile):
    nb_dir = tmp_path / "notebooks"
    nb_dir.mkdir()
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell("raise RuntimeError('boom')")]
    nb.cells[0]["id"] = "cell-0"
    nbformat.write(nb, nb_dir / "01_fails.ipynb")
    with pytest.raises(VisionCLIPError, match="01_fails.ipynb failed"):
        pipeline.run_notebooks(str(tiny_profile), tmp_path / "run", notebook_dir=nb_dir)
    assert [p.name for p in (tmp_path / "run" / "notebooks").iterdir()] == ["01_fails.failed.ipynb"]


# ----------------------------------------------------------------------------- browser check

def _load_browser_check():
    import importlib.util

    spec = importlib.util.spec_from_file_location("browser_check", Path(__file__).with_name("browser_check.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_browser_check_says_skipped_without_chromium_unless_required(monkeypatch, capsys, tmp_path):
    bc = _load_browser_check()
    monkeypatch.setattr(bc, "find_chromium", lambda: (None, None))
    monkeypatch.delenv(bc.REQUIRED_ENV, raising=False)
    assert bc.check(tmp_path, tmp_path / "shots") == 0
    assert "browser check: skipped (chromium not installed)" in capsys.readouterr().out
    monkeypatch.setenv(bc.REQUIRED_ENV, "required")
    assert bc.check(tmp_path, tmp_path / "shots") == 1


def test_browser_check_finds_broken_images_and_tracebacks(tmp_path, capsys):
    bc = _load_browser_check()
    if None in bc.find_chromium():
        pytest.skip("chromium / chromedriver not installed (.ci/run installs them)")
    html = tmp_path / "html"
    html.mkdir()
    from PIL import Image

    Image.new("RGB", (4, 4), "red").save(html / "ok.png")
    (html / "good.html").write_text('<main><p>fine</p><figure><img src="ok.png"></figure></main>')
    (html / "bad.html").write_text(
        '<main><img src="missing.png"><div class="cell_output"><pre>Traceback (most recent call last):\n'
        '  File "x.py", line 1\nValueError: boom</pre></div></main>')
    assert bc.check(html, tmp_path / "shots") == 1
    out = capsys.readouterr().out
    assert "good.html: ok" in out
    assert "broken image: missing.png" in out and 'page shows "Traceback' in out
    assert "resource not served: 404 /missing.png" in out
    assert sorted(p.name for p in (tmp_path / "shots").iterdir()) == ["bad.png", "good.png"]
