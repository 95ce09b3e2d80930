"""VisionCLIP and ImageClassifier: shapes, normalisation, channels_last, save/load, bad checkpoints."""
from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
import torch

from visionclip.config import ModelConfig
from visionclip.errors import CheckpointError
from visionclip.model import (LOGIT_SCALE_INIT, ImageClassifier, VisionCLIP, build_image_classifier,
                              build_model)
from visionclip.schema import FLAG_COLUMNS
from visionclip.text import CaptionTokenizer

TINY = ModelConfig(image_tower="resnet18", projection_norm=False, text_pooling="cls", exposure_norm=False, embed_dim=16, text_layers=1, text_hidden=32, text_heads=2,
                   text_intermediate=64, max_positions=32, vocab="corpus", vocab_size=100, context_length=16)
CAPTIONS = ["正常眼底。", "A normal fundus.", "轻度糖尿病视网膜病变。", "Mild diabetic retinopathy."]


@pytest.fixture(scope="module")
def tokenizer():
    return CaptionTokenizer.train(CAPTIONS, TINY.vocab_size)


@pytest.fixture(scope="module")
def batch(tokenizer):
    torch.manual_seed(0)
    return torch.rand(4, 3, 32, 32), tokenizer(CAPTIONS, TINY.context_length)


def _model(tokenizer, cfg=TINY):
    torch.manual_seed(0)
    return build_model(cfg, tokenizer.vocab_size).eval()


def test_forward_shapes_norms_and_scale(tokenizer, batch):
    images, text = batch
    img, txt, scale = _model(tokenizer)(images, **text)
    assert img.shape == txt.shape == (4, TINY.embed_dim)
    torch.testing.assert_close(img.norm(dim=1), torch.ones(4))
    torch.testing.assert_close(txt.norm(dim=1), torch.ones(4))
    assert scale.item() == pytest.approx(1 / 0.07, rel=1e-6)


def test_logit_scale_is_clamped_at_100(tokenizer):
    model = _model(tokenizer)
    with torch.no_grad():
        model.logit_scale.fill_(10.0)
    assert model.scale().item() == 100.0
    assert LOGIT_SCALE_INIT == pytest.approx(2.6592600, rel=1e-6)


def test_normalisation_is_inside_the_model(tokenizer):
    """Callers pass [0, 1] images; the ImageNet mean/std buffers are not saved as weights."""
    model = _model(tokenizer)
    assert "visual.mean" not in model.state_dict()
    gray = torch.full((1, 3, 32, 32), 0.5)
    normalised = model.visual.trunk  # what the trunk sees must be (x - mean) / std
    seen = {}
    handle = normalised.conv1.register_forward_pre_hook(lambda m, args: seen.update(x=args[0]))
    model.encode_image(gray)
    handle.remove()
    expected = (0.5 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    torch.testing.assert_close(seen["x"][0, :, 0, 0], expected)


def test_channels_last_gives_the_same_embeddings(tokenizer, batch):
    images, _ = batch
    model = _model(tokenizer)
    reference = model.encode_image(images)
    model = model.to(memory_format=torch.channels_last)
    torch.testing.assert_close(model.encode_image(images.to(memory_format=torch.channels_last)), reference,
                               atol=1e-5, rtol=1e-4)


def test_save_load_round_trip_is_exact(tokenizer, batch, tmp_path):
    images, text = batch
    model = _model(tokenizer).to(memory_format=torch.channels_last)  # saved as plain row-major tensors
    model.save_pretrained(tmp_path, tokenizer)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors",
                                                           "tokenizer.json", "vocab.txt"]
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model"] == dataclasses.asdict(TINY) and config["vocab_size"] == tokenizer.vocab_size
    loaded, loaded_tok = VisionCLIP.from_pretrained(tmp_path)
    assert not loaded.training
    assert loaded_tok.tokens() == tokenizer.tokens()
    model = model.to(memory_format=torch.contiguous_format)
    reloaded_text = loaded_tok(CAPTIONS, TINY.context_length)
    for a, b in zip(model(images, **text), loaded(images, **reloaded_text)):
        assert torch.equal(a, b)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name]), name


def test_loading_another_configuration_names_the_tensor(tokenizer, tmp_path):
    _model(tokenizer).save_pretrained(tmp_path / "a", tokenizer)
    _model(tokenizer, dataclasses.replace(TINY, embed_dim=8)).save_pretrained(tmp_path / "b", tokenizer)
    shutil.copy(tmp_path / "b" / "model.safetensors", tmp_path / "a" / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"model\.safetensors.*'image_proj\.weight'.*\(8, 512\)"):
        VisionCLIP.from_pretrained(tmp_path / "a")


