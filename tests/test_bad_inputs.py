"""Bad inputs through the public CLI and the notebooks' papermill parameters: one case per row.

Each case builds a tiny fixture in tmp_path, breaks one thing, runs `visionclip ...` (the same
`visionclip.cli.main` that `python -m visionclip` runs) and checks: exit status 2, a one-line
message naming the file, row or field and what was expected, and no half-written file left
behind (files finished before the failure stay byte-identical).

`python tests/test_bad_inputs.py` regenerates book/appendix_bad_inputs.md from the real messages.
"""
from __future__ import annotations

import contextlib
import csv
import errno
import hashlib
import io
import json
import os
import re
import shutil
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from unittest import mock

import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_train import write_tiny_run  # noqa: E402  (the trainer tests' tiny corpus and profile)

from visionclip import cli  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "01_data_exploration.ipynb"
APPENDIX = ROOT / "book" / "appendix_bad_inputs.md"
N_IMAGES = 40
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("VISIONCLIP_QUIET", "1")


# ------------------------------------------------------------------------------------- fixtures

def _trained_base(root: Path) -> Path:
    """A tiny corpus, its profile and a 2-step trained run (model/ and one checkpoint)."""
    from visionclip.config import load_profile
    from visionclip.training.loop import train_clip

    profile = write_tiny_run(root, n=N_IMAGES, epochs=0.5, checkpoint_every=2, val_every=100)
    train_clip(load_profile(profile), root, progress=False)
    return root


def _write_fives(root: Path, n_per_class: int = 2) -> Path:
    """A FIVES-layout set of 32-px PNGs (train/Original/<id>_<A|D|G|N>.png)."""
    folder = root / "train" / "Original"
    folder.mkdir(parents=True)
    i = 0
    for suffix, colour in (("A", (200, 150, 40)), ("D", (190, 60, 40)), ("G", (170, 90, 60)), ("N", (160, 70, 40))):
        for _ in range(n_per_class):
            i += 1
            Image.new("RGB", (32, 32), colour).save(folder / f"{i}_{suffix}.png")
    return root


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return _trained_base(tmp_path_factory.mktemp("base"))


def _copy_run(base: Path, dest: Path, with_training: bool = False) -> Path:
    shutil.copytree(base / "data", dest / "data")
    shutil.copy(base / "tiny.yaml", dest / "tiny.yaml")
    if with_training:
        shutil.copytree(base / "model", dest / "model")
        shutil.copytree(base / "checkpoints", dest / "checkpoints")
    return dest


def _edit_csv(path: Path, edit: Callable[[list[str], list[dict]], list[str] | None]) -> None:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header, rows = list(reader.fieldnames), list(reader)
    header = edit(header, rows) or header
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=header, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def _first_image(run: Path) -> Path:
    return sorted((run / "data" / "corpus" / "Fundus").iterdir())[2]


# ------------------------------------------------------------------------------------- the cases
# Each case: setup(tmp, base) -> (argv, {placeholder: path}) ; message pattern the CLI must print.

@dataclass
class Case:
    name: str          # the row of the table
    setup: Callable    # (tmp, base) -> argv for visionclip.cli.main
    expect: str        # regex the message must match (names the file/row/field and what was expected)
    env: dict | None = None   # environment variables set while the command runs
    fault: Callable | None = None  # a context manager the command runs under: a full or read-only disk


def _train(run: Path, *extra: str) -> list[str]:
    return ["train", "--profile", str(run / "tiny.yaml"), "--run-dir", str(run), *extra]


def case_missing_root(tmp, base):
    run = _copy_run(base, tmp / "run")
    return _train(run, "--set", f"data.corpus_root={tmp / 'SynFundus-1M'}")


def case_wrong_layout(tmp, base):
    run = _copy_run(base, tmp / "run")
    corpus = run / "data" / "corpus"
    (corpus / "annotations.csv").rename(corpus / "annotations.bak")  # no annotation file at the root
    return _train(run)


