"""A tiny SynFundus-layout corpus and profile for the trainer tests (written with PIL, seconds)."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from visionclip.schema import COLUMNS, DISEASE_FLAGS, DR_GRADE_NAMES, GLOSSES, READABILITY_FLAGS


def write_tiny_corpus(root: Path, n: int = 60, size: int = 40, seed: int = 0) -> Path:
    """n fundus-like JPEGs whose colour and spots follow dr_grade/is_gc, with zh/en captions."""
    rs = np.random.default_rng(seed)
    fundus = root / "Fundus"
    fundus.mkdir(parents=True, exist_ok=True)
    rows, caps = [], []
    for i in range(n):
        name = f"img_{i:05d}.jpg"
        grade = int(rs.integers(0, 3))
        gc = int(rs.random() < 0.3)
        img = Image.new("RGB", (size, size))
        d = ImageDraw.Draw(img)
        d.ellipse((2, 2, size - 3, size - 3), fill=(150 + 30 * grade, 60, 30))
        disc = 6 + 4 * gc
        d.ellipse((size // 2, size // 2 - disc // 2, size // 2 + disc, size // 2 + disc // 2), fill=(240, 220, 150))
        for _ in range(3 * grade):
            x, y = rs.integers(6, size - 8, 2)
            d.ellipse((x, y, x + 2, y + 2), fill=(90, 0, 0))
        img.save(fundus / name, quality=90)
        row = {c: 0 for c in COLUMNS}
        row.update(file_name=name, dr_grade=grade, eye_side=int(rs.integers(0, 2)), is_gc=gc,
                   is_dm=int(grade > 0), **{c: 1 for c in READABILITY_FLAGS})
        rows.append(row)
        en = [DR_GRADE_NAMES[grade][0]] + [GLOSSES[f][0] for f in DISEASE_FLAGS if row[f]]
        zh = [DR_GRADE_NAMES[grade][1]] + [GLOSSES[f][1] for f in DISEASE_FLAGS if row[f]]
        caps.append({"file_name": name, "caption_zh": "，".join(zh) + "。", "caption_en": ", ".join(en) + "."})
    for fname, fields, data in (("annotations.csv", list(COLUMNS), rows),
                                ("captions.csv", ["file_name", "caption_zh", "caption_en"], caps)):
        with open(root / fname, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=fields)
            w.writeheader()
            w.writerows(data)
    return root


TINY_PROFILE = """\
extends: ci
seed: 7
model:
  image_tower: resnet18
  embed_dim: 32
  text_layers: 1
  text_hidden: 32
  text_heads: 2
  text_intermediate: 64
  max_positions: 64
  vocab_size: 200
  context_length: 32
train:
  image_size: 32
  batch_size: 8
  epochs: {epochs}
  warmup_fraction: 0.34
  precision: {precision}
  checkpoint_every: {checkpoint_every}
  keep_checkpoints: 2
  val_every: {val_every}
  val_size: 6
  num_workers: {num_workers}
  preload: {preload}
  max_nonfinite: 3
