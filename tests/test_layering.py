"""The package's import layering (tests/layering.py against ARCHITECTURE.md's `## Layers`), and proof that
the checker fails where it should: each planted violation is caught, on a small synthetic package written
here (independent of the real package's current layout) and on a copy of the real package."""

from __future__ import annotations

import shutil
import sys
import textwrap
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import layering  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "visionclip"
ARCHITECTURE = REPO / "ARCHITECTURE.md"


def test_package_respects_layers():
    violations = layering.check(PACKAGE, layering.read_layers(ARCHITECTURE))
    assert violations == [], f"{len(violations)} layering violation(s):\n" + "\n".join(violations)


# --------------------------------------------------------------------------- synthetic package

SYNTH_LAYERS = """
1 base      errors
2 data      data
3 training  training
3 eval      eval
4 cli       cli
"""

SYNTH_FILES = {
    "pkg/__init__.py": "from . import errors\n",
    "pkg/errors.py": "class DataError(Exception):\n    pass\n",
    "pkg/data/__init__.py": "from . import records\n",
    "pkg/data/records.py": "from ..errors import DataError\n\nRECORD = 1\n",
    "pkg/data/readers.py": "from .records import RECORD\n",
    "pkg/training/__init__.py": "",
    "pkg/training/loop.py": "from ..data import records\n\n\ndef train():\n    return records.RECORD\n",
    "pkg/eval/embed.py": "import pkg.data.readers\n",          # pkg/eval is a namespace package
    "pkg/cli.py": "from .training.loop import train\nfrom .eval import embed\n\n\ndef main():\n    train()\n",
}


@pytest.fixture
def synth(tmp_path):
    for rel, text in SYNTH_FILES.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path / "pkg"


def synth_layers():
    return layering.parse_layers(SYNTH_LAYERS)


def plant(path: Path, text: str) -> int:
    """Append text to path; the line number of its first line."""
    old = path.read_text()
    if old and not old.endswith("\n"):
        old += "\n"
    path.write_text(old + textwrap.dedent(text))
    return old.count("\n") + 1


def has(violations, *parts):
    return any(all(p in v for p in parts) for v in violations)


def test_synthetic_package_is_clean(synth):
    assert layering.check(synth, synth_layers()) == []


def test_import_graph_resolves_relative_imports(synth):
    modules, edges = layering.import_graph(synth)
    assert modules == {"pkg", "pkg.errors", "pkg.data", "pkg.data.records", "pkg.data.readers",
                       "pkg.training", "pkg.training.loop", "pkg.eval.embed", "pkg.cli"}
    assert {(s, d) for s, d, _, _ in edges} == {
        ("pkg", "pkg.errors"),                      # `from . import errors` in the top __init__
        ("pkg.data", "pkg.data.records"),           # `from . import records` in a package __init__
        ("pkg.data.records", "pkg.errors"),         # `from ..errors import DataError`: a name, so the module
        ("pkg.data.readers", "pkg.data.records"),   # `from .records import RECORD`
        ("pkg.training.loop", "pkg.data.records"),  # `from ..data import records`: the submodule, not pkg.data
        ("pkg.eval.embed", "pkg.data.readers"),     # `import pkg.data.readers`: the longest module prefix
        ("pkg.cli", "pkg.training.loop"),
        ("pkg.cli", "pkg.eval.embed"),
    }
    assert ("pkg.training.loop", "pkg.data.records", "pkg/training/loop.py", 1) in edges


def test_planted_upward_import(synth):
    line = plant(synth / "data/records.py", "from ..cli import main\n")
    violations = layering.check(synth, synth_layers())
    assert has(violations, f"pkg/data/records.py:{line}:", "pkg.data.records", "pkg.cli", "runs up a layer"), violations


def test_planted_sibling_import(synth):
    line = plant(synth / "eval/embed.py", "from ..training.loop import train\n")
    violations = layering.check(synth, synth_layers())
    assert has(violations, f"pkg/eval/embed.py:{line}:", "pkg.eval.embed", "pkg.training.loop", "sibling"), violations
    assert len(violations) == 1, violations


def test_planted_cycle_within_one_layer(synth):
    line = plant(synth / "data/records.py", "from . import readers\n")
    violations = layering.check(synth, synth_layers())
    assert len(violations) == 1, violations        # same layer: only the cycle is wrong
    assert has(violations, "cycle", "pkg.data.records", "pkg.data.readers",
               f"pkg/data/records.py:{line}", "pkg/data/readers.py:1"), violations
    summary = layering.summary(synth)
    assert summary["cycles"] == 1 and summary["cycle_members"] == [["pkg.data.readers", "pkg.data.records"]]


def test_lazy_import_inside_a_function_is_detected(synth):
    line = plant(synth / "data/records.py", """
        def later():
            from ..training import loop  # lazy
            return loop
        """)
    violations = layering.check(synth, synth_layers())
    assert has(violations, f"pkg/data/records.py:{line + 2}:", "pkg.data.records", "pkg.training.loop",
               "runs up a layer"), violations


