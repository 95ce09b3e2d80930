"""The variant grid of the ablations: one model per variant, each varying one or two profile values."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Mapping, Sequence

from ...config import LOSSES, Profile, load_profile
from ...errors import ConfigError
from ...paths import RunLayout


CORPUS_FRACTIONS = (0.25, 0.5)          # of synth.corpus_size, beside the full corpus of the baseline


EXTRA_SEEDS = 2                         # training seeds beside the baseline's: seed + 1, seed + 2


@dataclasses.dataclass(frozen=True)
class Variant:
    """One trained model of the ablation grid: its name, what it varies and its profile overrides."""
    name: str
    group: str                     # the comparison it was added for
    label: str                     # what the tables call it
    overrides: Mapping             # profile overrides on top of the ablation profile
    corpus_size: int | None = None  # a prefix of the rendered corpus; None = all of it


def variant_grid(profile: Profile) -> dict[str, Variant]:
    """The variants, baseline first; the baseline serves every comparison as its reference setting."""
    s, t = profile.synth, profile.train
    base = Variant("baseline", "baseline", f"{t.caption_language} captions, {t.loss}, "
                   f"{s.corpus_size} images, {t.image_size} px, seed {profile.seed}", {})
    grid = {"baseline": base}
    for lang in ("zh", "en", "both"):
        if lang != t.caption_language:
            over = {"train.caption_language": lang}
            if lang in ("zh", "en"):  # a model is read with prompts in the language it was trained on
                over["eval.language"] = lang
            grid[f"captions_{lang}"] = Variant(f"captions_{lang}", "captions", f"{lang} captions", over)
    for other_loss in LOSSES:
        if other_loss != t.loss:
            grid[f"loss_{other_loss}"] = Variant(f"loss_{other_loss}", "loss", other_loss, {"train.loss": other_loss})
    for frac in CORPUS_FRACTIONS:
        n = max(10, int(round(frac * s.corpus_size)))
        if n < s.corpus_size:
            grid[f"corpus_{n}"] = Variant(f"corpus_{n}", "corpus_size", f"{n} images", {}, corpus_size=n)
    if s.render_size != t.image_size:  # the second resolution: the full rendered size
        grid[f"resolution_{s.render_size}"] = Variant(f"resolution_{s.render_size}", "resolution",
                                                      f"{s.render_size} px", {"train.image_size": s.render_size})
    for k in range(1, EXTRA_SEEDS + 1):
        seed = profile.seed + k
        grid[f"seed_{seed}"] = Variant(f"seed_{seed}", "seed", f"seed {seed}", {"seed": seed})
    return grid


def select_variants(grid: Mapping[str, Variant], names: Sequence[str] = ()) -> dict[str, Variant]:
    """The named variants (all when empty); the baseline always, since every comparison needs it."""
    unknown = [n for n in names if n not in grid]
    if unknown:
        raise ConfigError(f"variants {unknown}: unknown; expected names from {list(grid)}")
    keep = set(names) | {"baseline"} if names else set(grid)
    return {n: v for n, v in grid.items() if n in keep}


def variant_profile(profile_name: str, overrides: Mapping, variant: Variant, run_dir: str | Path) -> Profile:
    """The ablation profile with the user's overrides, then the variant's, reading the shared corpus."""
    over = {**dict(overrides), **dict(variant.overrides),
            "data.corpus_root": str(RunLayout(run_dir).ablation_corpus(variant.corpus_size))}
    return load_profile(profile_name, over)


def profile_digest(profile: Profile) -> str:
    text = json.dumps(profile.to_dict(), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
