"""The paper profile on a fresh machine: its exact model, trained two steps on CPU on a release-format
folder, saved, reloaded and scored zero-shot. One test: the model is ResNet-50 + a 12-layer BERT-base."""
from __future__ import annotations

import numpy as np

from release_fixture import write_release_corpus
from visionclip.config import load_profile
from visionclip.data.manifests import load_manifest
from visionclip.data.readers import read_corpus
from visionclip.data.transforms import Preprocess
from visionclip.eval.embed import embed_images
from visionclip.eval.zeroshot import build_prompts, class_prototypes, logit_scale_of, zero_shot_scores
from visionclip.model import VisionCLIP
from visionclip.paths import RunLayout
from visionclip.training.loop import train_clip

SMOKE = {"train.batch_size": 4, "train.max_steps": 2, "train.num_workers": 0}


def test_paper_profile_trains_two_steps_saves_reloads_and_scores(tmp_path):
    root = write_release_corpus(tmp_path / "SynFundus-1M", n=16)
    profile = load_profile("paper", {**SMOKE, "data.corpus_root": str(root)})
    m = profile.model
    assert (m.image_tower, m.text_layers, m.text_hidden, m.vocab, profile.train.image_size) == \
        ("resnet50", 12, 768, "cn_clip", 224)
    assert read_corpus(profile, tmp_path / "run").caption_sources["zh"] == "release"

    summary = train_clip(profile, tmp_path / "run", progress=False)
    assert summary["steps"] == 2 and summary["total_steps"] > 2 and np.isfinite(summary["final_train"]["loss"])

    model, tokenizer = VisionCLIP.from_pretrained(RunLayout(tmp_path / "run").model)
    assert tokenizer.vocab_size == 21128 and model.visual.feature_dim == 2048
    assert model.text.config.num_hidden_layers == 12 and model.text.config.hidden_size == 768
    assert model.training_captions == {"zh": "release"}
    prompts = build_prompts(load_manifest("fives"), "zh", profile.eval.prompt_mode)
    prototypes = class_prototypes(model, tokenizer, prompts, model.context_length)
    records = list(read_corpus(profile, tmp_path / "run"))[:4]
    images = embed_images(model, records, Preprocess.for_evaluation(profile), batch_size=4)
    probs = zero_shot_scores(images, prototypes, logit_scale_of(model))
    assert probs.shape == (4, len(prompts)) and np.allclose(probs.sum(1), 1) and np.isfinite(probs).all()
