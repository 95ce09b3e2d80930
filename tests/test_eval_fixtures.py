"""Helpers (no tests): a tiny saved VisionCLIP, a supervised classifier and benchmark folders in the
real layouts, shared by tests/test_eval_e2e.py and tests/test_predict.py."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from visionclip.config import ModelConfig
from visionclip.data.manifests import load_manifest
from visionclip.eval.zeroshot import build_prompts

TINY = ModelConfig(image_tower="resnet18", projection_norm=False, text_pooling="cls", exposure_norm=False, embed_dim=16, text_layers=1, text_hidden=32, text_heads=2,
                   text_intermediate=64, max_positions=64, vocab="corpus", vocab_size=400, context_length=48)
TINY_OVERRIDES = {f"model.{k}": v for k, v in TINY.__dict__.items()}


def fundus_image(path: Path, size=(40, 32), seed: int = 0, shape: str = "circle") -> Path:
    """A red disk on black (full circle, cut circle or rectangular crop), with seeded speckle."""
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    yy, xx = np.mgrid[:h, :w]
    r = min(w, h) / 2.2 if shape == "circle" else max(w, h) / 2.0
    disk = ((xx - w / 2) ** 2 + (yy - h / 2) ** 2) < r ** 2
    if shape == "rect":
        disk[:] = True
    arr = np.zeros((h, w, 3), np.uint8)
    noise = np.random.default_rng(seed).integers(0, 60, size=(h, w, 3))
    arr[disk] = (np.array([170, 70, 30]) + noise[disk]).clip(0, 255)
    Image.fromarray(arr).save(path)
    return path


def all_prompts() -> list[str]:
    texts = []
    for name in ("messidor2", "fives", "refuge"):
        m = load_manifest(name)
        for lang in ("zh", "en"):
            for mode in ("plain", "ek"):
                texts += [p for ps in build_prompts(m, lang, mode) for p in ps]
    from visionclip.eval.checks import READABILITY_PROMPTS
    from visionclip.eval.predict import DEFAULT_TEMPLATES

    for lang, checks in READABILITY_PROMPTS.items():
        for pos, neg in checks.values():
            texts += list(pos) + list(neg)
        texts.append(DEFAULT_TEMPLATES[lang])
    return texts


def save_tiny_model(directory: Path, cfg: ModelConfig = TINY, image_size: int = 32, seed: int = 0):
    from visionclip.model import build_model
    from visionclip.text import CaptionTokenizer

    tok = CaptionTokenizer.train(all_prompts(), cfg.vocab_size)
    torch.manual_seed(seed)
    model = build_model(cfg, tok.vocab_size, image_size)
    model.save_pretrained(directory, tok)
    return model, tok


def save_tiny_classifier(directory: Path, cfg: ModelConfig = TINY, image_size: int = 32):
    from visionclip.model import build_image_classifier

    torch.manual_seed(1)
    build_image_classifier(cfg, image_size).save_pretrained(directory)


def make_benchmarks(root: Path, seed: int = 0) -> dict[str, Path]:
    """messidor2 / fives / refuge folders in their real layouts, every class present."""
    out = {}
    m2 = root / "messidor2"
    rows = []
    for i in range(5):
        name = f"IM{i:06d}.jpg"
        fundus_image(m2 / "IMAGES" / name, seed=seed + i)
        rows.append([name, str(i % 5), "0", "1"])
    with open(m2 / "messidor_data.csv", "w", newline="") as f:
        csv.writer(f).writerows([["image_id", "adjudicated_dr_grade", "adjudicated_dme", "adjudicated_gradable"]] + rows)
    out["messidor2"] = m2
    fives = root / "fives"
    for i in range(4):
        fundus_image(fives / "train" / "Original" / f"{i + 1}_{'NADG'[i % 4]}.png", seed=seed + 20 + i)
    out["fives"] = fives
    refuge = root / "refuge"
    for i in range(4):
        folder, prefix = ("Glaucoma", "g") if i % 4 == 0 else ("Non-Glaucoma", "n")
        fundus_image(refuge / "Training400" / folder / f"{prefix}{i:04d}.jpg", seed=seed + 40 + i)
    out["refuge"] = refuge
    return out


def make_corpus(root: Path, n: int = 60) -> Path:
    """A SynFundus-1M-layout corpus: Fundus/*.jpg, annotations.csv, captions.csv, render_meta.csv."""
    from visionclip.schema import COLUMNS

    rows, caps, meta = [], [], []
    for i in range(n):
        name = f"{i:06d}.jpg"
        fundus_image(root / "Fundus" / name, seed=500 + i)
        row = {c: 0 for c in COLUMNS}
        row.update(file_name=name, dr_grade=i % 3, is_gc=int(i % 4 == 0), is_fundus=1, is_macular_readable=1,
                   is_optic_disc_readable=1, is_retinal_region_readable=1)
        rows.append([row[c] for c in COLUMNS])
        caps.append([name, f"眼底照片，分级{i % 3}", f"fundus photograph, grade {i % 3}"])
        meta.append([name, f"cam{i % 2}"])
    for fname, header, body in (("annotations.csv", list(COLUMNS), rows),
                                ("captions.csv", ["file_name", "caption_zh", "caption_en"], caps),
                                ("render_meta.csv", ["file_name", "camera"], meta)):
        with open(root / fname, "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows([header] + body)
    return root
