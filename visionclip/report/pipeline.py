"""Run the book: execute notebooks/NN_*.ipynb with papermill, then build the Jupyter Book.

    python -m visionclip book --profile cpu [--skip-ablations] [--only 03] [-p key=value] [--resume]

Each notebook gets the parameters {"profile", "run_dir"} plus the user's `-p` values. A dotted
`-p section.key=value`, or `-p seed=N`, is a profile override: it goes to the notebooks as `overrides`
and is validated (with the profile) before any notebook runs, because papermill checks nothing; a
name that no notebook's parameters cell declares is refused.
Executed notebooks are written to a temporary name and renamed on success into
`run_dir/notebooks/`, then copied into `book/notebooks/` (ignored by git), which Jupyter Book 1.x
renders with execution off.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import typing
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from ..config import Profile, load_profile, resolve_profile_path
from ..errors import ConfigError, VisionCLIPError
from ..io import atomic_path
from . import provenance
from ..paths import BOOK_DIR, NOTEBOOK_DIR, REPOSITORY, RunLayout, default_run_dir, staged_notebooks
from ..preempt import Preempted, StopRequest, requested

ABLATIONS = "05_ablations"
KERNEL = "python3"
MATHJAX_NPM = "mathjax@3.2.2"  # the version sphinx's default mathjax_path names
NOTEBOOK_PATTERN = re.compile(r"^(\d\d)_[A-Za-z0-9_]+\.ipynb$")

# The kernel inherits this process's environment: progress bars out of notebook outputs
# (nbval compares them), no model-hub traffic, figures inline and never a GUI backend.
KERNEL_ENV = {
    "VISIONCLIP_QUIET": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "MPLBACKEND": "module://matplotlib_inline.backend_inline",
    "PYTHONHASHSEED": "0",
    "TOKENIZERS_PARALLELISM": "false",
    # tqdm.auto's notice that it falls back to a text bar (no ipywidgets): exactly what the book
    # wants, so the notice itself stays out of the outputs. Other warnings still show.
    "PYTHONWARNINGS": "ignore:IProgress not found",
}


def say(msg: str) -> None:
    print(f"[pipeline] {msg}", flush=True)


def discover_notebooks(notebook_dir: Path = NOTEBOOK_DIR, only: Sequence[str] = (),
                       skip_ablations: bool = False) -> list[Path]:
    """notebooks/NN_*.ipynb in NN order, filtered by `only` (NN numbers or stems)."""
    found = sorted(p for p in Path(notebook_dir).glob("*.ipynb") if NOTEBOOK_PATTERN.match(p.name))
    if only:
        wanted = {str(o) for o in only}
        unknown = wanted - {p.name[:2] for p in found} - {p.stem for p in found}
        if unknown:
            raise ConfigError(f"--only {sorted(unknown)}: no such notebook in {notebook_dir}; "
                              f"known: {[p.stem for p in found]}")
        found = [p for p in found if p.name[:2] in wanted or p.stem in wanted]
    if skip_ablations:
        found = [p for p in found if p.stem != ABLATIONS]
    return found


PROFILE_TOP_KEYS = tuple(k for k, t in typing.get_type_hints(Profile).items()   # 'seed': not a section
                         if not dataclasses.is_dataclass(t) and k != "name")


def split_parameters(params: Mapping[str, Any]) -> tuple[dict, dict]:
    """Plain notebook parameters vs profile overrides: dotted ('train.lr') or top-level ('seed')."""
    overrides = {k: v for k, v in params.items() if "." in k or k in PROFILE_TOP_KEYS}
    return {k: v for k, v in params.items() if k not in overrides}, overrides


def check_notebook_parameters(plain: Mapping[str, Any], notebooks: Sequence[Path]) -> None:
    """Refuse a plain parameter that none of `notebooks` declares in its parameters cell: papermill
    passes it on with a warning only, and the run would go on without it (`-p seed=1235` did, before
    seed counted as a profile key)."""
    import papermill

    declared = {name for nb in notebooks for name in papermill.inspect_notebook(str(nb))}
    unknown = sorted(set(plain) - declared)
    if unknown:
        raise ConfigError(f"-p {unknown[0]}: not a parameter of the notebooks run ({', '.join(sorted(declared))}) "
                          f"nor a profile key (section.key, or {', '.join(PROFILE_TOP_KEYS)})")


def notebook_parameters(profile: str, run_dir: Path, params: Mapping[str, Any]) -> dict:
    plain, overrides = split_parameters(params)
    out = {"profile": profile, "run_dir": str(run_dir)}
    out.update(plain)
    if overrides:
        out["overrides"] = dict(overrides)
    return out


def _profile_inputs(profile: str) -> list[Path]:
    """The profile file and every file it extends: a change to any of them invalidates --resume."""
    paths, path = [], resolve_profile_path(profile)
    while path is not None and path.exists() and path not in paths:
        paths.append(path)
        parent = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("extends")
        path = resolve_profile_path(parent) if parent else None
    return paths


def is_up_to_date(executed: Path, source: Path, parameters: Mapping[str, Any], inputs: Sequence[Path]) -> bool:
    """True when `executed` exists, ran with the same parameters and is newer than every input."""
    if not executed.exists():
        return False
    try:
        meta = json.loads(executed.read_text(encoding="utf-8")).get("metadata", {}).get("papermill", {})
    except (OSError, json.JSONDecodeError):
        return False
    if meta.get("exception") or meta.get("parameters") != json.loads(json.dumps(dict(parameters))):
        return False
    newest_input = max(p.stat().st_mtime for p in [source, *inputs])
    return executed.stat().st_mtime > newest_input


def ipc_kernel_manager():
    """A kernel manager whose kernels talk over Unix sockets (files in Jupyter's runtime directory,
    readable by this user only) instead of TCP on localhost, which ipykernel 7 warns about on every
    start: the notebooks' kernels never need a network port."""
    import uuid

    from jupyter_client.manager import AsyncKernelManager
    from jupyter_core.paths import jupyter_runtime_dir

    class IPCKernelManager(AsyncKernelManager):
        def __init__(self, **kwargs):
            kwargs.setdefault("transport", "ipc")
            # an absolute socket path: the default ("kernel-ipc") is relative, and the kernel
            # starts in the notebook's directory while the client may not be there
            runtime = Path(jupyter_runtime_dir())
            runtime.mkdir(parents=True, exist_ok=True, mode=0o700)
            kwargs.setdefault("ip", str(runtime / f"kernel-{uuid.uuid4().hex[:12]}-ipc"))
            super().__init__(**kwargs)

    return IPCKernelManager


