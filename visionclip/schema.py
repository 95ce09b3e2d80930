"""The SynFundus-1M annotation schemas (DESIGN.md §3): column names and their meanings.

Two schemas name the same labels: the paper's 17 columns (`COLUMNS`) and the release's metadata as
its users publish it (`RELEASE_COLUMNS`: 26 columns, with the eye side in words, six more flags, a
quality score and a Chinese diagnostic sentence per image).

Shared by the renderer, the readers, the captioner, the supervised heads and the evaluation,
so that a column is named in exactly one place.
"""
from __future__ import annotations

# The release's annotation CSV, in order.
COLUMNS: tuple[str, ...] = (
    "file_name", "dr_grade", "eye_side",
    "is_amd", "is_aon", "is_crp", "is_dm", "is_dme", "is_em", "is_gc", "is_htr", "is_pm", "is_rvo",
    "is_fundus", "is_macular_readable", "is_optic_disc_readable", "is_retinal_region_readable",
)

DR_GRADES = (0, 1, 2, 3, 4)  # ICDR: none, mild, moderate, severe non-proliferative, proliferative
EYE_SIDES = {0: "right", 1: "left"}

# Binary disease flags (11 disease-type annotations with dr_grade) ...
DISEASE_FLAGS: tuple[str, ...] = (
    "is_amd", "is_aon", "is_crp", "is_dm", "is_dme", "is_em", "is_gc", "is_htr", "is_pm", "is_rvo",
)
# ... and the 4 readability annotations.
READABILITY_FLAGS: tuple[str, ...] = (
    "is_fundus", "is_macular_readable", "is_optic_disc_readable", "is_retinal_region_readable",
)
FLAG_COLUMNS: tuple[str, ...] = DISEASE_FLAGS + READABILITY_FLAGS

# English / Chinese glosses of the disease flags.
GLOSSES: dict[str, tuple[str, str]] = {
    "is_amd": ("age-related macular degeneration", "年龄相关性黄斑变性"),
    "is_aon": ("optic atrophy", "视神经萎缩"),
    "is_crp": ("central serous chorioretinopathy", "中心性浆液性脉络膜视网膜病变"),
    "is_dm": ("diabetes", "糖尿病"),
    "is_dme": ("diabetic macular edema", "糖尿病性黄斑水肿"),
    "is_em": ("epiretinal membrane", "视网膜前膜"),
    "is_gc": ("glaucoma", "青光眼"),
    "is_htr": ("hypertensive retinopathy", "高血压性视网膜病变"),
    "is_pm": ("pathologic myopia", "病理性近视"),
    "is_rvo": ("retinal vein occlusion", "视网膜静脉阻塞"),
}

DR_GRADE_NAMES: dict[int, tuple[str, str]] = {
    0: ("no diabetic retinopathy", "无糖尿病视网膜病变"),
    1: ("mild diabetic retinopathy", "轻度非增殖性糖尿病视网膜病变"),
    2: ("moderate diabetic retinopathy", "中度非增殖性糖尿病视网膜病变"),
    3: ("severe diabetic retinopathy", "重度非增殖性糖尿病视网膜病变"),
    4: ("proliferative diabetic retinopathy", "增殖性糖尿病视网膜病变"),
}

# The release's metadata as its users publish it, in order: the paper's labels (eye_side as the word
# in "eyes_side"), an md5 per image, six more flags, a quality score and the diagnostic sentence.
RELEASE_COLUMNS: tuple[str, ...] = (
    "file_md5", "file_name", "eyes_side", "is_abnormal", "is_amd", "is_aon", "is_crp", "is_dm", "is_dme",
    "dr_grade", "is_em", "is_gc", "is_md", "is_mh", "is_htr", "has_lesion", "is_pm", "is_rvo",
    "is_tessellated", "is_treated", "is_fundus", "is_macular_readable", "is_optic_disc_readable",
    "is_retinal_region_readable", "retinal_region_quality_score", "diagnosticAdvice",
)
EXTRA_FLAGS: tuple[str, ...] = ("is_abnormal", "is_md", "is_mh", "has_lesion", "is_tessellated", "is_treated")
QUALITY_COLUMN = "retinal_region_quality_score"
ADVICE_COLUMN = "diagnosticAdvice"
SIDE_WORDS: dict[str, int] = {word: side for side, word in EYE_SIDES.items()}  # "eyes_side" -> eye_side

# What the extra flags' names say; the release defines neither "md" nor "mh", so those two glosses are
# readings of the abbreviations, and no caption ever states them (data.captions.EXTRA_FINDINGS).
EXTRA_GLOSSES: dict[str, tuple[str, str]] = {
    "is_abnormal": ("any abnormality", "异常"),
    "is_md": ("md (undefined in the release; macular disease?)", "md（发布未定义）"),
    "is_mh": ("mh (undefined in the release; macular hole?)", "mh（发布未定义）"),
    "has_lesion": ("a visible lesion", "可见病灶"),
    "is_tessellated": ("tessellated fundus", "豹纹状眼底"),
    "is_treated": ("signs of treatment", "治疗后改变"),
}
