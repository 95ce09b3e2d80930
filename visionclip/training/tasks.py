"""The two training tasks one loop runs: CLIP on image-caption pairs, and the label-supervised
ceiling (the same image tower trained on the labels). Each builds its model, its batches and its
loss, validates on the validation pool, and saves its final model."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..config import Profile
from ..data.datasets import to_model_input
from ..data.table import LABEL_COLUMNS, CorpusTable
from ..precision import Precision
from ..schema import DR_GRADES, FLAG_COLUMNS
from ..seeding import derive_seed, seed_everything
from . import checkpoint as ckpt


class CaptionCollate:
    """Stacks images and tokenises the captions of a batch in one call (runs in the workers)."""

    def __init__(self, tokenizer, context_length: int):
        self.tokenizer = tokenizer
        self.context_length = context_length

    def __call__(self, items: Sequence[dict]) -> dict:
        tokens = self.tokenizer([it["caption"] for it in items], self.context_length)
        batch = {
            "image": torch.stack([it["image"] for it in items]),
            "input_ids": tokens["input_ids"],
            "attention_mask": tokens["attention_mask"],
            "label_key": torch.tensor([int(it["label_key"]) for it in items], dtype=torch.long),
            "labels": torch.stack([torch.as_tensor(it["labels"], dtype=torch.long) for it in items]),
            "index": torch.tensor([int(it["index"]) for it in items], dtype=torch.long),
        }
        if "negative_caption" in items[0]:  # train.hard_negatives: one counterfactual report per image
            negatives = self.tokenizer([it["negative_caption"] for it in items], self.context_length)
            batch.update(negative_ids=negatives["input_ids"], negative_mask=negatives["attention_mask"],
                         negative_key=torch.tensor([int(it["negative_label_key"]) for it in items],
                                                   dtype=torch.long))
        return batch


def in_batch_accuracy(img: torch.Tensor, txt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Image->text and text->image top-1 accuracy in the batch, as 0-d tensors (no host sync)."""
    sim = img.float() @ txt.float().T
    target = torch.arange(sim.shape[0], device=sim.device)
    return (sim.argmax(1) == target).float().mean(), (sim.argmax(0) == target).float().mean()