def _release_run(tmp, base, field: str, value: str) -> tuple[Path, Path]:
    """The run's profile pointed at a release-format corpus whose row 2 has `field` = `value`."""
    from release_fixture import write_release, write_table

    run = _copy_run(base, tmp / "run")
    rows = write_release(tmp / "SynFundus-1M")
    rows[1][field] = value
    write_table(tmp / "SynFundus-1M" / "SynFundus-1M_metadata.txt", rows)
    return run, tmp / "SynFundus-1M"


def case_release_side_word(tmp, base):
    run, release = _release_run(tmp, base, "eyes_side", "OD")
    return _train(run, "--set", f"data.corpus_root={release}")


def case_release_md5(tmp, base):
    run, release = _release_run(tmp, base, "file_md5", "0" * 32)
    return _train(run, "--set", f"data.corpus_root={release}", "--set", "data.verify_md5=true")


def case_missing_column(tmp, base):
    run = _copy_run(base, tmp / "run")
    _edit_csv(run / "data" / "corpus" / "annotations.csv", lambda h, rows: [c for c in h if c != "is_gc"])
    return _train(run)


def case_grade_out_of_range(tmp, base):
    run = _copy_run(base, tmp / "run")

    def edit(header, rows):
        rows[3]["dr_grade"] = "7"
    _edit_csv(run / "data" / "corpus" / "annotations.csv", edit)
    return _train(run)


def case_flag_not_binary(tmp, base):
    run = _copy_run(base, tmp / "run")

    def edit(header, rows):
        rows[5]["is_amd"] = "yes"
    _edit_csv(run / "data" / "corpus" / "annotations.csv", edit)
    return _train(run)


def _first_trained_image(run: Path) -> Path:
    """The first image of the first training batch (so a short run is sure to read it)."""
    from visionclip.config import load_profile
    from visionclip.data.readers import read_synfundus
    from visionclip.data.splits import split_corpus
    from visionclip.training.sampler import ResumableBatchSampler

    profile = load_profile(run / "tiny.yaml")
    train = split_corpus(read_synfundus(run / "data" / "corpus"), profile.seed)["train"]
    first = ResumableBatchSampler(len(train), profile.train.batch_size, profile.seed).global_batch_indices(0, 0)[0]
    return train[int(first)].path


def case_corrupt_jpeg(tmp, base):
    run = _copy_run(base, tmp / "run")
    img = _first_trained_image(run)
    data = img.read_bytes()
    img.write_bytes(data[:20] + b"\x00garbage" * 8)  # a JPEG header, then nothing decodable
    return _train(run)


def case_corrupt_jpeg_in_worker(tmp, base):
    argv = case_corrupt_jpeg(tmp, base)
    return [*argv, "--set", "train.num_workers=1"]  # torch re-raises a worker's error with its traceback


def case_prepared_otherwise(tmp, base):
    from visionclip.config import load_profile
    from visionclip.data.prepare import STAMP, prepare_run

    run = _copy_run(base, tmp / "run")
    summary = prepare_run(load_profile(run / "tiny.yaml"), run, workers=1, progress=False)
    stamp = Path(summary["folder"]) / STAMP  # as if made by a version that padded FLAIR's way
    stamp.write_text(stamp.read_text().replace('"flair_exact": false', '"flair_exact": true'))
    return ["prepare", "--profile", str(run / "tiny.yaml"), "--run-dir", str(run)]


def case_zero_byte_image(tmp, base):
    run = _copy_run(base, tmp / "run")
    _first_image(run).write_bytes(b"")
    return _train(run)


def case_empty_split(tmp, base):
    run = _copy_run(base, tmp / "run")

    def edit(header, rows):
        del rows[4:]  # 4 images: nothing left for the val or test split
    _edit_csv(run / "data" / "corpus" / "annotations.csv", edit)
    return _train(run)


def case_empty_dataset(tmp, base):
    fives = _write_fives(tmp / "FIVES")
    for p in (fives / "train" / "Original").iterdir():
        p.rename(p.with_suffix(".txt"))  # the folder is there, the images are not
    return ["evaluate", "--checkpoint", str(base / "model"), "--dataset", "fives", "--data-root", str(fives),
            "--bootstrap", "10", "--out-dir", str(tmp / "eval")]