def test_dynamic_import_with_constant_name_is_detected(synth):
    line = plant(synth / "data/readers.py", """
        import importlib

        def later():
            return importlib.import_module("pkg.cli"), __import__("pkg.eval.embed", fromlist=["x"])
        """)
    violations = layering.check(synth, synth_layers())
    assert has(violations, f"pkg/data/readers.py:{line + 4}:", "pkg.data.readers", "pkg.cli"), violations
    assert has(violations, f"pkg/data/readers.py:{line + 4}:", "pkg.data.readers", "pkg.eval.embed"), violations


def test_module_outside_every_layer_is_reported(synth):
    (synth / "stray.py").write_text("from .errors import DataError\n")
    violations = layering.check(synth, synth_layers())
    assert violations == ["pkg/stray.py:1: pkg.stray belongs to no layer "
                          "(add a unit for it to ARCHITECTURE.md's '## Layers')"]


def test_longest_unit_prefix_wins_and_top_package_is_base():
    layers = layering.parse_layers("1 base errors\n2 data data\n3 io data.readers\n")
    assert layering.layer_for("pkg.data.readers.xls", "pkg", layers).name == "io"
    assert layering.layer_for("pkg.data.records", "pkg", layers).name == "data"
    assert layering.layer_for("pkg.datasets", "pkg", layers) is None     # a unit is a module prefix, not text
    assert layering.layer_for("pkg", "pkg", layers).name == "base"


def test_main_exits_1_on_violations_and_0_when_clean(synth, tmp_path, capsys):
    md = tmp_path / "ARCH.md"
    md.write_text(f"# Arch\n\n## Layers\n\n```\n{SYNTH_LAYERS}```\n")
    assert layering.main([str(synth), str(md)]) == 0
    clean = capsys.readouterr().out
    assert "modules: 9\ndistinct import edges: 8\ncycles: 0\nviolations: 0" in clean
    plant(synth / "data/records.py", "from ..cli import main\n")      # runs up, and closes a cycle via cli
    assert layering.main([str(synth), str(md)]) == 1
    dirty = capsys.readouterr().out
    assert "cycles: 1" in dirty and "violations: 2" in dirty and "runs up a layer" in dirty


# --------------------------------------------------------------------------- the real package, copied

def copy_package(tmp_path) -> Path:
    dst = tmp_path / "visionclip"
    shutil.copytree(PACKAGE, dst, ignore=shutil.ignore_patterns("__pycache__"))
    return dst


def test_planted_upward_import_in_a_copy_of_the_real_package(tmp_path):
    copy = copy_package(tmp_path)
    target = copy / "data" / "records.py"
    if target.exists():
        line = plant(target, "from ..cli import main\n")
    else:                                   # the refactor moved it: plant into any module of the data layer
        candidates = sorted((copy / "data").rglob("*.py")) if (copy / "data").is_dir() else []
        if not candidates:
            pytest.skip("the copied package has no data/ modules")
        target = candidates[0]
        line = plant(target, "from visionclip.cli import main\n")
    src, _ = layering.module_name(copy, target)
    rel = target.relative_to(tmp_path).as_posix()
    violations = layering.check(copy, layering.read_layers(ARCHITECTURE))
    assert has(violations, f"{rel}:{line}:", src, "visionclip.cli", "runs up a layer"), violations


# --------------------------------------------------------------------------- read_layers

def test_read_layers_parses_the_real_block():
    layers = layering.read_layers(ARCHITECTURE)
    by_name = {layer.name: layer for layer in layers}
    assert [layer.name for layer in layers] == ["base", "data", "model", "synth", "training", "eval", "report", "cli"]
    assert {name: layer.rank for name, layer in by_name.items()} == {
        "base": 1, "data": 2, "model": 3, "synth": 3, "training": 4, "eval": 4, "report": 5, "cli": 6}
    assert by_name["base"].units == ("errors", "io", "seeding", "progress", "schema", "config", "paths")
    assert by_name["cli"].units == ("cli", "__main__")


@pytest.mark.parametrize("text, match", [
    ("# Arch\n\n## Modules\n\n```\n1 base errors\n```\n", "no '## Layers' section"),
    ("# Arch\n\n## Layers\nprose only\n\n## Next\n\n```\n1 base errors\n```\n", "no fenced"),
    ("# Arch\n\n## Layers\n\n```\n1 base errors\n", "not closed"),
    ("## Layers\n```\nbase errors\n```\n", "expected '<rank> <layer> <unit> ...'"),
    ("## Layers\n```\n1 base errors\n2 data errors\n```\n", "already belongs"),
    ("## Layers\n```\n```\n", "no layers"),
], ids=["no-section", "no-fence", "unclosed-fence", "bad-line", "unit-twice", "empty-block"])
def test_read_layers_rejects_bad_sections(tmp_path, text, match):
    md = tmp_path / "ARCH.md"
    md.write_text(text)
    with pytest.raises(ValueError, match=match):
        layering.read_layers(md)