def test_truncated_or_missing_weights_raise_checkpoint_error(tokenizer, tmp_path):
    _model(tokenizer).save_pretrained(tmp_path, tokenizer)
    weights = tmp_path / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="model.safetensors"):
        VisionCLIP.from_pretrained(tmp_path)
    weights.unlink()
    with pytest.raises(CheckpointError, match="model.safetensors: weights file not found"):
        VisionCLIP.from_pretrained(tmp_path)


def test_modified_weights_detected_by_checksum(tokenizer, tmp_path):
    model = _model(tokenizer)
    model.save_pretrained(tmp_path, tokenizer)
    config = (tmp_path / "config.json").read_bytes()
    with torch.no_grad():
        model.logit_scale.add_(1.0)
    model.save_pretrained(tmp_path, tokenizer)
    (tmp_path / "config.json").write_bytes(config)  # as if a save were killed before its config.json
    with pytest.raises(CheckpointError, match="sha256"):
        VisionCLIP.from_pretrained(tmp_path)


def test_not_a_model_directory(tmp_path):
    with pytest.raises(CheckpointError, match="config.json: not found"):
        VisionCLIP.from_pretrained(tmp_path)


def test_image_classifier_heads_and_round_trip(tmp_path, batch):
    images, _ = batch
    torch.manual_seed(0)
    classifier = build_image_classifier(TINY).eval()
    out = classifier(images)
    assert out["dr_grade"].shape == (4, 5) and out["flags"].shape == (4, len(FLAG_COLUMNS))
    classifier.save_pretrained(tmp_path)
    loaded = ImageClassifier.from_pretrained(tmp_path)
    assert not loaded.training
    for key in out:
        assert torch.equal(loaded(images)[key], out[key])
    with pytest.raises(CheckpointError, match="'ImageClassifier'"):
        VisionCLIP.from_pretrained(tmp_path)


def test_modified_rn50_tower(tokenizer):
    """Chinese-CLIP's RN50: CLIP's ModifiedResNet whose attention pool projects straight to embed_dim."""
    pytest.importorskip("open_clip")
    cfg = dataclasses.replace(TINY, image_tower="modified_rn50")
    torch.manual_seed(0)
    model = build_model(cfg, tokenizer.vocab_size, image_size=64).eval()
    assert isinstance(model.image_proj, torch.nn.Identity)
    assert model.visual.trunk.attnpool.positional_embedding.shape == (2 * 2 + 1, 2048)
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        reference = model.encode_image(images)
        model = model.to(memory_format=torch.channels_last)
        channels_last = model.encode_image(images.to(memory_format=torch.channels_last))
    assert reference.shape == (2, TINY.embed_dim)
    torch.testing.assert_close(channels_last, reference, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="built for 64x64 images"):
        model.encode_image(torch.rand(1, 3, 96, 96))
    with pytest.raises(Exception, match="multiple of 32"):
        build_model(cfg, tokenizer.vocab_size, image_size=48)


def test_batchnorm_projection_centres_features_and_round_trips(tokenizer, batch, tmp_path):
    cfg = dataclasses.replace(TINY, projection_norm=True)
    model = _model(tokenizer, cfg).train()
    images, text = batch
    pooled = model.visual(images)
    centred = model.image_proj.norm(pooled)
    # the batch mean of every pooled feature is removed before the linear map
    assert torch.allclose(centred.mean(0), torch.zeros(centred.shape[1]), atol=1e-5)
    model(images, text["input_ids"], text["attention_mask"])  # updates the running statistics
    model.eval()
    model.save_pretrained(tmp_path / "m", tokenizer)
    loaded, _ = VisionCLIP.from_pretrained(tmp_path / "m")
    assert torch.equal(loaded.image_proj.norm.running_mean, model.image_proj.norm.running_mean)
    with torch.no_grad():
        assert torch.equal(loaded.encode_image(images), model.encode_image(images))


def test_mean_pooling_ignores_padding_and_differs_from_cls(tokenizer, batch):
    """Mean pooling averages the caption's own tokens: more [PAD] after it changes nothing."""
    cfg = dataclasses.replace(TINY, text_pooling="mean")
    model = _model(tokenizer, cfg)
    short, long = tokenizer(CAPTIONS, TINY.context_length), tokenizer(CAPTIONS, 2 * TINY.context_length)
    with torch.no_grad():
        a = model.encode_text(short["input_ids"], short["attention_mask"])
        b = model.encode_text(long["input_ids"], long["attention_mask"])
        cls = _model(tokenizer).encode_text(short["input_ids"], short["attention_mask"])
    assert torch.allclose(a, b, atol=1e-5)
    assert not torch.allclose(a, cls, atol=1e-3)  # same weights (seed 0), another feature