def case_checksum_mismatch(tmp, base):
    from visionclip.io import sha256_file, write_json

    run = _copy_run(base, tmp / "run")
    corpus = run / "data" / "corpus"
    files = {p.relative_to(corpus).as_posix(): sha256_file(p)
             for p in sorted(corpus.rglob("*")) if p.is_file() and p.name != "manifest.json"}
    write_json(corpus / "manifest.json", {"files": files})
    img = _first_image(run)
    Image.open(img).convert("RGB").rotate(90).save(img, quality=80)  # a valid image, but not the one recorded
    return _train(run)


def case_vocab_wrong_kind(tmp, base):
    run = _copy_run(base, tmp / "run")
    return _train(run, "--set", f"model.vocab={run / 'data' / 'corpus' / 'annotations.csv'}")


def case_checkpoint_other_config(tmp, base):
    run = _copy_run(base, tmp / "run", with_training=True)
    shutil.rmtree(run / "model")
    return _train(run, "--set", "model.embed_dim=48")


def case_all_checkpoints_corrupt(tmp, base):
    run = _copy_run(base, tmp / "run", with_training=True)
    shutil.copytree(base / "metrics", run / "metrics")  # a resume at step 0 would truncate them
    shutil.rmtree(run / "model")
    for weights in (run / "checkpoints").glob("step_*/model.safetensors"):
        weights.write_bytes(weights.read_bytes()[:100])  # half-copied
    return _train(run)


def case_restart_under_elastic_restart(tmp, base):
    run = _copy_run(base, tmp / "run", with_training=True)
    return _train(run, "--restart")


def case_run_dir_in_use(tmp, base):
    run = _copy_run(base, tmp / "run", with_training=True)
    (run / "visionclip.lock").write_text(json.dumps({"host": "node-17", "pid": 4242, "job": "torchrun:8841",
                                                     "since": "2026-12-01 08:00:00 UTC"}))
    return _train(run)


def case_model_other_config(tmp, base):
    fives = _write_fives(tmp / "FIVES")
    model = tmp / "model"
    shutil.copytree(base / "model", model)
    config = json.loads((model / "config.json").read_text())
    config["model"]["embed_dim"] = 48 if config["model"]["embed_dim"] != 48 else 40
    (model / "config.json").write_text(json.dumps(config))
    return ["evaluate", "--checkpoint", str(model), "--dataset", "fives", "--data-root", str(fives),
            "--bootstrap", "10", "--out-dir", str(tmp / "eval")]


def case_truncated_checkpoint(tmp, base):
    fives = _write_fives(tmp / "FIVES")
    model = tmp / "model"
    shutil.copytree(base / "model", model)
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    return ["evaluate", "--checkpoint", str(model), "--dataset", "fives", "--data-root", str(fives),
            "--bootstrap", "10", "--out-dir", str(tmp / "eval")]


def case_missing_gpu(tmp, base):
    fives = _write_fives(tmp / "FIVES")
    return ["evaluate", "--checkpoint", str(base / "model"), "--dataset", "fives", "--data-root", str(fives),
            "--device", "cuda:99", "--out-dir", str(tmp / "eval")]


def case_unknown_eval_device(tmp, base):
    run = _copy_run(base, tmp / "run")
    return _train(run, "--set", "eval.device=gpu")


def case_unknown_profile_key(tmp, base):
    run = _copy_run(base, tmp / "run")
    text = (run / "tiny.yaml").read_text().replace("  batch_size: 8\n", "  batch_size: 8\n  batchsize: 16\n")
    (run / "tiny.yaml").write_text(text)
    return _train(run)


def case_unknown_override(tmp, base):
    run = _copy_run(base, tmp / "run")
    return _train(run, "--set", "train.learning_rate=0.01")


def case_wrong_type_override(tmp, base):
    run = _copy_run(base, tmp / "run")
    return _train(run, "--set", "train.batch_size=big")


