"""VisionCLIP: an image tower and a BERT text tower projected into one L2-normalised space.

Model shapes are data (`visionclip.config.ModelConfig`); `build_model` is the one factory, and the
image tower is built by `build_image_tower`, shared with the supervised-ceiling `ImageClassifier`.
Saved models are a directory of safetensors weights, a JSON config and the tokenizer files:
nothing is ever unpickled.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from . import __version__
from .config import ModelConfig
from .errors import CheckpointError, DataError
from .io import atomic_path, errors_named_as, sha256_file, write_json
from .schema import DR_GRADES, FLAG_COLUMNS
from .text import TOKENIZER_FILE, VOCAB_FILE, CaptionTokenizer

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # transformers must never reach for a model hub

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
TOKENIZER_FILES = (VOCAB_FILE, TOKENIZER_FILE)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LOGIT_SCALE_INIT = math.log(1 / 0.07)
LOGIT_SCALE_MAX = 100.0
DEFAULT_IMAGE_SIZE = 224
# Chinese-CLIP's RN50 (CLIP's ModifiedResNet): ResNet-50 depths, width 64, 32 attention-pool heads.
MODIFIED_RN50 = {"layers": [3, 4, 6, 3], "width": 64, "heads": 32}


class ImageTower(nn.Module):
    """ImageNet normalisation (inputs are floats in [0, 1]) followed by a ResNet trunk.

    `feature_dim` is the width of the pooled output. The normalisation constants are buffers,
    so every caller passes [0, 1] images and the saved model carries its own preprocessing.
    """

    def __init__(self, trunk: nn.Module, feature_dim: int, name: str, fixed_size: int | None = None,
                 exposure_norm: bool = False):
        super().__init__()
        self.exposure_norm = exposure_norm
        self.trunk = trunk
        self.feature_dim = feature_dim
        self.name = name
        self.fixed_size = fixed_size  # modified_rn50: the size its attention pool was built for
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images as a float tensor [B, 3, H, W] in [0, 1], got shape "
                             f"{tuple(images.shape)}")
        if self.fixed_size is not None and tuple(images.shape[-2:]) != (self.fixed_size,) * 2:
            raise ValueError(f"image tower {self.name} was built for {self.fixed_size}x{self.fixed_size} images "
                             f"(one attention-pool position per 32 px patch), got {tuple(images.shape[-2:])}")
        if self.exposure_norm:
            images = normalise_exposure(images)
        x = (images - self.mean.to(images.dtype)) / self.std.to(images.dtype)
        return self.trunk(x)


EXPOSURE_LEVEL = 0.4  # mean level of the disk after exposure_norm: about a well-exposed photograph's


def normalise_exposure(images: torch.Tensor) -> torch.Tensor:
    """Each image times the gain that brings the mean of its fundus disk to EXPOSURE_LEVEL.

    Why: a photograph's exposure (flash, pupil, camera) says nothing about the eye, and a gain is
    undone exactly here, so a darker or brighter photograph of an eye reaches the trunk as the same
    image, up to 8-bit rounding and clipping. The disk is every pixel with a channel above zero: the
    preprocessing leaves the surround exactly black.
    """
    disk = (images.amax(dim=1, keepdim=True) > 0).to(images.dtype)
    level = (images.mean(dim=1, keepdim=True) * disk).sum(dim=(2, 3), keepdim=True)
    level = level / disk.sum(dim=(2, 3), keepdim=True).clamp(min=1.0)
    return images * (EXPOSURE_LEVEL / level.clamp(min=1e-3))


def build_image_tower(model_cfg: ModelConfig, image_size: int = DEFAULT_IMAGE_SIZE) -> ImageTower:
    """The image encoder named by model_cfg.image_tower, randomly initialised.

    torchvision resnet18/34/50: global-average-pooled trunk features (512 / 512 / 2048-d).
    modified_rn50: CLIP's ModifiedResNet (3-conv stem, anti-aliased strides, attention pooling)
    from open_clip, as Chinese-CLIP's RN50; its attention pool already projects to embed_dim
    (its learned position embedding fixes the input size to `image_size`).
    """
    name = model_cfg.image_tower
    if name in ("resnet18", "resnet34", "resnet50"):
        import torchvision

        trunk = getattr(torchvision.models, name)(weights=None)
        feature_dim = trunk.fc.in_features
        trunk.fc = nn.Identity()
        return ImageTower(trunk, feature_dim, name, exposure_norm=model_cfg.exposure_norm)
    if name == "modified_rn50":
        from open_clip.modified_resnet import ModifiedResNet  # heavy import, only when asked for

        if image_size % 32:
            raise DataError(f"model.image_tower=modified_rn50: image size {image_size} must be a "
                            "multiple of 32 (its attention pool has one position per 32x32 patch)")
        trunk = ModifiedResNet(layers=MODIFIED_RN50["layers"], output_dim=model_cfg.embed_dim,
                               heads=MODIFIED_RN50["heads"], image_size=image_size,
                               width=MODIFIED_RN50["width"])
        return ImageTower(trunk, model_cfg.embed_dim, name, fixed_size=image_size,
                          exposure_norm=model_cfg.exposure_norm)
    raise DataError(f"model.image_tower: unknown image tower {name!r}; expected resnet18, resnet34, "
                    "resnet50 or modified_rn50")


def build_text_tower(model_cfg: ModelConfig, vocab_size: int) -> nn.Module:
    """A randomly initialised transformers BertModel of the configured shape (no pooler: see pool_text)."""
    from transformers import BertConfig, BertModel

    config = BertConfig(
        vocab_size=vocab_size, hidden_size=model_cfg.text_hidden,
        num_hidden_layers=model_cfg.text_layers, num_attention_heads=model_cfg.text_heads,
        intermediate_size=model_cfg.text_intermediate, max_position_embeddings=model_cfg.max_positions,
        type_vocab_size=2, pad_token_id=0)
    return BertModel(config, add_pooling_layer=False)


def pool_text(hidden: torch.Tensor, attention_mask: torch.Tensor, how: str) -> torch.Tensor:
    """[B, L, H] token states -> [B, H]: the [CLS] state, or the mean over real (unmasked) tokens.

    Why mean: a randomly initialised BERT's [CLS] state has to learn to gather the caption through
    attention first; the mean carries every token from step one, which on a short CPU budget gives
    text features that separate captions much sooner. Its cost: one negating word is diluted in
    the average ("no glaucoma" vs "glaucoma").
    """
    if how == "cls":
        return hidden[:, 0]
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)


class AttentionPool(nn.Module):
    """[B, L, H] token states -> [B, H]: a learned query's softmax weights over the caption's tokens.

    Why: the mean gives every token one share, so a negating word (非, 无, "no") barely moves the
    feature; here the weights are learnt, and one token can carry the caption. The query starts at
    zero, so training begins from exactly the mean (its fast start on a short budget is kept).
    """

    def __init__(self, hidden: int):
        super().__init__()
        self.query = nn.Parameter(torch.zeros(hidden))

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        scores = (hidden @ self.query.to(hidden.dtype)) / math.sqrt(hidden.shape[-1])
        scores = scores.masked_fill(attention_mask == 0, float("-inf"))
        weights = torch.softmax(scores.float(), dim=-1).to(hidden.dtype)
        return (weights.unsqueeze(-1) * hidden).sum(1)


class Projection(nn.Linear):
    """Linear map into the shared space (no bias, as CLIP), optionally after a BatchNorm.

    Why the option: from random init, a tower's pooled features share one large common component,
    so every embedding starts nearly parallel (cosine ~0.99) and, on a short CPU budget, in-batch
    contrast stays too weak to pull them apart; centring the features over the batch removes that
    component (as the BatchNorm projection heads of SimCLR and ConVIRT do). Off = CLIP's plain head.
    """

    def __init__(self, in_dim: int, out_dim: int, batch_norm: bool):
        super().__init__(in_dim, out_dim, bias=False)
        self.norm = nn.BatchNorm1d(in_dim) if batch_norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(self.norm(x))


class VisionCLIP(nn.Module):
    """CLIP with a ResNet image tower and a BERT text tower (Chinese-CLIP's recipe, random init)."""

    def __init__(self, model_cfg: ModelConfig, vocab_size: int, image_size: int = DEFAULT_IMAGE_SIZE):
        super().__init__()
        if model_cfg.text_hidden % model_cfg.text_heads:
            raise DataError(f"model.text_hidden={model_cfg.text_hidden} is not divisible by "
                            f"model.text_heads={model_cfg.text_heads}")
        self.model_cfg = model_cfg
        self.vocab_size = vocab_size
        self.image_size = image_size
        self.visual = build_image_tower(model_cfg, image_size)
        # CLIP projects without bias; modified_rn50's attention pool is its own projection.
        self.image_proj = (nn.Identity() if self.visual.feature_dim == model_cfg.embed_dim
                           and model_cfg.image_tower == "modified_rn50"
                           else Projection(self.visual.feature_dim, model_cfg.embed_dim, model_cfg.projection_norm))
        self.text = build_text_tower(model_cfg, vocab_size)
        self.text_pool = AttentionPool(model_cfg.text_hidden) if model_cfg.text_pooling == "attention" else None
        self.text_proj = Projection(model_cfg.text_hidden, model_cfg.embed_dim, model_cfg.projection_norm)
        self.logit_scale = nn.Parameter(torch.tensor(LOGIT_SCALE_INIT))
        # {language: source} of the captions it was trained on ("release": the release's diagnostic
        # sentence, "generated": reports made from the labels); set by the trainer, saved in config.json
        self.training_captions: dict[str, str] | None = None

    @property
    def context_length(self) -> int:
        """Tokens per text the model was built for (its tokenizer pads and cuts to this)."""
        return int(self.model_cfg.context_length)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] floats in [0, 1] -> [B, embed_dim], unit length."""
        return F.normalize(self.image_proj(self.visual(images)), dim=-1)

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Token ids [B, L] and mask [B, L] -> [B, embed_dim] from the pooled states, unit length."""
        hidden = self.text(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        pooled = (self.text_pool(hidden, attention_mask) if self.text_pool is not None
                  else pool_text(hidden, attention_mask, self.model_cfg.text_pooling))
        return F.normalize(self.text_proj(pooled), dim=-1)

    def scale(self) -> torch.Tensor:
        """exp(logit_scale), clamped at 100 as CLIP does."""
        return self.logit_scale.exp().clamp(max=LOGIT_SCALE_MAX)

    def forward(self, images: torch.Tensor, input_ids: torch.Tensor,
                attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.encode_image(images), self.encode_text(input_ids, attention_mask), self.scale()

    # ---- persistence --------------------------------------------------------------------------
    def config_dict(self) -> dict[str, Any]:
        config = {"kind": "VisionCLIP", "model": dataclasses.asdict(self.model_cfg),
                  "vocab_size": self.vocab_size, "image_size": self.image_size,
                  "visionclip_version": __version__}
        if self.training_captions is not None:
            config["training_captions"] = dict(self.training_captions)
        return config

    def save_pretrained(self, directory: str | os.PathLike, tokenizer: CaptionTokenizer) -> None:
        """Write model.safetensors, the tokenizer files and config.json (recording every file's sha256)
        as one unit: a temporary sibling directory renamed onto `directory`."""
        if tokenizer.vocab_size != self.vocab_size:
            raise CheckpointError(f"save_pretrained({directory}): tokenizer has {tokenizer.vocab_size} "
                                  f"tokens, the text tower expects {self.vocab_size}")
        def write(tmp: Path) -> None:
            tokenizer.save(tmp)
            files = {name: sha256_file(tmp / name) for name in TOKENIZER_FILES}
            _save_weights(self, tmp, {**self.config_dict(), "tokenizer_sha256": files})
        _save_unit(Path(directory), write)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike,
                        map_location: str | torch.device = "cpu") -> tuple["VisionCLIP", CaptionTokenizer]:
        """Rebuild the model from config.json and load its safetensors weights (returned in eval
        mode, on `map_location`); also the tokenizer."""
        directory = Path(directory)
        config = _read_config(directory, "VisionCLIP")
        model_cfg = _model_cfg_from(config, directory)
        _check_tokenizer_files(config, directory)
        try:
            tokenizer = CaptionTokenizer.load(directory)
        except DataError as e:
            raise CheckpointError(f"{directory}: tokenizer files unreadable: {e}") from None
        if tokenizer.vocab_size != config["vocab_size"]:
            raise CheckpointError(f"{directory}: tokenizer has {tokenizer.vocab_size} tokens, "
                                  f"{directory / CONFIG_FILE} says {config['vocab_size']}")
        model = cls(model_cfg, int(config["vocab_size"]), int(config.get("image_size", DEFAULT_IMAGE_SIZE)))
        model.training_captions = _read_training_captions(config, directory)
        _load_weights(model, directory, config, map_location)
        return model.eval(), tokenizer  # eval mode, as transformers' from_pretrained: ready to embed


def _read_training_captions(config: dict[str, Any], directory: Path) -> dict[str, str] | None:
    """config.json's training_captions ({"zh"|"en": source}); None in models saved before it existed."""
    record = config.get("training_captions")
    if record is None:
        return None
    if not (isinstance(record, dict) and record and set(record) <= {"zh", "en"}
            and all(isinstance(v, str) and v for v in record.values())):
        raise CheckpointError(f"{directory / CONFIG_FILE}: field 'training_captions' must map 'zh' and/or 'en' "
                              f"to where those captions came from, got {record!r}")
    return dict(record)


def build_model(model_cfg: ModelConfig, vocab_size: int, image_size: int = DEFAULT_IMAGE_SIZE) -> VisionCLIP:
    """The one factory of CLIP models. `image_size` matters only to modified_rn50 (its attention
    pool has a position embedding per 32 px patch); torchvision towers accept any size."""
    return VisionCLIP(model_cfg, vocab_size, image_size)


class ImageClassifier(nn.Module):
    """The supervised ceiling: the CLIP image tower with a DR-grade head and 14 flag heads."""

    def __init__(self, model_cfg: ModelConfig, image_size: int = DEFAULT_IMAGE_SIZE):
        super().__init__()
        self.model_cfg = model_cfg
        self.image_size = image_size
        self.visual = build_image_tower(model_cfg, image_size)
        self.dr_grade = nn.Linear(self.visual.feature_dim, 5)
        self.flags = nn.Linear(self.visual.feature_dim, len(FLAG_COLUMNS))
        # Training-set label frequencies {"dr_grade": 5 shares, "flags": 14 shares}: evaluation with a
        # balanced metric subtracts them from the logits (see evaluate.balance_heads).
        self.label_priors: dict[str, list[float]] | None = None

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """[B, 3, H, W] in [0, 1] -> {"dr_grade": [B, 5] logits, "flags": [B, 14] logits (FLAG_COLUMNS)}."""
        features = self.visual(images)
        return {"dr_grade": self.dr_grade(features), "flags": self.flags(features)}

    def config_dict(self) -> dict[str, Any]:
        config = {"kind": "ImageClassifier", "model": dataclasses.asdict(self.model_cfg),
                  "image_size": self.image_size, "flag_columns": list(FLAG_COLUMNS),
                  "visionclip_version": __version__}
        if self.label_priors is not None:
            config["label_priors"] = self.label_priors
        return config

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        _save_unit(Path(directory), lambda tmp: _save_weights(self, tmp, self.config_dict()))

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike,
                        map_location: str | torch.device = "cpu") -> "ImageClassifier":
        directory = Path(directory)
        config = _read_config(directory, "ImageClassifier")
        if config.get("flag_columns") != list(FLAG_COLUMNS):
            raise CheckpointError(f"{directory / CONFIG_FILE}: flag_columns {config.get('flag_columns')} "
                                  f"differ from this library's {list(FLAG_COLUMNS)}")
        model = cls(_model_cfg_from(config, directory), int(config.get("image_size", DEFAULT_IMAGE_SIZE)))
        model.label_priors = _read_label_priors(config, directory)
        _load_weights(model, directory, config, map_location)
        return model.eval()


