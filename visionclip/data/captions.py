"""Diagnostic descriptions generated from labels: Chinese (the paper's language) and English.

Works on any row in the SynFundus-1M schema (for the stand-in, and for a release whose own Chinese
sentence is not used: data.captions), needs no measurements, and is deterministic in (seed, index). Findings are named with the clinical
vocabulary of FLAIR's expert-knowledge prompts (drusen, microaneurysms, cup, haemorrhages...),
phrased through varied templates and synonyms rather than copied prompt by prompt.
"""
from __future__ import annotations

import re
from collections import Counter
from typing import Any, Iterable, Sequence

import numpy as np

from ..errors import DataError
from ..schema import DISEASE_FLAGS, FLAG_COLUMNS
from ..seeding import derive_seed
from .fields import parse_int

# Each finding: alternative phrasings (zh list, en list).
F: dict[str, tuple[list[str], list[str]]] = {
    "ma_few": (["少量微血管瘤", "散在少许微血管瘤", "可见个别微血管瘤"],
               ["a few microaneurysms", "scattered isolated microaneurysms", "occasional microaneurysms"]),
    "ma_many": (["多发微血管瘤", "较多微血管瘤"], ["multiple microaneurysms", "numerous microaneurysms"]),
    "dot_haem": (["点片状出血", "视网膜内点状出血", "散在斑点状出血"],
                 ["dot and blot haemorrhages", "intraretinal dot haemorrhages", "scattered blot haemorrhages"]),
    "haem_4q": (["四个象限均见视网膜内出血", "大量视网膜内出血累及四个象限", "广泛点片状出血"],
                ["intraretinal haemorrhages in all four quadrants", "extensive haemorrhages in four quadrants",
                 "numerous blot haemorrhages throughout the retina"]),
    "hard_ex": (["硬性渗出", "黄白色硬性渗出", "点状硬性渗出"],
                ["hard exudates", "yellow hard exudates", "small exudates"]),
    "cws": (["棉絮斑", "软性渗出（棉絮斑）"], ["cotton-wool spots", "soft exudates (cotton-wool spots)"]),
    "beading": (["静脉串珠样改变", "视网膜静脉呈串珠状"], ["venous beading", "beaded retinal veins"]),
    "irma": (["视网膜内微血管异常", "IRMA"], ["intraretinal microvascular abnormalities", "IRMA"]),
    "nv": (["视盘或视网膜新生血管", "新生血管形成", "视盘新生血管"],
           ["new vessels at the disc or elsewhere", "neovascular fronds", "disc neovascularisation"]),
    "preret": (["视网膜前出血", "舟状视网膜前出血", "玻璃体积血"],
               ["preretinal haemorrhage", "boat-shaped preretinal haemorrhage", "vitreous haemorrhage"]),
    "dme": (["黄斑区硬性渗出", "黄斑水肿", "黄斑区环形渗出", "黄斑区视网膜增厚"],
            ["exudates close to the fovea", "macular oedema", "a circinate ring of exudates at the macula",
             "retinal thickening at the macula"]),
    "drusen": (["黄斑区玻璃膜疣", "多发大小不等的玻璃膜疣", "黄斑区融合性玻璃膜疣"],
               ["drusen at the macula", "drusen of varying size", "confluent macular drusen"]),
    "rpe": (["色素紊乱", "黄斑区色素沉着", "地图样萎缩"],
            ["pigmentary changes", "macular pigment clumping", "geographic atrophy"]),
    "cup": (["杯盘比增大", "视杯扩大", "盘沿变窄", "视盘凹陷扩大"],
            ["enlarged cup-to-disc ratio", "an enlarged optic cup", "thinning of the neuroretinal rim",
             "deep excavation of the disc"]),
    "pale": (["视盘颜色苍白", "视盘色淡", "视盘苍白萎缩"],
             ["a pale optic disc", "optic disc pallor", "a whitish atrophic disc"]),
    "csc": (["黄斑区浆液性视网膜脱离", "黄斑区圆形盘状隆起", "黄斑区神经上皮脱离"],
            ["a serous detachment at the macula", "a round blister of subretinal fluid at the macula",
             "neurosensory detachment at the fovea"]),
    "erm": (["黄斑区反光增强", "黄斑前膜", "黄斑区玻璃纸样反光伴血管牵拉"],
            ["a glistening sheen over the macula", "an epiretinal membrane", "cellophane reflex with vessel traction"]),
    "htr": (["动脉变细", "动静脉交叉压迹", "火焰状出血", "动脉反光增强"],
            ["arteriolar narrowing", "arteriovenous nicking", "flame-shaped haemorrhages", "narrowed arterioles"]),
    "pm": (["豹纹状眼底", "视盘旁萎缩弧", "视盘倾斜", "黄斑区萎缩灶"],
           ["a tessellated fundus", "a peripapillary atrophy crescent", "a tilted disc", "patchy macular atrophy"]),
    "rvo": (["静脉迂曲扩张", "沿静脉分布的火焰状出血", "视网膜静脉阻塞改变"],
            ["dilated tortuous veins", "flame haemorrhages along the vein", "venous occlusion changes"]),
}
# The release's extra flags a caption may state, and the only way one reaches a caption: the two whose
# names are unambiguous. The release does not define is_md and is_mh; is_abnormal and has_lesion only
# summarise findings that the other flags caption already.
EXTRA_FINDINGS = {
    "is_tessellated": (["豹纹状眼底", "眼底呈豹纹状改变"], ["a tessellated fundus", "tessellation of the fundus"]),
    "is_treated": (["激光光凝斑", "视网膜激光治疗后瘢痕"],
                   ["laser photocoagulation scars", "scars of previous retinal laser treatment"]),
}
READABILITY = {
    "is_macular_readable": (["黄斑区显示不清", "黄斑区遮挡，无法评估"],
                            ["the macula is obscured", "the macular region cannot be assessed"]),
    "is_optic_disc_readable": (["视盘区域显示不清", "视盘区过曝，无法评估"],
                               ["the optic disc is not visible", "the disc region cannot be assessed"]),
    "is_retinal_region_readable": (["图像整体模糊，质量欠佳", "屈光间质混浊，视网膜显示不清"],
                                   ["the image is blurred and of poor quality", "media opacity obscures the retina"]),
}
NORMAL = (["眼底未见明显异常", "正常眼底", "眼底检查正常"],
          ["no abnormality of the fundus", "a normal fundus without lesions", "an unremarkable fundus"])
