"""Saved models as evaluation and prediction use them: loaded in eval mode and channels-last (the
trainer's convolution kernels), their settings read back, and the untrained chance reference."""
from __future__ import annotations

from pathlib import Path
import torch

from .errors import CheckpointError


def load_clip(model_dir: str | Path, device: str | torch.device = "cpu"):
    """(model, tokenizer) from a save_pretrained() directory, on `device`, with a clear error when it
    is not one."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise CheckpointError(f"{model_dir}: no such model directory; expected the output of "
                              "VisionCLIP.save_pretrained (run_dir/model)")
    from .model import VisionCLIP

    model, tokenizer = VisionCLIP.from_pretrained(model_dir)
    model.eval()
    # channels-last weights as in training: embedding runs the trainer's convolution kernels (and ~10% faster)
    return model.to(device, memory_format=torch.channels_last), tokenizer


def load_classifier(sup_dir: str | Path, device: str | torch.device = "cpu"):
    sup_dir = Path(sup_dir)
    if not sup_dir.is_dir():
        raise CheckpointError(f"{sup_dir}: no supervised classifier; train it with `visionclip train --supervised`")
    from .model import ImageClassifier

    return ImageClassifier.from_pretrained(sup_dir).to(device, memory_format=torch.channels_last)


def chance_model(profile, tokenizer, image_size: int | None = None, device: str | torch.device = "cpu"):
    """An untrained VisionCLIP with the run's configuration and seed (the chance reference)."""
    from .model import build_model
    from .seeding import seed_everything

    seed_everything(profile.seed)
    vocab_size = getattr(tokenizer, "vocab_size", None) or len(tokenizer)
    model = build_model(profile.model, vocab_size, image_size or profile.train.image_size)
    model.eval()
    return model.to(device, memory_format=torch.channels_last)
