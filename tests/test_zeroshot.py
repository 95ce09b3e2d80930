"""Prompt construction (plain / EK, zh / en) and prototype logic, with a tiny fake model."""
import numpy as np
import pytest
import torch

from visionclip.errors import ConfigError
from visionclip.eval.zeroshot import build_prompts, class_prototypes, fill_template, zero_shot_scores

MANIFEST = {
    "name": "toy",
    "templates": {"en": "A fundus photograph of [CLS]", "zh": "一张[CLS]的眼底照片"},
    "classes": [
        {"name_en": "no glaucoma", "name_zh": "无青光眼",
         "descriptions_en": ["no glaucoma"], "descriptions_zh": ["无青光眼"]},
        {"name_en": "glaucoma", "name_zh": "青光眼",
         "descriptions_en": ["optic nerve abnormalities", "abnormal size of the optic cup"],
         "descriptions_zh": ["视神经异常", "视杯大小异常"]},
    ],
}


class FakeTokenizer:
    """Maps each distinct text to one token id; enough for a fake text encoder."""
    def __init__(self):
        self.vocab = {}

    def __call__(self, texts, context_length):
        ids = [[self.vocab.setdefault(t, len(self.vocab) + 1)] + [0] * (context_length - 1) for t in texts]
        ids = torch.tensor(ids)
        return {"input_ids": ids, "attention_mask": (ids > 0).long()}


class FakeModel(torch.nn.Module):
    def __init__(self, table):
        super().__init__()
        self.table = table  # token id -> vector
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def encode_text(self, input_ids, attention_mask):
        v = torch.stack([self.table[int(i)] for i in input_ids[:, 0]])
        return torch.nn.functional.normalize(v, dim=-1)


def test_plain_prompts_both_languages():
    assert build_prompts(MANIFEST, "en", "plain") == [["A fundus photograph of no glaucoma"],
                                                      ["A fundus photograph of glaucoma"]]
    assert build_prompts(MANIFEST, "zh", "plain") == [["一张无青光眼的眼底照片"], ["一张青光眼的眼底照片"]]


def test_ek_prompts_append_name_only_when_missing():
    en = build_prompts(MANIFEST, "en", "ek")
    assert en[0] == ["A fundus photograph of no glaucoma"]  # name already a description: not repeated
    assert en[1] == ["A fundus photograph of optic nerve abnormalities",
                     "A fundus photograph of abnormal size of the optic cup",
                     "A fundus photograph of glaucoma"]
    zh = build_prompts(MANIFEST, "zh", "ek")
    assert zh[1][-1] == "一张青光眼的眼底照片" and len(zh[1]) == 3 and len(zh[0]) == 1


def test_template_placeholders_and_errors():
    assert fill_template("photo of {}", "x") == "photo of x"
    assert fill_template("photo of {cls}", "x") == "photo of x"
    with pytest.raises(ConfigError, match="language"):
        build_prompts(MANIFEST, "fr", "plain")
    with pytest.raises(ConfigError, match="mode"):
        build_prompts(MANIFEST, "en", "fancy")
    with pytest.raises(ConfigError, match="templates.zh"):
        build_prompts({"classes": MANIFEST["classes"], "templates": {"en": "{}"}}, "zh", "plain")


def _fake(prompts):
    tok = FakeTokenizer()
    flat = [p for ps in prompts for p in ps]
    tok(flat, 4)
    vecs = {1: torch.tensor([1.0, 0.0]), 2: torch.tensor([1.0, 0.0]), 3: torch.tensor([0.0, 1.0]),
            4: torch.tensor([0.0, 1.0])}
    vecs = {i: vecs.get(i, torch.tensor([1.0, 1.0])) for i in range(1, len(flat) + 1)}
    return FakeModel(vecs), tok


def test_prototypes_mean_and_renormalisation():
    prompts = [["a"], ["b", "c"]]
    model, tok = _fake(prompts)
    model.table = {1: torch.tensor([1.0, 0.0]), 2: torch.tensor([1.0, 0.0]), 3: torch.tensor([0.0, 1.0])}
    exact = class_prototypes(model, tok, prompts, 4, flair_exact=True)
    assert torch.allclose(exact[1], torch.tensor([0.5, 0.5]))  # raw mean, length 0.707
    renorm = class_prototypes(model, tok, prompts, 4)
    assert torch.allclose(renorm[1], torch.tensor([0.5, 0.5]) / 0.5 ** 0.5)
    assert torch.allclose(renorm.norm(dim=-1), torch.ones(2))


def test_zero_shot_scores_softmax():
    img = np.array([[1.0, 0.0], [0.0, 1.0]])
    proto = np.array([[1.0, 0.0], [0.0, 1.0]])
    p = zero_shot_scores(img, proto, logit_scale=10.0)
    assert p.shape == (2, 2) and np.allclose(p.sum(1), 1)
    assert p[0, 0] == pytest.approx(np.exp(10) / (np.exp(10) + 1))
    with pytest.raises(ConfigError, match="dimension"):
        zero_shot_scores(img, np.ones((2, 3)))
