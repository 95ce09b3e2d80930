"""CaptionTokenizer: BERT-style Chinese/English tokenisation, vocab files, save/load."""
from __future__ import annotations

import importlib.util
import os
import pickle
import subprocess
import sys

import pytest
import torch

from visionclip.errors import DataError
from visionclip.text import CaptionTokenizer, build_tokenizer, find_cn_clip_vocab

CAPTIONS = [
    "眼底彩照显示中度非增殖性糖尿病视网膜病变，伴有硬性渗出。",
    "A fundus photograph showing moderate diabetic retinopathy, with hard exudates.",
    "Cup-to-disc ratio 0.6; suspected glaucoma.",
    "视盘杯盘比0.6，疑似青光眼。",
    "考虑重度npdr，糖尿病性黄斑水肿。",
    "Age-related macular degeneration with drusen.",
    "正常眼底。",
    "A normal fundus.",
]


@pytest.fixture(scope="module")
def tokenizer():
    return CaptionTokenizer.train(CAPTIONS * 3, vocab_size=300)


def test_round_trip_chinese_and_english(tokenizer):
    for text in CAPTIONS:
        ids = tokenizer([text], context_length=64)["input_ids"][0]
        assert tokenizer.decode(ids) == tokenizer.normalize(text)
        assert tokenizer.decode(ids) == text.lower()  # these captions are already in normal form
        assert tokenizer.unk_id not in ids.tolist()


def test_cjk_characters_are_one_token_each(tokenizer):
    assert tokenizer.tokenize("糖尿病视网膜病变") == list("糖尿病视网膜病变")
    # mixed text: Chinese split per character, English lower-cased whole words
    assert tokenizer.tokenize("青光眼 Glaucoma") == ["青", "光", "眼", "glaucoma"]


def test_batch_padding_and_truncation(tokenizer):
    batch = tokenizer(["正常眼底。", CAPTIONS[1]], context_length=10)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert ids.shape == mask.shape == (2, 10) and ids.dtype == mask.dtype == torch.long
    assert ids[0, 0] == tokenizer.cls_id and ids[0, 6] == tokenizer.sep_id  # [CLS] 正常眼底。 [SEP]
    assert mask[0].tolist() == [1] * 7 + [0] * 3 and (ids[0, 7:] == tokenizer.pad_id).all()
    assert mask[1].all() and ids[1, -1] == tokenizer.sep_id  # truncated, still ends with [SEP]


def test_training_is_deterministic_and_respects_size():
    full = CaptionTokenizer.train(CAPTIONS, vocab_size=10_000)  # room for every character and word
    assert full.vocab_size < 10_000
    assert not any(p.startswith("##") for text in CAPTIONS for p in full.tokenize(text))  # whole words
    alphabet = [t for t in full.tokens() if len(t.removeprefix("##")) == 1 or t.startswith("[")]
    size = full.vocab_size - 7
    a = CaptionTokenizer.train(CAPTIONS, vocab_size=size)
    b = CaptionTokenizer.train(list(CAPTIONS), vocab_size=size)
    assert a.tokens() == b.tokens() and a.vocab_size == size and set(a.tokens()) < set(full.tokens())
    # characters are always kept, even past vocab_size: nothing seen becomes [UNK]
    assert CaptionTokenizer.train(CAPTIONS, vocab_size=10).tokens() == alphabet
    # unknown words of known characters are spelled in pieces, not [UNK]
    assert a.decode(a(["photographs"], 16)["input_ids"][0]) == "photographs"


def test_save_load_round_trip(tokenizer, tmp_path):
    tokenizer.save(tmp_path)
    loaded = CaptionTokenizer.load(tmp_path)
    assert loaded.tokens() == tokenizer.tokens()
    for key in ("input_ids", "attention_mask"):
        assert torch.equal(loaded(CAPTIONS, 32)[key], tokenizer(CAPTIONS, 32)[key])
    assert CaptionTokenizer.from_vocab(tmp_path / "vocab.txt").tokens() == tokenizer.tokens()
    saved = (tmp_path / "tokenizer.json").read_bytes()  # saving after batch calls: same file
    tokenizer(CAPTIONS, 20)
    tokenizer.save(tmp_path)
    assert (tmp_path / "tokenizer.json").read_bytes() == saved


def test_pickles_for_dataloader_workers(tokenizer):
    clone = pickle.loads(pickle.dumps(tokenizer))
    assert torch.equal(clone(CAPTIONS, 16)["input_ids"], tokenizer(CAPTIONS, 16)["input_ids"])


def test_from_handmade_vocab(tmp_path):
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "眼", "底", "fundus", "normal", "##s", "."]
    (tmp_path / "vocab.txt").write_text("\n".join(tokens) + "\n", encoding="utf-8")
    tok = CaptionTokenizer.from_vocab(tmp_path / "vocab.txt")
    assert tok.vocab_size == len(tokens)
    ids = tok(["Normal fundus 眼底 eyes."], 12)["input_ids"][0].tolist()
    # [CLS] normal fundus 眼 底 [UNK] . [SEP] then padding; ids are vocab.txt line numbers
    assert ids == [2, 8, 7, 5, 6, 1, 10, 3, 0, 0, 0, 0]
    assert tok.tokenize("fundus funduss") == ["fundus", "fundus", "##s"]


