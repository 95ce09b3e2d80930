"""Static import-layering checker for the `visionclip/` package.

Stdlib only: it parses the package with `ast` and never imports it.

    python tests/layering.py [package_dir] [architecture_md]

prints the package's import summary and every violation of the layers declared
in ARCHITECTURE.md's `## Layers` block, and exits 1 when there is any.

`check(package_dir, layers)` runs the rules in `RULES`. A rule is a function
`rule(ctx: Context) -> list[str]`; the context holds every module's parsed AST
and source (`ctx.modules`), the resolved import edges (`ctx.edges`) and the
layers, so further rules (e.g. "this call only in that file") can be appended
to `RULES` or passed to `check(..., rules=...)`.

Besides the layering rules, three "only there" rules, each with its allowed module(s) in a constant
(units relative to the package, like the layers' units):

- images are opened (Image.open, *.imread) only in IMAGE_OPENERS (data.datasets: load_image);
- `.encode_text(...)` is called only in TEXT_ENCODERS (eval.embed: encode_texts; and model, which defines it);
- run-directory names (RUN_NAMES) are spelled as path components only in RUN_NAME_SPELLERS (paths: RunLayout).
"""

from __future__ import annotations

import ast
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

REPO = Path(__file__).resolve().parent.parent
DEFAULT_PACKAGE = REPO / "visionclip"
DEFAULT_ARCHITECTURE = REPO / "ARCHITECTURE.md"


# --------------------------------------------------------------------------- modules and imports

@dataclass(frozen=True)
class Module:
    name: str            # dotted: visionclip.data.readers; a package's __init__.py is visionclip.data
    path: Path           # the file
    rel: str             # the file relative to the package's parent, for messages: visionclip/data/readers.py
    is_package: bool     # an __init__.py
    source: str
    tree: ast.Module


@dataclass(frozen=True)
class Edge:
    src: str
    dst: str
    rel: str             # the importing file, as in Module.rel
    lineno: int


def module_name(package_dir: Path, path: Path) -> tuple[str, bool]:
    parts = (package_dir.name,) + path.relative_to(package_dir).with_suffix("").parts
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


_TREES: dict[str, ast.Module] = {}


def _parse(source: str) -> ast.Module:
    """ast.parse, cached by source text (a copy of the package parses once). Rules must treat the
    trees as read-only: they are shared between calls."""
    tree = _TREES.get(source)
    if tree is None:
        tree = _TREES[source] = ast.parse(source)
    return tree


def load_modules(package_dir: Path) -> dict[str, Module]:
    """Every *.py under package_dir (skipping __pycache__), parsed."""
    package_dir = Path(package_dir)
    modules: dict[str, Module] = {}
    for path in sorted(package_dir.rglob("*.py")):
        if "__pycache__" in path.relative_to(package_dir).parts:
            continue
        name, is_package = module_name(package_dir, path)
        source = path.read_text(encoding="utf-8")
        rel = path.relative_to(package_dir.parent).as_posix()
        try:
            tree = _parse(source)
        except SyntaxError as e:
            raise ValueError(f"{rel}:{e.lineno}: cannot parse: {e.msg}") from e
        modules[name] = Module(name, path, rel, is_package, source, tree)
    return modules


def _longest_module_prefix(dotted: str, modules) -> str | None:
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        candidate = ".".join(parts[:i])
        if candidate in modules:
            return candidate
    return None


def _relative_base(module: Module, level: int) -> str | None:
    """The package a `from .(level dots) import` starts from; None when it climbs out of the package."""
    package = module.name if module.is_package else module.name.rpartition(".")[0]
    parts = package.split(".") if package else []
    if level - 1 > len(parts) - 1:          # would climb above the top-level package
        return None
    return ".".join(parts[: len(parts) - (level - 1)])


