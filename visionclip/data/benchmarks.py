"""The benchmark sets as evaluation reads them: records in their release layout, checked against
the prompt manifest of their classes."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ..errors import ConfigError, DataError


KNOWN_DATASETS = ("messidor2", "messidor", "fives", "refuge")


def check_dataset(name: str) -> str:
    if name not in KNOWN_DATASETS:
        raise ConfigError(f"unknown dataset {name!r}: expected one of {list(KNOWN_DATASETS)}")
    return name


def load_records(dataset: str, root: str | Path) -> list:
    """Records of a benchmark in its real layout, with errors naming the root and the expected layout."""
    check_dataset(dataset)
    root = Path(root)
    if not root.exists():
        raise DataError(f"{root}: data root of {dataset} does not exist")
    if root.is_dir() and not any(root.iterdir()):
        raise DataError(f"{root}: data root of {dataset} is empty; expected the dataset's release layout")
    from .readers import read_benchmark

    records = list(read_benchmark(dataset, root))
    if not records:
        raise DataError(f"{root}: no {dataset} images found; expected the dataset's release layout")
    return records


def load_dataset_manifest(dataset: str) -> dict:
    from .manifests import load_manifest

    return load_manifest(dataset)


def check_classes(manifest: Mapping, class_names: Sequence[str], where: str) -> None:
    """The manifest's classes (prompts) must be the dataset's classes, in the same order."""
    expected = [c["name_en"] for c in manifest["classes"]]
    if [c.lower() for c in expected] != [str(c).lower() for c in class_names]:
        raise DataError(f"{where}: dataset classes {list(class_names)} do not match the prompt classes "
                        f"{expected} of manifest {manifest.get('name', '?')!r}")


def labels_of(records: Sequence) -> tuple[np.ndarray, list[str]]:
    y = np.array([int(r.label) for r in records], dtype=np.int64)
    return y, list(records[0].class_names)