# ---- the cluster's disks (issue 24): faults injected where the operating system would raise them

def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as write()/fsync() raise it: no file name


def full_disk():
    """Every flush fails as on a full disk (each atomic write fsyncs before its rename)."""
    return mock.patch("os.fsync", _enospc)


def full_disk_in_safetensors():
    """The weights' write fails as safetensors reports a full disk (its own exception, errno in words)."""
    from safetensors import SafetensorError

    def fail(*args, **kwargs):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
    return mock.patch("safetensors.torch.save_file", fail)


def read_only_disk():
    """Creating any file fails as on a read-only mount (root ignores permissions, so chmod cannot)."""
    def fail(*args, dir=None, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(Path(dir or ".") / ".x.tmp"))
    return _patches(("tempfile.mkstemp", fail), ("tempfile.mkdtemp", fail))


def _patches(*targets):
    stack = contextlib.ExitStack()
    for target, fn in targets:
        stack.enter_context(mock.patch(target, fn))
    return stack


def case_full_disk(tmp, base):
    return _train(_copy_run(base, tmp / "run"))


def case_full_disk_saving_model(tmp, base):
    run = _copy_run(base, tmp / "run", with_training=True)  # trained to the end: train saves the model again
    return _train(run)


def case_read_only_disk(tmp, base):
    return _train(_copy_run(base, tmp / "run"))


# ---- values and files no profile or corpus should hold (issue 24)

def case_nan_override(tmp, base):
    return _train(_copy_run(base, tmp / "run"), "--set", "train.lr=nan")


def case_inf_in_profile(tmp, base):
    run = _copy_run(base, tmp / "run")
    (run / "tiny.yaml").write_text((run / "tiny.yaml").read_text().replace("  epochs: 0.5\n", "  epochs: .inf\n"))
    return _train(run)


def case_profile_not_utf8(tmp, base):
    run = _copy_run(base, tmp / "run")
    text = (run / "tiny.yaml").read_text().replace("  batch_size: 8\n", "  batch_size: 8  # größer?\n")
    (run / "tiny.yaml").write_bytes(text.encode("latin-1"))
    return _train(run)


def case_gbk_metadata(tmp, base):
    from release_fixture import write_release

    run = _copy_run(base, tmp / "run")
    write_release(tmp / "SynFundus-1M")
    table = tmp / "SynFundus-1M" / "SynFundus-1M_metadata.txt"  # not annotations.csv: found by its header
    table.write_bytes(table.read_bytes().decode("utf-8-sig").encode("gbk"))
    return _train(run, "--set", f"data.corpus_root={tmp / 'SynFundus-1M'}")


def _same_image_twice(tmp, base, spell):
    run = _copy_run(base, tmp / "run")

    def edit(header, rows):
        rows[5]["file_name"] = spell(rows[2]["file_name"])
    _edit_csv(run / "data" / "corpus" / "annotations.csv", edit)
    return _train(run)


def case_same_image_other_folder(tmp, base):
    return _same_image_twice(tmp, base, lambda name: f"part2/{name}")