def local_clip_loss(img: torch.Tensor, txt: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE on one process's pairs (validation runs on rank 0 alone: no gather)."""
    logits = logit_scale * img.float() @ txt.float().T
    target = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def retrieval_by_label_set(img: torch.Tensor, txt: torch.Tensor, keys: torch.Tensor) -> dict:
    """Image->text top-1 over the whole val pool: exact pair, and 'any caption with my label set'."""
    top1 = (img.float() @ txt.float().T).argmax(1)
    n = img.shape[0]
    counts = torch.bincount(torch.unique(keys, return_inverse=True)[1])
    return {
        "i2t_top1_label_set": (keys[top1] == keys).float().mean().item(),
        "i2t_top1_exact": (top1 == torch.arange(n, device=top1.device)).float().mean().item(),
        "chance": counts.max().item() / n,
        "val_images": n,
    }


class ClipTask:
    name = "clip"

    def __init__(self, profile: Profile, train_records: Sequence, resumed: ckpt.TrainState | None):
        from ..loss import build_loss
        from ..model import build_model
        from ..text import CaptionTokenizer, build_tokenizer

        if resumed is not None and (resumed.path / "tokenizer").is_dir():
            self.tokenizer = CaptionTokenizer.load(resumed.path / "tokenizer")
        else:  # both languages: the vocab must cover zh and en prompts alike
            captions = (c for pair in _caption_pairs(train_records) for c in pair if c)
            self.tokenizer = build_tokenizer(profile.model, captions)
        self.profile = profile
        seed_everything(derive_seed(profile.seed, "init", self.name))
        self.model = build_model(profile.model, self.tokenizer.vocab_size, profile.train.image_size)
        self.loss_fn = build_loss(profile.train.loss)
        self.hard_negatives = profile.train.hard_negatives
        self.collate = CaptionCollate(self.tokenizer, profile.model.context_length)

    def step_loss(self, model, batch: dict, device: torch.device) -> tuple[torch.Tensor, dict]:
        images = to_model_input(batch["image"], device)
        ids = batch["input_ids"].to(device, non_blocking=True)
        mask = batch["attention_mask"].to(device, non_blocking=True)
        keys = batch["label_key"].to(device, non_blocking=True)
        hard = "negative_ids" in batch
        if hard:  # the negatives go through the same forward (one DDP call), as more rows of text
            ids = torch.cat([ids, batch["negative_ids"].to(device, non_blocking=True)])
            mask = torch.cat([mask, batch["negative_mask"].to(device, non_blocking=True)])
        img, txt, logit_scale = model(images, ids, mask)
        img, txt = img.float(), txt.float()
        txt, negatives = (txt[:len(img)], txt[len(img):]) if hard else (txt, None)
        label_aware = self.loss_fn.label_aware
        loss = self.loss_fn(img, txt, logit_scale.float(), label_keys=keys if label_aware else None,
                            negatives=negatives,
                            negative_keys=batch["negative_key"].to(device) if hard and label_aware else None)
        i2t, t2i = in_batch_accuracy(img.detach(), txt.detach())
        # the logged scalars stay tensors: the loop reads them with the step's flags in one copy
        return loss, {"logit_scale": logit_scale.detach().float(), "i2t_acc": i2t, "t2i_acc": t2i}

    @torch.no_grad()
    def validate(self, model, loader, device: torch.device, precision: Precision) -> dict:
        imgs, txts, keys, scale = [], [], [], None
        for batch in loader:
            with precision.autocast():
                img, txt, scale = model(to_model_input(batch["image"], device), batch["input_ids"].to(device),
                                        batch["attention_mask"].to(device))
            imgs.append(img.float()); txts.append(txt.float()); keys.append(batch["label_key"].to(device))
        img, txt, key = torch.cat(imgs), torch.cat(txts), torch.cat(keys)
        chunk = self.profile.train.batch_size  # the loss at the training batch size, comparable to train
        losses = [local_clip_loss(img[i:i + chunk], txt[i:i + chunk], scale.float()).item()
                  for i in range(0, len(img) - chunk + 1, chunk)] or [local_clip_loss(img, txt, scale.float()).item()]
        return {"val_loss": float(np.mean(losses)), **retrieval_by_label_set(img, txt, key)}

    def save_final(self, model, out_dir: Path) -> None:
        model.save_pretrained(out_dir, self.tokenizer)

    def save_side_files(self, tmp: Path) -> None:
        self.tokenizer.save(tmp / "tokenizer")


def _caption_pairs(records: Sequence) -> Iterable[tuple[str, str]]:
    """(caption_zh, caption_en) per record; a CorpusTable gives them without building records."""
    if isinstance(records, CorpusTable):
        return records.caption_pairs()
    return ((r.caption_zh, r.caption_en) for r in records)


def label_priors(records: Sequence) -> dict[str, list[float]]:
    """Share of each DR grade and of each flag in `records`, add-one smoothed so none is 0 or 1."""
    n, n_grades = len(records), len(DR_GRADES)
    labels = (records.label_matrix() if isinstance(records, CorpusTable) else  # a table has them as columns
              np.array([[int(r.labels[c]) for c in LABEL_COLUMNS] for r in records],
                       dtype=np.int64).reshape(-1, len(LABEL_COLUMNS)))
    grades = np.bincount(labels[:, LABEL_COLUMNS.index("dr_grade")], minlength=n_grades)
    flags = [int(labels[:, LABEL_COLUMNS.index(c)].sum(dtype=np.int64)) for c in FLAG_COLUMNS]
    return {"dr_grade": [float((g + 1) / (n + n_grades)) for g in grades],
            "flags": [float((f + 1) / (n + 2)) for f in flags]}


class SupervisedTask:
    """The ceiling: the same image tower trained on the labels (dr_grade CE + BCE over the flags)."""
    name = "supervised"

    def __init__(self, profile: Profile, train_records: Sequence, resumed: ckpt.TrainState | None):
        from ..model import build_image_classifier
        self.profile = profile
        seed_everything(derive_seed(profile.seed, "init", self.name))
        self.model = build_image_classifier(profile.model, profile.train.image_size)
        self.hard_negatives = False  # labels, not captions: nothing to contrast
        self.model.label_priors = label_priors(train_records)
        self.collate = _image_label_collate

    @staticmethod
    def _loss(out: dict, labels: torch.Tensor) -> torch.Tensor:
        return (F.cross_entropy(out["dr_grade"].float(), labels[:, 0])
                + F.binary_cross_entropy_with_logits(out["flags"].float(), labels[:, 1:].float()))

    def step_loss(self, model, batch: dict, device: torch.device) -> tuple[torch.Tensor, dict]:
        labels = batch["labels"].to(device, non_blocking=True)
        out = model(to_model_input(batch["image"], device))
        acc = (out["dr_grade"].detach().argmax(1) == labels[:, 0]).float().mean()
        return self._loss(out, labels), {"dr_grade_acc": acc}

    @torch.no_grad()
    def validate(self, model, loader, device: torch.device, precision: Precision) -> dict:
        losses, hits, flag_hits, n = [], 0.0, 0.0, 0
        for batch in loader:
            labels = batch["labels"].to(device)
            with precision.autocast():
                out = model(to_model_input(batch["image"], device))
            losses.append(self._loss(out, labels).item() * len(labels))
            hits += (out["dr_grade"].argmax(1) == labels[:, 0]).sum().item()
            flag_hits += ((out["flags"].float() > 0).long() == labels[:, 1:]).float().mean(1).sum().item()
            n += len(labels)
        return {"val_loss": sum(losses) / n, "dr_grade_acc": hits / n, "flag_acc": flag_hits / n,
                "val_images": n}

    def save_final(self, model, out_dir: Path) -> None:
        model.save_pretrained(out_dir)

    def save_side_files(self, tmp: Path) -> None:
        pass


def _image_label_collate(items: Sequence[dict]) -> dict:
    return {"image": torch.stack([it["image"] for it in items]),
            "labels": torch.stack([torch.as_tensor(it["labels"], dtype=torch.long) for it in items]),
            "index": torch.tensor([int(it["index"]) for it in items], dtype=torch.long)}
