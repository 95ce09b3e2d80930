"""Captions: pertinent negatives never contradict the labels or the readability flags, the bare
disease name occurs in positive statements, and raw CSV values are read or refused by field."""
import pytest

from visionclip.errors import DataError
from visionclip.schema import COLUMNS
from visionclip.data.captions import ABSENT, NORMAL_DETAILED, NORMAL_NEGATIVES, caption, is_impression_only
from visionclip.synth.labels import sample_labels

ROWS = sample_labels(600, seed=5, balance="balanced")


def _captions(lang: str) -> list[str]:
    return [caption(r, 5, i, lang) for i, r in enumerate(ROWS)]


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_negatives_only_for_conditions_the_eye_lacks(lang):
    li = 0 if lang == "zh" else 1
    for row, text in zip(ROWS, _captions(lang)):
        present = {"dr": row["dr_grade"] > 0, **{k: bool(row[k]) for k in ABSENT if k != "dr"}}
        for key, phrases in ABSENT.items():
            said = [p for p in phrases[li] if p.lower() in text.lower()]
            if present[key]:
                assert not said, (key, text)


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_unreadable_disc_is_never_called_normal(lang):
    li = 0 if lang == "zh" else 1
    disc_claims = NORMAL_NEGATIVES[li] + ABSENT["is_gc"][li] + [NORMAL_DETAILED[li]]
    hidden = [(r, t) for r, t in zip(ROWS, _captions(lang)) if r["is_fundus"] and not r["is_optic_disc_readable"]]
    assert hidden, "the sample should hold eyes with an unreadable disc"
    for row, text in hidden:
        assert not any(p.lower() in text.lower() for p in disc_claims), text


def test_negation_is_not_only_for_healthy_eyes_and_dr_is_named_plainly():
    zh = _captions("zh")
    glaucoma_free_sick = [t for r, t in zip(ROWS, zh)
                          if r["is_fundus"] and not r["is_gc"] and (r["dr_grade"] or r["is_amd"] or r["is_pm"])]
    share = sum(any(p in t for p in ABSENT["is_gc"][0]) for t in glaucoma_free_sick) / len(glaucoma_free_sick)
    assert 0.03 < share < 0.4, share          # some sick eyes state "no glaucoma"; most reports do not
    with_dr = [t for r, t in zip(ROWS, zh) if r["dr_grade"] > 0]
    assert any("糖尿病视网膜病变（" in t for t in with_dr)


def test_raw_csv_strings_are_read_or_refused_by_field():
    row = {c: "0" for c in COLUMNS}
    row.update(file_name="000007.jpg", dr_grade="2.0", is_dm="1", is_fundus="1", is_macular_readable="1",
               is_optic_disc_readable="1", is_retinal_region_readable="1")
    assert "糖尿病视网膜病变" in caption(row, 1, 7, "zh") or "NPDR" in caption(row, 1, 7, "zh")
    with pytest.raises(DataError, match=r"000007.jpg.*is_gc"):
        caption({**row, "is_gc": "yes"}, 1, 7, "zh")
    with pytest.raises(DataError, match=r"dr_grade"):
        caption({**row, "dr_grade": ""}, 1, 7, "en")


def test_some_reports_give_only_their_conclusion():
    zh, en = _captions("zh"), _captions("en")
    diagnosed = [i for i, r in enumerate(ROWS) if r["is_fundus"] and (r["dr_grade"] or any(
        r[k] for k in ("is_amd", "is_gc", "is_aon", "is_crp", "is_em", "is_htr", "is_pm", "is_rvo", "is_dme")))]
    share = sum(is_impression_only(zh[i]) for i in diagnosed) / len(diagnosed)
    assert 0.15 < share < 0.35, share
    healthy = [i for i, r in enumerate(ROWS) if i not in set(diagnosed)]
    assert not any(is_impression_only(zh[i]) or is_impression_only(en[i]) for i in healthy)
