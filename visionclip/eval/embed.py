"""Frozen embeddings: images and texts through a trained (or untrained) VisionCLIP, saved as .npz.

Embedding is the expensive step of evaluation, so the zero-shot table, few-shot probes, retrieval
and UMAP maps all reuse the arrays saved under run_dir/embeddings.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

from ..data.datasets import to_model_input
from ..errors import DataError
from ..io import atomic_path
from ..progress import progress
from ..precision import choose_precision


def device_of(model) -> torch.device:
    try:
        return next(model.parameters()).device
    except (AttributeError, StopIteration, TypeError):
        return torch.device("cpu")


class RecordImages(torch.utils.data.Dataset):
    """Evaluation preprocessing of any records with a `.path` (corpus records have no single label)."""

    def __init__(self, records, image_size: int, flair_exact: bool = False):
        self.records, self.image_size, self.flair_exact = list(records), int(image_size), bool(flair_exact)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict:
        from ..data.datasets import load_image, to_tensor
        from ..data.transforms import preprocess_fundus

        img = load_image(self.records[i].path, self.image_size)
        return {"image": to_tensor(preprocess_fundus(img, self.image_size, self.flair_exact)), "index": i}


def _as_dataset(dataset_or_records, image_size: int, flair_exact: bool):
    """Accept a torch Dataset or a list of records (benchmark records go through data.datasets.ImageDataset)."""
    if hasattr(dataset_or_records, "__getitem__") and not isinstance(dataset_or_records, (list, tuple)):
        return dataset_or_records
    records = list(dataset_or_records)
    if records and hasattr(records[0], "label"):
        from ..data.datasets import ImageDataset

        return ImageDataset(records, image_size, flair_exact=flair_exact)
    return RecordImages(records, image_size, flair_exact)


def _image_of(item) -> torch.Tensor:
    """The image tensor of one dataset item (a dict with 'image', a tuple, or a bare tensor)."""
    if isinstance(item, Mapping):
        return item["image"]
    if isinstance(item, (tuple, list)):
        return item[0]
    return item


def inference_autocast(model, precision: str = "auto"):
    """Autocast for embedding: by default what training uses (bf16 where the hardware computes it
    natively, fp32 otherwise), about twice as fast as fp32 on a CPU with native bf16; pass "fp32" to
    embed in full precision."""
    return choose_precision(precision, device_of(model)).autocast()


def collate_images(items):
    return torch.stack([torch.as_tensor(_image_of(it)) for it in items])


@torch.no_grad()
def embed_images(model, dataset_or_records, image_size: int, batch_size: int = 64,
                 flair_exact: bool = False, desc: str = "embed images", precision: str = "auto") -> np.ndarray:
    """L2-normalised image embeddings [N, D] (float32), eval mode, no grad, with a progress bar.

    Channels-last input under `inference_autocast(model, precision)`, as in training."""
    dataset = _as_dataset(dataset_or_records, image_size, flair_exact)
    if len(dataset) == 0:
        raise DataError("embed_images: the dataset is empty (no images to embed)")
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0,
                                         collate_fn=collate_images)
    was_training = model.training
    model.eval()
    device = device_of(model)
    out = []
    try:
        for images in progress(loader, desc=desc, total=len(loader), unit="batch"):
            with inference_autocast(model, precision):
                emb = model.encode_image(to_model_input(images, device))
            out.append(torch.nn.functional.normalize(emb.float(), dim=-1).cpu())
    finally:
        model.train(was_training)
    return torch.cat(out).numpy().astype(np.float32)


@torch.no_grad()
def embed_texts(model, tokenizer, texts: Sequence[str], context_length: int, batch_size: int = 256,
                desc: str = "embed texts", precision: str = "auto") -> np.ndarray:
    """L2-normalised text embeddings [N, D] (float32), eval mode, no grad, with a progress bar,
    under `inference_autocast(model, precision)`."""
    texts = list(texts)
    if not texts:
        raise DataError("embed_texts: no texts to embed")
    was_training = model.training
    model.eval()
    device = device_of(model)
    out = []
    try:
        starts = range(0, len(texts), batch_size)
        for s in progress(starts, desc=desc, total=len(starts), unit="batch"):
            batch = tokenizer(texts[s:s + batch_size], context_length)
            ids = torch.as_tensor(batch["input_ids"]).to(device)
            mask = torch.as_tensor(batch["attention_mask"]).to(device)
            with inference_autocast(model, precision):
                emb = model.encode_text(ids, mask)
            out.append(torch.nn.functional.normalize(emb.float(), dim=-1).cpu())
    finally:
        model.train(was_training)
    return torch.cat(out).numpy().astype(np.float32)


def embeddings_path(run_dir: str | Path, name: str) -> Path:
    return Path(run_dir) / "embeddings" / f"{name}.npz"


def save_embeddings(run_dir: str | Path, name: str, **arrays) -> Path:
    """Write arrays (embeddings, labels, paths, domains...) to run_dir/embeddings/<name>.npz, atomically."""
    path = embeddings_path(run_dir, name)
    clean = {k: np.asarray(v) for k, v in arrays.items()}
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:  # a file object: np.savez must not append its own suffix
            np.savez(f, **clean)
    return path


def load_embeddings(run_dir: str | Path, name: str) -> dict[str, np.ndarray]:
    path = embeddings_path(run_dir, name)
    if not path.is_file():
        raise DataError(f"{path}: embeddings not found; run the evaluation that writes them first")
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


__all__ = ["embed_images", "embed_texts", "save_embeddings", "load_embeddings", "embeddings_path",
           "inference_autocast"]
