"""Dataset manifests (data_manifests/<name>.yaml) and checksum verification of rendered sets.

A manifest is the one place that names a dataset's provenance, licence, layout, label map,
class names (en + zh) and prompts; the readers take class names from it and the zero-shot
module takes class names, templates and expert-knowledge descriptions from it.
"""
from __future__ import annotations

import copy
import functools
import json
from pathlib import Path, PurePosixPath
from typing import Mapping

import yaml

from ..errors import DataError
from ..io import sha256_file
from ..progress import progress

MANIFEST_DIR = Path(__file__).resolve().parent.parent.parent / "data_manifests"

REQUIRED_KEYS = ("name", "title", "provenance", "licence", "layout", "label_map")
OPTIONAL_KEYS = ("classes", "templates", "translation_note", "notes", "columns", "rendered", "licences", "images")
CLASS_KEYS = ("name_en", "name_zh", "descriptions_en", "descriptions_zh")
TEMPLATE_LANGS = ("en", "zh")
CLS_TOKEN = "[CLS]"


def manifest_names() -> list[str]:
    return sorted(p.stem for p in MANIFEST_DIR.glob("*.yaml"))


@functools.lru_cache(maxsize=None)
def _load_cached(name: str) -> dict:
    path = MANIFEST_DIR / f"{name}.yaml"
    if not path.is_file():
        raise DataError(f"no manifest {path}; known manifests: {manifest_names()}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise DataError(f"{path}: not valid YAML ({e})") from None
    validate_manifest(raw, str(path))
    return raw


def load_manifest(name: str) -> dict:
    """The validated manifest of dataset `name` (a fresh copy: callers may mutate it)."""
    return copy.deepcopy(_load_cached(name))


def validate_manifest(raw: object, where: str) -> None:
    """Known keys only; classes carry en/zh names and descriptions; templates hold [CLS]."""
    if not isinstance(raw, dict):
        raise DataError(f"{where}: expected a mapping, got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(REQUIRED_KEYS) - set(OPTIONAL_KEYS))
    if unknown:
        raise DataError(f"{where}: unknown key(s) {unknown}; known: {sorted(REQUIRED_KEYS + OPTIONAL_KEYS)}")
    missing = [k for k in REQUIRED_KEYS if k not in raw]
    if missing:
        raise DataError(f"{where}: missing key(s) {missing}")
    if "classes" in raw:
        classes = raw["classes"]
        if not isinstance(classes, list) or not classes:
            raise DataError(f"{where}: 'classes' must be a non-empty list")
        for i, c in enumerate(classes):
            at = f"{where}: classes[{i}]"
            if not isinstance(c, dict) or sorted(c) != sorted(CLASS_KEYS):
                raise DataError(f"{at}: expected exactly the keys {list(CLASS_KEYS)}, got {c!r}")
            for k in ("name_en", "name_zh"):
                if not isinstance(c[k], str) or not c[k].strip():
                    raise DataError(f"{at}.{k}: expected a non-empty string")
            for k in ("descriptions_en", "descriptions_zh"):
                if not isinstance(c[k], list) or not c[k] or not all(isinstance(d, str) and d for d in c[k]):
                    raise DataError(f"{at}.{k}: expected a non-empty list of strings")
            if len(c["descriptions_en"]) != len(c["descriptions_zh"]):
                raise DataError(f"{at}: descriptions_en and descriptions_zh differ in length "
                                "(each Chinese description translates one English one)")
        if "templates" not in raw:
            raise DataError(f"{where}: a manifest with classes needs 'templates'")
    if "templates" in raw:
        t = raw["templates"]
        if not isinstance(t, dict) or sorted(t) != sorted(TEMPLATE_LANGS):
            raise DataError(f"{where}: 'templates' must map exactly {list(TEMPLATE_LANGS)} to a template")
        for lang, s in t.items():
            if not isinstance(s, str) or s.count(CLS_TOKEN) != 1:
                raise DataError(f"{where}: templates.{lang} must contain {CLS_TOKEN} once, got {s!r}")


def class_names(name: str, lang: str = "en") -> tuple[str, ...]:
    """Class names of a benchmark, in label order."""
    if lang not in TEMPLATE_LANGS:
        raise DataError(f"language {lang!r}: expected one of {list(TEMPLATE_LANGS)}")
    m = _load_cached(name)
    if "classes" not in m:
        raise DataError(f"manifest {name!r} defines no classes")
    return tuple(c[f"name_{lang}"] for c in m["classes"])


def _files_map(manifest: Mapping) -> Mapping:
    # Accept either the whole manifest.json ({"files": {...}, ...}) or its files map.
    files = manifest.get("files", manifest) if isinstance(manifest, Mapping) else None
    if not isinstance(files, Mapping):
        raise DataError(f"checksum manifest: expected a mapping relpath -> sha256, got {type(files).__name__}")
    return files


def verify_checksums(root: str | Path, manifest: Mapping) -> int:
    """Check every {relpath: sha256} entry under `root`; return how many files were verified.

    A missing file or a mismatch raises DataError naming the file: a half-copied or edited
    rendered set must never be evaluated silently.
    """
    root = Path(root)
    files = _files_map(manifest)
    items = sorted(files.items())
    if len(items) >= 2000:  # a bar only where hashing takes a noticeable while
        items = progress(items, desc=f"verify {root.name}", unit="file")
    for rel, expected in items:
        parts = PurePosixPath(rel).parts
        if PurePosixPath(rel).is_absolute() or ".." in parts:
            raise DataError(f"{root}/manifest.json: entry {rel!r} is not a path inside the dataset root")
        path = root.joinpath(*parts)
        if not path.is_file():
            raise DataError(f"{path}: listed in {root}/manifest.json but missing")
        actual = sha256_file(path)
        if actual != str(expected).lower():
            raise DataError(f"{path}: sha256 {actual} does not match {expected} recorded in "
                            f"{root}/manifest.json (file changed or corrupt)")
    return len(files)


def verify_root(root: str | Path) -> int:
    """Verify root/manifest.json's "files" map when the manifest exists and has one; else 0."""
    path = Path(root) / "manifest.json"
    if not path.is_file():
        return 0
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(manifest, dict) or "files" not in manifest:
        return 0
    return verify_checksums(root, manifest["files"])