"""


def write_tiny_run(run_dir: Path, n: int = 60, **fmt) -> Path:
    """run_dir/data/corpus plus run_dir/tiny.yaml; returns the profile path."""
    values = dict(epochs=2, precision="fp32", checkpoint_every=3, val_every=4, num_workers=0, preload="false")
    values.update(fmt)
    write_tiny_corpus(run_dir / "data" / "corpus", n=n)
    path = run_dir / "tiny.yaml"
    path.write_text(TINY_PROFILE.format(**values))
    return path


# ---------------------------------------------------------------------------------------- tests

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from visionclip.config import load_profile
from visionclip.errors import TrainingError
from visionclip.training.loop import train_clip, train_supervised

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "VISIONCLIP_QUIET": "1", "PYTHONPATH": str(ROOT)}
# 40 images -> about 32 in the train split -> 4 steps of 8 per epoch; 1.5 epochs = 6 steps, which
# crosses an epoch boundary (new permutation, new augmentation seeds) inside the run.
N_IMAGES = 40


def _weights(run_dir: Path, sub: str = "model") -> dict:
    return load_file(str(run_dir / sub / "model.safetensors"))


def _steps(path: Path) -> list[int]:
    return [json.loads(line)["step"] for line in path.read_text().splitlines()]


def _fresh_run(tmp_path: Path, reference: Path, name: str) -> Path:
    run = tmp_path / name
    shutil.copytree(reference / "data", run / "data")
    shutil.copy(reference / "tiny.yaml", run / "tiny.yaml")
    return run


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, dict]:
    """An uninterrupted run, with one DataLoader worker (workers must not break exactness)."""
    run = tmp_path_factory.mktemp("reference")
    profile_path = write_tiny_run(run, n=N_IMAGES, epochs=1.5, checkpoint_every=2, val_every=3, num_workers=1)
    summary = train_clip(load_profile(profile_path), run, progress=False)
    assert summary["steps"] == summary["total_steps"] == 6
    return run, summary


def test_uninterrupted_run_writes_model_checkpoints_and_metrics(reference):
    run, summary = reference
    assert (run / "model" / "model.safetensors").is_file()
    assert [p.name for p in sorted((run / "checkpoints").iterdir())] == ["step_0000004", "step_0000006"]
    assert _steps(run / "metrics" / "train.jsonl") == list(range(1, 7))
    rows = [json.loads(line) for line in (run / "metrics" / "train.jsonl").read_text().splitlines()]
    assert {"loss", "lr", "logit_scale", "images_per_s", "i2t_acc", "t2i_acc", "epoch"} <= set(rows[0])
    assert rows[1]["lr"] > rows[0]["lr"] and rows[-1]["lr"] < max(r["lr"] for r in rows)  # warm-up, decay
    val = [json.loads(line) for line in (run / "metrics" / "val.jsonl").read_text().splitlines()]
    assert [v["step"] for v in val] == [3, 6]
    assert {"val_loss", "i2t_top1_label_set", "i2t_top1_exact", "chance"} <= set(val[0])
    assert val[0]["i2t_top1_label_set"] >= val[0]["i2t_top1_exact"]
    from visionclip.model import VisionCLIP
    model, tokenizer = VisionCLIP.from_pretrained(run / "model")
    assert tokenizer.vocab_size == model.vocab_size
    assert model.training_captions == {"zh": "generated"}  # caption_language zh, data.captions generated


def test_max_steps_stops_early_on_the_full_schedule_and_resumes_into_it(tmp_path, reference):
    ref_run, _ = reference
    run = _fresh_run(tmp_path, ref_run, "max_steps")
    summary = train_clip(load_profile(run / "tiny.yaml", {"train.max_steps": 2}), run, progress=False)
    assert (summary["steps"], summary["total_steps"]) == (2, 6)
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step_0000002"]
    lr = [json.loads(line)["lr"] for line in (run / "metrics" / "train.jsonl").read_text().splitlines()]
    ref_lr = [json.loads(line)["lr"] for line in (ref_run / "metrics" / "train.jsonl").read_text().splitlines()]
    assert lr == ref_lr[:2]  # the first two steps of the whole schedule, not a two-step schedule
    assert (run / "model" / "model.safetensors").is_file()
    summary = train_clip(load_profile(run / "tiny.yaml"), run, progress=False)
    assert summary["resumed_from"] == 2 and summary["steps"] == 6
    ref, got = _weights(ref_run), _weights(run)
    assert all(torch.equal(ref[k], got[k]) for k in ref), "a run stopped by max_steps did not resume exactly"


def test_sigkill_mid_run_then_resume_is_bit_identical(tmp_path, reference):
    ref_run, _ = reference
    run = _fresh_run(tmp_path, ref_run, "killed")
    cmd = [sys.executable, "-m", "visionclip", "train", "--profile", str(run / "tiny.yaml"), "--run-dir", str(run),
           "--no-progress"]
    proc = subprocess.Popen(cmd, env=ENV, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    log = run / "metrics" / "train.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if log.exists() and any(s >= 3 for s in _steps(log)):  # past the step-2 checkpoint
            break
        time.sleep(0.05)
    assert proc.poll() is None, f"training ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    assert not (run / "model").exists()
    summary = train_clip(load_profile(run / "tiny.yaml"), run, progress=False)
    assert summary["resumed_from"] is not None and summary["resumed_from"] >= 2
    ref, got = _weights(ref_run), _weights(run)
    assert ref.keys() == got.keys()
    assert all(torch.equal(ref[k], got[k]) for k in ref), "resumed weights differ from the uninterrupted run"
    assert _steps(log) == list(range(1, 7))                      # no duplicate rows after the replay
    assert _steps(run / "metrics" / "val.jsonl") == [3, 6]


def test_prepared_train_split_resumes_bit_identical_to_streaming(tmp_path, reference):
    """train.preload reads the corpus from prepared shards (data.prepare, made on first use) instead of
    decoding each image every epoch: the same items in the same order, so, stopped after two steps and
    resumed, the same weights as the streaming one-worker reference."""
    ref_run, _ = reference
    run = _fresh_run(tmp_path, ref_run, "preloaded")
    train_clip(load_profile(run / "tiny.yaml", {"train.preload": True, "train.max_steps": 2}), run, progress=False)
    assert (run / "data" / "prepared" / "32px" / "bad_images.csv").read_text() == "file_name,reason\n"
    summary = train_clip(load_profile(run / "tiny.yaml", {"train.preload": True}), run, progress=False)
    assert summary["resumed_from"] == 2
    ref, ours = _weights(ref_run), _weights(run)
    assert ref.keys() == ours.keys() and all(torch.equal(ref[k], ours[k]) for k in ref)


def test_batched_augmentation_on_the_device_resumes_bit_identical(tmp_path, reference):
    """train.augment_on: batches augments each batch after it reaches the device, with the per-item
    draws of (seed, epoch, index): a run stopped after two steps and resumed ends on the same weights."""
    ref_run, _ = reference
    over = {"train.preload": True, "train.augment_on": "batches"}
    whole = _fresh_run(tmp_path, ref_run, "batches")
    train_clip(load_profile(whole / "tiny.yaml", over), whole, progress=False)
    stopped = _fresh_run(tmp_path, ref_run, "batches_resumed")
    train_clip(load_profile(stopped / "tiny.yaml", {**over, "train.max_steps": 2}), stopped, progress=False)
    assert train_clip(load_profile(stopped / "tiny.yaml", over), stopped, progress=False)["resumed_from"] == 2
    a, b, ref = _weights(whole), _weights(stopped), _weights(ref_run)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], ref[k]) for k in a)  # not the per-item (PIL) pixels


def test_unreadable_images_are_skipped_and_said_once_with_the_list(tmp_path, reference, capsys):
    from visionclip.data.readers import read_synfundus
    from visionclip.data.splits import split_corpus
    from visionclip.eval.checks import calibrate_run

    run = _fresh_run(tmp_path, reference[0], "bad")
    profile = load_profile(run / "tiny.yaml", {"train.preload": True})
    splits = split_corpus(read_synfundus(run / "data" / "corpus"), profile.seed)
    truncated, not_an_image = splits["train"][3].path, splits["val"][1].path
    truncated.write_bytes(truncated.read_bytes()[:150])
    not_an_image.write_bytes(b"<html>not found</html>")
    summary = train_clip(profile, run, progress=False)
    assert summary["steps"] == summary["total_steps"]
    calibrate_run(profile, run)  # what `visionclip train` does next reads the val split: it skips them too
    err = capsys.readouterr().err
    bad_list = run / "data" / "prepared" / "32px" / "bad_images.csv"
    assert f"train: skipping 2 unreadable image(s) of the train and val splits (2 in the corpus); the list, " \
           f"with reasons: {bad_list}" in err
    assert len(bad_list.read_text().splitlines()) == 3


def test_corrupt_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, reference):
    ref_run, _ = reference
    run = tmp_path / "corrupt"
    shutil.copytree(ref_run, run)
    shutil.rmtree(run / "model")
    newest = run / "checkpoints" / "step_0000006" / "optimizer.safetensors"
    newest.write_bytes(b"\0" * 64)
    with pytest.warns(RuntimeWarning, match="step_0000006"):
        summary = train_clip(load_profile(run / "tiny.yaml"), run, progress=False)
    assert summary["resumed_from"] == 4
    ref, got = _weights(ref_run), _weights(run)
    assert all(torch.equal(ref[k], got[k]) for k in ref)
    assert _steps(run / "metrics" / "train.jsonl") == list(range(1, 7))


def test_nonfinite_steps_are_skipped_counted_then_stop(tmp_path, reference, monkeypatch):
    from visionclip import loss as loss_module

    run = _fresh_run(tmp_path, reference[0], "nan")
    real_forward = loss_module.ClipLoss.forward
    calls = {"n": 0}

    def poisoned(self, *args, **kwargs):  # step 2 is bad once, then every step from 4 on
        calls["n"] += 1
        value = real_forward(self, *args, **kwargs)
        return value * float("nan") if calls["n"] == 2 or calls["n"] >= 4 else value

    monkeypatch.setattr(loss_module.ClipLoss, "forward", poisoned)
    with pytest.raises(TrainingError, match=r"step 6: non-finite .* 3 steps in a row"):
        train_clip(load_profile(run / "tiny.yaml", {"train.checkpoint_every": 100}), run, progress=False)
    rows = [json.loads(line) for line in (run / "metrics" / "train.jsonl").read_text().splitlines()]
    assert [r["skipped"] for r in rows] == [False, True, False, True, True]


def test_supervised_ceiling_trains_and_saves(tmp_path, reference):
    run = _fresh_run(tmp_path, reference[0], "supervised")
    profile = load_profile(run / "tiny.yaml", {"train.epochs": 0.5})
    summary = train_supervised(profile, run, progress=False)
    assert summary["steps"] == 2 and (run / "supervised").is_dir()
    from visionclip.model import ImageClassifier
    clf = ImageClassifier.from_pretrained(run / "supervised")
    out = clf(torch.rand(2, 3, 32, 32))
    assert out["dr_grade"].shape == (2, 5) and out["flags"].shape == (2, 14)
    assert _steps(run / "metrics" / "supervised_train.jsonl") == [1, 2]
    # the training split's label shares travel with the model, for the balanced ceiling
    from visionclip.data.readers import read_synfundus
    from visionclip.data.splits import split_corpus
    from visionclip.paths import corpus_dir
    train = split_corpus(read_synfundus(corpus_dir(profile, run)), profile.seed)["train"]
    n_grade0 = sum(int(r.labels["dr_grade"]) == 0 for r in train)
    assert clf.label_priors["dr_grade"][0] == pytest.approx((n_grade0 + 1) / (len(train) + 5))
    assert len(clf.label_priors["flags"]) == 14 and sum(clf.label_priors["dr_grade"]) == pytest.approx(1)
