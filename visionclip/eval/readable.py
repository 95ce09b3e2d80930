"""Which prompt languages a trained model can read, decided from what the saved model records.

A model read in a language outside its training captions scores words it never learned to place;
its zero-shot numbers can fall far below chance and mean nothing. Two records decide, both saved
with the model: the captions' languages (model.training_captions, written by the trainer) and the
vocabulary (a language whose prompts are mostly [UNK] word pieces cannot be read whatever the
record says). Nothing is hard-coded about which language a profile trains on.
"""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

UNK = "[UNK]"
MAX_UNKNOWN = 0.5  # above this share of [UNK] pieces the prompts are mostly unknown text


def unknown_share(tokenizer, texts: Iterable[str]) -> float:
    """Share of [UNK] among the word pieces of `texts` (0.0 for no pieces)."""
    pieces = [p for t in texts for p in tokenizer.tokenize(t)]
    return sum(p == UNK for p in pieces) / len(pieces) if pieces else 0.0


def unreadable_reason(model, tokenizer, language: str, prompts: Sequence[str]) -> str | None:
    """None when the model can read `prompts` (in `language`); else why not, in one line."""
    trained = getattr(model, "training_captions", None)
    if trained and language not in trained:
        return (f"the model was trained on {' and '.join(sorted(trained))} captions only, "
                f"so {language} prompts are text it never learned to read")
    share = unknown_share(tokenizer, prompts)
    if share > MAX_UNKNOWN:
        return f"{share:.0%} of the {language} prompts' word pieces are unknown ([UNK]) to the model's vocabulary"
    return None


def unreadable_settings(model, tokenizer, prompts: Mapping[tuple[str, str], Sequence[str]]) -> dict[str, str]:
    """{"<language>_<mode>": reason} of the prompt settings the model cannot read; `prompts` maps
    each (language, mode) setting to all its prompt texts."""
    out = {}
    for (language, mode), texts in prompts.items():
        reason = unreadable_reason(model, tokenizer, language, texts)
        if reason:
            out[f"{language}_{mode}"] = reason
    return out


__all__ = ["unknown_share", "unreadable_reason", "unreadable_settings"]
