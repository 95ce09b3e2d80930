"""The prepare stage (data.prepare): crops byte-identical to decoding, bad images listed and skipped,
a killed prepare resumed, shards of other parameters refused, ranks sharing the work."""
from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_train import write_tiny_corpus  # noqa: E402  (the trainer tests' tiny corpus)

from visionclip import cli  # noqa: E402
from visionclip.data import prepare as prep  # noqa: E402
from visionclip.data.datasets import ImageTextDataset, file_names, read_image  # noqa: E402
from visionclip.data.readers import read_synfundus_table  # noqa: E402
from visionclip.data.transforms import Preprocess  # noqa: E402
from visionclip.errors import DataError  # noqa: E402

SIZE = 24


@pytest.fixture()
def corpus(tmp_path):
    return read_synfundus_table(write_tiny_corpus(tmp_path / "corpus", n=10, size=40))


def _prepare(corpus, folder, **kw):
    kw.setdefault("shard_images", 4)
    kw.setdefault("progress", False)
    return prep.prepare_images(file_names(corpus), prep.corpus_paths(corpus), folder, Preprocess(SIZE), **kw)


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_prepared_crops_are_byte_identical_to_decoded_images(corpus, tmp_path):
    summary = _prepare(corpus, tmp_path / "p")
    assert summary["complete"] and summary["shards"] == 3 and summary["bad"] == 0
    prepared = prep.PreparedImages(tmp_path / "p")
    for i in range(len(corpus)):
        decoded = np.asarray(read_image(corpus.path(i), Preprocess(SIZE)), dtype=np.uint8)
        assert np.array_equal(prepared.image(prepared.rows[corpus.file_name(i)]), decoded)
    assert summary["bytes"] == sum(p.stat().st_size for p in (tmp_path / "p").glob("shard_*.npy"))


@pytest.mark.parametrize("augment", [False, True])
def test_items_from_prepared_shards_equal_decoded_ones(corpus, tmp_path, augment):
    _prepare(corpus, tmp_path / "p")
    streamed = ImageTextDataset(corpus, SIZE, "zh", augment=augment, seed=3)
    prepared = ImageTextDataset(corpus, SIZE, "zh", augment=augment, seed=3)
    prepared.use_prepared(prep.PreparedImages(tmp_path / "p"))
    for epoch in (0, 2):
        streamed.set_epoch(epoch), prepared.set_epoch(epoch)
        for i in range(len(corpus)):
            a, b = streamed[i], prepared[i]
            assert torch.equal(a["image"], b["image"]) and a["image"].is_contiguous() == b["image"].is_contiguous()
            assert a["caption"] == b["caption"] and a["label_key"] == b["label_key"]
    for i in range(len(corpus)):  # no image file is read once prepared
        corpus.path(i).unlink()
    assert prepared[2]["image"].shape == (3, SIZE, SIZE)


def test_workers_and_ranks_write_the_same_shards(corpus, tmp_path):
    _prepare(corpus, tmp_path / "one")
    _prepare(corpus, tmp_path / "pool", workers=2)
    first = _prepare(corpus, tmp_path / "ranks", rank=1, world_size=2)
    assert not first["complete"] and not (tmp_path / "ranks" / prep.BAD_LIST).exists()
    writing = tmp_path / "ranks" / ".shard_00001.npy.r1.tmp"  # as if rank 1 were writing shard 1 again
    writing.write_bytes(b"in progress")
    assert _prepare(corpus, tmp_path / "ranks", rank=0, world_size=2)["complete"]
    assert writing.exists()  # rank 0 cleans up after itself only
    writing.unlink()
    assert _files(tmp_path / "one") == _files(tmp_path / "pool") == _files(tmp_path / "ranks")
    with pytest.raises(DataError, match=r"1 shard\(s\) not prepared yet .*shard_00001\.npy"):
        _prepare(corpus, tmp_path / "half", rank=0, world_size=2)
        prep.PreparedImages(tmp_path / "half")


def test_unreadable_images_are_listed_with_their_reason_and_left_out(corpus, tmp_path):
    truncated, text = corpus.path(1), corpus.path(6)
    truncated.write_bytes(truncated.read_bytes()[:200])
    text.write_bytes(b"not an image at all\n")
    summary = _prepare(corpus, tmp_path / "p")
    assert summary["bad"] == 2
    with open(summary["bad_list"], newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["file_name"] for r in rows] == [corpus.file_name(1), corpus.file_name(6)]
    assert all(r["reason"].startswith("cannot decode image") for r in rows)
    assert str(truncated) not in rows[0]["reason"]  # named once, by the file_name column
    kept, dropped = prep.without_bad(corpus, prep.PreparedImages(tmp_path / "p"))
    assert dropped == 2 and len(kept) == 8 and corpus.file_name(1) not in file_names(kept)


