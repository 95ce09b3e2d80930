"""torch Datasets for pre-training (image-text pairs) and evaluation (any images), and the one path
from an image file to the towers' input: load_image -> (alter) -> Preprocess -> to_tensor ->
to_model_input. Nothing else in the package opens an image (tests/layering.py checks it).

Images are decoded here, so in the DataLoader's worker processes; items are uint8 tensors
(the model normalises), which keeps worker-to-trainer transfers four times smaller than float.
Everything random in an item is a function of (seed, epoch, index): a resumed run sees the
same images and captions whatever the worker count.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ..errors import DataError
from ..schema import DISEASE_FLAGS, FLAG_COLUMNS, GLOSSES, READABILITY_FLAGS
from ..seeding import rng
from .counterfactual import counterfactual_caption
from .records import CorpusRecord
from .table import LABEL_COLUMNS, LABEL_SET_FLAGS, CorpusTable, label_keys
from .transforms import Preprocess, TrainAugment

LANGUAGES = ("zh", "en", "both")
LABEL_VECTOR = ("dr_grade",) + FLAG_COLUMNS  # the 15 entries of an item's "labels"
UNREADABLE_NAMES = {"is_macular_readable": "macula not readable", "is_optic_disc_readable": "disc not readable",
                    "is_retinal_region_readable": "retina not readable"}


def label_set_key(row: Mapping) -> int:
    """A stable integer id of everything a caption states about an image: dr_grade * 2**14 + bits.

    Bits 0-9 are the DISEASE_FLAGS, bits 10-13 the READABILITY_FLAGS *not* met (is_fundus = 0 sets
    bit 10), so a readable eye keeps the id of its grade and diseases and a normal one is 0. A frame
    that is not a fundus photograph, or an eye whose macula cannot be assessed, says so in its
    caption: sharing the normal eye's id would make the label-aware loss teach "not a fundus" and
    "normal fundus" as one meaning. Built from the values alone (not Python's salted hash()), so it
    is identical in every process.
    """
    needed = ("dr_grade",) + LABEL_SET_FLAGS  # other columns (eye_side) do not enter the key
    return int(label_keys(np.array([[int(row[c]) if c in needed else 0 for c in LABEL_COLUMNS]]))[0])


def label_set_name(key: int) -> str:
    """The label set of a label_set_key in words: 'normal', 'not a fundus photograph', or its DR grade,
    diseases and unreadable regions joined by ' + '."""
    grade, bits = divmod(int(key), 1 << len(LABEL_SET_FLAGS))
    unmet = {flag for bit, flag in enumerate(LABEL_SET_FLAGS) if bits >> bit & 1}
    if "is_fundus" in unmet:
        return "not a fundus photograph"
    parts = [f"DR grade {grade}"] if grade else []
    parts += [GLOSSES[flag][0] for flag in DISEASE_FLAGS if flag in unmet]
    parts += [UNREADABLE_NAMES[flag] for flag in READABILITY_FLAGS if flag in unmet]
    return " + ".join(parts) or "normal"


# The largest fundus cameras take about 24 MP (6000 x 4000); twice that leaves room for any camera
# we do not know and for stitched montages. Anything larger is not a fundus photograph (a whole-slide
# scan, a panorama, a decompression bomb) and would cost a decoding worker gigabytes: PIL itself only
# warns below ~179 MP. Checked on the header, before any pixel is decoded.
MAX_IMAGE_PIXELS = 50_000_000


def check_pixels(img: Image.Image, where: str) -> None:
    """Refuse an opened (not yet decoded) image above MAX_IMAGE_PIXELS."""
    w, h = img.size
    if w * h > MAX_IMAGE_PIXELS:
        raise DataError(f"{where}: {w} x {h} px ({w * h / 1e6:.0f} MP) is larger than any fundus photograph "
                        f"(at most {MAX_IMAGE_PIXELS // 1_000_000} MP are decoded)")


def load_image(path: Path, size: int) -> Image.Image:
    """Decode an image as RGB; large JPEGs are decoded at a reduced scale (draft mode) first.

    Draft mode lets libjpeg decode at 1/2, 1/4 or 1/8 scale, never below the requested size,
    which makes a 2048-px photograph nearly as cheap as a small one when training at 128 px.
    """
    try:
        img = Image.open(path)
        try:
            check_pixels(img, str(path))
        except DataError:
            img.close()
            raise
        if img.format == "JPEG" and min(img.size) >= 2 * size:
            img.draft("RGB", (size, size))
        img.load()
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        detail = str(e).replace(f" '{path}'", "").replace(f" {path}", "")  # the path is named once
        raise DataError(f"{path}: cannot decode image ({type(e).__name__}: {detail})") from None
    return img


def open_image_bytes(raw: bytes, where: str) -> Image.Image:
    """Decode an image held in memory (a file inside an archive, a notebook's figure output);
    `where` names it in the error."""
    import io

    try:
        img = Image.open(io.BytesIO(raw))
        check_pixels(img, where)
        img.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"{where}: cannot decode image ({type(e).__name__}: {e})") from None
    return img


def to_tensor(img: Image.Image | np.ndarray) -> torch.Tensor:
    """uint8 [3, H, W] from an RGB PIL image (or its H x W x 3 uint8 array).

    The HWC -> CHW copy is done by numpy: torch's .contiguous() may hand a tiny copy to its
    intra-op thread pool, which costs milliseconds per item in busy DataLoader workers.
    """
    return torch.from_numpy(np.ascontiguousarray(np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)))


def read_image(path: Path | str, preprocess: Preprocess,
               alter: Callable[[Image.Image], Image.Image] | None = None) -> Image.Image:
    """An image file as the towers see it: decoded, optionally altered as a camera would alter the
    photograph (the robustness perturbations, applied at the stored resolution), then preprocessed."""
    img = load_image(Path(path), preprocess.size)
    if alter is not None:
        img = alter(img)
    return preprocess(img)


def file_names(records: Sequence[CorpusRecord] | CorpusTable) -> list[str]:
    """The annotation file names of a CorpusTable or of CorpusRecords, in their order."""
    if isinstance(records, CorpusTable):
        return [records.file_name(i) for i in range(len(records))]
    return [r.labels["file_name"] for r in records]


class ImageTextDataset(Dataset):
    """Corpus pairs for CLIP pre-training.

    language: "zh" or "en" picks one caption; "both" draws one per (seed, epoch, index).
    augment: TrainAugment seeded by (seed, epoch, index); call set_epoch(e) each epoch.
    hard_negatives: each item also carries a counterfactual report of its image (data.counterfactual),
    in the item's caption language, with the flipped row's label-set key.
    """

    def __init__(self, records: Sequence[CorpusRecord] | CorpusTable, image_size: int, language: str = "zh",
                 augment: bool = False, seed: int = 0, hard_negatives: bool = False):
        if language not in LANGUAGES:
            raise DataError(f"caption language {language!r}: expected one of {list(LANGUAGES)}")
        if not len(records):
            raise DataError("ImageTextDataset: no records (empty split?)")
        # A CorpusTable is kept as columns (the trainer's corpus: ~0.1 KiB a row, shared with
        # forked workers without copy-on-write); records are then built per item.
        self.records = records if isinstance(records, CorpusTable) else list(records)
        self.image_size, self.language, self.seed = int(image_size), language, int(seed)
        self.preprocess = Preprocess(self.image_size)  # training pads centred, never FLAIR's way
        self.augment = TrainAugment(self.image_size, self.seed) if augment else None
        self.epoch = 0
        self.hard_negatives = bool(hard_negatives)
        self._label_keys = (records.label_keys() if isinstance(records, CorpusTable) else
                            np.array([label_set_key(r.labels) for r in self.records], dtype=np.int64))
        self._prepared = None  # use_prepared(): crops read from memory-mapped shards (data.prepare)
        self._rows: np.ndarray | None = None

    def use_prepared(self, prepared) -> None:
        """Read every image from prepared shards (data.prepare.PreparedImages: decoded and cropped
        once by the same read_image) instead of decoding its file. Items are byte-identical to
        decoded ones; augmentation still runs per (seed, epoch, index)."""
        if prepared.size != self.image_size:
            raise DataError(f"{prepared.folder}: crops of {prepared.size} px, training at {self.image_size} px")
        self._rows = prepared.rows_of(file_names(self.records))
        self._prepared = prepared

    def _array(self, i: int) -> np.ndarray | None:
        return None if self._prepared is None else self._prepared.image(self._rows[i])

    def _image(self, i: int) -> Image.Image:
        """Image i decoded and preprocessed (from the prepared shards when there are), before augmentation."""
        if self._prepared is not None:
            return Image.fromarray(self._array(i))
        return read_image(self.records[i].path, self.preprocess)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.records)

    @property
    def label_keys(self) -> list[int]:
        return self._label_keys.tolist()

    def language_of(self, i: int, epoch: int | None = None) -> str:
        """The caption language of item i in this epoch (or in `epoch`)."""
        if self.language != "both":
            return self.language
        epoch = self.epoch if epoch is None else epoch
        return "zh" if rng(self.seed, "caption_language", epoch, i).random() < 0.5 else "en"

    def caption(self, i: int, epoch: int | None = None) -> str:
        rec = self.records[i]
        return rec.caption_zh if self.language_of(i, epoch) == "zh" else rec.caption_en

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        """Item i of this epoch, or of `epoch` for key (epoch, i): persistent DataLoader workers
        hold a copy of the dataset made once, so the epoch travels with the index."""
        epoch, i = key if isinstance(key, tuple) else (self.epoch, key)
        rec = self.records[i]
        if self.augment is not None:
            image = to_tensor(self.augment(self._image(i), epoch, i))
        else:  # a prepared crop goes to the tensor as it is, without a PIL round trip
            image = to_tensor(self._array(i) if self._prepared is not None else self._image(i))
        labels = torch.from_numpy(np.array([int(rec.labels[c]) for c in LABEL_VECTOR], dtype=np.int64))
        item = {"image": image, "caption": self.caption(i, epoch), "label_key": int(self._label_keys[i]),
                "index": i, "labels": labels}
        if self.hard_negatives:
            text, flipped = counterfactual_caption(rec.labels, self.seed, epoch, i, self.language_of(i, epoch))
            item.update(negative_caption=text, negative_label_key=label_set_key(flipped))
        return item


class ImageDataset(Dataset):
    """Images for evaluation, embedding and prediction, unaugmented: benchmark or corpus records (any
    object with a `.path`) or bare paths, all preprocessed by one Preprocess. `alter` changes each
    decoded photograph first (the robustness perturbations). Items are {"image", "index"}, plus
    "label" for labelled records; with `unreadable="report"` a file that cannot be decoded gives
    {"image": None, "index", "error"} instead of raising (predict skips it and says why)."""

    def __init__(self, items: Sequence, preprocess: Preprocess,
                 alter: Callable[[Image.Image], Image.Image] | None = None, unreadable: str = "raise"):
        if not len(items):
            raise DataError("ImageDataset: no images")
        if unreadable not in ("raise", "report"):
            raise ValueError(f"ImageDataset: unreadable={unreadable!r}: expected 'raise' or 'report'")
        self.items, self.preprocess, self.alter, self.unreadable = list(items), preprocess, alter, unreadable

    def __len__(self) -> int:
        return len(self.items)

    def path(self, i: int) -> Path:
        item = self.items[i]
        return Path(getattr(item, "path", item))

    def __getitem__(self, i: int) -> dict:
        out: dict = {"index": i}
        label = getattr(self.items[i], "label", None)
        if label is not None:
            out["label"] = int(label)
        try:
            out["image"] = to_tensor(read_image(self.path(i), self.preprocess, self.alter))
        except (DataError, OSError, ValueError) as e:
            if self.unreadable == "raise":
                raise
            prefix = f"{self.path(i)}: "
            out["image"], out["error"] = None, str(e)[len(prefix):] if str(e).startswith(prefix) else str(e)
        return out


def to_unit_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0,255] -> float [0,1]; float input is passed through (the model normalises inside)."""
    if images.dtype == torch.uint8:
        return images.float().div_(255.0)
    return images.float()


def to_model_input(images: torch.Tensor, device: torch.device | None = None) -> torch.Tensor:
    """An image batch as the towers take it, in training and in evaluation alike: float in [0, 1]
    (`to_unit_float`; the model normalises), channels-last, on `device` (moved while still uint8)."""
    if device is not None:
        images = images.to(device, non_blocking=True)
    return to_unit_float(images).contiguous(memory_format=torch.channels_last)


def val_pool(profile, splits: Mapping) -> ImageTextDataset:
    """The validation pool: the first val_size images of the corpus val split, unaugmented, with
    captions in the training language. The trainer validates on it; evaluation's per-label-set
    retrieval table reads the same pool."""
    cfg = profile.train
    return ImageTextDataset(splits["val"][:cfg.val_size], cfg.image_size, cfg.caption_language, False, profile.seed)


__all__ = ["ImageDataset", "ImageTextDataset", "LABEL_VECTOR", "file_names", "label_set_key", "label_set_name",
           "load_image", "open_image_bytes", "read_image", "to_tensor", "to_model_input", "val_pool"]