def execute_notebook(source: Path, executed: Path, parameters: Mapping[str, Any],
                     progress_bar: bool = False) -> float:
    """Execute `source` into `executed` atomically; returns wall seconds.

    Papermill saves the output notebook while it runs, so it writes to a temporary sibling:
    `executed` appears only complete. On failure the partial notebook is kept as
    NN_name.failed.ipynb (for reading the traceback) and the old executed copy is removed.
    """
    import papermill

    executed.parent.mkdir(parents=True, exist_ok=True)
    failed = executed.with_suffix(".failed.ipynb")
    start = time.perf_counter()
    saved_env = {k: os.environ.get(k) for k in KERNEL_ENV}
    os.environ.update(KERNEL_ENV)
    try:
        with atomic_path(executed) as tmp:
            tmp_nb = tmp.with_suffix(".ipynb")  # papermill picks its I/O handler by extension
            try:
                papermill.execute_notebook(
                    str(source), str(tmp_nb), parameters=dict(parameters), kernel_name=KERNEL,
                    cwd=str(source.parent), progress_bar=progress_bar, report_mode=False,
                    kernel_manager_class=ipc_kernel_manager())
            except BaseException:
                if tmp_nb.exists():
                    os.replace(tmp_nb, failed)
                executed.unlink(missing_ok=True)
                raise
            os.replace(tmp_nb, tmp)
    finally:
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    failed.unlink(missing_ok=True)
    return time.perf_counter() - start


def resolve_run_dir(profile: str, params: Mapping[str, Any] | None, run_dir: str | Path | None,
                    notebook_dir: Path = NOTEBOOK_DIR):
    """(the profile validated with the overrides among `params`, and the other parameters checked
    against the notebooks', so a bad one fails before any work; the run directory, absolute:
    `run_dir`, else the profile's default)."""
    plain, overrides = split_parameters(params or {})
    resolved = load_profile(profile, overrides)
    check_notebook_parameters(plain, discover_notebooks(notebook_dir))
    return resolved, Path(run_dir or default_run_dir(resolved.name)).resolve()