def test_a_killed_prepare_resumes_where_it_stopped(corpus, tmp_path, monkeypatch):
    _prepare(corpus, tmp_path / "whole")
    real, written = prep._write_shard, []

    def dies_on_the_third(job):
        if len(written) == 2:
            raise KeyboardInterrupt  # as a kill between two shards
        written.append(job[1])
        return real(job)

    monkeypatch.setattr(prep, "_write_shard", dies_on_the_third)
    with pytest.raises(KeyboardInterrupt):
        _prepare(corpus, tmp_path / "killed")
    (tmp_path / "killed" / ".shard_00002.npy.x1.tmp").write_bytes(b"half")  # what a SIGKILL leaves behind
    monkeypatch.setattr(prep, "_write_shard", lambda job: (written.append(job[1]), real(job))[1])
    assert _prepare(corpus, tmp_path / "killed")["complete"]
    assert written == [0, 1, 2]  # the two finished shards were not redone
    assert _files(tmp_path / "killed") == _files(tmp_path / "whole")


def test_shards_of_other_parameters_or_files_are_refused(corpus, tmp_path):
    _prepare(corpus, tmp_path / "p")
    with pytest.raises(DataError, match=r"p: already prepared with other parameters \(.*flair_exact"):
        prep.prepare_images(file_names(corpus), prep.corpus_paths(corpus), tmp_path / "p", Preprocess(SIZE, True),
                            shard_images=4, progress=False)
    fewer = corpus.subset(range(8))
    with pytest.raises(DataError, match=r"already prepared with other parameters \(file_names_sha256: .*images: "
                                        r"stored 10, this run 8"):
        _prepare(fewer, tmp_path / "p")
    (tmp_path / "p" / prep.STAMP).unlink()
    with pytest.raises(DataError, match=r"holds shards but no \.prepare_params\.json"):
        _prepare(corpus, tmp_path / "p")


def test_cli_prepare_reports_and_refuses_other_settings_with_exit_2(tmp_path, capsys):
    from test_train import write_tiny_run

    profile = write_tiny_run(tmp_path / "run", n=12)
    argv = ["prepare", "--profile", str(profile), "--run-dir", str(tmp_path / "run"), "--no-progress"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "prepared 12 images at 32 px into" in out and "0 unreadable" in out
    stamp = tmp_path / "run" / "data" / "prepared" / "32px" / prep.STAMP
    stamp.write_text(stamp.read_text().replace('"margin": 0', '"margin": 8'))
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "32px: already prepared with other parameters (margin: stored 8" in err


# ---------------------------------------------------------------------------- batched augmentation

def _asymmetric_disk(s: int = 48) -> np.ndarray:
    """A disk whose colour runs across and down it, with a bright patch up and right: a wrong crop,
    rotation direction or flip moves visible structure."""
    yy, xx = np.mgrid[:s, :s]
    inside = (xx - s / 2) ** 2 + (yy - s / 2) ** 2 < (0.45 * s) ** 2
    arr = np.zeros((s, s, 3), np.uint8)
    arr[..., 0] = np.where(inside, 60 + 3 * xx, 0)
    arr[..., 1] = np.where(inside, 40 + 3 * yy, 0)
    arr[..., 2] = np.where(inside & (xx > 0.6 * s) & (yy < 0.4 * s), 230, np.where(inside, 30, 0))
    return arr


def test_batched_augmentation_applies_the_per_item_draws_and_is_a_function_of_the_indices():
    from PIL import Image

    from visionclip.data.batch_augment import BatchAugment
    from visionclip.data.transforms import TrainAugment

    arr, n = _asymmetric_disk(), 40
    batch = torch.from_numpy(np.ascontiguousarray(np.stack([arr] * n).transpose(0, 3, 1, 2)))
    out = BatchAugment(48, 3)(batch, 2, list(range(n)))
    assert out.shape == (n, 3, 48, 48) and out.dtype == torch.float32 and 0 <= out.min() and out.max() <= 1
    per_item = [np.asarray(TrainAugment(48, 3)(Image.fromarray(arr), 2, k), np.float32) / 255 for k in range(n)]
    got = out.permute(0, 2, 3, 1).numpy()
    same = [np.abs(got[k] - per_item[k]).mean() for k in range(n)]
    other = [np.abs(got[k] - per_item[(k + 1) % n]).mean() for k in range(n)]
    # one resampling instead of PIL's two: close to its own draw, far from another image's
    assert max(same) < 0.015 < min(other)
    assert any(TrainAugment(48, 3).draw(2, k).blur_radius for k in range(n))  # the blur was exercised
    again = BatchAugment(48, 3)(batch[[7, 3]], 2, [7, 3])  # another batch, another order: same images
    assert torch.equal(again[0], out[7]) and torch.equal(again[1], out[3])
    assert not torch.equal(BatchAugment(48, 3)(batch[:1], 3, [0])[0], out[0])  # a new epoch, new draws
