"""Image->text and text->image retrieval, Recall@K, counted two ways.

Generated captions repeat (two images with the same labels can get the same caption), so
exact-pair recall (the paired item is in the top K) is ill-defined on its own. Recall by label set
counts a hit when any of the top K items has the query's label set (data.datasets.label_set_key).
Both are reported.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..data.transforms import Preprocess
from ..errors import DataError
from ..io import write_json
from ..paths import RunLayout
from ..precision import choose_device
from ..pretrained import load_clip

# A chunk of queries is scored against all items at once: its similarities and the masks that settle
# ties take at most CHUNK_BYTES whatever N is, so retrieval's memory grows with N (the top-k lists),
# never with N squared.
CHUNK_BYTES = 64 * 2**20
_BYTES_PER_SCORE = 16  # a float32 similarity, its copy and masks in a row whose k-th value is tied
ITEM_BLOCK = 8192      # items multiplied in float64 at a time (_exact_similarities)


def _chunk_top_k(sim: torch.Tensor, k: int) -> torch.Tensor:
    """Indices [rows, k] of each row's k largest similarities, best first, equal ones by lower index:
    a stable argsort of -sim cut at k, which retrieval computed before it was chunked. torch.topk
    promises no order among equal values, so ties are settled here."""
    values, top = sim.topk(k, dim=1)
    if not bool(torch.isfinite(values).all()):  # NaN ranks first in topk: checking the top k is enough
        raise DataError("retrieval: a similarity is NaN or infinite (the embeddings hold such values)")
    kth = values[:, -1:]
    spill = ((sim >= kth).sum(1) > k).nonzero()[:, 0]  # rows where items outside the k kept tie the k-th
    if len(spill):  # keep all above the k-th, then the lowest-indexed of those equal to it
        s, t = sim[spill], kth[spill]
        above, equal = s > t, s == t
        take = equal.cumsum(1, dtype=torch.int32) <= k - above.sum(1, keepdim=True)
        take &= equal
        take |= above
        top[spill] = take.nonzero()[:, 1].view(len(spill), k)
    top = top.sort(dim=1).values  # lower index first, then a stable sort by similarity keeps it among equals
    return top.gather(1, sim.gather(1, top).sort(dim=1, descending=True, stable=True).indices)


def top_matches(query_emb, item_emb, k: int = 5, device: str | torch.device = "cpu") -> np.ndarray:
    """Indices [Q, k] of the k most similar items to each query (dot product: cosine for normalised
    embeddings), best first, equal similarities by item index; k is capped at the number of items.

    A chunk of queries at a time (CHUNK_BYTES), never Q x N in memory, on `device`. On the CPU each
    similarity is the float64 product rounded to float32, the same whatever the chunk's size, so the
    ranking is the full product's stable argsort. A float32 product is not: OpenBLAS picks its kernel
    by the matrix's shape, and on an AMD EPYC (OPENBLAS_CORETYPE=Haswell) a 7-row chunk's last bits
    differ from the 500-row product's, which reorders near-ties (torch's CPU matmul likewise)."""
    query = np.ascontiguousarray(query_emb, dtype=np.float32)
    items = np.ascontiguousarray(item_emb, dtype=np.float32)
    if query.ndim != 2 or items.ndim != 2 or query.shape[1] != items.shape[1]:
        raise DataError(f"retrieval: queries {query.shape} and items {items.shape} are not embeddings "
                        "of one size")
    device = torch.device(device)
    k = max(0, min(k, len(items)))
    out = np.empty((len(query), k), dtype=np.int64)
    if k <= 0:
        return out
    rows = max(1, CHUNK_BYTES // (_BYTES_PER_SCORE * len(items)))
    items_on_device = torch.from_numpy(items).to(device) if device.type != "cpu" else None
    for start in range(0, len(query), rows):
        chunk = query[start:start + rows]
        if items_on_device is None:
            sim = torch.from_numpy(_exact_similarities(chunk, items))
        else:
            sim = torch.from_numpy(chunk).to(device) @ items_on_device.T
        out[start:start + len(chunk)] = _chunk_top_k(sim, k).cpu().numpy()
    return out


def _exact_similarities(chunk: np.ndarray, items: np.ndarray) -> np.ndarray:
    """chunk @ items.T, each similarity the float64 product rounded to float32 (top_matches says why),
    the items converted ITEM_BLOCK rows at a time so that no float64 copy of them all is held."""
    out = np.empty((len(chunk), len(items)), dtype=np.float32)
    chunk64 = chunk.astype(np.float64)
    for j in range(0, len(items), ITEM_BLOCK):
        out[:, j:j + ITEM_BLOCK] = chunk64 @ items[j:j + ITEM_BLOCK].astype(np.float64).T
    return out


def recall_at_k(image_emb, text_emb, image_keys=None, text_keys=None, ks: Sequence[int] = (1, 5, 10),
                device: str | torch.device = "cpu") -> dict:
    """Recall@K for pairs (image i, text i), from each query's top max(ks) (top_matches, on `device`).

    Returns {"image_to_text": {"exact": {"R@1": ...}, "label_set": {...}}, "text_to_image": ...,
    "n": N}. Label-set entries appear when keys are given.
    """
    img = np.asarray(image_emb, dtype=np.float32)
    txt = np.asarray(text_emb, dtype=np.float32)
    if img.shape != txt.shape:
        raise DataError(f"retrieval: {img.shape[0]} images x {img.shape[1]} dims but texts are {txt.shape}; "
                        "expected one caption per image")
    out: dict = {"n": int(len(img))}
    for direction, queries, items, qkeys, ikeys in (("image_to_text", img, txt, image_keys, text_keys),
                                                    ("text_to_image", txt, img, text_keys, image_keys)):
        order = top_matches(queries, items, max(ks, default=0), device)
        res: dict = {"exact": {}}
        target = np.arange(len(queries))[:, None]
        for k in ks:
            res["exact"][f"R@{k}"] = float((order[:, :k] == target).any(1).mean())
        if qkeys is not None and ikeys is not None:
            q = np.asarray(qkeys)[:, None]
            items = np.asarray(ikeys)[order]
            res["label_set"] = {f"R@{k}": float((items[:, :k] == q).any(1).mean()) for k in ks}
        out[direction] = res
    return out


def hits_by_label_set(image_emb, text_emb, keys, top: int | None = None, device: str | torch.device = "cpu"):
    """Image -> text top-1 over the pool, counted by label set, per label set of the query image.

    One row per label set (most frequent first, the `top` most frequent when given): its images,
    their hit rate, and the label set their top caption most often had instead when it missed.
    The pool-wide rate is the images-weighted mean of the rows. Returns a pandas DataFrame.
    """
    import pandas as pd

    from ..data.datasets import label_set_name

    keys = np.asarray(keys)
    retrieved = keys[top_matches(image_emb, text_emb, 1, device)[:, 0]]
    sets, counts = np.unique(keys, return_counts=True)
    rows = []
    for key in sets[np.argsort(-counts, kind="stable")][:top]:
        mine = keys == key
        wrong = retrieved[mine & (retrieved != keys)]
        instead, n_instead = np.unique(wrong, return_counts=True) if len(wrong) else ([], [])
        rows.append({"label set": label_set_name(key), "images": int(mine.sum()),
                     "hit rate": float((retrieved[mine] == key).mean()),
                     "most retrieved instead": label_set_name(instead[np.argmax(n_instead)]) if len(wrong) else "",
                     "its share of the misses": float(np.max(n_instead) / len(wrong)) if len(wrong) else np.nan})
    return pd.DataFrame(rows)


def val_pool_hits_by_label_set(profile, run_dir: str | Path, top: int | None = None):
    """hits_by_label_set for run_dir/model on the trainer's validation pool (the first val_size
    images of the corpus val split, captions in the training language), embedded under the same
    inference autocast as the trainer's validation (batch shapes differ: bf16 results may too), on
    eval.device."""
    from ..data.datasets import val_pool
    from ..data.readers import read_corpus
    from ..data.splits import split_corpus
    from .embed import embed_images, embed_texts

    device = choose_device(profile.eval.device)
    model, tokenizer = load_clip(RunLayout(run_dir).model, device)
    pool = val_pool(profile, split_corpus(read_corpus(profile, run_dir), profile.seed))
    img = embed_images(model, pool, batch_size=profile.train.batch_size, desc="embed val pool",
                       num_workers=profile.eval.num_workers)
    txt = embed_texts(model, tokenizer, [pool.caption(i) for i in range(len(pool))], model.context_length,
                      desc="embed val captions")
    return hits_by_label_set(img, txt, pool.label_keys, top, device)


def evaluate_retrieval(model, tokenizer, records, language: str, preprocess: Preprocess, batch_size: int = 64,
                       ks: Sequence[int] = (1, 5, 10), run_dir: str | Path | None = None, name: str = "corpus_test",
                       image_emb: np.ndarray | None = None, num_workers: int = 0) -> dict:
    """Embed corpus records (CorpusRecord) and their captions in `language`; Recall@K both ways,
    ranked on the model's device.

    Pass `image_emb` to reuse image embeddings across languages (else the images are read with
    `preprocess`, in `num_workers` workers). With `run_dir`, the image and text embeddings,
    captions, label keys, paths and cameras are saved as the run's embeddings `name`.
    """
    from ..data.datasets import label_set_key
    from .embed import device_of, embed_images, embed_texts, save_embeddings

    records = list(records)
    if not records:
        raise DataError("evaluate_retrieval: no corpus records (is the test split empty?)")
    captions = [getattr(r, f"caption_{language}") for r in records]
    keys = np.array([label_set_key(r.labels) for r in records], dtype=np.int64)
    img = image_emb if image_emb is not None else embed_images(model, records, preprocess, batch_size,
                                                               desc="embed corpus test images",
                                                               num_workers=num_workers)
    txt = embed_texts(model, tokenizer, captions, model.context_length, desc=f"embed {language} captions")
    if run_dir is not None:
        save_embeddings(run_dir, name, image=img, text=txt, label_key=keys, caption=np.array(captions),
                        path=np.array([str(r.path) for r in records]),
                        domain=np.array([str(getattr(r, "domain", "")) for r in records]))
    out = recall_at_k(img, txt, keys, keys, ks, device_of(model))
    out["language"] = language
    return out


def retrieval_examples(run_dir: str | Path, language: str = "zh", n_queries: int = 4, k: int = 5,
                       seed: int = 0) -> dict:
    """Seeded text->image examples from run_dir/embeddings/corpus_test_<language>.npz.

    Returns {"query_texts", "query_paths" (the paired images), "match_paths" [Q][k],
    "match_captions" [Q][k] ("hit" when the image has the query's label set, else "miss")},
    ready for report.figures.retrieval_examples_figure.
    """
    from ..seeding import rng
    from .embed import load_embeddings

    data = load_embeddings(run_dir, f"corpus_test_{language}")
    n = len(data["image"])
    queries = np.sort(rng(seed, "retrieval-examples").choice(n, size=min(n_queries, n), replace=False))
    top = top_matches(data["text"][queries], data["image"], k)
    keys = data["label_key"]
    return {"query_texts": [str(data["caption"][q]) for q in queries],
            "query_paths": [str(data["path"][q]) for q in queries],
            "match_paths": [[str(data["path"][j]) for j in row] for row in top],
            "match_captions": [["hit" if keys[j] == keys[q] else "miss" for j in row] for q, row in zip(queries, top)]}


def run_retrieval(profile, run_dir: str | Path, languages: Sequence[str] = ("zh", "en"),
                  max_items: int | None = None) -> dict:
    """Recall@1/5/10 both ways on the corpus test split (exact pair and by label set), in each of
    `languages` that the corpus has captions in (data.captions=release has no English), on eval.device."""
    from ..data.readers import read_corpus
    from ..data.splits import split_corpus
    from .embed import embed_images

    layout = RunLayout(run_dir)
    model, tokenizer = load_clip(layout.model, choose_device(profile.eval.device))
    corpus = read_corpus(profile, run_dir)
    languages = [lang for lang in languages if corpus.caption_sources[lang] != "none"]
    records = split_corpus(corpus, profile.seed)["test"]
    if max_items:
        records = records[:max_items]
    preprocess = Preprocess.for_evaluation(profile)
    image_emb = embed_images(model, records, preprocess, profile.eval.batch_size, desc="embed corpus test images",
                             num_workers=profile.eval.num_workers)
    out = {}
    for lang in languages:
        out[lang] = evaluate_retrieval(model, tokenizer, records, lang, preprocess, profile.eval.batch_size,
                                       run_dir=run_dir, name=f"corpus_test_{lang}", image_emb=image_emb)
    write_json(layout.retrieval_json, out)
    return out


__all__ = ["recall_at_k", "top_matches", "hits_by_label_set", "val_pool_hits_by_label_set", "evaluate_retrieval",
           "retrieval_examples", "run_retrieval"]
