"""AdamW with weight decay only where it regularises: matrices and convolution kernels.

Norm weights, biases, the logit scale (and any other 0-/1-d parameter, which covers the
embeddings' LayerNorm) are excluded: decaying them shrinks scales the model needs.
"""
from __future__ import annotations

import torch


def decays(name: str, param: torch.Tensor) -> bool:
    """Weight decay on >= 2-d tensors (linear/conv/embedding matrices), never on the logit scale."""
    return param.ndim >= 2 and "logit_scale" not in name


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (decay if decays(name, p) else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=(0.9, 0.98), eps=1e-6,
                             foreach=None)