# Also says that disc and macula look normal: only when both can be seen.
NORMAL_DETAILED = ("视盘界清色可，黄斑中心凹反光可见，未见出血渗出",
                   "healthy retina with a well defined disc and a foveal reflex")
# Pertinent negatives, as real reports state them, with both negators (无 / 未见; "no" / "without"):
# they teach the text tower that "no X" is not X, which the normal classes of the benchmarks ask for
# ("no glaucoma", "no diabetic retinopathy"). Any eye may carry them for the conditions it lacks,
# not only normal eyes, so a negation never stands for "healthy" alone.
ABSENT = {
    "dr": (["未见糖尿病视网膜病变", "无糖尿病视网膜病变征象", "未见微血管瘤及出血"],
           ["no signs of diabetic retinopathy", "no microaneurysms or haemorrhages", "without diabetic retinopathy"]),
    "is_gc": (["未见青光眼性视盘改变", "无青光眼性视神经改变", "视杯未见扩大"],
              ["no glaucomatous disc changes", "without glaucomatous cupping", "no enlargement of the optic cup"]),
    "is_amd": (["黄斑区未见玻璃膜疣", "无黄斑变性征象"], ["no drusen at the macula", "no signs of macular degeneration"]),
    "is_dme": (["黄斑区未见渗出", "无黄斑水肿"], ["no exudates at the macula", "without macular oedema"]),
}
# Share of reports with a diagnosis that give only the conclusion, no findings: the disease names the
# class prompts use ("diabetic retinopathy", "glaucoma") then stand alone for the image, as in them.
IMPRESSION_ONLY = 0.25
# A region that cannot be assessed is never declared free of disease.
ABSENT_REGION = {"dr": "is_retinal_region_readable", "is_gc": "is_optic_disc_readable",
                 "is_amd": "is_macular_readable", "is_dme": "is_macular_readable"}
# Only for eyes without any finding whose disc can be seen: "normal" words stay with normal eyes.
NORMAL_NEGATIVES = (["杯盘比正常", "视盘形态正常"], ["a normal cup-to-disc ratio", "a normal optic disc"])
NON_FUNDUS = (["非眼底图像", "该图像不是眼底照片", "非眼底照片，无法评估"],
              ["not a fundus photograph", "this image is not a retinal photograph", "non-fundus image, not gradable"])
OPENERS = (["眼底彩照示：", "彩色眼底照相可见", "{eye}眼底照片：", "检查所见：", ""],
           ["Colour fundus photograph showing ", "Fundus image of the {eye} eye: ", "Findings: ", "The photograph shows ", ""])
