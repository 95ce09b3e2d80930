"""Inputs of the embedding maps: the corpus test split embedded with its labels, the class
prototypes, which images a map draws, and the seeded 2-D UMAP projection the figures draw."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ..data.benchmarks import load_dataset_manifest
from ..data.transforms import Preprocess
from ..errors import DataError
from ..paths import RunLayout, corpus_dir
from ..precision import choose_device
from ..pretrained import load_clip
from ..seeding import subsample
from .zeroshot import build_prompts, class_prototypes

# UMAP's time grows with the set and a map of more images than this is a cloud no one can read: a
# map of a larger set (the paper's 100k-image test split) draws a seeded subsample of this many.
MAP_MAX_IMAGES = 10_000


def disease_name(labels: Mapping) -> str:
    """One colour per image for the maps: its disease, 'several diseases', 'healthy' or 'not fundus'.

    Diabetes (is_dm) alone is not visible in the fundus and does not count; DR counts as a disease.
    """
    from ..schema import DISEASE_FLAGS, GLOSSES

    if int(labels.get("is_fundus", 1)) == 0:
        return "not fundus"
    found = [GLOSSES[f][0] for f in DISEASE_FLAGS if f != "is_dm" and int(labels.get(f, 0))]
    if int(labels.get("dr_grade", 0)) > 0:
        found.insert(0, "diabetic retinopathy")
    if not found:
        return "healthy"
    return found[0] if len(found) == 1 else "several diseases"


def run_embeddings(profile, run_dir: str | Path, datasets: Sequence[str] = ("messidor2", "fives", "refuge"),
                   language: str | None = None, mode: str | None = None) -> dict:
    """Inputs of the embedding maps: corpus test images with their labels, and class prototypes.

    Writes run_dir/embeddings/corpus_test.npz (image, dr_grade, disease, domain, path) and
    run_dir/embeddings/prototypes.npz (<dataset> [C, D] and <dataset>_names, headline prompts).
    """
    from ..data.readers import read_corpus
    from ..data.splits import split_corpus
    from .embed import embed_images, save_embeddings

    run_dir = Path(run_dir)
    language = language or profile.eval.language
    mode = mode or profile.eval.prompt_mode
    model, tokenizer = load_clip(RunLayout(run_dir).model, choose_device(profile.eval.device))
    records = split_corpus(read_corpus(profile, run_dir), profile.seed)["test"]
    if not len(records):
        raise DataError(f"{corpus_dir(profile, run_dir)}: the corpus test split is empty")
    emb = embed_images(model, records, Preprocess.for_evaluation(profile), profile.eval.batch_size,
                       desc="embed corpus test images", num_workers=profile.eval.num_workers)
    save_embeddings(run_dir, "corpus_test", image=emb,
                    dr_grade=np.array([int(r.labels["dr_grade"]) for r in records]),
                    disease=np.array([disease_name(r.labels) for r in records]),
                    domain=np.array([str(r.domain) for r in records]),
                    path=np.array([str(r.path) for r in records]))
    protos = {}
    for ds in datasets:
        manifest = load_dataset_manifest(ds)
        p = class_prototypes(model, tokenizer, build_prompts(manifest, language, mode), model.context_length,
                             flair_exact=profile.eval.flair_exact)
        protos[ds] = p.numpy()
        protos[f"{ds}_names"] = np.array([c[f"name_{language}"] for c in manifest["classes"]])
    save_embeddings(run_dir, "prototypes", **protos)
    return {"n_images": len(records), "prototypes": list(datasets), "language": language, "mode": mode}


def map_points(n: int, seed: int) -> np.ndarray:
    """Indices of the images a map of n draws: all of them up to MAP_MAX_IMAGES, else that many, seeded."""
    return subsample(n, MAP_MAX_IMAGES, seed, "map")


def map_note(shown: int, total: int) -> str:
    """What a map's title adds when it draws a subsample; "" when it draws every image."""
    return "" if shown == total else f" (a seeded {shown:,} of {total:,} images)"


def umap_projection(image_emb, prototypes=None, seed: int = 0, n_neighbors: int = 15, min_dist: float = 0.1):
    """2-D UMAP of images and (optionally) text prototypes fitted together (cosine, seeded)."""
    import umap

    img = np.asarray(image_emb, dtype=np.float32)
    pts = img if prototypes is None else np.vstack([img, np.asarray(prototypes, dtype=np.float32)])
    n_neighbors = max(2, min(n_neighbors, len(pts) - 1))
    reducer = umap.UMAP(n_components=2, n_neighbors=n_neighbors, min_dist=min_dist, metric="cosine",
                        random_state=seed, n_jobs=1, init="spectral" if len(pts) > n_neighbors + 2 else "random")
    xy = reducer.fit_transform(pts)
    return xy[:len(img)], (xy[len(img):] if prototypes is not None else None)