def _import_targets(module: Module, node: ast.AST, modules) -> list[str]:
    """Modules of the package that this node imports (may be empty)."""
    targets: list[str] = []
    if isinstance(node, ast.Import):
        for alias in node.names:
            t = _longest_module_prefix(alias.name, modules)
            if t:
                targets.append(t)
    elif isinstance(node, ast.ImportFrom):
        if node.level:
            base = _relative_base(module, node.level)
            if base is None:
                return []
            origin = f"{base}.{node.module}" if node.module else base
        else:
            origin = node.module or ""
        for alias in node.names:
            sub = f"{origin}.{alias.name}"
            if alias.name != "*" and sub in modules:
                targets.append(sub)
            else:
                t = _longest_module_prefix(origin, modules)
                if t:
                    targets.append(t)
    elif isinstance(node, ast.Call):
        func = node.func
        fname = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
        if fname in ("import_module", "__import__") and node.args:
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                name = arg.value
                if name.startswith(".") and fname == "import_module":
                    # import_module(".x", package="visionclip.data")
                    pkg = next((k.value for k in node.keywords if k.arg == "package"), None)
                    if pkg is None and len(node.args) > 1:
                        pkg = node.args[1]
                    if not (isinstance(pkg, ast.Constant) and isinstance(pkg.value, str)):
                        return []
                    level = len(name) - len(name.lstrip("."))
                    base = pkg.value.split(".")
                    if level - 1 >= len(base):
                        return []
                    rest = name[level:]
                    name = ".".join(base[: len(base) - (level - 1)] + ([rest] if rest else []))
                t = _longest_module_prefix(name, modules)
                if t:
                    targets.append(t)
    return targets


def module_edges(modules: dict[str, Module]) -> list[Edge]:
    """Every import of a package module by a package module, one per (file, line, target), self-imports dropped.
    All nodes are walked: imports inside functions (lazy imports) are dependencies too."""
    edges: set[Edge] = set()
    for module in modules.values():
        for node in _nodes(module.tree):
            for dst in _import_targets(module, node, modules):
                if dst != module.name:
                    edges.add(Edge(module.name, dst, module.rel, node.lineno))
    return sorted(edges, key=lambda e: (e.rel, e.lineno, e.dst))


def import_graph(package_dir: Path) -> tuple[set[str], set[tuple[str, str, str, int]]]:
    """(module names, {(src, dst, file, lineno)}) for the package at package_dir."""
    modules = load_modules(package_dir)
    return set(modules), {(e.src, e.dst, e.rel, e.lineno) for e in module_edges(modules)}


def strongly_connected(nodes: Iterable[str], pairs: Iterable[tuple[str, str]]) -> list[list[str]]:
    """Tarjan's SCCs (iterative), each sorted; components listed in sorted order."""
    graph: dict[str, list[str]] = {n: [] for n in nodes}
    for a, b in pairs:
        graph.setdefault(a, []).append(b)
        graph.setdefault(b, [])
    for n in graph:
        graph[n] = sorted(set(graph[n]))
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, 0)]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, i = work[-1]
            succ = graph[node]
            if i < len(succ):
                work[-1] = (node, i + 1)
                nxt = succ[i]
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, 0))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == node:
                        break
                out.append(sorted(comp))
    return sorted(out)


def cycles(modules: Iterable[str], edges: Iterable[Edge]) -> list[list[str]]:
    """Strongly connected components of more than one module."""
    return [c for c in strongly_connected(modules, {(e.src, e.dst) for e in edges}) if len(c) > 1]


# --------------------------------------------------------------------------- layers

@dataclass(frozen=True)
class Layer:
    rank: int
    name: str
    units: tuple[str, ...]   # relative to the package: "data", "cli", "__main__"


_LAYER_LINE = re.compile(r"^\s*(\d+)\s+(\S+)\s+(\S.*?)\s*$")