def run_notebooks(profile: str = "cpu", run_dir: str | Path | None = None,
                  params: Mapping[str, Any] | None = None, only: Sequence[str] = (),
                  skip_ablations: bool = False, resume: bool = False,
                  notebook_dir: Path = NOTEBOOK_DIR, stop: StopRequest | None = None) -> list[Path]:
    """Validate the profile, then execute the selected notebooks in order; returns executed paths.
    Once `stop` is requested the running notebook finishes (its kernel runs in a session of its own,
    out of reach of a signal to this process's group) and Preempted is raised before the next one."""
    params = dict(params or {})
    resolved, run_dir = resolve_run_dir(profile, params, run_dir, notebook_dir)
    notebooks = discover_notebooks(notebook_dir, only, skip_ablations)
    if not notebooks:
        say(f"no notebooks NN_*.ipynb selected in {notebook_dir}: nothing executed")
        return []
    parameters = notebook_parameters(profile, run_dir, params)
    inputs = _profile_inputs(profile)
    say(f"profile {resolved.name!r} validated; run dir {run_dir}; "
        f"{len(notebooks)} notebook(s): {', '.join(p.stem for p in notebooks)}")
    show_bar = sys.stderr.isatty() and os.environ.get("CI", "") != "true"
    executed_paths, total, records = [], 0.0, []
    for i, source in enumerate(notebooks, 1):
        executed = RunLayout(run_dir).notebooks / source.name
        if requested(stop):
            raise Preempted(f"{stop.signal_name} received: stopped before notebook {source.stem} ({i} of "
                            f"{len(notebooks)}); the {i - 1} before it are executed in {executed.parent}")
        if resume and is_up_to_date(executed, source, parameters, inputs):
            say(f"[{i}/{len(notebooks)}] {source.stem}: up to date, skipped (--resume)")
        else:
            say(f"[{i}/{len(notebooks)}] {source.stem}: running ...")
            try:
                with provenance.PeakMemory() as memory:
                    seconds = execute_notebook(source, executed, parameters, progress_bar=show_bar)
                records.append(provenance.notebook_record(executed, memory.peak_mib))
            except Exception as e:
                say(f"[{i}/{len(notebooks)}] {source.stem}: FAILED; partial notebook: "
                    f"{executed.with_suffix('.failed.ipynb')}")
                if requested(stop):  # its kernel got the signal too (a scheduler signals every process)
                    raise Preempted(f"{stop.signal_name} received: notebook {source.stem} ({i} of {len(notebooks)}) "
                                    f"was stopped with it ({_first_line(e)}); it runs again on resume") from e
                raise VisionCLIPError(f"notebook {source.name} failed: {_first_line(e)}") from e
            total += seconds
            say(f"[{i}/{len(notebooks)}] {source.stem}: done in {seconds:.1f} s -> {executed}")
        executed_paths.append(executed)
    say(f"notebooks executed in {total:.1f} s")
    old = provenance.read(run_dir) or {}
    if old.get("profile", {}).get("digest") != provenance.profile_digest(resolved.to_dict()):
        old = {}  # another profile's record: its notebooks' times say nothing about these
    record = provenance.collect(resolved, split_parameters(params)[1],
                                provenance.merge_notebooks(old.get("notebooks", []), records))
    say(f"provenance recorded in {provenance.write(run_dir, record)}")
    return executed_paths


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return (lines[-1] if lines else type(e).__name__)[:500]


# ----------------------------------------------------------------------------- the book

def toc_notebooks(book_dir: Path = BOOK_DIR) -> list[str]:
    """Stems of the notebooks that book/_toc.yml lists under notebooks/."""
    toc = yaml.safe_load((book_dir / "_toc.yml").read_text(encoding="utf-8"))
    prefix = staged_notebooks(book_dir).relative_to(book_dir).as_posix() + "/"
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            f = node.get("file")
            if isinstance(f, str) and f.startswith(prefix):
                found.append(Path(f).stem)
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(toc)
    return found


def placeholder_notebook(stem: str, reason: str) -> str:
    """A one-cell page for a notebook that this build did not execute, so the book says so."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": KERNEL, "display_name": "Python 3", "language": "python"}
    nb.cells.append(nbformat.v4.new_markdown_cell(
        f"# {stem}\n\n```{{note}}\nThis notebook was not executed in this build: {reason}\n"
        f"Run `python -m visionclip book --profile <name> --only {stem[:2]}` to execute it.\n```\n"))
    return nbformat.writes(nb)


PROVENANCE_PAGE = "provenance.md"  # generated into book/ at staging (ignored by git)
PROVENANCE_LINK = ("The commit, profile, packages, machine (native bf16 or not), wall time and memory behind "
                   "this page's numbers: {doc}`/provenance`.")


def shown_path(path: str | Path, root: Path = REPOSITORY) -> str:
    """`path` as a reader of the book may see it: relative to the repository, never the build
    machine's absolute directory."""
    path = Path(path)
    try:
        return path.resolve().relative_to(Path(root).resolve()).as_posix()
    except ValueError:
        return path.name


