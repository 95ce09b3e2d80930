"""Profiles: every parameter of a run, defined once in `profiles/<name>.yaml`.

A profile may `extends:` another and override some of its values. Explicit
overrides (papermill `-p`, CLI `--set section.key=value`) win over the profile.
Everything is validated (known key, type, range) before any work starts,
because papermill itself checks nothing.
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from .errors import ConfigError
from .io import utf8_error_at

PROFILE_DIR = Path(__file__).resolve().parent.parent / "profiles"


def _f(help: str, *, lo: float | None = None, hi: float | None = None,
       choices: tuple | None = None, pattern: tuple[str, str] | None = None) -> Any:
    """A profile field: no default (the profile supplies it), a help text and bounds; `pattern` is
    (a regular expression the whole value matches, what it expects in words)."""
    return field(metadata={"help": help, "lo": lo, "hi": hi, "choices": choices, "pattern": pattern})


@dataclass(frozen=True)
class SynthConfig:
    corpus_size: int = _f("images in the rendered SynFundus-style corpus", lo=10)
    render_size: int = _f("side of the rendered square JPEGs, px", lo=32, hi=2048)
    class_balance: str = _f("label prior of the corpus", choices=("balanced", "natural"))
    train_cameras: list = _f("camera profiles that render the training corpus")
    heldout_cameras: list = _f("camera profiles reserved for the benchmark stand-ins")
    messidor2_size: int = _f("images in the MESSIDOR-2 stand-in (FLAIR: 1744)", lo=5)
    fives_size: int = _f("images in the FIVES stand-in, a multiple of 4 (FLAIR: 800)", lo=4)
    refuge_size: int = _f("images in the REFUGE stand-in, 10% glaucoma (FLAIR: 400)", lo=10)
    benchmark_test_seed: int = _f("seed of the benchmark test renderings (never tuned on)")
    benchmark_dev_seed: int = _f("seed of the benchmark dev renderings (for choices)")
    corpus_format: str = _f("the stand-in corpus's annotation file: the paper's 17 columns, or the release's "
                            "26-column metadata (tab-separated, with a diagnostic sentence per image)",
                            choices=("paper", "release"))
    workers: int = _f("rendering processes", lo=1, hi=256)


@dataclass(frozen=True)
class DataConfig:
    corpus_root: str = _f("a real SynFundus-1M release; empty = the stand-in rendered into the run dir")
    messidor2_root: str = _f("the real MESSIDOR-2 (Kaggle layout); empty = the rendered stand-in")
    fives_root: str = _f("the real FIVES release; empty = the rendered stand-in")
    refuge_root: str = _f("the real REFUGE training set; empty = the rendered stand-in")
    messidor_root: str = _f("the original MESSIDOR (Annotation_BaseXX.xls); empty = not evaluated")
    captions: str = _f("captions: the release's Chinese diagnostic sentence (release), reports generated "
                       "from the labels in zh and en (generated), or the sentence for zh and the generated "
                       "report for en (both)", choices=("release", "generated", "both"))
    min_quality: float = _f("keep the corpus rows whose retinal_region_quality_score reaches this "
                            "(the release's metadata); 0 keeps every row", lo=0.0)
    verify_md5: bool = _f("check every image against the release's file_md5 when the corpus is read (slow: "
                          "reads every file; for once after a download)")


@dataclass(frozen=True)
class ModelConfig:
    image_tower: str = _f("image encoder", choices=("resnet18", "resnet34", "resnet50", "modified_rn50"))
    embed_dim: int = _f("dimension of the shared embedding space", lo=8)
    text_layers: int = _f("BERT layers", lo=1, hi=48)
    text_hidden: int = _f("BERT hidden size", lo=16)
    text_heads: int = _f("BERT attention heads", lo=1)
    text_intermediate: int = _f("BERT feed-forward size", lo=16)
    max_positions: int = _f("BERT position embeddings", lo=8)
    vocab: str = _f("'corpus' trains a WordPiece vocab on the captions; else a path to a BERT vocab.txt")
    vocab_size: int = _f("size of the trained vocab when vocab='corpus'", lo=100)
    context_length: int = _f("tokens per caption, [CLS] and [SEP] included", lo=8, hi=512)
    projection_norm: bool = _f("BatchNorm over pooled features before each projection (else CLIP's plain linear map)")
    text_pooling: str = _f("caption feature: the [CLS] state (Chinese-CLIP), the mean over the caption's tokens, "
                           "or a learned query's attention over them (starting as the mean)",
                           choices=("cls", "mean", "attention"))
    exposure_norm: bool = _f("scale each image so its fundus disk has one mean level before the image tower "
                             "(a photograph's exposure then carries no signal)")


LOSSES = ("infonce", "label_aware", "label_aware_dedup")  # loss.build_loss makes each


@dataclass(frozen=True)
class TrainConfig:
    image_size: int = _f("side of the training images, px", lo=32, hi=1024)
    batch_size: int = _f("global batch size (split over ranks under torchrun)", lo=2)
    epochs: float = _f("passes over the train split", lo=0.01)
    max_steps: int = _f("stop after this many optimizer steps (the schedule stays the epochs' one); "
                        "0 = no limit", lo=0)
    lr: float = _f("peak AdamW learning rate", lo=0.0, hi=1.0)
    weight_decay: float = _f("AdamW weight decay (not on norms, biases, logit scale)", lo=0.0, hi=1.0)
    warmup_fraction: float = _f("share of the steps spent in linear warm-up", lo=0.0, hi=0.9)
    grad_clip: float = _f("max gradient norm; 0 disables clipping", lo=0.0)
    precision: str = _f("autocast dtype; auto = bf16 where native, else fp32",
                        choices=("auto", "fp32", "bf16", "fp16"))
    loss: str = _f("contrastive target; label_aware_dedup also counts each label set once in the "
                   "image->text softmax", choices=LOSSES)
    caption_language: str = _f("captions used for training", choices=("zh", "en", "both"))
    hard_negatives: bool = _f("one counterfactual report per image (one finding flipped) as an extra negative")
    augment: bool = _f("fundus-suited image augmentation")
    augment_on: str = _f("where it runs: items (PIL, each image in the loader) or batches (the same draws on "
                         "the batch, on the training device: data.batch_augment)", choices=("items", "batches"))
    checkpoint_every: int = _f("steps between checkpoints", lo=1)
    keep_checkpoints: int = _f("checkpoints kept on disk (resume falls back to older ones)", lo=1)
    val_every: int = _f("steps between validation passes", lo=1)
    val_size: int = _f("val-split images used for validation retrieval", lo=2)
    num_workers: int = _f("data-loading worker processes (with preload: only when augmenting)", lo=0, hi=64)
    preload: bool = _f("read the corpus from prepared shards (visionclip prepare: decoded and cropped once, "
                       "memory-mapped; made on first use) instead of decoding the images every epoch")
    max_nonfinite: int = _f("non-finite steps in a row before training stops", lo=1)
    sync_batchnorm: bool = _f("BatchNorm statistics over every rank's images (torchrun on GPUs; for small "
                              "per-GPU batches)")
    compile: bool = _f("torch.compile the model (the first steps compile it)")
    dist_timeout_min: float = _f("minutes a torchrun collective may wait, the first included (rank 0 builds "
                                 "the corpus table while the others wait)", lo=1.0)
    supervised_ceiling: bool = _f("also train the label-supervised reference model")


@dataclass(frozen=True)
class EvalConfig:
    language: str = _f("prompt language of the headline zero-shot rows", choices=("zh", "en"))
    prompt_mode: str = _f("headline prompts: plain template or expert knowledge", choices=("plain", "ek"))
    flair_exact: bool = _f("reproduce FLAIR's unrenormalised prototypes and bottom-right padding")
    bootstrap: int = _f("bootstrap resamples for 95% intervals", lo=100)
    fewshot_k: list = _f("shots per class of the linear probe")
    fewshot_draws: int = _f("seeded draws per k", lo=1)
    batch_size: int = _f("images per embedding batch", lo=1)
    device: str = _f("where evaluation embeds and ranks: auto (the GPU when there is one, as in training)",
                     pattern=(r"auto|cpu|cuda(:\d+)?", "auto, cpu, cuda or cuda:N"))
    num_workers: int = _f("image-decoding worker processes of evaluation's embedding", lo=0, hi=64)


@dataclass(frozen=True)
class Profile:
    name: str = _f("profile name")
    seed: int = _f("the one seed every random draw flows from")
    synth: SynthConfig = _f("rendering")
    data: DataConfig = _f("where real datasets live, when you have them")
    model: ModelConfig = _f("model shape")
    train: TrainConfig = _f("pre-training recipe")
    eval: EvalConfig = _f("evaluation")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def get(self, dotted: str) -> Any:
        obj: Any = self
        for part in dotted.split("."):
            obj = getattr(obj, part)
        return obj


SECTIONS = {f.name: f.type for f in dataclasses.fields(Profile)}


def _deep_merge(base: dict, top: Mapping) -> dict:
    out = dict(base)
    for k, v in top.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def _read_yaml(path: Path, seen: tuple = ()) -> dict:
    if path in seen:
        raise ConfigError(f"{path}: 'extends' forms a cycle through {[str(p) for p in seen]}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        known = sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))
        raise ConfigError(f"profile file {path} not found; known profiles: {known}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text at {utf8_error_at(path)}; save the profile as UTF-8") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections, got {type(raw).__name__}")
    parent = raw.pop("extends", None)
    if parent:
        raw = _deep_merge(_read_yaml(resolve_profile_path(parent), seen + (path,)), raw)
    return raw


def resolve_profile_path(name_or_path: str | Path) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        return p
    return PROFILE_DIR / f"{name_or_path}.yaml"


def _is_list_type(tp: Any) -> bool:
    return tp is list or typing.get_origin(tp) is list


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check (and losslessly coerce) one value against its declared type."""
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if not math.isfinite(value):  # NaN passes every range check (all comparisons are false)
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if _is_list_type(tp):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return list(value)
    raise AssertionError(f"unsupported field type {tp}")


