"""The package's import layering (tests/layering.py against ARCHITECTURE.md's `## Layers`), and proof that
the checker fails where it should: each planted violation is caught, on a small synthetic package written
here (independent of the real package's current layout) and on a copy of the real package. The same goes
for the "only there" rules (images opened only in data.datasets, encode_text called only in eval.embed and
model, run-directory names spelled only in paths): a planted line is caught, the allowed uses are not."""

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
1 base      errors paths
2 data      data
3 model     model
4 training  training
4 eval      eval
5 cli       cli
"""

SYNTH_FILES = {
    "pkg/__init__.py": "from . import errors\n",
    "pkg/errors.py": "class DataError(Exception):\n    pass\n",
    "pkg/data/__init__.py": "from . import records\n",
    "pkg/data/records.py": "from ..errors import DataError\n\nRECORD = 1\n",
    "pkg/data/readers.py": "from .records import RECORD\n",
    "pkg/training/__init__.py": "",
    "pkg/training/loop.py": "from ..data import records\n\n\ndef train():\n    return records.RECORD\n",
    "pkg/eval/embed.py": (                                       # pkg/eval is a namespace package
        "import pkg.data.readers\n\n\n"
        "def encode_texts(model, batches):\n"
        "    return [model.encode_text(ids, mask) for ids, mask in batches]\n"),   # the one text encoder
    "pkg/cli.py": "from .training.loop import train\nfrom .eval import embed\n\n\ndef main():\n    train()\n",
    # the homes of the three "only here" rules; they import nothing of the package (the import graph is unchanged)
    "pkg/data/datasets.py": (
        "from PIL import Image\n\n\n"
        "def load_image(path):\n"
        "    with Image.open(path) as im:\n"
        "        return im.convert('RGB')\n"),
    "pkg/model.py": (
        "class Model:\n"
        "    def encode_text(self, ids, mask):\n"
        "        return ids\n\n"
        "    def forward(self, images, ids, mask):\n"
        "        return images, self.encode_text(ids, mask)\n"),
    "pkg/paths.py": (
        "from pathlib import Path\n\n\n"
        "class RunLayout:\n"
        "    train_log = 'metrics/train.jsonl'\n\n"
        "    def __init__(self, run_dir):\n"
        "        self.root = Path(run_dir)\n"
        "        self.model = self.root / 'model'\n\n"
        "    def eval_dir(self, variant):\n"
        "        return self.root / f'eval/{variant}'\n"),
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
                       "pkg.training", "pkg.training.loop", "pkg.eval.embed", "pkg.cli",
                       "pkg.data.datasets", "pkg.model", "pkg.paths"}
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
    assert "modules: 12\ndistinct import edges: 8\ncycles: 0\nviolations: 0" in clean
    plant(synth / "data/records.py", "from ..cli import main\n")      # runs up, and closes a cycle via cli
    assert layering.main([str(synth), str(md)]) == 1
    dirty = capsys.readouterr().out
    assert "cycles: 1" in dirty and "violations: 2" in dirty and "runs up a layer" in dirty


# --------------------------------------------------------------------------- "only in that module" rules

def only(rule, synth):
    """The violations of one rule on the synthetic package."""
    return layering.check(synth, synth_layers(), rules=[rule])


def test_only_here_rules_are_registered_and_clean_on_the_synthetic_package(synth):
    rules = (layering.rule_images_opened_only_in_datasets, layering.rule_texts_encoded_by_one_function,
             layering.rule_run_names_only_in_paths)
    assert all(rule in layering.RULES for rule in rules)
    for rule in rules:                      # the allowed uses in data/datasets.py, model.py, eval/embed.py, paths.py
        assert only(rule, synth) == [], rule.__name__


# images

def test_planted_image_open_is_reported_with_file_line_and_module(synth):
    line = plant(synth / "training/loop.py", """
        from PIL import Image


        def peek(path):
            return Image.open(path).size
        """)
    violations = layering.check(synth, synth_layers())
    assert violations == [f"pkg/training/loop.py:{line + 5}: pkg.training.loop opens an image (Image.open); "
                          "images are decoded only in pkg.data.datasets (load_image)"]


@pytest.mark.parametrize("header, call", [
    ("import PIL.Image", "PIL.Image.open(p)"),
    ("from PIL import Image as PILImage", "PILImage.open(p)"),
    ("import PIL.Image as PI", "PI.open(p)"),
    ("from PIL.Image import open as pil_open", "pil_open(p)"),
    ("import imageio", "imageio.imread(p)"),
    ("import imageio.v3 as iio", "iio.imread(p)"),
    ("from imageio import imread", "imread(p)"),
    ("import cv2", "cv2.imread(p)"),
    ("import matplotlib.pyplot as plt", "plt.imread(p)"),
    ("import matplotlib.pyplot", "matplotlib.pyplot.imread(p)"),
    ("import skimage.io", "skimage.io.imread(p)"),
])
def test_planted_image_readers_are_reported(synth, header, call):
    line = plant(synth / "eval/embed.py", f"{header}\n\n\ndef peek(p):\n    return {call}\n")
    violations = only(layering.rule_images_opened_only_in_datasets, synth)
    assert len(violations) == 1 and has(violations, f"pkg/eval/embed.py:{line + 4}:", "pkg.eval.embed",
                                        f"opens an image ({call[:-3]})", "pkg.data.datasets"), violations


def test_plain_open_and_other_open_methods_are_not_image_opening(synth):
    plant(synth / "training/loop.py", """
        import gzip


        def read(path, archive):
            with open(path) as f, gzip.open(path) as g, archive.open("x") as h:
                return f.read(), g.read(), h.read()
        """)
    assert only(layering.rule_images_opened_only_in_datasets, synth) == []


def test_image_openers_constant_decides_the_allowed_module(synth, monkeypatch):
    monkeypatch.setattr(layering, "IMAGE_OPENERS", ("cli",))
    violations = only(layering.rule_images_opened_only_in_datasets, synth)
    assert violations == ["pkg/data/datasets.py:5: pkg.data.datasets opens an image (Image.open); "
                          "images are decoded only in pkg.cli (load_image)"]


# text encoding

def test_planted_encode_text_is_reported_with_file_line_and_module(synth):
    line = plant(synth / "training/loop.py", """
        def zero_shot(model, ids, mask):
            return model.encode_text(ids, mask)
        """)
    violations = layering.check(synth, synth_layers())
    assert violations == [f"pkg/training/loop.py:{line + 2}: pkg.training.loop encodes text (encode_text) "
                          "outside pkg.eval.embed (encode_texts)"]


def test_defining_encode_text_elsewhere_is_not_a_call(synth):
    plant(synth / "training/loop.py", """
        class Wrapper:
            def encode_text(self, ids, mask):
                return ids
        """)
    assert only(layering.rule_texts_encoded_by_one_function, synth) == []


def test_encode_text_in_eval_embed_and_model_is_allowed_and_the_constant_decides(synth, monkeypatch):
    assert only(layering.rule_texts_encoded_by_one_function, synth) == []
    monkeypatch.setattr(layering, "TEXT_ENCODERS", ("eval.embed",))
    violations = only(layering.rule_texts_encoded_by_one_function, synth)
    assert violations == ["pkg/model.py:6: pkg.model encodes text (encode_text) outside pkg.eval.embed (encode_texts)"]


# run-directory names

def run_name_violation(rel, line, module, text, home="pkg.paths"):
    return f"{rel}:{line}: {module} spells the run-directory name {text!r}; name it in {home} (RunLayout)"


@pytest.mark.parametrize("code, text", [
    ('def f(run_dir):\n    return run_dir / "checkpoints"', "checkpoints"),              # (a) right operand
    ('def f(name):\n    return "runs" / name', "runs"),                                  # (a) left operand
    ('def f(run_dir):\n    return run_dir / "eval/dev"', "eval/dev"),                    # (a) and (b): once
    ('def f(run_dir):\n    return run_dir / "metrics/"', "metrics/"),                    # (a): first component
    ('class Task:\n    train_log = "metrics/train.jsonl"', "metrics/train.jsonl"),       # (b) class attribute
    ('def f(log="metrics/val.jsonl"):\n    return log', "metrics/val.jsonl"),            # (b) default
    ('def f(g):\n    return g("embeddings/x.npz")', "embeddings/x.npz"),                 # (b) function argument
    ('def f():\n    return Path("runs")', "runs"),                                        # (c) Path
    ('def f():\n    return pathlib.Path("ablations")', "ablations"),                      # (c) pathlib.Path
    ('def f(d):\n    return os.path.join(d, "model")', "model"),                          # (c) os.path.join
    ('def f(d):\n    return d.joinpath("result.json")', "result.json"),                   # (c) joinpath
    ('def f(d):\n    return Path("metrics/train.jsonl")', "metrics/train.jsonl"),         # (b) and (c): once
    ('def f(run_dir, v):\n    return run_dir / f"eval/{v}"', "eval/{v}"),                 # f-string at the start
    ('def f(v):\n    return f"checkpoints/step_{v:06d}.pt"', "checkpoints/step_{v:06d}.pt"),
], ids=["div-right", "div-left", "div-nested", "div-trailing-slash", "class-attribute", "default", "argument",
        "Path", "pathlib.Path", "os.path.join", "joinpath", "Path-nested", "fstring-div", "fstring"])
def test_planted_run_directory_name_is_reported(synth, code, text):
    line = plant(synth / "training/loop.py", f"import os\nimport pathlib\nfrom pathlib import Path\n\n\n{code}\n")
    at = line + 5 + next(i for i, l in enumerate(code.splitlines()) if text.split("{")[0] in l)
    violations = layering.check(synth, synth_layers())
    assert violations == [run_name_violation("pkg/training/loop.py", at, "pkg.training.loop", text)]


def test_run_names_that_are_not_path_components_are_not_flagged(synth):
    plant(synth / "eval/embed.py", '''
        from pathlib import Path


        def report(cfg, run_dir, x, model, name):
            """Writes run_dir/model and metrics/train.jsonl; see "eval/dev"."""
            "a bare string statement: eval/seen"
            row = {"model": 1, "eval": "supervised", "kind": "model"}
            row["model"] = cfg.get("model")
            if x == "eval" or x in ("model", "runs") or hasattr(model, "eval"):
                model.eval()
            notes = run_dir / "notes" / name / f"{name}.json"
            label = f"{name}/eval/{x}: model/metrics"
            where = f"{run_dir}/eval"
            url = "https://example.org/eval/x"
            half = "metrics/"
            return row, notes, label, where, url, half, Path(run_dir, name)
        ''')
    assert layering.check(synth, synth_layers()) == []


def test_run_names_in_paths_are_allowed_and_the_constant_decides(synth, monkeypatch):
    assert only(layering.rule_run_names_only_in_paths, synth) == []
    monkeypatch.setattr(layering, "RUN_NAME_SPELLERS", ("cli",))
    violations = only(layering.rule_run_names_only_in_paths, synth)
    assert violations == [run_name_violation("pkg/paths.py", 5, "pkg.paths", "metrics/train.jsonl", "pkg.cli"),
                          run_name_violation("pkg/paths.py", 9, "pkg.paths", "model", "pkg.cli"),
                          run_name_violation("pkg/paths.py", 12, "pkg.paths", "eval/{variant}", "pkg.cli")]


def test_dataset_layouts_are_not_run_names(synth):
    plant(synth / "data/readers.py", '''
        def roots(root):
            return (root / "data" / "corpus", root / "benchmarks" / "fives", root / "Fundus",
                    root / "annotations.csv", "data/benchmarks/test")
        ''')
    assert layering.check(synth, synth_layers()) == []


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
    assert by_name["base"].units == ("errors", "io", "seeding", "progress", "schema", "config", "paths", "preempt",
                                     "runlock")
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
