"""Zero-shot classification with the FLAIR protocol: prompts -> class prototypes -> probabilities.

Plain mode puts the class name into the manifest's template ("A fundus photograph of [CLS]").
Expert-knowledge (EK) mode puts every FLAIR description of the class into the template, plus the
class name as one more prompt when it is not already among the descriptions. A class prototype is
the mean of its normalised prompt embeddings; FLAIR does not renormalise that mean
(`flair_exact=True` reproduces this), this project renormalises it by default so that classes with
many prompts are not favoured or penalised by the length of their mean vector.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch

from .embed import encode_texts
from ..errors import ConfigError

LANGUAGES = ("zh", "en")
MODES = ("plain", "ek")
_PLACEHOLDERS = ("[CLS]", "{cls}", "{}")


def fill_template(template: str, text: str) -> str:
    """Put `text` where the template's placeholder is ([CLS], {cls} or {}); append it when none."""
    for ph in _PLACEHOLDERS:
        if ph in template:
            return template.replace(ph, text)
    return f"{template} {text}".strip()


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def build_prompts(manifest: Mapping, language: str = "zh", mode: str = "plain") -> list[list[str]]:
    """Prompts per class, in the manifest's class order.

    `manifest` holds `classes` (each with name_en, name_zh, descriptions_en, descriptions_zh) and
    `templates` ({"en": ..., "zh": ...}).
    """
    if language not in LANGUAGES:
        raise ConfigError(f"prompt language {language!r}: expected one of {LANGUAGES}")
    if mode not in MODES:
        raise ConfigError(f"prompt mode {mode!r}: expected one of {MODES}")
    templates = manifest.get("templates") or {}
    if language not in templates:
        raise ConfigError(f"manifest {manifest.get('name', '?')!r}: field templates.{language} is missing")
    template = templates[language]
    classes = manifest.get("classes") or []
    if not classes:
        raise ConfigError(f"manifest {manifest.get('name', '?')!r}: field 'classes' is empty")
    prompts: list[list[str]] = []
    for i, cls in enumerate(classes):
        name = cls.get(f"name_{language}")
        if not name:
            raise ConfigError(f"manifest {manifest.get('name', '?')!r}: classes[{i}].name_{language} is missing")
        if mode == "plain":
            texts = [name]
        else:
            texts = list(cls.get(f"descriptions_{language}") or [])
            if _norm(name) not in {_norm(t) for t in texts}:
                texts.append(name)
        prompts.append([fill_template(template, t) for t in texts])
    return prompts


def class_prototypes(model, tokenizer, prompts: Sequence[Sequence[str]], context_length: int,
                     flair_exact: bool = False) -> torch.Tensor:
    """Class prototypes [C, D]: mean of each class's normalised prompt embeddings.

    Renormalised to unit length unless `flair_exact` (FLAIR keeps the raw mean).
    """
    flat = [p for ps in prompts for p in ps]
    if any(len(ps) == 0 for ps in prompts):
        raise ConfigError("class_prototypes: every class needs at least one prompt")
    emb = encode_texts(model, tokenizer, flat, context_length)
    protos, start = [], 0
    for ps in prompts:
        protos.append(emb[start:start + len(ps)].mean(dim=0))
        start += len(ps)
    proto = torch.stack(protos)
    return proto if flair_exact else torch.nn.functional.normalize(proto, dim=-1)


def zero_shot_scores(image_emb, prototypes, logit_scale: float = 100.0) -> np.ndarray:
    """Class probabilities [N, C] = softmax(logit_scale * image_emb @ prototypes.T)."""
    img = torch.as_tensor(np.asarray(image_emb), dtype=torch.float32)
    proto = torch.as_tensor(np.asarray(prototypes), dtype=torch.float32)
    if img.shape[-1] != proto.shape[-1]:
        raise ConfigError(f"zero_shot_scores: image embeddings have dimension {img.shape[-1]} but "
                          f"prototypes {proto.shape[-1]}; were they made by the same model?")
    logits = float(logit_scale) * img @ proto.T
    return torch.softmax(logits, dim=-1).numpy()


def logit_scale_of(model) -> float:
    """The model's learned temperature as a multiplier (exp of the stored log scale, capped at 100)."""
    if callable(getattr(model, "scale", None)):
        return float(model.scale().detach())
    ls = getattr(model, "logit_scale", None)
    if ls is None:
        return 100.0
    value = float(torch.as_tensor(ls.detach() if hasattr(ls, "detach") else ls).float().exp())
    return min(value, 100.0)


__all__ = ["build_prompts", "fill_template", "class_prototypes", "zero_shot_scores",
           "logit_scale_of", "LANGUAGES", "MODES"]