def test_matches_transformers_bert_tokenizer_fast(tokenizer, tmp_path):
    transformers = pytest.importorskip("transformers")
    tokenizer.save(tmp_path)
    vocab = {t: i for i, t in enumerate(tokenizer.tokens())}
    reference = transformers.BertTokenizerFast(vocab=vocab, do_lower_case=True, tokenize_chinese_chars=True)
    texts = CAPTIONS + ["Mixed 中文 and English: CDR 0.7 (Severe)!"]
    ours = tokenizer(texts, 24)
    theirs = reference(texts, padding="max_length", truncation=True, max_length=24, return_tensors="pt")
    assert torch.equal(ours["input_ids"], theirs["input_ids"])
    assert torch.equal(ours["attention_mask"], theirs["attention_mask"])


@pytest.mark.parametrize("content, reason", [
    (b"", "empty"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary"),
    ("hello\nworld\n[CLS]\n".encode(), r"missing special token\(s\) \['\[PAD\]', '\[UNK\]', '\[SEP\]'\]"),
    (b"\xff\xfe[\x00P\x00", "binary|UTF-8"),
    ("[PAD]\n[UNK]\n[CLS]\n[SEP]\nfundus\n\nretina\n".encode(), "line 6 holds a blank token"),
    ("[PAD]\n[UNK]\n[CLS]\n[SEP]\nfundus\n[UNK]\n".encode(), r"line 6 holds token '\[UNK\]' again"),
])
def test_wrong_kind_of_vocab_file_raises_data_error(tmp_path, content, reason):
    path = tmp_path / "vocab.txt"
    path.write_bytes(content)
    with pytest.raises(DataError, match=reason) as info:
        CaptionTokenizer.from_vocab(path)
    assert str(path) in str(info.value) and "BERT vocab.txt" in str(info.value)


def test_missing_vocab_file(tmp_path):
    with pytest.raises(DataError, match="not found"):
        CaptionTokenizer.from_vocab(tmp_path / "nope.txt")


def test_build_tokenizer_from_model_config(tmp_path):
    from types import SimpleNamespace

    corpus = build_tokenizer(SimpleNamespace(vocab="corpus", vocab_size=100), CAPTIONS)
    assert corpus.tokens() == CaptionTokenizer.train(CAPTIONS, 100).tokens() and corpus.vocab_size == 100
    corpus.save(tmp_path)
    from_path = build_tokenizer(SimpleNamespace(vocab=str(tmp_path / "vocab.txt"), vocab_size=100))
    assert from_path.tokens() == corpus.tokens()


def test_training_is_deterministic_across_processes(tmp_path):
    """Python's str hash and Rust's hash maps are seeded per process: train in two fresh ones."""
    script = ("import sys; from visionclip.text import CaptionTokenizer; "
              f"CaptionTokenizer.train({CAPTIONS!r} * 2, 95).save(sys.argv[1])")
    for i, hash_seed in enumerate(("1", "2")):
        subprocess.run([sys.executable, "-c", script, str(tmp_path / str(i))], check=True,
                       env={**os.environ, "PYTHONHASHSEED": hash_seed})
    assert (tmp_path / "0" / "vocab.txt").read_bytes() == (tmp_path / "1" / "vocab.txt").read_bytes()
    assert (tmp_path / "0" / "tokenizer.json").read_bytes() == (tmp_path / "1" / "tokenizer.json").read_bytes()


def test_cn_clip_vocab_tokenises_as_chinese_clip():
    """cn-clip's 21,128-token RoBERTa-wwm-ext vocab (make env installs it, requirements/cn_clip.txt)
    tokenises exactly as Chinese-CLIP's own BERT tokenizer, and locating it imports nothing."""
    path = find_cn_clip_vocab()
    assert path is not None, "cn-clip is not installed: make env installs requirements/cn_clip.txt"
    assert "cn_clip" not in sys.modules
    tok = CaptionTokenizer.from_vocab(path)
    assert tok.vocab_size == 21128
    assert tok.tokenize("糖尿病视网膜病变") == list("糖尿病视网膜病变")
    spec = importlib.util.spec_from_file_location("cn_clip_bert_tokenizer", path.parent / "bert_tokenizer.py")
    reference_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reference_module)  # a plain-Python file: no cn_clip package import
    reference = reference_module.FullTokenizer(vocab_file=str(path))
    for text in CAPTIONS + ["Mixed 中文 and English: CDR 0.7 (Severe)! café"]:
        assert tok.tokenize(text) == reference.tokenize(text)


def test_missing_cn_clip_says_how_to_install_it(monkeypatch):
    from visionclip import text
    from visionclip.config import load_profile

    monkeypatch.setattr(text, "find_cn_clip_vocab", lambda: None)
    with pytest.raises(DataError, match=r"cn-clip package is not installed \(make env installs it: .*"
                                        r"requirements/cn_clip.txt\)"):
        build_tokenizer(load_profile("paper").model)