def parse_layers(text: str, where: str = "layers block") -> list[Layer]:
    """`<rank> <name> <unit> <unit> ...` lines; blank lines and `#` comments skipped."""
    layers: list[Layer] = []
    unit_owner: dict[str, str] = {}
    names: set[str] = set()
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = _LAYER_LINE.match(line)
        if not m:
            raise ValueError(f"{where}, line {n}: expected '<rank> <layer> <unit> ...', got {line.strip()!r}")
        rank, name, units = int(m.group(1)), m.group(2), tuple(m.group(3).split())
        if name in names:
            raise ValueError(f"{where}, line {n}: layer {name!r} declared twice")
        names.add(name)
        for unit in units:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*", unit):
                raise ValueError(f"{where}, line {n}: {unit!r} is not a dotted module name")
            if unit in unit_owner:
                raise ValueError(f"{where}, line {n}: unit {unit!r} already belongs to layer {unit_owner[unit]!r}")
            unit_owner[unit] = name
        layers.append(Layer(rank, name, units))
    if not layers:
        raise ValueError(f"{where}: no layers declared")
    return layers


def read_layers(architecture_md: Path) -> list[Layer]:
    """The layers declared in the first fenced block under `## Layers` in architecture_md."""
    architecture_md = Path(architecture_md)
    lines = architecture_md.read_text(encoding="utf-8").splitlines()
    start = next((i for i, l in enumerate(lines) if l.strip() == "## Layers"), None)
    if start is None:
        raise ValueError(f"{architecture_md}: no '## Layers' section")
    block: list[str] | None = None
    for line in lines[start + 1:]:
        if block is None:
            if line.strip().startswith("```"):
                block = []
            elif re.match(r"^#{1,2}\s", line):       # the next section began first
                break
        elif line.strip().startswith("```"):
            return parse_layers("\n".join(block), where=f"{architecture_md} '## Layers' block")
        else:
            block.append(line)
    if block is None:
        raise ValueError(f"{architecture_md}: the '## Layers' section has no fenced (```) block")
    raise ValueError(f"{architecture_md}: the '## Layers' section's fenced block is not closed")


# --------------------------------------------------------------------------- rules

@dataclass
class Context:
    package: str                      # the top-level package name
    package_dir: Path
    modules: dict[str, Module]        # name -> parsed module (AST and source available to rules)
    edges: list[Edge]
    layers: list[Layer]
    layer_of: dict[str, Layer | None] = field(default_factory=dict)

    def __post_init__(self):
        self.layer_of = {name: layer_for(name, self.package, self.layers) for name in self.modules}


def layer_for(module: str, package: str, layers: list[Layer]) -> Layer | None:
    """The layer of the longest unit prefix of module; the top-level package belongs to the lowest
    rank's first layer."""
    if module == package:
        return min(layers, key=lambda l: l.rank)      # min keeps the first of equal ranks
    best, best_len = None, -1
    for layer in layers:
        for unit in layer.units:
            full = f"{package}.{unit}"
            if (module == full or module.startswith(full + ".")) and len(full) > best_len:
                best, best_len = layer, len(full)
    return best


Rule = Callable[[Context], list[str]]


def rule_every_module_in_a_layer(ctx: Context) -> list[str]:
    return [f"{m.rel}:1: {m.name} belongs to no layer (add a unit for it to ARCHITECTURE.md's '## Layers')"
            for name, m in ctx.modules.items() if ctx.layer_of[name] is None]


def rule_imports_follow_layers(ctx: Context) -> list[str]:
    out = []
    for e in ctx.edges:
        a, b = ctx.layer_of.get(e.src), ctx.layer_of.get(e.dst)
        if a is None or b is None or a.name == b.name:
            continue                    # unlayered modules are reported by their own rule
        if b.rank > a.rank:
            out.append(f"{e.rel}:{e.lineno}: {e.src} (layer {a.name}, rank {a.rank}) imports {e.dst} "
                       f"(layer {b.name}, rank {b.rank}): runs up a layer")
        elif b.rank == a.rank:
            out.append(f"{e.rel}:{e.lineno}: {e.src} (layer {a.name}, rank {a.rank}) imports {e.dst} "
                       f"(layer {b.name}, rank {b.rank}): sibling layers must not import each other")
    return out


