"""ClipLoss against a plain reference, label-aware targets, and the two-process gloo equivalence."""
from __future__ import annotations

import gc
import math
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from visionclip.config import LOSSES
from visionclip.loss import ClipLoss, build_loss


def naive_infonce(img, txt, scale):
    """CLIP's loss written with loops: mean of image->text and text->image cross-entropy."""
    n = img.shape[0]
    sim = [[scale * float(img[i] @ txt[j]) for j in range(n)] for i in range(n)]
    i2t = t2i = 0.0
    for i in range(n):
        i2t += -(sim[i][i] - math.log(sum(math.exp(sim[i][j]) for j in range(n))))
        t2i += -(sim[i][i] - math.log(sum(math.exp(sim[j][i]) for j in range(n))))
    return (i2t / n + t2i / n) / 2


def naive_label_aware(img, txt, scale, keys, dedup=False):
    """FLAIR's soft targets with loops: every pair with the same key is a positive, equally weighted.
    With `dedup`, an image's logit for caption j is lowered by log(#captions with j's key)."""
    n = img.shape[0]
    sim = [[scale * float(img[i] @ txt[j]) for j in range(n)] for i in range(n)]
    repeats = [sum(1 for k in keys if k == keys[j]) for j in range(n)]
    i2t = [[sim[i][j] - (math.log(repeats[j]) if dedup else 0.0) for j in range(n)] for i in range(n)]
    total = 0.0
    for i in range(n):
        positives = [j for j in range(n) if keys[j] == keys[i]]
        log_z_row = math.log(sum(math.exp(i2t[i][j]) for j in range(n)))
        log_z_col = math.log(sum(math.exp(sim[j][i]) for j in range(n)))
        total += -sum(i2t[i][j] - log_z_row for j in positives) / len(positives) / 2
        total += -sum(sim[j][i] - log_z_col for j in positives) / len(positives) / 2
    return total / n


def naive_with_negatives(img, txt, neg, scale, keys, neg_keys, dedup=False):
    """Hard negatives as extra image->text columns (positives where their key is the image's);
    the text->image direction has the captions' rows only."""
    n = img.shape[0]
    cols = list(txt) + list(neg)
    col_keys = list(keys) + list(neg_keys)
    i2t = [[scale * float(img[i] @ c) for c in cols] for i in range(n)]
    if dedup:
        i2t = [[v - math.log(col_keys.count(col_keys[j])) for j, v in enumerate(row)] for row in i2t]
    t2i = [[scale * float(txt[j] @ img[i]) for i in range(n)] for j in range(n)]
    total = 0.0
    for i in range(n):
        pos = [j for j in range(len(cols)) if col_keys[j] == keys[i]]
        log_z = math.log(sum(math.exp(v) for v in i2t[i]))
        total += -sum(i2t[i][j] - log_z for j in pos) / len(pos) / 2
        pos_t = [k for k in range(n) if keys[k] == keys[i]]
        log_z_t = math.log(sum(math.exp(v) for v in t2i[i]))
        total += -sum(t2i[i][k] - log_z_t for k in pos_t) / len(pos_t) / 2
    return total / n


def _embeddings(n=6, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    img = torch.nn.functional.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=1)
    txt = torch.nn.functional.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=1)
    return img, txt


def test_infonce_matches_naive_reference():
    img, txt = _embeddings()
    loss = ClipLoss()(img, txt, torch.tensor(14.0, dtype=torch.float64))
    assert loss.item() == pytest.approx(naive_infonce(img, txt, 14.0), rel=1e-6)


def test_label_aware_matches_naive_reference():
    img, txt = _embeddings()
    keys = [3, 1, 3, 2, 1, 3]
    loss = ClipLoss(label_aware=True)(img, txt, 10.0, torch.tensor(keys))
    assert loss.item() == pytest.approx(naive_label_aware(img, txt, 10.0, keys), rel=1e-6)


def test_dedup_matches_naive_reference():
    img, txt = _embeddings()
    keys = [3, 1, 3, 2, 1, 3]
    loss = build_loss("label_aware_dedup")(img, txt, 10.0, torch.tensor(keys))
    assert loss.item() == pytest.approx(naive_label_aware(img, txt, 10.0, keys, dedup=True), rel=1e-6)
    assert loss.item() != pytest.approx(naive_label_aware(img, txt, 10.0, keys), rel=1e-3)


@pytest.mark.parametrize("name", LOSSES)
def test_hard_negatives_match_naive_reference(name):
    img, txt = _embeddings()
    neg, _ = _embeddings(seed=3)
    keys, neg_keys = [3, 1, 3, 2, 1, 3], [1, 9, 3, 8, 7, 2]
    label_aware = name != "infonce"
    ref_keys = keys if label_aware else list(range(6))           # InfoNCE: only the own caption is positive
    ref_neg_keys = neg_keys if label_aware else [-1 - k for k in range(6)]
    loss = build_loss(name)(img, txt, 10.0, torch.tensor(keys) if label_aware else None, negatives=neg,
                            negative_keys=torch.tensor(neg_keys) if label_aware else None)
    assert loss.item() == pytest.approx(naive_with_negatives(img, txt, neg, 10.0, ref_keys, ref_neg_keys,
                                                             dedup=name == "label_aware_dedup"), rel=1e-6)


