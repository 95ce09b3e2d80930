"""A SynFundus-1M folder in the release's metadata format, with the quirks its users report: 26
tab-separated columns, eyes_side as words, .png names, a BOM, CRLF line ends, extra columns and
diagnostic sentences that do not always agree with the flags. Shared by the reader and paper-profile tests."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from PIL import Image

from visionclip.schema import RELEASE_COLUMNS

# (file_name, folder, eyes_side, dr_grade, flags, quality, sentence): the sentence of row 3 names
# hypertensive retinopathy with is_htr = 0, as the release's noisy rows do.
ROWS = [
    ("000001.png", "Fundus", "right", 0, {}, 0.91, "未见明显异常。"),
    ("000002.png", "Fundus", "Left", 2, {"is_dm": 1, "is_dme": 1, "is_abnormal": 1, "has_lesion": 1}, 0.75,
     "疑似糖尿病视网膜病变，疑似糖尿病性黄斑水肿。"),
    ("000003.png", "part2", "left", 0, {"is_abnormal": 1}, 0.40, "疑似高血压性视网膜病变。"),
    ("000004.png", "part2", "right", 0, {"is_gc": 1, "is_abnormal": 1}, 0.88, "疑似青光眼。"),
    ("000005.png", "Fundus", "RIGHT", 0, {"is_pm": 1, "is_tessellated": 1, "is_abnormal": 1}, 0.66,
     "疑似病理性近视，疑似豹纹状眼底。"),
    ("000006.png", "Fundus", "left", 0, {"is_crp": 1, "is_md": 1, "is_abnormal": 1, "has_lesion": 1}, 0.52,
     "疑似脉络膜视网膜病变，疑似黄斑区域病变。"),
]
READABLE = ("is_fundus", "is_macular_readable", "is_optic_disc_readable", "is_retinal_region_readable")


def release_row(name, side, grade, flags, quality, sentence) -> dict:
    row = {c: "0" for c in RELEASE_COLUMNS}
    row.update({c: "1" for c in READABLE})
    row.update(file_name=name, eyes_side=side, dr_grade=str(grade), retinal_region_quality_score=str(quality),
               diagnosticAdvice=sentence, **{k: str(v) for k, v in flags.items()})
    return row


def write_png(path: Path, seed: int, size: int = 24) -> bytes:
    """A small fundus-like PNG (a red disk on black, seeded shade); returns its bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[:size, :size]
    arr = np.zeros((size, size, 3), np.uint8)
    arr[(xx - size / 2) ** 2 + (yy - size / 2) ** 2 < (size / 2.2) ** 2] = (150 + 10 * seed, 70, 40)
    Image.fromarray(arr).save(path, format="PNG")
    return path.read_bytes()


def write_table(path: Path, rows: list[dict], delimiter: str = "\t", newline: str = "\r\n",
                bom: bool = True) -> Path:
    """rows (keyed by RELEASE_COLUMNS) as the release's metadata file, without quoting (as shown)."""
    lines = [delimiter.join(RELEASE_COLUMNS)] + [delimiter.join(r[c] for c in RELEASE_COLUMNS) for r in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + newline.join(lines).encode("utf-8") + newline.encode())
    return path


def write_release(root: Path, rows=ROWS, table_name: str = "SynFundus-1M_metadata.txt", **table_args) -> list[dict]:
    """The images (row i's in its folder, 000005 on disk as .PNG) and the metadata; returns the rows."""
    out = []
    for i, (name, folder, *rest) in enumerate(rows):
        disk_name = name.replace(".png", ".PNG") if name == "000005.png" else name
        data = write_png(root / folder / disk_name, i)
        row = release_row(name, *rest)
        row["file_md5"] = hashlib.md5(data).hexdigest().upper() if i == 0 else hashlib.md5(data).hexdigest()
        out.append(row)
    write_table(root / table_name, out, **table_args)
    return out


def write_release_corpus(root: Path, n: int, size: int = 24) -> Path:
    """n images in the release format, cycling through ROWS' labels and sentences (for training tests)."""
    rows = []
    for i in range(n):
        _, _, side, grade, flags, quality, sentence = ROWS[i % len(ROWS)]
        name = f"{i + 1:06d}.png"
        data = write_png(root / "Fundus" / name, i % 7, size)
        row = release_row(name, side, grade, flags, quality, sentence)
        row["file_md5"] = hashlib.md5(data).hexdigest()
        rows.append(row)
    write_table(root / "metadata.tsv", rows)
    return root
