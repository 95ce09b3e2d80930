"""The supervised ceiling's reference row: the label-trained classifier's heads mapped to each
benchmark's classes, with its training prior removed."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch

from ..data.datasets import ImageDataset, to_model_input
from ..data.transforms import Preprocess
from ..errors import DataError
from ..progress import progress
from .embed import collate_images, device_of, inference_autocast


def _class_role(dataset: str, name: str) -> str:
    n = name.lower()
    if dataset == "refuge":
        return "no_gc" if n.startswith("no") else "gc"
    if dataset == "fives":
        if "normal" in n:
            return "normal"
        if "macular" in n:
            return "amd"
        if "diabetic" in n:
            return "dr"
        if "glaucoma" in n:
            return "gc"
    raise DataError(f"supervised ceiling: cannot map class {name!r} of {dataset} to the classifier's heads")


def ceiling_probs(heads: Mapping[str, torch.Tensor], dataset: str, class_names: Sequence[str]) -> np.ndarray:
    """Map the classifier's heads ({"dr_grade": [B,5], "flags": [B,14]} logits) to a benchmark's classes.

    MESSIDOR-2: the 5 grade probabilities; original MESSIDOR (0-3): grades 3 and 4 merged (clipped);
    REFUGE: [1 - p(glaucoma), p(glaucoma)]; FIVES: scores normal = (1-p_amd)(1-p_dr)(1-p_gc),
    AMD = p_amd, DR = p(grade > 0), glaucoma = p_gc, renormalised to sum to one.
    """
    from ..schema import FLAG_COLUMNS

    grade = torch.softmax(heads["dr_grade"].float(), -1).numpy()
    flags = torch.sigmoid(heads["flags"].float()).numpy()
    p_amd = flags[:, FLAG_COLUMNS.index("is_amd")]
    p_gc = flags[:, FLAG_COLUMNS.index("is_gc")]
    if dataset == "messidor2":
        return grade
    if dataset == "messidor":
        return np.concatenate([grade[:, :3], grade[:, 3:].sum(1, keepdims=True)], 1)
    p_dr = 1.0 - grade[:, 0]
    roles = {"amd": p_amd, "gc": p_gc, "dr": p_dr, "no_gc": 1.0 - p_gc,
             "normal": (1 - p_amd) * (1 - p_dr) * (1 - p_gc)}
    scores = np.stack([roles[_class_role(dataset, c)] for c in class_names], 1)
    return scores / np.clip(scores.sum(1, keepdims=True), 1e-12, None)


def balance_heads(heads: Mapping[str, torch.Tensor], priors: Mapping[str, Sequence[float]]) -> dict:
    """Logit adjustment (Menon et al., 2021): the heads' logits as if every DR grade, and both values
    of every flag, had been equally frequent in training.

    ACA weighs every class equally; a classifier trained on a corpus where glaucoma is 7% of eyes
    almost never says glaucoma at p > 0.5, so without this the ceiling would measure the corpus's
    prevalence rather than what the encoder saw. Zero-shot prototypes are not adjusted: under InfoNCE
    and FLAIR's label-aware targets they carry no prior, under label_aware_dedup the corpus's.
    """
    grade_prior = torch.tensor(priors["dr_grade"], dtype=torch.float32)
    flag_prior = torch.tensor(priors["flags"], dtype=torch.float32)
    return {"dr_grade": heads["dr_grade"].float() - grade_prior.log(),
            "flags": heads["flags"].float() - torch.logit(flag_prior)}


@torch.no_grad()
def classifier_heads(classifier, records: Sequence, preprocess: Preprocess, batch_size: int = 64,
                     num_workers: int = 0) -> dict:
    """Concatenated head logits of the supervised classifier over records, preprocessed as the
    zero-shot rows it is compared with (run_evaluation passes the same Preprocess), decoded in
    `num_workers` DataLoader workers, on the classifier's device."""
    classifier.eval()
    device = device_of(classifier)
    loader = torch.utils.data.DataLoader(ImageDataset(records, preprocess), batch_size=batch_size, shuffle=False,
                                         num_workers=num_workers, collate_fn=collate_images,
                                         pin_memory=device.type == "cuda")
    out: dict[str, list] = {"dr_grade": [], "flags": []}
    for images in progress(loader, desc="supervised ceiling", total=len(loader), unit="batch"):
        with inference_autocast(classifier):
            heads = classifier(to_model_input(images, device))
        for k in out:
            out[k].append(heads[k].float().cpu())
    return {k: torch.cat(v) for k, v in out.items()}