def _build(cls: type, raw: Any, where: str, field_path: str = "") -> Any:
    """Validate `raw` into `cls`; messages read '<profile file>: section.key: what was expected'."""
    label = f"{where}: {field_path}" if field_path else where
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{label}: expected a mapping, got {raw!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(f"{label}: unknown key(s) {unknown}; known keys: {sorted(fields)}")
    missing = sorted(set(fields) - set(raw))
    if missing:
        raise ConfigError(f"{label}: missing key(s) {missing}")
    hints = typing.get_type_hints(cls)
    values = {}
    for name, f in fields.items():
        key_path = f"{field_path}.{name}" if field_path else name
        key = f"{where}: {key_path}"
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            values[name] = _build(tp, raw[name], where, key_path)
            continue
        v = _coerce(raw[name], tp, key)
        meta = f.metadata
        if meta.get("choices") is not None and v not in meta["choices"]:
            raise ConfigError(f"{key}: expected one of {list(meta['choices'])}, got {v!r}")
        if meta.get("pattern") is not None and not re.fullmatch(meta["pattern"][0], v):
            raise ConfigError(f"{key}: expected {meta['pattern'][1]}, got {v!r}")
        if meta.get("lo") is not None and v < meta["lo"]:
            raise ConfigError(f"{key}: expected >= {meta['lo']}, got {v!r}")
        if meta.get("hi") is not None and v > meta["hi"]:
            raise ConfigError(f"{key}: expected <= {meta['hi']}, got {v!r}")
        values[name] = v
    return cls(**values)


def _apply_overrides(raw: dict, overrides: Mapping[str, Any], where: str) -> dict:
    raw = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in raw.items()}
    for dotted, value in overrides.items():
        if value is None:  # papermill parameters left at None mean "take the profile's value"
            continue
        parts = dotted.split(".")
        node = raw
        for part in parts[:-1]:
            if part not in node or not isinstance(node[part], dict):
                raise ConfigError(f"override {dotted!r}: unknown section {part!r}; known: {sorted(SECTIONS)}")
            node = node[part]
        if parts[-1] not in node:
            raise ConfigError(f"override {dotted!r}: unknown key {parts[-1]!r} in {where}; "
                              f"known: {sorted(node)}")
        node[parts[-1]] = value
    return raw


