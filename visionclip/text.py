"""Caption tokenizer: BERT-style Chinese tokenisation, usable offline.

The pipeline is the one of transformers' `BertTokenizerFast` (and of Chinese-CLIP's RoBERTa-wwm-ext
tokenizer), built from `tokenizers` parts so that nothing is fetched from a hub:
  normaliser   BertNormalizer: clean control characters, put spaces around every CJK character,
               lower-case (the Chinese RoBERTa-wwm-ext vocabulary is uncased);
  pre-tokens   BertPreTokenizer: split on whitespace and punctuation, so each CJK character is a word;
  model        WordPiece with the "##" continuation prefix and [UNK] for what the vocab cannot spell;
  template     [CLS] text [SEP], padded with [PAD] to a fixed context length.
The vocabulary is either trained on the corpus captions (both languages) or read from any BERT
vocab.txt, e.g. the 21,128-token RoBERTa-wwm-ext vocabulary that the cn-clip package ships.
"""
from __future__ import annotations

import importlib.util
import os
import unicodedata
from collections import Counter
from pathlib import Path
from typing import Iterable, Sequence

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

from .errors import DataError
from .io import write_text

# Captions are short and the trainer tokenises in DataLoader workers (already one per core):
# tokenizers' own thread pool would only oversubscribe, and it warns after every fork once used.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
REQUIRED_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]")
VOCAB_FILE = "vocab.txt"
TOKENIZER_FILE = "tokenizer.json"


def _is_cjk(ch: str) -> bool:
    """The CJK ranges BERT's `_is_chinese_char` splits (the same ones BertNormalizer uses)."""
    cp = ord(ch)
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF
            or 0x2A700 <= cp <= 0x2B73F or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF
            or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)


def _is_wide(ch: str) -> bool:
    """CJK characters and full-width punctuation: written without spaces between them."""
    return _is_cjk(ch) or unicodedata.east_asian_width(ch) in ("W", "F")


_NO_SPACE_BEFORE = set(".,;:!?)]}%'")
_NO_SPACE_AFTER = set("([{'")
_JOINERS = set("-/")


def join_words(words: Sequence[str]) -> str:
    """Join BERT words into readable text: no spaces next to CJK characters or before closing
    punctuation, none around '-' and '/', and '0 . 6' back to '0.6'. Used by `decode` and `normalize`."""
    out: list[str] = []
    for i, w in enumerate(words):
        if i > 0:
            prev = words[i - 1]
            tight = (
                _is_wide(prev[-1]) or _is_wide(w[0])  # Chinese text: no spaces, "轻度npdr"
                or w in _NO_SPACE_BEFORE or prev in _NO_SPACE_AFTER
                or w in _JOINERS or prev in _JOINERS
                or (prev == "." and i >= 2 and words[i - 2][-1:].isdigit() and w[:1].isdigit())
            )
            if not tight:
                out.append(" ")
        out.append(w)
    return "".join(out)


def _bert_pipeline(tok: Tokenizer) -> Tokenizer:
    """Attach BertTokenizerFast's normaliser, pre-tokeniser and decoder to a WordPiece tokenizer."""
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    return tok


def _read_vocab_file(path: Path) -> list[str]:
    """Read and check a BERT vocab.txt (one token per line, specials included)."""
    expected = f"a BERT vocab.txt: UTF-8 text, one token per line, including {list(REQUIRED_TOKENS)}"
    if not path.is_file():
        raise DataError(f"{path}: vocabulary file not found; expected {expected}")
    raw = path.read_bytes()
    if not raw.strip():
        raise DataError(f"{path}: the file is empty; expected {expected}")
    if b"\x00" in raw:
        raise DataError(f"{path}: the file is binary (contains NUL bytes); expected {expected}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (byte {e.start}); expected {expected}") from None
    tokens = [line.rstrip("\r\n") for line in text.split("\n")]
    if tokens and tokens[-1] == "":  # the final newline
        tokens.pop()
    missing = [t for t in REQUIRED_TOKENS if t not in set(tokens)]
    if missing:
        raise DataError(f"{path}: missing special token(s) {missing}; expected {expected}")
    # Ids are line numbers: a repeated (or blank) line would leave an id no token maps back to.
    first_line: dict[str, int] = {}
    for line_no, t in enumerate(tokens, start=1):
        if t in first_line or t == "":  # not .strip(): cn-clip's vocab holds U+2028 as a token
            what = "a blank token" if t == "" else f"token {t!r} again (first on line {first_line[t]})"
            raise DataError(f"{path}: line {line_no} holds {what}; expected {expected}, each token once")
        first_line[t] = line_no
    return tokens


