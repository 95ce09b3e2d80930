"""Chunked retrieval (eval.retrieval.top_matches) against the full N x N argsort it replaced.

The references below are the code retrieval ran before it was chunked, kept here in substance: one
similarity matrix (each similarity the float64 product rounded to float32, as retrieval defines it),
a stable argsort of its negation, hits read off the sorted rows.
Small dyadic embeddings make every similarity exact in float32, so equal ones are truly equal
whatever the matmul's order: the ties are real and the chunked order must settle them the same way.
"""
import numpy as np
import pandas as pd
import pytest

from visionclip.errors import DataError
from visionclip.eval import retrieval
from visionclip.eval.retrieval import hits_by_label_set, recall_at_k, top_matches


def full_product(query, items):
    """Every similarity at once, each the float64 product rounded to float32 (as retrieval defines it:
    a float32 BLAS product's last bits depend on the matrix's shape on some CPUs)."""
    q, i = (np.asarray(x, dtype=np.float32).astype(np.float64) for x in (query, items))
    return (q @ i.T).astype(np.float32)


def full_top(query, items, k):
    sim = full_product(query, items)
    return np.argsort(-sim, axis=1, kind="stable")[:, :k]


def full_recall(img, txt, keys, ks):
    sim = full_product(img, txt)
    out = {"n": len(img)}
    for direction, s in (("image_to_text", sim), ("text_to_image", sim.T)):
        order = np.argsort(-s, axis=1, kind="stable")
        target = np.arange(len(s))[:, None]
        items = np.asarray(keys)[order]
        out[direction] = {"exact": {f"R@{k}": float((order[:, :k] == target).any(1).mean()) for k in ks},
                          "label_set": {f"R@{k}": float((items[:, :k] == np.asarray(keys)[:, None]).any(1).mean())
                                        for k in ks}}
    return out


def tied_embeddings(n, d=6, distinct=4, seed=0):
    """n images and n captions drawn from few dyadic vectors (values in {-1, -0.5, 0, 0.5, 1}): many
    exactly equal similarities, one all-zero image whose every similarity ties."""
    g = np.random.default_rng(seed)
    vocab = g.choice([-1.0, -0.5, 0.0, 0.5, 1.0], size=(distinct, d)).astype(np.float32)
    img = vocab[g.integers(0, distinct, n)]
    txt = vocab[g.integers(0, distinct, n)]
    img[0] = 0.0
    keys = g.integers(0, 3, n)
    return img, txt, keys


@pytest.fixture(params=[1, 3, 1000], ids=["rows=1", "rows=3", "one chunk"])
def chunk_rows(request, monkeypatch):
    """Chunks of 1, 3 and all query rows (CHUNK_BYTES set for the 40 items of the tests)."""
    monkeypatch.setattr(retrieval, "CHUNK_BYTES", request.param * retrieval._BYTES_PER_SCORE * 40)
    return request.param


def test_the_ties_are_real():
    img, txt, _ = tied_embeddings(40)
    sim = img @ txt.T
    assert max(len(row) - len(np.unique(row)) for row in sim) > 20  # equal similarities in a row
    assert (sim[0] == 0).all()


def test_a_chunk_orders_like_the_floats_and_ties_minus_zero_with_zero():
    """The matmul on the CPU never yields -0.0 (its sums start at +0.0); another device's might."""
    import torch

    row = torch.tensor([[0.5, -0.0, -2.0, 0.0, 3e38, -1e-30, 1e-30, 0.5, -3e38, -2.0]])
    expected = [4, 0, 7, 6, 1, 3, 5, 2, 9, 8]
    assert np.argsort(-row.numpy()[0], kind="stable").tolist() == expected
    for k in range(1, 11):
        assert retrieval._chunk_top_k(row, k)[0].tolist() == expected[:k]


@pytest.mark.parametrize("k", [1, 5, 40, 60])
def test_chunked_top_k_equals_the_full_stable_argsort(chunk_rows, k):
    for seed in range(3):
        img, txt, _ = tied_embeddings(40, seed=seed)
        assert np.array_equal(top_matches(img, txt, k), full_top(img, txt, k))
        assert np.array_equal(top_matches(txt, img, k), full_top(txt, img, k))


def test_chunked_recall_and_label_set_tables_equal_the_full_argsort(chunk_rows, monkeypatch):
    for seed in range(3):
        img, txt, keys = tied_embeddings(40, seed=seed)
        ks = (1, 5, 10)
        assert recall_at_k(img, txt, keys, keys, ks) == full_recall(img, txt, keys, ks)
        chunked = hits_by_label_set(img, txt, keys)
        with monkeypatch.context() as m:  # the table as it was: top-1 read off the full argsort
            m.setattr(retrieval, "top_matches", lambda q, i, k, device: full_top(q, i, k))
            full = hits_by_label_set(img, txt, keys)
        pd.testing.assert_frame_equal(chunked, full)
        assert chunked["images"].sum() == 40 and chunked["hit rate"].between(0.01, 0.99).any()


def test_normalised_embeddings_with_repeated_captions_rank_as_before(monkeypatch):
    """Float embeddings as a model gives them, captions repeating: the chunk's similarities are bit
    for bit the full product's, so even near-ties land as in one product (this failed on an AMD EPYC
    while chunks took numpy's float32 product)."""
    monkeypatch.setattr(retrieval, "CHUNK_BYTES", 7 * retrieval._BYTES_PER_SCORE * 500)
    monkeypatch.setattr(retrieval, "ITEM_BLOCK", 64)   # the items in blocks too
    g = np.random.default_rng(1)
    img = g.standard_normal((500, 32)).astype(np.float32)
    img /= np.linalg.norm(img, axis=1, keepdims=True)
    txt = img[g.integers(0, 40, 500)] + 0.01 * g.standard_normal((500, 32)).astype(np.float32)
    txt[::3] = txt[0]
    keys = g.integers(0, 8, 500)
    assert np.array_equal(top_matches(img, txt, 10), full_top(img, txt, 10))
    assert np.array_equal(top_matches(txt, img, 10), full_top(txt, img, 10))
    assert recall_at_k(img, txt, keys, keys) == full_recall(img, txt, keys, (1, 5, 10))


def test_no_chunk_holds_more_than_its_budget(monkeypatch):
    seen = []
    original = retrieval._chunk_top_k
    monkeypatch.setattr(retrieval, "_chunk_top_k", lambda sim, k: seen.append(tuple(sim.shape)) or original(sim, k))
    monkeypatch.setattr(retrieval, "CHUNK_BYTES", 10 * retrieval._BYTES_PER_SCORE * 200)
    img, txt, _ = tied_embeddings(200)
    top_matches(img, txt, 5)
    assert seen == [(10, 200)] * 20


def test_bad_embeddings_are_named():
    img, txt, _ = tied_embeddings(10)
    with pytest.raises(DataError, match="NaN or infinite"):
        top_matches(np.where(np.arange(6) == 2, np.nan, img), txt, 3)
    with pytest.raises(DataError, match="not embeddings of one size"):
        top_matches(img, txt[:, :4], 3)