def rule_no_cycles(ctx: Context) -> list[str]:
    out = []
    for comp in cycles(ctx.modules, ctx.edges):
        members = set(comp)
        inside = [f"{e.rel}:{e.lineno} ({e.src} -> {e.dst})" for e in ctx.edges
                  if e.src in members and e.dst in members]
        out.append(f"import cycle among {len(comp)} modules: {', '.join(comp)}; imports: {'; '.join(inside)}")
    return out


# ---- "this call only in that module" rules. Each constant lists units relative to the package (as in
# ARCHITECTURE.md's layers: "data.datasets" is <pkg>.data.datasets, and covers its submodules, if any);
# the first one is the home the message names.

IMAGE_OPENERS: tuple[str, ...] = ("data.datasets",)     # modules that may decode an image file
IMAGE_OPENER_FUNCTION = "load_image"                    # what everyone else calls instead
IMAGE_READ_FUNCTIONS = frozenset({"imread"})            # imageio/cv2/plt/matplotlib.pyplot/skimage.io.imread

TEXT_ENCODERS: tuple[str, ...] = ("eval.embed", "model")  # modules that may call .encode_text(...)
TEXT_ENCODER_FUNCTION = "encode_texts"                   # what everyone else calls instead
TEXT_ENCODER_METHOD = "encode_text"

RUN_NAME_SPELLERS: tuple[str, ...] = ("paths",)          # modules that may spell run-directory names
RUN_LAYOUT = "RunLayout"                                 # what everyone else uses instead
RUN_NAMES = frozenset({                                  # first path components of a run directory's artifacts
    "runs", "model", "supervised", "checkpoints", "checkpoints_supervised", "metrics", "eval", "embeddings",
    "notebooks", "ablations", "profile.json", "result.json", "train.jsonl", "val.jsonl",
    "supervised_train.jsonl", "supervised_val.jsonl", "fewshot.json", "retrieval.json",
    "table.csv", "table.md", "table.json",
})
PATH_CONSTRUCTORS = frozenset({"Path", "PurePath", "PosixPath"})   # Path("runs"), pathlib.Path("runs")
PATH_JOIN_METHODS = frozenset({"joinpath"})                          # p.joinpath("model")


def _units_modules(ctx: Context, units: Iterable[str]) -> list[str]:
    return [f"{ctx.package}.{u}" for u in units]


def _is_in(module: str, allowed: Iterable[str]) -> bool:
    return any(module == a or module.startswith(a + ".") for a in allowed)


_NODES: dict[int, tuple[ast.AST, list[ast.AST]]] = {}


def _nodes(tree: ast.AST) -> list[ast.AST]:
    """ast.walk(tree) as a list, computed once per (shared, read-only) tree."""
    hit = _NODES.get(id(tree))
    if hit is None or hit[0] is not tree:
        hit = _NODES[id(tree)] = (tree, list(ast.walk(tree)))
    return hit[1]


def _calls(tree: ast.AST) -> list[ast.Call]:
    """The calls in tree, in source order."""
    return sorted((n for n in _nodes(tree) if isinstance(n, ast.Call)), key=lambda c: (c.lineno, c.col_offset))