EYE = {0: ("右眼", "right"), 1: ("左眼", "left")}
DR_FINDINGS = {1: ["ma_few"], 2: ["ma_many", "dot_haem", "hard_ex", "cws"],
               3: ["haem_4q", "beading", "irma", "ma_many"], 4: ["nv", "preret", "dot_haem"]}
FLAG_FINDINGS = {"is_dme": ["dme"], "is_amd": ["drusen", "rpe"], "is_gc": ["cup"], "is_aon": ["pale"],
                 "is_crp": ["csc"], "is_em": ["erm"], "is_htr": ["htr"], "is_pm": ["pm"], "is_rvo": ["rvo"]}
DIAG_ZH = {"is_amd": ["年龄相关性黄斑变性", "老年性黄斑变性"], "is_aon": ["视神经萎缩"],
           "is_crp": ["中心性浆液性脉络膜视网膜病变", "中浆"], "is_dme": ["糖尿病性黄斑水肿"],
           "is_em": ["视网膜前膜", "黄斑前膜"], "is_gc": ["青光眼", "疑似青光眼视神经病变"],
           "is_htr": ["高血压性视网膜病变"], "is_pm": ["病理性近视", "高度近视眼底改变"],
           "is_rvo": ["视网膜静脉阻塞"]}
DIAG_EN = {"is_amd": ["age-related macular degeneration", "AMD"], "is_aon": ["optic atrophy"],
           "is_crp": ["central serous chorioretinopathy", "CSC"], "is_dme": ["diabetic macular oedema"],
           "is_em": ["epiretinal membrane"], "is_gc": ["glaucoma", "glaucomatous optic neuropathy"],
           "is_htr": ["hypertensive retinopathy"], "is_pm": ["pathologic myopia", "myopic maculopathy"],
           "is_rvo": ["retinal vein occlusion"]}
# The stage alone, or the disease name with the stage after it, as reports write both: the bare name
# must occur in positive statements too, not only in "no diabetic retinopathy".
DR_ZH = {1: ["轻度非增殖期糖尿病视网膜病变", "轻度NPDR", "糖尿病视网膜病变（轻度非增殖期）", "糖尿病视网膜病变，轻度非增殖性"],
         2: ["中度非增殖期糖尿病视网膜病变", "中度NPDR", "糖尿病视网膜病变（中度非增殖期）", "糖尿病视网膜病变，中度非增殖性"],
         3: ["重度非增殖期糖尿病视网膜病变", "重度NPDR", "糖尿病视网膜病变（重度非增殖期）", "糖尿病视网膜病变，重度非增殖性"],
         4: ["增殖期糖尿病视网膜病变", "PDR", "糖尿病视网膜病变（增殖期）", "糖尿病视网膜病变，增殖性"]}
DR_EN = {1: ["mild non-proliferative diabetic retinopathy", "mild NPDR", "diabetic retinopathy, mild non-proliferative"],
         2: ["moderate non-proliferative diabetic retinopathy", "moderate NPDR",
             "diabetic retinopathy, moderate non-proliferative"],
         3: ["severe non-proliferative diabetic retinopathy", "severe NPDR",
             "diabetic retinopathy, severe non-proliferative"],
         4: ["proliferative diabetic retinopathy", "PDR", "diabetic retinopathy, proliferative"]}

# FLAIR's expert-knowledge descriptions (DESIGN.md §3): used only to measure overlap, never as captions.
FLAIR_EK_PROMPTS_EN: tuple[str, ...] = (
    "no diabetic retinopathy", "no microaneurysms", "only few microaneurysms", "many exudates near the macula",
    "many haemorrhages near the macula", "retinal thickening near the macula", "hard exudates",
    "cotton wool spots", "few severe haemorrhages", "venous beading", "many severe haemorrhages",
    "intraretinal microvascular abnormality", "preretinal or vitreous haemorrhage", "neovascularization",
    "healthy", "no findings", "no lesion signs", "no glaucoma", "no retinopathy", "many small drusen",
    "few medium-sized drusen", "large drusen", "macular degeneration", "diabetic retinopathy",
    "optic nerve abnormalities", "abnormal size of the optic cup", "anomalous size in the optic disc",
)


def _clean_row(row: dict[str, Any]) -> dict[str, Any]:
    """The row with its label fields as integers; raw CSV strings ('2', '2.0') are accepted and a bad
    or missing field raises DataError naming the row and the field."""
    where = f"caption: row {row.get('file_name', '?')!r}"
    out = dict(row)
    for k in ("dr_grade", "is_fundus") + DISEASE_FLAGS:
        if k not in row:
            raise DataError(f"{where} lacks column {k!r}")
    out["dr_grade"] = parse_int(row["dr_grade"], where, "dr_grade", range(5))
    for k in ("is_fundus", "is_dm", "eye_side") + FLAG_COLUMNS + tuple(EXTRA_FINDINGS):
        if k in row:
            out[k] = parse_int(row[k], where, k, (0, 1))
    return out