def book_page(notebook_json: str, run_dir: Path, root: Path = REPOSITORY) -> str:
    """An executed notebook as the book shows it: papermill's injected parameters with the run
    directory relative to the repository (the kernel got the absolute path), and a link to the
    provenance page after the title cell."""
    import nbformat

    nb = nbformat.reads(notebook_json, as_version=4)
    absolute, shown = str(Path(run_dir)), shown_path(run_dir, root)
    for cell in nb.cells:
        if cell.cell_type == "code" and "injected-parameters" in cell.metadata.get("tags", []):
            cell.source = cell.source.replace(json.dumps(absolute), json.dumps(shown)).replace(absolute, shown)
            cell.source += "\n# run_dir: relative to the repository root here; the pipeline passes its absolute path"
    if not any(PROVENANCE_LINK in c.source for c in nb.cells):
        at = 1 if nb.cells and nb.cells[0].cell_type == "markdown" else 0
        nb.cells.insert(at, nbformat.v4.new_markdown_cell(PROVENANCE_LINK))
    return nbformat.writes(nb)


def stage_book_notebooks(run_dir: Path, book_dir: Path = BOOK_DIR, skipped: Sequence[str] = ()) -> list[str]:
    """Copy the executed notebooks of `run_dir` into book/notebooks/; placeholders for the rest."""
    target = staged_notebooks(book_dir)
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    placeholders = []
    for stem in toc_notebooks(book_dir):
        executed = RunLayout(run_dir).notebooks / f"{stem}.ipynb"
        if executed.exists():
            with atomic_path(target / executed.name) as tmp:
                tmp.write_text(book_page(executed.read_text(encoding="utf-8"), run_dir), encoding="utf-8")
            continue
        reason = ("skipped with --skip-ablations." if stem in skipped
                  else f"no executed copy in {Path(run_dir).name}/notebooks/.")
        with atomic_path(target / f"{stem}.ipynb") as tmp:
            tmp.write_text(book_page(placeholder_notebook(stem, reason), run_dir), encoding="utf-8")
        placeholders.append(stem)
    with atomic_path(book_dir / PROVENANCE_PAGE) as tmp:
        tmp.write_text(provenance.render_markdown(provenance.read(run_dir)), encoding="utf-8")
    if placeholders:
        say(f"book pages without an executed notebook (placeholder page written): {', '.join(placeholders)}")
    return placeholders


MATHJAX_PARTS = ("tex-chtml.js", "input", "output/chtml", "output/chtml.js", "ui", "a11y", "adaptors")


def ensure_mathjax(book_dir: Path = BOOK_DIR) -> Path:
    """Put MathJax 3 (npm package `mathjax`) into book/_mathjax/mathjax so no page loads a CDN.

    book/_config.yml makes `_mathjax` Sphinx's static path (not `_static`: Jupyter Book would add
    every .js file under `_static` to every page). Taken from a node_modules/mathjax already
    present, else fetched once with `npm pack` from the npm registry. Only what tex-chtml.js loads
    is kept (its fonts, TeX extensions, menu and accessibility modules).
    """
    dest = book_dir / "_mathjax" / "mathjax"
    if (dest / "tex-chtml.js").exists():
        return dest
    with tempfile.TemporaryDirectory() as tmpd:
        source = next((c for c in (REPOSITORY / "node_modules" / "mathjax" / "es5",)
                       if (c / "tex-chtml.js").exists()), None)
        if source is None:
            npm = shutil.which("npm")
            if npm is None:
                raise VisionCLIPError("MathJax is needed in book/_mathjax/mathjax and npm is not installed: "
                                      "install Node.js and npm (Debian: apt-get install npm), or run `make book`")
            say(f"fetching {MATHJAX_NPM} with npm pack (once; kept in {dest})")
            out = subprocess.run([npm, "pack", MATHJAX_NPM, "--silent"], cwd=tmpd, check=True,
                                 capture_output=True, text=True).stdout.strip().splitlines()[-1]
            with tarfile.open(Path(tmpd) / out) as tar:
                members = [m for m in tar.getmembers() if m.name.startswith("package/es5/")]
                tar.extractall(tmpd, members=members, filter="data")
            source = Path(tmpd) / "package" / "es5"
        staging = Path(tmpd) / "staging"
        for part in MATHJAX_PARTS:
            src = source / part
            if src.is_dir():
                shutil.copytree(src, staging / part)
            elif src.exists():
                (staging / part).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, staging / part)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(staging, dest.with_name(".mathjax.tmp"), dirs_exist_ok=True)
        os.replace(dest.with_name(".mathjax.tmp"), dest)
    return dest