def case_same_image_other_case(tmp, base):
    return _same_image_twice(tmp, base, str.upper)


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares width x height 8-bit RGB pixels and holds almost none (a bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")
    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def case_huge_image(tmp, base):
    run = _copy_run(base, tmp / "run")
    _first_trained_image(run).write_bytes(png_header(8000, 7000))  # 56 MP: PIL alone would only warn
    return _train(run)


def case_mixed_model_files(tmp, base):
    """vocab.txt and tokenizer.json of another save (two tokens' ids swapped in both, so they agree and
    the vocabulary size is the same): the old check compared only the size."""
    fives = _write_fives(tmp / "FIVES")
    model = tmp / "model"
    shutil.copytree(base / "model", model)
    tokens = (model / "vocab.txt").read_text(encoding="utf-8").splitlines()
    a, b = len(tokens) - 2, len(tokens) - 1
    tok = json.loads((model / "tokenizer.json").read_text(encoding="utf-8"))
    vocab = tok["model"]["vocab"]
    vocab[tokens[a]], vocab[tokens[b]] = vocab[tokens[b]], vocab[tokens[a]]
    tokens[a], tokens[b] = tokens[b], tokens[a]
    (model / "vocab.txt").write_text("".join(t + "\n" for t in tokens), encoding="utf-8")
    (model / "tokenizer.json").write_text(json.dumps(tok, ensure_ascii=False), encoding="utf-8")
    return ["evaluate", "--checkpoint", str(model), "--dataset", "fives", "--data-root", str(fives),
            "--bootstrap", "10", "--out-dir", str(tmp / "eval")]


CASES = [
    Case("missing data root", case_missing_root, r"SynFundus-1M.*(does not exist|not a folder)"),
    Case("wrong layout (no annotation file)", case_wrong_layout, r"corpus: no annotation file.*17.*26"),
    Case("release metadata: eyes_side not a word for a side", case_release_side_word,
         r"SynFundus-1M_metadata\.txt: row 2 \(line 3\), field 'eyes_side'"),
    Case("release metadata: file_md5 differs (data.verify_md5)", case_release_md5,
         r"SynFundus-1M_metadata\.txt: row 2 \(line 3\), field 'file_md5': .*000002\.png has md5"),
    Case("missing CSV column", case_missing_column, r"annotations\.csv.*missing column.*is_gc"),
    Case("DR grade out of range", case_grade_out_of_range, r"annotations\.csv.*(row|line) \d+.*dr_grade.*expected"),
    Case("flag not 0/1", case_flag_not_binary, r"annotations\.csv.*(row|line) \d+.*is_amd.*expected"),
    Case("corrupt JPEG", case_corrupt_jpeg, r"img_\d+\.jpg: cannot decode image"),
    Case("corrupt JPEG read in a DataLoader worker", case_corrupt_jpeg_in_worker, r"img_\d+\.jpg: cannot decode image"),
    Case("prepared shards made with other preprocessing", case_prepared_otherwise,
         r"prepared/32px: already prepared with other parameters \(preprocess: stored .*'flair_exact': True"),
    Case("zero-byte image", case_zero_byte_image, r"img_00002\.jpg.*empty"),
    Case("empty split (corpus too small)", case_empty_split, r"split.*empty"),
    Case("empty dataset folder", case_empty_dataset, r"FIVES.*no labelled images"),
    Case("manifest checksum mismatch", case_checksum_mismatch, r"img_00002\.jpg.*sha256.*manifest\.json"),
    Case("vocab file of the wrong kind", case_vocab_wrong_kind, r"annotations\.csv.*expected"),
    Case("training checkpoint of another model configuration", case_checkpoint_other_config,
         r"step_\d+.*different.*model"),
    Case("every training checkpoint corrupt", case_all_checkpoints_corrupt,
         r"checkpoints: no checkpoint verifies \(.*step_0000002/model\.safetensors: checksum mismatch"),
    Case("--restart replayed by torchrun's elastic restart", case_restart_under_elastic_restart,
         r"--restart: refused under torchrun's elastic restart 1 .*checkpoints", env={"TORCHELASTIC_RESTART_COUNT": "1"}),
    Case("run directory in use by another job", case_run_dir_in_use,
         r"run: in use by another job \(host node-17, pid 4242, job torchrun:8841, since 2026-12-01 08:00:00 UTC\)"),
    Case("saved model of another configuration", case_model_other_config, r"model.*(config|shape|embed)"),
    Case("truncated saved model", case_truncated_checkpoint, r"model\.safetensors"),
    Case("evaluation on a GPU this machine lacks", case_missing_gpu,
         r"--device: cuda:99 asked for, but this machine has \d+ GPU"),
    Case("evaluation device that is not one (--set)", case_unknown_eval_device,
         r"eval\.device: expected auto, cpu, cuda or cuda:N, got 'gpu'"),
    Case("unknown profile key (YAML)", case_unknown_profile_key, r"tiny\.yaml.*batchsize"),
    Case("unknown profile key (--set)", case_unknown_override, r"learning_rate"),
    Case("profile value of the wrong type (--set)", case_wrong_type_override, r"train\.batch_size.*expected an integer"),
    Case("full disk (a write fails with ENOSPC)", case_full_disk, r"<tmp>/run/\S+: No space left on device$", fault=full_disk),
    Case("full disk while the model is saved", case_full_disk_saving_model,
         r"<tmp>/run/model/model\.safetensors: No space left on device$", fault=full_disk_in_safetensors),
    Case("read-only run directory", case_read_only_disk, r"<tmp>/run/\S+: Read-only file system$", fault=read_only_disk),
    Case("NaN learning rate (--set)", case_nan_override, r"train\.lr: expected a finite number, got nan"),
    Case("infinite epochs (YAML .inf)", case_inf_in_profile, r"tiny\.yaml: train\.epochs: expected a finite number, got inf"),
    Case("profile YAML not UTF-8", case_profile_not_utf8, r"tiny\.yaml: not UTF-8 text at line \d+, byte offset \d+ \(0xf6\)"),
    Case("annotation file in GBK, not named annotations.csv", case_gbk_metadata,
         r"SynFundus-1M_metadata\.txt: not UTF-8 text at line 2, byte offset \d+ \(0x\w\w\); .*GBK"),
    Case("two rows, one image (another folder)", case_same_image_other_folder,
         r"annotations\.csv: row 6 \(line 7\), field 'file_name': 'part2/img_\d+\.jpg' is the image of row 3"),
    Case("two rows, one image (another case)", case_same_image_other_case,
         r"annotations\.csv: row 6 \(line 7\), field 'file_name': 'IMG_\d+\.JPG' is the image of row 3"),
    Case("image larger than any fundus photograph", case_huge_image,
         r"img_\d+\.jpg: 8000 x 7000 px \(56 MP\) is larger than any fundus photograph \(at most 50 MP"),
    Case("saved model whose tokenizer is from another save", case_mixed_model_files,
         r"model/vocab\.txt: not the tokenizer saved with .*model\.safetensors"),
]


# ------------------------------------------------------------------------------------- the check

def _snapshot(root: Path) -> dict[str, str]:
    """Every finished file's digest; not the corpus-table cache (data.table_cache), which a changed
    annotation file replaces by design: derived, rebuilt by the next reader."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and "corpus_tables" not in p.parts}


TEMP_NAME = re.compile(r"(^|/)\.[^/]*\.tmp(/|$)|\.tmp$|\.partial$")


def run_case(case: Case, tmp: Path, base: Path) -> tuple[int, str, list[str]]:
    """Run one case; returns (exit status, stderr, the command as a user would type it)."""
    argv = case.setup(tmp, base)
    before = _snapshot(tmp)
    err = io.StringIO()
    saved = {k: os.environ.get(k) for k in case.env or {}}
    os.environ.update(case.env or {})
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()), \
                (case.fault() if case.fault else contextlib.nullcontext()):
            rc = cli.main(argv)
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    after = _snapshot(tmp)
    left = sorted(p for p in after if TEMP_NAME.search(p))
    assert not left, f"{case.name}: temporary files left behind: {left}"
    changed = sorted(p for p in before if before[p] != after.get(p))
    assert not changed, f"{case.name}: finished files changed or removed: {changed}"
    new = sorted(set(after) - set(before))
    assert not [p for p in new if p.startswith(("run/model/", "model/", "eval/"))], \
        f"{case.name}: a failed command wrote final outputs {new}"
    return rc, err.getvalue(), argv


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_fails_clearly_and_leaves_no_partial_file(case, tmp_path, base):
    rc, err, _ = run_case(case, tmp_path, base)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2, f"exit {rc}, stderr:\n{err}"
    assert len(lines) == 1, f"expected a one-line message, got:\n{err}"
    assert lines[0].startswith(f"visionclip {case.setup.__name__ and ''}") or lines[0].startswith("visionclip ")
    assert re.search(case.expect, lines[0].replace(str(tmp_path), "<tmp>")), f"{lines[0]!r} does not match {case.expect!r}"


# ------------------------------------------------------------------------------------- notebooks

PAPERMILL_CASES = [
    ("notebook parameter of the wrong type", {"overrides": {"train.batch_size": "big"}},
     r"train\.batch_size.*expected an integer"),
    ("unknown profile key as a notebook parameter", {"overrides": {"train.bogus": 1}}, r"bogus"),
    ("notebook `profile` parameter of the wrong type", {"profile": 5}, r"profile"),
]


def run_papermill_case(params: dict, tmp: Path) -> tuple[str, float]:
    """Execute notebook 01 with `params`; returns (the error's one-line message, seconds)."""
    import time

    import papermill
    from papermill.exceptions import PapermillExecutionError

    start = time.perf_counter()
    with pytest.raises(PapermillExecutionError) as info:
        papermill.execute_notebook(str(NOTEBOOK), str(tmp / "out.ipynb"), parameters={"run_dir": str(tmp / "run"),
                                   **params}, kernel_name="python3", progress_bar=False, cwd=str(NOTEBOOK.parent))
    e = info.value
    return f"{e.ename}: {e.evalue}", time.perf_counter() - start


@pytest.mark.parametrize("name,params,expect", PAPERMILL_CASES, ids=[c[0] for c in PAPERMILL_CASES])
def test_notebook_parameters_are_validated_before_any_work(name, params, expect, tmp_path):
    message, seconds = run_papermill_case(params, tmp_path)
    assert message.startswith("ConfigError: ") and "\n" not in message, message
    assert re.search(expect, message), message
    assert not (tmp_path / "run").exists(), "the notebook did work before validating its parameters"
    assert seconds < 60


def test_pipeline_validates_overrides_before_any_notebook(tmp_path, capsys):

    rc = cli.main(["book", "--profile", "ci", "--run-dir", str(tmp_path / "run"), "--no-book",
                        "-p", "train.batch_size=big"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and re.search(r"train\.batch_size.*expected an integer", err), err
    assert not (tmp_path / "run").exists()


def test_pipeline_refuses_a_parameter_no_notebook_declares_and_takes_seed_as_a_profile_key(tmp_path, capsys):
    rc = cli.main(["book", "--profile", "ci", "--run-dir", str(tmp_path / "run"), "--no-book", "-p", "sed=1235"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and re.search(r"-p sed: not a parameter of the notebooks.*existing_run", err), err
    assert not (tmp_path / "run").exists()
    from visionclip.report import pipeline

    resolved, _ = pipeline.resolve_run_dir("ci", {"seed": 1235, "existing_run": ""}, tmp_path / "run")
    assert resolved.seed == 1235           # a profile override, not a parameter papermill would drop
    assert pipeline.notebook_parameters("ci", tmp_path, {"seed": 1235})["overrides"] == {"seed": 1235}


# ------------------------------------------------------------------------------------- the appendix

def _markdown_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


# Not bad input: what a stopped command says (tests/test_preempt.py and tests/test_runlock.py check these).
STOPPED = [
    "",
    "## Stopped, not failed: exit 75",
    "",
    "SIGTERM or SIGUSR1 (what Slurm, Kubernetes and torchrun send before a kill) makes `visionclip synth`,",
    "`prepare` and `book` finish the image, shard or notebook at hand, keep every finished file, and exit",
    "with status 75 and the command that resumes; that command ends byte-identical to an uninterrupted run",
    "(`tests/test_preempt.py`, the signal sent to the whole process group, workers included):",
    "",
    "| Stopped | Message |",
    "|---|---|",
    "| rendering | exit 75: visionclip synth: stopped: SIGTERM received: stopped rendering <tmp>/data/corpus/Fundus "
    "with 24 of 64 images finished (kept; the tables and manifest.json are written once all are); resume with: "
    "visionclip synth --profile tiny --run-dir <tmp> --variants --set synth.workers=2 |",
    "| prepare | exit 75: visionclip prepare: stopped: SIGTERM received: stopped preparing <tmp>/data/prepared/32px "
    "with 6 of 32 shards finished (kept; bad_images.csv is written once all are); resume with: visionclip prepare "
    "--profile tiny --run-dir <tmp> --workers 2 --no-progress |",
    "| the book pipeline | exit 75: visionclip book: stopped: SIGTERM received: stopped before notebook 02_next "
    "(2 of 2); the 1 before it are executed in <tmp>/run/notebooks; resume with: visionclip book --profile tiny "
    "--run-dir <tmp>/run --no-book --resume |",
    "",
    "A lock left by a job that died on this host is taken over with a warning (`tests/test_runlock.py`):",
    "`RuntimeWarning: <tmp>/run/visionclip.lock: taking over the stale lock of a job that is no longer running "
    "(host <host>, pid 73012, job torchrun:old, since 2026-01-01 00:00:00 UTC)`.",
]


def write_appendix(path: Path = APPENDIX) -> None:
    """Run every case and write the table of real messages (temporary paths shown as <tmp>)."""
    import tempfile

    from visionclip.io import write_text

    rows = []
    with tempfile.TemporaryDirectory() as d:
        base = _trained_base(Path(d) / "base")
        for case in CASES:
            tmp = Path(d) / re.sub(r"\W+", "_", case.name)
            tmp.mkdir()
            rc, err, argv = run_case(case, tmp, base)
            msg = err.strip().replace(str(tmp), "<tmp>").replace(str(base), "<base>").replace(str(ROOT) + "/", "")
            env = [f"{k}={v}" for k, v in (case.env or {}).items()]
            cmd = " ".join([*env, "visionclip", *argv]).replace(str(tmp), "<tmp>").replace(str(base), "<base>")
            rows.append((case.name, cmd, f"exit {rc}: {msg}"))
        for name, params, _ in PAPERMILL_CASES:
            tmp = Path(d) / re.sub(r"\W+", "_", name)
            tmp.mkdir()
            msg, _ = run_papermill_case(params, tmp)
            cmd = f"papermill notebooks/01_data_exploration.ipynb out.ipynb " + " ".join(
                f"-p {k} '{json.dumps(v)}'" if not isinstance(v, str) else f"-p {k} {v}" for k, v in params.items())
            rows.append((name, cmd, msg.replace(str(tmp), "<tmp>").replace(str(ROOT) + "/", "")))
    lines = [
        "# Appendix: bad inputs and what the library says",
        "",
        "Every row is a test in `tests/test_bad_inputs.py`: a tiny fixture with one thing broken, run through",
        "the public command line (`visionclip ...`, which exits with status 2 on these errors) or through",
        "papermill's parameters. The messages below are the real ones, captured by",
        "`python tests/test_bad_inputs.py` (temporary folders shown as `<tmp>`). None of these failures",
        "leaves a half-written file behind: outputs are written to a temporary name and renamed, and files",
        "finished before the failure stay as they were.",
        "",
        "The disk rows inject the operating system's own error where it arises (a full disk's ENOSPC when a",
        "file is flushed, a read-only mount's EROFS when one is created); `tests/test_hostile_inputs.py` gets",
        "the same messages from a real 1 MiB tmpfs and a read-only bind mount. There, too: `visionclip predict`",
        "skips a photograph above 50 MP with `visionclip predict: skipped <path>: 9000 x 9000 px (81 MP) is",
        "larger than any fundus photograph (at most 50 MP are decoded)`, and under torchrun a rank whose disk",
        "is full exits with its one line while its peers are released within seconds, not at the collective",
        "timeout.",
        "",
        "| Case | Command | Message |",
        "|---|---|---|",
    ]
    lines += [f"| {_markdown_cell(a)} | `{_markdown_cell(b)}` | {_markdown_cell(c)} |" for a, b, c in rows]
    lines += STOPPED
    write_text(path, "\n".join(lines) + "\n")
    print(f"wrote {path} ({len(rows)} cases)")


if __name__ == "__main__":
    write_appendix()