def _readable(row: dict[str, Any], *regions: str) -> bool:
    """Whether every named region, and the retina as a whole, can be assessed."""
    return all(int(row.get(k, 1)) for k in regions + ("is_retinal_region_readable",))


def _pertinent_negatives(row: dict[str, Any], grade: int, normal: bool, dm_remark: bool,
                         r: np.random.Generator) -> list:
    """Which negatives a report states: up to two for an eye without findings, at most one otherwise.
    Returned as (zh options, en options) pairs; the caller picks its language's phrasing."""
    present = {"dr": grade > 0, **{k: bool(row.get(k, 0)) for k in ABSENT if k != "dr"}}
    absent = [k for k in ABSENT if not present[k] and _readable(row, ABSENT_REGION[k])
              and not (k == "dr" and dm_remark)]          # the diabetic remark already says it
    pool = [ABSENT[k] for k in absent]
    if normal and _readable(row, "is_optic_disc_readable"):
        pool.append(NORMAL_NEGATIVES)
    n = int(r.choice(3, p=(0.3, 0.45, 0.25))) if normal else int(r.random() < 0.4)
    return [pool[i] for i in sorted(r.permutation(len(pool))[:n])]


IMPRESSION_LEADS = (("诊断：", "印象：", "结论："), ("Diagnosis: ", "Impression: ", "Conclusion: "))


def _impression_only(diags: list[str], unread: list[str], pick, li: int) -> str:
    """A report that gives only its conclusion: the diagnosis names, then any readability remark."""
    if li == 0:
        return pick(IMPRESSION_LEADS[0]) + "，".join(diags) + "。" + ("；".join(unread) + "。" if unread else "")
    return (pick(IMPRESSION_LEADS[1]) + "; ".join(diags) + "."
            + (" " + "; ".join(u[0].upper() + u[1:] for u in unread) + "." if unread else ""))


def is_impression_only(text: str) -> bool:
    """Whether a generated caption is a conclusion-only report (no other caption starts this way)."""
    return text.startswith(IMPRESSION_LEADS[0] + IMPRESSION_LEADS[1])


def caption(row: dict[str, Any], seed: int, index: int, lang: str = "zh") -> str:
    """A diagnostic description of one label row, deterministic in (seed, index, lang)."""
    if lang not in ("zh", "en"):
        raise DataError(f"caption: lang must be 'zh' or 'en', got {lang!r}")
    row = _clean_row(row)
    li = 0 if lang == "zh" else 1
    r = np.random.default_rng(derive_seed(seed, "caption", index, lang))
    pick = lambda options: options[int(r.integers(0, len(options)))]  # noqa: E731
    if int(row["is_fundus"]) == 0:
        return pick(NON_FUNDUS[li]) + ("。" if li == 0 else ".")
    eye_zh, eye_en = EYE.get(int(row.get("eye_side", 0)), EYE[0])
    grade = int(row["dr_grade"])
    keys: list[str] = list(DR_FINDINGS.get(grade, []))
    if grade >= 2 and r.random() < 0.4:          # not every finding is named every time
        keys = keys[: max(1, len(keys) - int(r.integers(0, 2)))]
    for flag, fk in FLAG_FINDINGS.items():
        if int(row.get(flag, 0)):
            keys += fk
    findings = [pick(F[k][li]) for k in keys]
    findings += [pick(EXTRA_FINDINGS[k][li]) for k in EXTRA_FINDINGS if int(row.get(k, 0))]
    extra = [k for k in FLAG_FINDINGS if int(row.get(k, 0)) and k != "is_dme"]
    diags = ([pick((DR_ZH if li == 0 else DR_EN)[grade])] if grade else []) + \
            [pick((DIAG_ZH if li == 0 else DIAG_EN)[k]) for k in extra]
    if int(row.get("is_dme", 0)):
        diags.append(pick((DIAG_ZH if li == 0 else DIAG_EN)["is_dme"]))
    # half of the diabetic eyes without findings say so ("diabetic, no retinopathy")
    dm_remark = not findings and bool(row.get("is_dm", 0)) and r.random() < 0.5
    negatives = [pick(options[li]) for options in _pertinent_negatives(row, grade, not findings, dm_remark, r)]
    unread = [pick(READABILITY[k][li]) for k in READABILITY if int(row.get(k, 1)) == 0]
    opener = pick(OPENERS[li]).format(eye=eye_zh if li == 0 else eye_en)
    if diags and r.random() < IMPRESSION_ONLY:
        return _impression_only(diags, unread, pick, li)
    normal_phrases = NORMAL[li] + ([NORMAL_DETAILED[li]] if _readable(row, *ABSENT_REGION.values()) else [])
    if li == 0:
        if not findings:
            body = pick(normal_phrases)
            if dm_remark:
                body += "，" + pick(["糖尿病患者，未见糖尿病视网膜病变", "糖尿病史，眼底未见视网膜病变"])
        else:
            body = "、".join(findings)
        text = opener + body + "。"
        if negatives:
            text += "，".join(negatives) + "。"
        if diags:
            text += pick(["诊断：", "印象：", "考虑", "提示"]) + "，".join(diags) + "。"
        if unread:
            text += "；".join(unread) + "。"
        return text
    if not findings:
        body = pick(normal_phrases)
        if dm_remark:
            body += ", " + pick(["diabetic patient without retinopathy", "diabetes without signs of retinopathy"])
    else:
        body = ", ".join(findings[:-1]) + (" and " if len(findings) > 1 else "") + findings[-1]
    text = opener + body
    text = text[0].upper() + text[1:] + "."
    if negatives:
        text += " " + "; ".join(n[0].upper() + n[1:] if i == 0 else n for i, n in enumerate(negatives)) + "."
    if diags:
        text += " " + pick(["Diagnosis: ", "Impression: ", "Consistent with ", "Suggests "]) + "; ".join(diags) + "."
    if unread:
        text += " " + "; ".join(u[0].upper() + u[1:] for u in unread) + "."
    return text