def test_a_hard_negative_like_the_caption_raises_the_loss():
    """A counterfactual report that embeds next to the image's own caption is a confusable
    negative: the loss grows as it approaches, and its gradient pushes it away."""
    img, noise = _embeddings()
    txt = torch.nn.functional.normalize(img + 0.3 * noise, dim=1)  # trained pairs: each caption by its image
    far = -txt
    near = torch.nn.functional.normalize(txt + 0.2 * noise.roll(1, 0), dim=1).requires_grad_(True)
    keys, neg_keys = torch.arange(6), torch.arange(6) + 100
    for name in LOSSES:
        kw = {"label_keys": keys, "negative_keys": neg_keys} if name != "infonce" else {}
        base = build_loss(name)(img, txt, 10.0, **({"label_keys": keys} if name != "infonce" else {}))
        with_far = build_loss(name)(img, txt, 10.0, negatives=far, **kw)
        with_near = build_loss(name)(img, txt, 10.0, negatives=near, **kw)
        assert base.item() < with_far.item() < with_near.item()
    with_near.backward()
    # descending the loss moves each negative away from its own image
    assert ((near.grad * img).sum(dim=1) > 0).all()


@pytest.mark.parametrize("name", ["label_aware", "label_aware_dedup"])
def test_label_aware_with_distinct_keys_is_infonce(name):
    img, txt = _embeddings(seed=1)
    hard = ClipLoss()(img, txt, 20.0)
    soft = build_loss(name)(img, txt, 20.0, torch.arange(6) * 7)
    assert soft.item() == pytest.approx(hard.item(), rel=1e-12)


def test_label_aware_needs_keys():
    img, txt = _embeddings()
    with pytest.raises(ValueError, match="label_keys"):
        ClipLoss(label_aware=True)(img, txt, 1.0)
    with pytest.raises(ValueError, match="label_aware"):
        ClipLoss(dedup=True)
    with pytest.raises(ValueError, match="train.loss"):
        build_loss("supcon")
    with pytest.raises(ValueError, match="negative_keys"):
        ClipLoss(label_aware=True)(img, txt, 1.0, torch.arange(6), negatives=txt)
    with pytest.raises(ValueError, match="one hard negative per caption"):
        ClipLoss()(img, txt, 1.0, negatives=txt[:3])


def _fit_captions_to_lookalike_images(name: str, steps: int = 400) -> tuple[float, float]:
    """Six images that look identical (one embedding), four of label set A and two of B, each with its
    own free caption embedding, trained by the loss alone. Returns the image's cosine with the A and
    the B captions (means): what retrieval ranks when the image cannot tell A from B."""
    torch.manual_seed(0)
    image = torch.nn.functional.normalize(torch.randn(1, 8, dtype=torch.float64), dim=1).expand(6, 8)
    captions = torch.nn.Parameter(torch.randn(6, 8, dtype=torch.float64))
    keys = torch.tensor([0, 0, 0, 0, 1, 1])
    opt = torch.optim.Adam([captions], lr=0.02)
    loss_fn = build_loss(name)
    for _ in range(steps):
        opt.zero_grad()
        loss_fn(image, torch.nn.functional.normalize(captions, dim=1), 10.0, keys).backward()
        opt.step()
    cos = (torch.nn.functional.normalize(captions, dim=1) @ image[0]).detach()
    return cos[:4].mean().item(), cos[4:].mean().item()


def test_dedup_keeps_the_label_prior_for_lookalike_images():
    """Label-aware targets tie the captions of label sets an image cannot tell apart (the softmax
    share of A already grows with its count, so A's similarity need not); counting each label set once
    makes the similarity carry P(A | image) / P(B | image) = 2, i.e. a gap of log(2) / logit scale."""
    a, b = _fit_captions_to_lookalike_images("label_aware")
    assert abs(a - b) < 0.01
    a, b = _fit_captions_to_lookalike_images("label_aware_dedup")
    assert a - b == pytest.approx(math.log(2) / 10.0, abs=0.01)


# ---- two processes (gloo) vs one process on the concatenated batch ---------------------------
WORLD = 2
LOCAL_BATCH = 4


def _towers():
    """Tiny norm-free linear 'towers' (so per-rank batch statistics cannot differ) + logit scale."""
    torch.manual_seed(0)
    image_tower = torch.nn.Linear(12, 8, dtype=torch.float64)
    text_tower = torch.nn.Linear(10, 8, dtype=torch.float64)
    logit_scale = torch.nn.Parameter(torch.tensor(math.log(1 / 0.07), dtype=torch.float64))
    return image_tower, text_tower, logit_scale


