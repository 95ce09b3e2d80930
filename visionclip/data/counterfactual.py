"""Counterfactual reports: the same eye described with one finding flipped, as a hard negative.

Contrastive pre-training only has to tell a caption from the other captions of the batch, which
almost always differ in many words; a text feature that averages its tokens can do that while one
negating word (无 / 未见 / 非 / no / not) barely moves it. A report that differs from the image's own
in exactly one statement (glaucoma or none, retinopathy or none, a fundus photograph or not) is a
negative it can only reject by reading that statement (NegCLIP's hard negatives, built here from
labels rather than by parsing text). Flips, one per item:

  - a frame that is not a fundus photograph  -> a normal, readable eye;
  - an eye                                   -> "not a fundus photograph", or its DR grade flipped
    (none <-> one of the four grades), or one disease flag flipped (glaucoma, AMD, ... present <-> absent).

The flipped row is captioned by the same generator (data.captions), so negatives read like positives.
Deterministic in (seed, epoch, index): a resumed run sees the same negatives.
"""
from __future__ import annotations

from typing import Any, Mapping

from ..schema import DISEASE_FLAGS, READABILITY_FLAGS
from ..seeding import rng
from .captions import caption

# is_dm is a patient's history, not a sign: flipping it would not change what the eye shows.
FLIPPABLE_FLAGS = tuple(f for f in DISEASE_FLAGS if f != "is_dm")
# How often an eye's negative is "not a fundus photograph" and how often its DR grade is flipped;
# the rest flip one disease flag.
P_NOT_FUNDUS, P_DR = 0.2, 0.4


def _normal_eye(row: Mapping[str, Any]) -> dict[str, Any]:
    return dict(row, dr_grade=0, **{f: 0 for f in DISEASE_FLAGS}, **{f: 1 for f in READABILITY_FLAGS})


def counterfactual_row(row: Mapping[str, Any], seed: int, epoch: int, index: int) -> dict[str, Any]:
    """`row` (a SynFundus-1M label row of ints) with one statement flipped, as the schema allows it."""
    r = rng(seed, "counterfactual", epoch, index)
    if not int(row["is_fundus"]):
        return _normal_eye(row)
    out = dict(row)
    u = r.random()
    if u < P_NOT_FUNDUS:
        out.update(dr_grade=0, **{f: 0 for f in DISEASE_FLAGS}, **{f: 0 for f in READABILITY_FLAGS})
    elif u < P_NOT_FUNDUS + P_DR:
        grade = int(row["dr_grade"])
        out["dr_grade"] = int(r.integers(1, 5)) if grade == 0 else 0
        if out["dr_grade"]:
            out["is_dm"] = 1           # the schema: retinopathy implies diabetes
        else:
            out["is_dme"] = 0          # and macular oedema implies retinopathy
    else:
        flag = FLIPPABLE_FLAGS[int(r.integers(0, len(FLIPPABLE_FLAGS)))]
        out[flag] = 1 - int(row[flag])
        if flag == "is_dme" and out[flag] and not int(row["dr_grade"]):
            out["dr_grade"], out["is_dm"] = 1, 1
    return out


def counterfactual_caption(row: Mapping[str, Any], seed: int, epoch: int, index: int,
                           lang: str) -> tuple[str, dict[str, Any]]:
    """(the flipped row's report in `lang`, the flipped row)."""
    flipped = counterfactual_row(row, seed, epoch, index)
    return caption(flipped, seed, index, lang), flipped


__all__ = ["counterfactual_row", "counterfactual_caption", "FLIPPABLE_FLAGS"]
