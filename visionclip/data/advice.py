"""The release's diagnostic sentence (diagnosticAdvice) beside its flags.

`TERMS` names the Chinese words by which a sentence states each condition; a sentence states it when
it contains one of them (the release writes 疑似<condition>, "suspected ...", joined by commas).
`standin_sentence` writes a rendered eye's sentence in that style; `agreement` counts, per condition,
how often the flags and the sentence say the same: in the release they do not always.
"""
from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np

from ..schema import DISEASE_FLAGS

# The first word is what the stand-in writes. "dr" is dr_grade > 0. Flags without an entry (is_md,
# is_mh: undefined in the release; is_abnormal, has_lesion, is_treated: no single condition) are not
# compared. Words are matched as substrings, so each is the shortest that names only its condition
# (脉络膜视网膜病变 also covers 中心性浆液性...; 糖尿病 also covers the diabetic conditions).
TERMS: dict[str, tuple[str, ...]] = {
    "dr": ("糖尿病视网膜病变",),
    "is_amd": ("年龄相关性黄斑变性", "黄斑变性"),
    "is_aon": ("视神经萎缩",),
    "is_crp": ("脉络膜视网膜病变",),
    "is_dm": ("糖尿病",),
    "is_dme": ("糖尿病性黄斑水肿", "黄斑水肿"),
    "is_em": ("视网膜前膜", "黄斑前膜"),
    "is_gc": ("青光眼",),
    "is_htr": ("高血压性视网膜病变", "高血压"),
    "is_pm": ("病理性近视", "高度近视"),
    "is_rvo": ("视网膜静脉阻塞", "静脉阻塞"),
    "is_tessellated": ("豹纹状眼底", "豹纹"),
}
NORMAL = "未见明显异常。"      # a fundus with nothing to suspect
NOT_FUNDUS = "非眼底图像。"    # a frame that is not a fundus photograph


def states(sentence: str, condition: str) -> bool:
    """Whether `sentence` names `condition` (a key of TERMS)."""
    return any(word in sentence for word in TERMS[condition])


def standin_sentence(row: Mapping[str, int]) -> str:
    """A rendered eye's sentence in the release's style, from its labels (so it always agrees with them).
    Diabetes is named on its own only when no diabetic condition already names it."""
    if not int(row["is_fundus"]):
        return NOT_FUNDUS
    present = (["dr"] if int(row["dr_grade"]) else []) + [f for f in DISEASE_FLAGS if int(row[f])]
    if "is_dm" in present and ("dr" in present or "is_dme" in present):
        present.remove("is_dm")
    if int(row.get("is_tessellated", 0)):
        present.append("is_tessellated")
    return "，".join(f"疑似{TERMS[c][0]}" for c in present) + "。" if present else NORMAL


def agreement(flags: Mapping[str, np.ndarray], sentences: Iterable[str]) -> list[dict]:
    """Per condition of `flags` ({condition: 0/1 per row}, conditions in TERMS): rows flagged, rows
    whose sentence states it, both, the flag alone, the sentence alone, and the share that agree."""
    sentences = list(sentences)
    out = []
    for condition, flagged in flags.items():
        flagged = np.asarray(flagged, dtype=bool)
        stated = np.fromiter((states(s, condition) for s in sentences), dtype=bool, count=len(sentences))
        out.append({"condition": condition, "flagged": int(flagged.sum()), "stated": int(stated.sum()),
                    "both": int((flagged & stated).sum()), "flag only": int((flagged & ~stated).sum()),
                    "sentence only": int((~flagged & stated).sum()),
                    "agree": float((flagged == stated).mean()) if len(sentences) else float("nan")})
    return out


__all__ = ["NORMAL", "NOT_FUNDUS", "TERMS", "agreement", "standin_sentence", "states"]
