"""The SynFundus-1M annotation schema (DESIGN.md §3): column names and their meanings.

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