# ---- manifest statistics -------------------------------------------------------------------------

def _grams(text: str, n: int) -> list[tuple[str, ...]]:
    if re.search(r"[\u4e00-\u9fff]", text):
        toks = [c for c in text if re.match(r"[\u4e00-\u9fff]", c)]
    else:
        toks = re.findall(r"[a-z0-9\-]+", text.lower())
    return [tuple(toks[i:i + n]) for i in range(len(toks) - n + 1)]


def caption_diversity(captions: Sequence[str], rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Distinct captions and distinct label sets (dr_grade + disease flags) among the rows."""
    label_sets = {(int(r["dr_grade"]),) + tuple(int(r[f]) for f in DISEASE_FLAGS) for r in rows}
    lengths = [len(c) for c in captions]
    return {"n": len(captions), "distinct_captions": len(set(captions)),
            "distinct_label_sets": len(label_sets),
            "captions_per_label_set": round(len(set(captions)) / max(len(label_sets), 1), 3),
            "mean_length_chars": round(float(np.mean(lengths)) if lengths else 0.0, 2)}


def _contains(text: str, phrase: str) -> bool:
    """Whole-word containment in English; plain substring in Chinese, which has no word breaks."""
    if re.search(r"[\u4e00-\u9fff]", phrase):
        return phrase in text
    return re.search(r"\b" + re.escape(phrase) + r"\b", text) is not None


def flair_ek_prompts_zh() -> tuple[str, ...]:
    """This project's Chinese translations of FLAIR's class names and descriptions (the manifests)."""
    from .manifests import load_manifest

    out: list[str] = []
    for name in ("messidor2", "fives", "refuge"):
        for c in load_manifest(name)["classes"]:
            out += [c["name_zh"], *c["descriptions_zh"]]
    return tuple(dict.fromkeys(out))


def ngram_overlap(captions: Iterable[str], prompts: Sequence[str] = FLAIR_EK_PROMPTS_EN,
                  ns: Sequence[int] = (1, 2, 3)) -> dict[str, Any]:
    """For each n: the share of the prompts' n-grams that occur in the captions, and the share of
    prompts that occur verbatim inside some caption (the number that must stay low)."""
    caps = list(captions)
    out: dict[str, Any] = {}
    cap_grams = {n: Counter(g for c in caps for g in _grams(c, n)) for n in ns}
    for n in ns:
        pg = {g for p in prompts for g in _grams(p, n)}
        out[f"prompt_{n}gram_coverage"] = round(len([g for g in pg if g in cap_grams[n]]) / max(len(pg), 1), 4)
    low = [c.lower() for c in caps]
    verbatim = [p for p in prompts if any(_contains(c, p.lower()) for c in low)]
    out["prompts_verbatim_in_captions"] = verbatim
    out["prompt_verbatim_share"] = round(len(verbatim) / max(len(prompts), 1), 4)
    return out