def _read_label_priors(config: dict[str, Any], directory: Path) -> dict[str, list[float]] | None:
    priors = config.get("label_priors")
    if priors is None:
        return None
    expected = {"dr_grade": len(DR_GRADES), "flags": len(FLAG_COLUMNS)}
    ok = isinstance(priors, dict) and set(priors) == set(expected) and all(
        isinstance(priors[k], list) and len(priors[k]) == n and all(
            isinstance(v, (int, float)) and 0 < v < 1 for v in priors[k]) for k, n in expected.items())
    if not ok:
        raise CheckpointError(f"{directory / CONFIG_FILE}: field 'label_priors' must hold 'dr_grade' ({len(DR_GRADES)} shares) "
                              f"and 'flags' ({len(FLAG_COLUMNS)} shares), each strictly between 0 and 1")
    return {k: [float(v) for v in priors[k]] for k in expected}


def build_image_classifier(model_cfg: ModelConfig, image_size: int = DEFAULT_IMAGE_SIZE) -> ImageClassifier:
    return ImageClassifier(model_cfg, image_size)


# ---- safetensors I/O shared by both models ---------------------------------------------------
def _save_weights(model: nn.Module, directory: Path, config: dict[str, Any]) -> None:
    """Weights first, config.json last, each atomically; the config records the weights' sha256,
    so a directory left half-updated by a killed save is detected on load."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    # .contiguous(): channels_last conv weights are not contiguous in the default format, and
    # safetensors stores plain row-major tensors.
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    with atomic_path(directory / WEIGHTS_FILE) as tmp:
        try:
            save_file(state, str(tmp), metadata={"format": "pt"})
        except SafetensorError as e:  # its I/O errors (a full disk) arrive as text: keep their errno
            code = re.search(r"os error (\d+)", str(e))
            if code is None:
                raise
            raise OSError(int(code.group(1)), os.strerror(int(code.group(1))), str(directory / WEIGHTS_FILE)) from None
    write_json(directory / CONFIG_FILE, {**config, "weights_sha256": sha256_file(directory / WEIGHTS_FILE)})


def _save_unit(directory: Path, write) -> None:
    """`write(tmp)` fills a temporary sibling directory, which then replaces `directory`: a killed or
    failed save (a full disk) leaves the previous model whole, never new files beside old ones. An
    existing model is renamed aside, the new one renamed in, the old one deleted (a kill between the
    two renames leaves the old model under .<name>.old.*.tmp)."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".tmp", dir=directory.parent))
    old = None
    try:
        with errors_named_as(tmp, directory):
            write(tmp)
        if directory.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{directory.name}.old.", suffix=".tmp", dir=directory.parent))
            os.replace(directory, old)  # onto the empty directory mkdtemp made
        os.replace(tmp, directory)
    except BaseException:
        if old is not None and not directory.exists():
            os.replace(old, directory)
            old = None
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def _check_tokenizer_files(config: dict[str, Any], directory: Path) -> None:
    """The tokenizer files must be the ones saved with these weights (config.json records their
    sha256; models saved before it did are not checked)."""
    recorded = config.get("tokenizer_sha256")
    if recorded is None:
        return
    if not isinstance(recorded, dict):
        raise CheckpointError(f"{directory / CONFIG_FILE}: field 'tokenizer_sha256' must map {list(TOKENIZER_FILES)} "
                              f"to their sha256, got {recorded!r}")
    for name in TOKENIZER_FILES:
        path = directory / name
        if path.is_file() and recorded.get(name) != sha256_file(path):
            raise CheckpointError(f"{path}: not the tokenizer saved with {directory / WEIGHTS_FILE} (its sha256 "
                                  f"differs from the one {directory / CONFIG_FILE} records): the directory mixes "
                                  "two saves; save the model again or restore the matching files")


