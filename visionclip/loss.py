"""The contrastive loss: symmetric InfoNCE over the image-text similarity matrix (CLIP), optionally
with FLAIR's label-aware soft targets, and with negatives gathered from every rank under DDP.

Notation: B local pairs on this rank, N = B * world_size pairs in the global batch.
  logits[i, j] = logit_scale * <image_i, text_j>       for local rows i, all N gathered columns j
  targets[i, j] = 1 if j is i's own caption             (InfoNCE)
                = same_label(i, j) / #same_label(i, .)   (label-aware: captions of the same label set
                                                          are positives, not negatives)
  loss = (CE(image -> texts) + CE(text -> images)) / 2,  each averaged over the local rows.
Averaged over ranks (what DDP does to gradients) this is exactly the loss of one process on the
whole N-pair batch, because every rank holds the same number B of rows.

Label-aware with `dedup`: in the image -> text softmax, caption j's logit is lowered by
log n(j), n(j) the number of captions in the global batch with j's label set, so each label set
counts once however often its captions repeat. Without it, a label set's share of the softmax grows
with its count, and for an image whose label sets look alike (a normal eye, a diabetic eye without
retinopathy, a grade-1 eye whose microaneurysms are a pixel wide) the optimum is a tie between their
captions: the similarity learns log P(label set | image) / P(label set). With it the image -> text
direction is a classifier over the batch's label sets and the similarity keeps the prior.
"""
from __future__ import annotations

import warnings
from typing import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .config import LOSSES


def _distributed() -> tuple[int, int]:
    """(rank, world_size); (0, 1) outside torch.distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate `x` from every rank along dim 0, rank order, keeping the autograd graph.

    torch.distributed.nn's all_gather sends each rank, in backward, the sum of every rank's
    gradient with respect to its own rows, so the negatives a rank contributes to the others are
    trained too. Every rank must pass the same shape (the trainer drops the last partial batch).
    """
    _, world = _distributed()
    if world == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    # torch 2.14 marks this public autograd collective deprecated in favour of the private
    # torch.distributed._functional_collectives; the public one is kept on purpose.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*all_gather is deprecated", category=FutureWarning)
        return torch.cat(all_gather(x.contiguous()), dim=0)


def gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate `x` from every rank along dim 0 (labels: nothing to differentiate)."""
    _, world = _distributed()
    if world == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(world)]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over rows of -sum_j targets[i, j] * log_softmax(logits[i])_j (targets rows sum to 1)."""
    return -(targets * F.log_softmax(logits, dim=-1)).sum(dim=-1).mean()


def build_loss(name: str) -> "ClipLoss":
    """The ClipLoss a profile's `train.loss` names."""
    if name not in LOSSES:
        raise ValueError(f"train.loss={name!r}: expected one of {LOSSES}")
    return ClipLoss(label_aware=name != "infonce", dedup=name == "label_aware_dedup")


class ClipLoss(nn.Module):
    """Symmetric InfoNCE; `label_aware=True` uses FLAIR's soft targets from `label_keys`;
    `dedup=True` (label-aware only) also counts each label set once in the image -> text softmax."""

    def __init__(self, label_aware: bool = False, dedup: bool = False):
        super().__init__()
        if dedup and not label_aware:
            raise ValueError("ClipLoss(dedup=True) needs label_aware=True: label sets come from label_keys")
        self.label_aware = label_aware
        self.dedup = dedup

    def forward(self, img_emb: torch.Tensor, txt_emb: torch.Tensor, logit_scale: torch.Tensor | float,
                label_keys: torch.Tensor | Sequence[int] | None = None, negatives: torch.Tensor | None = None,
                negative_keys: torch.Tensor | Sequence[int] | None = None) -> torch.Tensor:
        """`negatives` [B, D]: hard-negative captions (data.counterfactual), extra columns of the
        image -> text softmax for every image (label-aware: a positive for images of its label set,
        `negative_keys`); they are no rows of the text -> image direction."""
        if img_emb.shape != txt_emb.shape or img_emb.ndim != 2:
            raise ValueError(f"expected image and text embeddings of one shape [B, D], got "
                             f"{tuple(img_emb.shape)} and {tuple(txt_emb.shape)}")
        if negatives is not None and negatives.shape != txt_emb.shape:
            raise ValueError(f"expected one hard negative per caption, got {tuple(negatives.shape)} "
                             f"for {tuple(txt_emb.shape)}")
        rank, _ = _distributed()
        local = img_emb.shape[0]
        # At least fp32 similarities: in bf16 a logit scaled by up to 100 loses too many digits.
        dtype = torch.promote_types(img_emb.dtype, torch.float32)
        img, txt = img_emb.to(dtype), txt_emb.to(dtype)
        all_img, all_txt = gather_with_grad(img), gather_with_grad(txt)
        columns = all_txt if negatives is None else torch.cat([all_txt, gather_with_grad(negatives.to(dtype))])
        with torch.autocast(device_type=img.device.type, enabled=False):  # autocast would recast to bf16
            logits_per_image = logit_scale * img @ columns.T  # [B, N or 2N]: local images vs every caption
            logits_per_text = logit_scale * txt @ all_img.T   # [B, N]: local captions vs every image
        # Row i of this rank is pair rank * B + i of the global batch.
        own = torch.arange(local, device=img.device) + rank * local

        if not self.label_aware:
            return (F.cross_entropy(logits_per_image, own) + F.cross_entropy(logits_per_text, own)) / 2

        all_keys = gather_no_grad(self._keys(label_keys, local, img.device, "label_keys"))
        keys = all_keys[rank * local:(rank + 1) * local]
        column_keys = all_keys if negatives is None else torch.cat(
            [all_keys, gather_no_grad(self._keys(negative_keys, local, img.device, "negative_keys"))])
        same = (keys[:, None] == column_keys[None, :]).float()  # [B, columns], own pair always included
        if self.dedup:  # n(j): how many captions of the global batch share caption j's label set
            repeats = (column_keys[:, None] == column_keys[None, :]).sum(dim=0).to(logits_per_image.dtype)
            logits_per_image = logits_per_image - repeats.log()
        # Same-label is symmetric, so a caption's positives are the images of its label set.
        text_targets = same[:, :all_keys.shape[0]]
        return (soft_cross_entropy(logits_per_image, same / same.sum(dim=1, keepdim=True))
                + soft_cross_entropy(logits_per_text, text_targets / text_targets.sum(dim=1, keepdim=True))) / 2

    @staticmethod
    def _keys(keys, local: int, device, name: str) -> torch.Tensor:
        if keys is None:
            raise ValueError(f"ClipLoss(label_aware=True) needs {name}, one per pair")
        keys = torch.as_tensor(keys, device=device).long().view(-1)
        if keys.shape[0] != local:
            raise ValueError(f"{name} has {keys.shape[0]} entries for {local} pairs")
        return keys