class CaptionTokenizer:
    """A BERT WordPiece tokenizer that returns fixed-length torch tensors for the text tower."""

    def __init__(self, tokenizer: Tokenizer):
        self._tok = tokenizer
        vocab = tokenizer.get_vocab()
        for t in REQUIRED_TOKENS:
            if t not in vocab:
                raise DataError(f"tokenizer vocabulary lacks {t}; expected the BERT special tokens "
                                f"{list(REQUIRED_TOKENS)}")
        self.pad_id, self.unk_id = vocab["[PAD]"], vocab["[UNK]"]
        self.cls_id, self.sep_id = vocab["[CLS]"], vocab["[SEP]"]
        self._tok.post_processor = processors.BertProcessing(("[SEP]", self.sep_id), ("[CLS]", self.cls_id))
        self._tok.no_padding()
        self._tok.no_truncation()
        self._length: int | None = None

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def from_tokens(cls, tokens: Sequence[str]) -> "CaptionTokenizer":
        """A tokenizer whose token ids are the positions in `tokens` (vocab.txt order)."""
        vocab = {t: i for i, t in enumerate(tokens)}
        if len(vocab) != len(tokens):
            raise DataError(f"vocabulary of {len(tokens)} tokens has {len(tokens) - len(vocab)} repeated; "
                            "expected each token once")
        model = models.WordPiece(vocab, unk_token="[UNK]", continuing_subword_prefix="##",
                                 max_input_chars_per_word=100)
        return cls(_bert_pipeline(Tokenizer(model)))

    @classmethod
    def from_vocab(cls, path: str | os.PathLike) -> "CaptionTokenizer":
        """Load any BERT vocab.txt (for example cn-clip's 21,128-token RoBERTa-wwm-ext vocabulary)."""
        return cls.from_tokens(_read_vocab_file(Path(path)))

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int) -> "CaptionTokenizer":
        """Build a WordPiece vocabulary from captions (any mix of Chinese and English).

        The vocabulary is every character seen (as a word start and as a '##' continuation, so
        any word of seen characters is spelled without [UNK]; each CJK character is its own word),
        then the most frequent whole words until `vocab_size`, ties broken alphabetically.
        Why not `tokenizers`' WordPieceTrainer: its merges break count ties in Rust hash-map order,
        which changes from process to process, so the same captions gave different vocabularies.
        Words and characters come from the same BERT normaliser and pre-tokeniser the tokenizer
        uses. Same texts -> same vocab.txt, byte for byte.
        """
        pipeline = _bert_pipeline(Tokenizer(models.WordPiece(unk_token="[UNK]")))
        words: Counter[str] = Counter()
        n_texts = 0
        for text in texts:
            n_texts += 1
            normalised = pipeline.normalizer.normalize_str(text)
            words.update(w for w, _ in pipeline.pre_tokenizer.pre_tokenize_str(normalised))
        if not words:
            raise DataError(f"CaptionTokenizer.train: {n_texts} caption(s) with no words; "
                            "expected a non-empty list of caption texts")
        starts = sorted({w[0] for w in words})
        continuations = sorted({"##" + ch for w in words for ch in w[1:]})
        vocab = list(SPECIAL_TOKENS) + starts + continuations
        budget = max(0, vocab_size - len(vocab))
        frequent = sorted((w for w in words if len(w) > 1), key=lambda w: (-words[w], w))[:budget]
        return cls.from_tokens(vocab + frequent)

    # ---- persistence --------------------------------------------------------------------------
    def save(self, directory: str | os.PathLike) -> None:
        """Write vocab.txt (portable) and tokenizer.json (the full pipeline), atomically."""
        directory = Path(directory)
        self._tok.no_padding()  # the batch settings of __call__ are not part of the saved pipeline
        self._tok.no_truncation()
        self._length = None
        write_text(directory / VOCAB_FILE, "".join(t + "\n" for t in self.tokens()))
        write_text(directory / TOKENIZER_FILE, self._tok.to_str(pretty=True))

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "CaptionTokenizer":
        """Read what `save` wrote; the vocab.txt and tokenizer.json must agree."""
        directory = Path(directory)
        tokens = _read_vocab_file(directory / VOCAB_FILE)
        json_path = directory / TOKENIZER_FILE
        if not json_path.is_file():
            return cls.from_tokens(tokens)
        try:
            tok = Tokenizer.from_str(json_path.read_text(encoding="utf-8"))
        except Exception as e:  # tokenizers raises a bare Exception on malformed JSON
            raise DataError(f"{json_path}: not a valid tokenizers JSON file ({e})") from None
        loaded = cls(tok)
        if loaded.tokens() != tokens:
            raise DataError(f"{json_path}: its vocabulary differs from {directory / VOCAB_FILE}; "
                            "expected the two files written together by CaptionTokenizer.save")
        return loaded

    # ---- use ----------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def tokens(self) -> list[str]:
        """The vocabulary in id order (what vocab.txt holds)."""
        vocab = self._tok.get_vocab()
        by_id = [""] * (max(vocab.values()) + 1)
        for t, i in vocab.items():
            by_id[i] = t
        return by_id

    def tokenize(self, text: str) -> list[str]:
        """Word pieces of one text, without [CLS]/[SEP]."""
        normalised = self._tok.normalizer.normalize_str(text)
        words = self._tok.pre_tokenizer.pre_tokenize_str(normalised)
        return [piece.value for word, _ in words for piece in self._tok.model.tokenize(word)]

    def __call__(self, texts: str | Sequence[str], context_length: int) -> dict[str, torch.Tensor]:
        """Batch-encode: [CLS] text [SEP], truncated and padded to `context_length` tokens."""
        if isinstance(texts, str):
            texts = [texts]
        if context_length < 2:
            raise ValueError(f"context_length must leave room for [CLS] and [SEP], got {context_length}")
        if self._length != context_length:
            self._tok.enable_truncation(max_length=context_length)
            self._tok.enable_padding(length=context_length, pad_id=self.pad_id, pad_token="[PAD]")
            self._length = context_length
        encodings = self._tok.encode_batch(list(texts))
        return {
            "input_ids": torch.tensor([e.ids for e in encodings], dtype=torch.long),
            "attention_mask": torch.tensor([e.attention_mask for e in encodings], dtype=torch.long),
        }

    def decode(self, ids: Sequence[int] | torch.Tensor, skip_special_tokens: bool = True) -> str:
        """Ids back to text: word pieces merged, CJK characters rejoined without spaces."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        specials = {self.pad_id, self.cls_id, self.sep_id} if skip_special_tokens else set()
        pieces = [self._tok.id_to_token(i) for i in ids if i not in specials]
        words: list[str] = []
        for p in pieces:
            if p.startswith("##") and words:
                words[-1] += p[2:]
            else:
                words.append(p)
        return join_words(words)

    def normalize(self, text: str) -> str:
        """The canonical form `decode(encode(text))` returns for in-vocabulary text: BERT-normalised
        (lower case, control characters dropped), split into BERT words, joined as `decode` joins."""
        normalised = self._tok.normalizer.normalize_str(text)
        return join_words([w for w, _ in self._tok.pre_tokenizer.pre_tokenize_str(normalised)])

    def __repr__(self) -> str:
        return f"CaptionTokenizer(vocab_size={self.vocab_size})"


def find_cn_clip_vocab() -> Path | None:
    """The RoBERTa-wwm-ext vocab.txt of an installed cn-clip package, or None.

    Uses the import machinery's spec only, so cn-clip's heavy dependencies are never imported.
    """
    try:
        spec = importlib.util.find_spec("cn_clip")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        candidate = Path(root) / "clip" / VOCAB_FILE
        if candidate.is_file():
            return candidate
    return None


def build_tokenizer(model_cfg, captions: Iterable[str] | None = None) -> CaptionTokenizer:
    """The tokenizer a profile asks for: model_cfg.vocab == 'corpus' trains one on `captions`
    with model_cfg.vocab_size; 'cn-clip' reads the installed cn-clip vocab; else a vocab.txt path."""
    if model_cfg.vocab == "corpus":
        if captions is None:
            raise DataError("model.vocab='corpus' needs the corpus captions to train the vocabulary")
        return CaptionTokenizer.train(captions, model_cfg.vocab_size)
    if model_cfg.vocab in ("cn-clip", "cn_clip"):
        path = find_cn_clip_vocab()
        if path is None:
            raise DataError("model.vocab='cn-clip': the cn-clip package is not installed (make env installs it: "
                            "pip install --no-deps --require-hashes -r requirements/cn_clip.txt), or give a "
                            "path to a BERT vocab.txt")
        return CaptionTokenizer.from_vocab(path)
    return CaptionTokenizer.from_vocab(model_cfg.vocab)