def test_attention_pooling_starts_as_the_mean_and_can_let_one_token_decide(tokenizer, batch, tmp_path):
    from visionclip.model import AttentionPool

    mean = _model(tokenizer, dataclasses.replace(TINY, text_pooling="mean"))
    attn = _model(tokenizer, dataclasses.replace(TINY, text_pooling="attention"))   # same seed, same weights
    text = tokenizer(CAPTIONS, TINY.context_length)
    with torch.no_grad():   # a zero query: uniform weights over the caption's tokens, [PAD] left out
        assert torch.allclose(attn.encode_text(text["input_ids"], text["attention_mask"]),
                              mean.encode_text(text["input_ids"], text["attention_mask"]), atol=1e-5)
    pool = AttentionPool(4)
    hidden = torch.zeros(1, 3, 4)
    hidden[0, 1, 0] = 1.0                      # one token differs from the others
    with torch.no_grad():
        pool.query.copy_(torch.tensor([40.0, 0, 0, 0]))
    out = pool(hidden, torch.tensor([[1, 1, 1]]))
    assert out[0, 0] > 0.95                    # that token alone carries the feature
    assert torch.isfinite(pool(hidden, torch.tensor([[1, 0, 0]]))).all()
    attn.save_pretrained(tmp_path / "m", tokenizer)
    loaded, _ = VisionCLIP.from_pretrained(tmp_path / "m")
    assert torch.equal(loaded.text_pool.query, attn.text_pool.query)


def test_models_saved_before_the_pooling_option_load_as_cls(tokenizer, batch, tmp_path):
    model = _model(tokenizer)
    model.save_pretrained(tmp_path / "m", tokenizer)
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    del config["model"]["text_pooling"]
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    loaded, _ = VisionCLIP.from_pretrained(tmp_path / "m")
    assert loaded.model_cfg.text_pooling == "cls"
    images, text = batch
    with torch.no_grad():
        assert torch.equal(loaded.encode_text(text["input_ids"], text["attention_mask"]),
                           model.encode_text(text["input_ids"], text["attention_mask"]))


def _disk_images(n: int = 2, side: int = 32) -> torch.Tensor:
    """Fundus-like inputs: a bright textured disk on an exactly black surround, as preprocessing leaves it."""
    torch.manual_seed(1)
    yy, xx = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    disk = (((xx - side / 2 + 0.5) ** 2 + (yy - side / 2 + 0.5) ** 2) < (side / 2) ** 2).float()
    return (0.2 + 0.6 * torch.rand(n, 3, side, side)) * disk


def test_exposure_norm_undoes_a_gain_and_keeps_the_surround_black():
    from visionclip.model import EXPOSURE_LEVEL, normalise_exposure

    images = _disk_images()
    out, darker = normalise_exposure(images), normalise_exposure(images * 0.35)
    assert torch.allclose(out, darker, atol=1e-5)
    disk = images.amax(1) > 0
    assert torch.all(out.permute(1, 0, 2, 3)[:, ~disk] == 0)
    levels = [float(out[i].mean(0)[disk[i]].mean()) for i in range(len(images))]
    assert levels == pytest.approx([EXPOSURE_LEVEL] * len(images), rel=1e-5)


def test_exposure_norm_model_embeds_a_darker_photograph_alike_and_the_option_loads(tokenizer, tmp_path):
    images = _disk_images()
    plain = _model(tokenizer)
    normed = _model(tokenizer, dataclasses.replace(TINY, exposure_norm=True))
    with torch.no_grad():
        assert torch.allclose(normed.encode_image(images), normed.encode_image(images * 0.35), atol=1e-4)
        assert not torch.allclose(plain.encode_image(images), plain.encode_image(images * 0.35), atol=1e-2)
    normed.save_pretrained(tmp_path / "m", tokenizer)
    assert VisionCLIP.from_pretrained(tmp_path / "m")[0].model_cfg.exposure_norm is True
    plain.save_pretrained(tmp_path / "old", tokenizer)
    config = json.loads((tmp_path / "old" / "config.json").read_text())
    del config["model"]["exposure_norm"]   # saved before the option existed
    (tmp_path / "old" / "config.json").write_text(json.dumps(config))
    assert VisionCLIP.from_pretrained(tmp_path / "old")[0].model_cfg.exposure_norm is False


def test_saved_model_records_the_captions_it_was_trained_on(tokenizer, tmp_path):
    model = _model(tokenizer)
    model.save_pretrained(tmp_path / "plain", tokenizer)
    assert VisionCLIP.from_pretrained(tmp_path / "plain")[0].training_captions is None  # not recorded
    model.training_captions = {"zh": "release", "en": "generated"}
    model.save_pretrained(tmp_path / "m", tokenizer)
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["training_captions"] == {"zh": "release", "en": "generated"}
    assert VisionCLIP.from_pretrained(tmp_path / "m")[0].training_captions == {"zh": "release", "en": "generated"}
    config["training_captions"] = {"fr": "release"}
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"config.json: field 'training_captions' must map 'zh' and/or 'en'"):
        VisionCLIP.from_pretrained(tmp_path / "m")