def _pil_image_names(tree: ast.AST) -> tuple[set[str], set[str]]:
    """(names bound to the PIL.Image module, names bound to PIL.Image.open) in one module; `Image` always counts."""
    modules, openers = {"Image"}, set()
    for node in _nodes(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "PIL" and not node.level:
            modules.update(a.asname or a.name for a in node.names if a.name == "Image")
        elif isinstance(node, ast.ImportFrom) and node.module == "PIL.Image" and not node.level:
            openers.update(a.asname or a.name for a in node.names if a.name == "open")
        elif isinstance(node, ast.Import):
            modules.update(a.asname for a in node.names if a.name == "PIL.Image" and a.asname)
    return modules, openers


def _opens_image(call: ast.Call, image_modules: set[str], openers: set[str]) -> bool:
    f = call.func
    if isinstance(f, ast.Attribute):
        if f.attr in IMAGE_READ_FUNCTIONS:
            return True                                       # cv2.imread, imageio.v3.imread, plt.imread, ...
        if f.attr == "open":
            v = f.value                                       # Image.open, PIL.Image.open, <alias>.open
            return (isinstance(v, ast.Name) and v.id in image_modules) or (
                isinstance(v, ast.Attribute) and v.attr == "Image")
        return False
    if isinstance(f, ast.Name):
        return f.id in IMAGE_READ_FUNCTIONS or f.id in openers   # from imageio import imread; from PIL.Image import open
    return False


def rule_images_opened_only_in_datasets(ctx: Context) -> list[str]:
    allowed = _units_modules(ctx, IMAGE_OPENERS)
    out = []
    for name, m in ctx.modules.items():
        if _is_in(name, allowed):
            continue
        image_modules, openers = _pil_image_names(m.tree)
        for call in _calls(m.tree):
            if _opens_image(call, image_modules, openers):
                out.append(f"{m.rel}:{call.lineno}: {name} opens an image ({ast.unparse(call.func)}); images are "
                           f"decoded only in {' or '.join(allowed)} ({IMAGE_OPENER_FUNCTION})")
    return out


def rule_texts_encoded_by_one_function(ctx: Context) -> list[str]:
    allowed = _units_modules(ctx, TEXT_ENCODERS)
    out = []
    for name, m in ctx.modules.items():
        if _is_in(name, allowed):
            continue
        for call in _calls(m.tree):
            f = call.func
            if (isinstance(f, ast.Attribute) and f.attr == TEXT_ENCODER_METHOD) or (
                    isinstance(f, ast.Name) and f.id == TEXT_ENCODER_METHOD):
                out.append(f"{m.rel}:{call.lineno}: {name} encodes text ({TEXT_ENCODER_METHOD}) outside "
                           f"{allowed[0]} ({TEXT_ENCODER_FUNCTION})")
    return out


def _first_component(text: str) -> str:
    while text.startswith("./"):
        text = text[2:]
    return text.split("/", 1)[0]


def _names_run_path(node: ast.AST) -> bool:
    """A str constant whose first path component is a run-directory name: 'model', 'eval/dev', 'metrics/'."""
    return isinstance(node, ast.Constant) and isinstance(node.value, str) and _first_component(node.value) in RUN_NAMES


def _is_path_call(call: ast.Call) -> bool:
    f = call.func
    if isinstance(f, ast.Name):
        return f.id in PATH_CONSTRUCTORS
    if isinstance(f, ast.Attribute):
        if f.attr in PATH_CONSTRUCTORS or f.attr in PATH_JOIN_METHODS:
            return True                                       # pathlib.Path(...), p.joinpath(...)
        if f.attr == "join":                                  # os.path.join, posixpath.join, path.join
            v = f.value
            return (isinstance(v, ast.Attribute) and v.attr == "path") or (
                isinstance(v, ast.Name) and v.id in ("path", "posixpath", "ntpath"))
    return False


def _fstring_text(node: ast.JoinedStr) -> str:
    parts = []
    for v in node.values:
        if isinstance(v, ast.Constant):
            parts.append(str(v.value))
        elif isinstance(v, ast.FormattedValue):
            conversion = f"!{chr(v.conversion)}" if v.conversion != -1 else ""
            spec = f":{_fstring_text(v.format_spec)}" if v.format_spec else ""
            parts.append("{" + ast.unparse(v.value) + conversion + spec + "}")
    return "".join(parts)


def run_name_spellings(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, text) of every run-directory name used as a path component in tree, in source order."""
    nodes = _nodes(tree)
    skip: set[int] = set()                                    # docstrings and literal parts of f-strings
    for node in nodes:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            skip.add(id(node.value))
        elif isinstance(node, ast.JoinedStr):
            skip.update(id(v) for v in node.values)
    found: dict[int, tuple[int, int, str]] = {}

    def flag(n: ast.AST, text: str) -> None:
        found.setdefault(id(n), (n.lineno, n.col_offset, text))

    for node in nodes:
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):        # run_dir / "model"
            for operand in (node.left, node.right):
                if _names_run_path(operand):
                    flag(operand, operand.value)
        elif isinstance(node, ast.Call) and _is_path_call(node):               # Path("runs"), join(d, "model")
            for arg in node.args:
                if _names_run_path(arg):
                    flag(arg, arg.value)
        elif isinstance(node, ast.JoinedStr):                                   # f"eval/{variant}"
            first = node.values[0] if node.values else None
            if (isinstance(first, ast.Constant) and isinstance(first.value, str) and "/" in first.value
                    and _first_component(first.value) in RUN_NAMES):
                flag(node, _fstring_text(node))
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip
              and "/" in node.value):                                           # "metrics/train.jsonl" anywhere
            text = node.value
            while text.startswith("./"):
                text = text[2:]
            parts = text.split("/")
            if parts[0] in RUN_NAMES and all(parts[1:]):
                flag(node, node.value)
    return [(line, text) for line, _, text in sorted(found.values())]


def rule_run_names_only_in_paths(ctx: Context) -> list[str]:
    allowed = _units_modules(ctx, RUN_NAME_SPELLERS)
    out = []
    for name, m in ctx.modules.items():
        if _is_in(name, allowed):
            continue
        for line, text in run_name_spellings(m.tree):
            out.append(f"{m.rel}:{line}: {name} spells the run-directory name {text!r}; "
                       f"name it in {allowed[0]} ({RUN_LAYOUT})")
    return out


RULES: list[Rule] = [rule_every_module_in_a_layer, rule_imports_follow_layers, rule_no_cycles,
                     rule_images_opened_only_in_datasets, rule_texts_encoded_by_one_function,
                     rule_run_names_only_in_paths]


def context(package_dir: Path, layers: list[Layer]) -> Context:
    package_dir = Path(package_dir)
    modules = load_modules(package_dir)
    return Context(package_dir.name, package_dir, modules, module_edges(modules), list(layers))


def check(package_dir: Path, layers: list[Layer], rules: Iterable[Rule] | None = None) -> list[str]:
    """Human-readable violations, empty when the package respects every rule."""
    ctx = context(package_dir, layers)
    out: list[str] = []
    for rule in (RULES if rules is None else rules):
        out.extend(rule(ctx))
    return out


# --------------------------------------------------------------------------- summary and script

def summary(package_dir: Path) -> dict:
    modules = load_modules(Path(package_dir))
    edges = module_edges(modules)
    comps = cycles(modules, edges)
    return {"modules": len(modules), "edges": len({(e.src, e.dst) for e in edges}),
            "cycles": len(comps), "cycle_members": comps}


def format_summary(s: dict) -> str:
    lines = [f"modules: {s['modules']}", f"distinct import edges: {s['edges']}", f"cycles: {s['cycles']}"]
    lines += [f"  cycle {i}: {', '.join(c)}" for i, c in enumerate(s["cycle_members"], 1)]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    package_dir = Path(argv[0]) if len(argv) > 0 else DEFAULT_PACKAGE
    architecture = Path(argv[1]) if len(argv) > 1 else DEFAULT_ARCHITECTURE
    print(format_summary(summary(package_dir)))
    violations = check(package_dir, read_layers(architecture))
    print(f"violations: {len(violations)}")
    for v in violations:
        print(f"  {v}")
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