def _batch():
    g = torch.Generator().manual_seed(1)
    images = torch.randn(WORLD * LOCAL_BATCH, 12, generator=g, dtype=torch.float64)
    texts = torch.randn(WORLD * LOCAL_BATCH, 10, generator=g, dtype=torch.float64)
    keys = torch.tensor([0, 1, 0, 2, 1, 1, 3, 0])  # repeats within and across ranks
    return images, texts, keys


def _negatives():
    """Hard-negative texts and their keys (some equal to other pairs' keys: positives for those images)."""
    g = torch.Generator().manual_seed(2)
    return torch.randn(WORLD * LOCAL_BATCH, 10, generator=g, dtype=torch.float64), torch.tensor([1, 0, 5, 0, 2, 6, 0, 1])


def _loss_and_grads(rows: slice, name: str, hard: bool = False):
    image_tower, text_tower, logit_scale = _towers()
    images, texts, keys = _batch()
    img = torch.nn.functional.normalize(image_tower(images[rows]), dim=1)
    txt = torch.nn.functional.normalize(text_tower(texts[rows]), dim=1)
    extra = {}
    if hard:
        neg_texts, neg_keys = _negatives()
        extra = {"negatives": torch.nn.functional.normalize(text_tower(neg_texts[rows]), dim=1),
                 "negative_keys": neg_keys[rows]}
    loss = build_loss(name)(img, txt, logit_scale.exp(), keys[rows], **extra)
    loss.backward()
    params = list(image_tower.parameters()) + list(text_tower.parameters()) + [logit_scale]
    return loss.detach(), [p.grad for p in params]


def _worker(rank: int, out_dir: str):
    # File rendezvous: no free-port race with other tests running at the same time.
    rendezvous = "file://" + os.path.join(out_dir, "rendezvous")
    dist.init_process_group("gloo", init_method=rendezvous, rank=rank, world_size=WORLD)
    try:
        results = {}
        for name in LOSSES:
            for hard in (False, True):
                loss, grads = _loss_and_grads(slice(rank * LOCAL_BATCH, (rank + 1) * LOCAL_BATCH), name, hard)
                # What DDP does: average the gradients (and here the loss) over ranks.
                for t in [loss] + grads:
                    dist.all_reduce(t)
                    t /= WORLD
                results[name, hard] = {"loss": loss, "grads": grads}
        if rank == 0:
            torch.save(results, os.path.join(out_dir, "dist.pt"))
        dist.barrier()  # gloo aborts if one rank destroys the group while its peer still uses it
    finally:
        gc.collect()  # free the autograd graph's pending gloo work before the group goes
        dist.destroy_process_group()



def test_two_process_gloo_equals_one_process(tmp_path):
    """Each rank computes the loss of its B local rows against all N gathered columns; the
    all_gather backward hands every rank the sum of all ranks' gradients for its rows. The mean of
    the per-rank losses is the single-process loss over N rows (equal B per rank), and DDP averages
    gradients over ranks, so the rank-averaged gradient must equal the single-process gradient.
    Tolerance 1e-10 in float64 (only summation order differs). One spawn serves every loss (the
    dedup counts are over the gathered keys, so they too must match the single process)."""
    mp.spawn(_worker, args=(str(tmp_path),), nprocs=WORLD, join=True)
    distributed = torch.load(tmp_path / "dist.pt")
    for name in LOSSES:
        for hard in (False, True):  # hard negatives are gathered from every rank too
            single_loss, single_grads = _loss_and_grads(slice(None), name, hard)
            assert distributed[name, hard]["loss"].item() == pytest.approx(single_loss.item(), abs=1e-10)
            for g_dist, g_single in zip(distributed[name, hard]["grads"], single_grads):
                torch.testing.assert_close(g_dist, g_single, atol=1e-10, rtol=0)
        # the gathered negatives matter: a rank-local loss would give other gradients
        assert not torch.allclose(single_grads[0], _local_only_grads(name)[0], atol=1e-6)


def _local_only_grads(name: str):
    """Gradients of the per-rank loss without gathering (each rank sees only its own B pairs)."""
    image_tower, text_tower, logit_scale = _towers()
    images, texts, keys = _batch()
    total = 0
    for r in range(WORLD):
        rows = slice(r * LOCAL_BATCH, (r + 1) * LOCAL_BATCH)
        img = torch.nn.functional.normalize(image_tower(images[rows]), dim=1)
        txt = torch.nn.functional.normalize(text_tower(texts[rows]), dim=1)
        total = total + build_loss(name)(img, txt, logit_scale.exp(), keys[rows]) / WORLD
    total.backward()
    return [p.grad for p in list(image_tower.parameters()) + list(text_tower.parameters())]


def test_similarities_stay_fp32_under_bf16_autocast():
    img, txt = (t.float() for t in _embeddings(n=8, d=16, seed=2))
    reference = ClipLoss()(img, txt, torch.tensor(100.0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast = ClipLoss()(img, txt, torch.tensor(100.0))
    assert autocast.dtype == torch.float32
    assert autocast.item() == pytest.approx(reference.item(), rel=1e-6)