def load_profile(name_or_path: str | Path = "cpu", overrides: Mapping[str, Any] | None = None) -> Profile:
    """Read, merge and validate a profile. `overrides` maps 'section.key' to a value."""
    if not isinstance(name_or_path, (str, os.PathLike)):  # papermill passes whatever -p gave
        raise ConfigError(f"profile: expected a profile name in {PROFILE_DIR} or a YAML path, got "
                          f"{name_or_path!r} ({type(name_or_path).__name__})")
    if overrides is not None and not isinstance(overrides, Mapping):
        raise ConfigError(f"overrides: expected a mapping {{'section.key': value}}, got {overrides!r} "
                          f"({type(overrides).__name__})")
    path = resolve_profile_path(name_or_path)
    raw = _read_yaml(path)
    raw.setdefault("name", path.stem)
    raw = _apply_overrides(raw, overrides or {}, str(path))
    profile = _build(Profile, raw, str(path))
    _check_captions(profile, str(path))
    return profile


def _check_captions(profile: Profile, where: str) -> None:
    """Caption settings that cannot work together, refused before any work."""
    d = profile.data
    if d.captions == "release" and profile.train.caption_language != "zh":
        raise ConfigError(f"{where}: data.captions=release gives Chinese captions only (the release's "
                          f"diagnosticAdvice), but train.caption_language is {profile.train.caption_language!r}; "
                          "set data.captions=both (the generated report in English beside it) or caption_language zh")
    if d.captions != "generated" and not d.corpus_root and profile.synth.corpus_format == "paper":
        raise ConfigError(f"{where}: data.captions={d.captions} needs the release's diagnosticAdvice, but the "
                          "stand-in is written in the paper's 17 columns (synth.corpus_format: paper); set "
                          "synth.corpus_format=release or data.captions=generated")


def parse_override(text: str) -> tuple[str, Any]:
    """'train.lr=3e-4' -> ('train.lr', 0.0003), values parsed as YAML scalars."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected section.key=value")
    key, value = text.split("=", 1)
    try:  # YAML 1.1 reads "3e-4" as a string; numbers first
        return key.strip(), int(value)
    except ValueError:
        pass
    try:
        return key.strip(), float(value)
    except ValueError:
        return key.strip(), yaml.safe_load(value)


def describe() -> list[tuple[str, str, str]]:
    """(dotted key, type, help) for every parameter, for docs and --help."""
    rows = []
    hints = typing.get_type_hints(Profile)
    for f in dataclasses.fields(Profile):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            sub = typing.get_type_hints(tp)
            for g in dataclasses.fields(tp):
                rows.append((f"{f.name}.{g.name}", getattr(sub[g.name], "__name__", str(sub[g.name])), g.metadata["help"]))
        else:
            rows.append((f.name, getattr(tp, "__name__", str(tp)), f.metadata["help"]))
    return rows