def jupyter_book_executable() -> str:
    local = Path(sys.executable).with_name("jupyter-book")
    found = str(local) if local.exists() else shutil.which("jupyter-book")
    if not found:
        raise VisionCLIPError("jupyter-book (1.x) is not installed: pip install -e '.[book]'")
    return found


# sphinxcontrib-bibtex's warning for a {cite} key that references.bib lacks
UNRESOLVED_CITATION = re.compile(r'could not find bibtex key "?([^"\s]+)"?')


def build_book(book_dir: Path = BOOK_DIR, pdf: bool = True) -> Path:
    """Render book/ to HTML with Jupyter Book 1.x (execution off), then print it to one PDF
    (report.pdf); returns the HTML directory. A citation key missing from references.bib fails it."""
    ensure_mathjax(book_dir)
    say(f"building the book in {book_dir} ...")
    start = time.perf_counter()
    env = dict(os.environ, **KERNEL_ENV)
    # --all: Sphinx rebuilds only changed pages, and a page that pastes a glued value from a notebook
    # ({glue} with :doc:) does not change when only the notebook does; it would keep the old numbers.
    proc = subprocess.run([jupyter_book_executable(), "build", str(book_dir), "--builder", "html", "--all"],
                          env=env, capture_output=True, text=True)
    log = proc.stdout + proc.stderr
    warnings = [ln for ln in log.splitlines() if "WARNING" in ln or "ERROR" in ln]
    for ln in warnings:
        say(f"  {ln.strip()}")
    if proc.returncode != 0:
        print(log[-6000:], file=sys.stderr)
        raise VisionCLIPError(f"jupyter-book build {book_dir} failed (exit {proc.returncode})")
    unresolved = sorted(set(UNRESOLVED_CITATION.findall(log)))
    if unresolved:
        raise VisionCLIPError(f"{book_dir / 'references.bib'}: no entry for cited key(s) {', '.join(unresolved)}; "
                              "add them there or fix the {cite} role")
    html = book_dir / "_build" / "html"
    say(f"book built in {time.perf_counter() - start:.1f} s ({len(warnings)} warning(s))")
    if pdf:
        from .pdf import timed_print

        out, seconds, pages = timed_print(html, book_dir)
        say(f"PDF printed in {seconds:.1f} s ({pages} pages): {out}")
    return html


def build_only(profile: str = "cpu", run_dir: str | Path | None = None, params: Mapping[str, Any] | None = None,
               skip_ablations: bool = False) -> Path:
    """Build the book from notebooks already executed in run_dir; returns the HTML index."""
    _, run_dir = resolve_run_dir(profile, params, run_dir)
    stage_book_notebooks(run_dir, skipped=[ABLATIONS] if skip_ablations else [])
    index = build_book() / "index.html"
    say(f"the book: {index}")
    return index


def run(profile: str = "cpu", run_dir: str | Path | None = None, params: Mapping[str, Any] | None = None,
        only: Sequence[str] = (), skip_ablations: bool = False, resume: bool = False,
        book: bool = True, notebook_dir: Path = NOTEBOOK_DIR, book_dir: Path = BOOK_DIR,
        stop: StopRequest | None = None) -> Path | None:
    """Execute the notebooks, stage them into the book and build it; returns the HTML index.
    Preempted between notebooks once `stop` is requested (run_notebooks), or before the build."""
    start = time.perf_counter()
    _, run_dir = resolve_run_dir(profile, params, run_dir, notebook_dir)
    run_notebooks(profile, run_dir, params, only, skip_ablations, resume, notebook_dir, stop)
    if not book:
        return None
    if requested(stop):
        raise Preempted(f"{stop.signal_name} received: stopped after the notebooks, before building the book")
    stage_book_notebooks(run_dir, book_dir, skipped=[ABLATIONS] if skip_ablations else [])
    html = build_book(book_dir)
    index = html / "index.html"
    say(f"total {time.perf_counter() - start:.1f} s; the book: {index}")
    return index