def _read_config(directory: Path, kind: str) -> dict[str, Any]:
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: not found; expected a directory written by {kind}.save_pretrained")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(config, dict) or config.get("kind") != kind:
        got = config.get("kind") if isinstance(config, dict) else type(config).__name__
        raise CheckpointError(f"{path}: holds a {got!r}, expected a {kind!r} saved by {kind}.save_pretrained")
    return config


def _model_cfg_from(config: dict[str, Any], directory: Path) -> ModelConfig:
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    raw = config.get("model")
    if isinstance(raw, dict) and "text_pooling" not in raw:
        raw = {**raw, "text_pooling": "cls"}  # saved before the option existed: [CLS] was the only pooling
    if isinstance(raw, dict) and "exposure_norm" not in raw:
        raw = {**raw, "exposure_norm": False}  # saved before the option existed: images went in as they were
    if not isinstance(raw, dict) or set(raw) != fields:
        keys = sorted(raw) if isinstance(raw, dict) else raw
        raise CheckpointError(f"{directory / CONFIG_FILE}: field 'model' has keys {keys}; expected "
                              f"the ModelConfig fields {sorted(fields)}")
    return ModelConfig(**raw)


def _load_weights(model: nn.Module, directory: Path, config: dict[str, Any],
                  map_location: str | torch.device) -> None:
    """Load safetensors weights strictly: every tensor present, of the same shape, nothing extra."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = directory / WEIGHTS_FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file not found")
    try:
        state = load_file(str(path), device=str(map_location))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise CheckpointError(f"{path}: tensors do not match the configuration in {directory / CONFIG_FILE}: "
                              f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, unexpected "
                              f"{unexpected[:5]}{'...' if len(unexpected) > 5 else ''}")
    for name, tensor in state.items():
        if tensor.shape != own[name].shape:
            raise CheckpointError(f"{path}: tensor {name!r} has shape {tuple(tensor.shape)}, the model "
                                  f"built from {directory / CONFIG_FILE} expects {tuple(own[name].shape)}")
    # Last, so that a file of another configuration is reported by tensor name above.
    expected_sha = config.get("weights_sha256")
    if expected_sha is not None and sha256_file(path) != expected_sha:
        raise CheckpointError(f"{path}: contents differ from the sha256 recorded in {directory / CONFIG_FILE} "
                              "(modified, or left by an interrupted save)")
    model.load_state_dict(state, strict=True)
