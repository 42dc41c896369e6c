"""Text tokenization: one small wrapper over a Hugging Face ``tokenizers.Tokenizer``.

:class:`TextTokenizer` wraps either a ``tokenizers.Tokenizer`` (e.g. one trained here with
:func:`train_tokenizer`) or a *fast* ``transformers`` tokenizer (through its Rust backend, so
there is a single code path). Truncation keeps the special tokens: the text is cut first and
the post-processor (``[BOS] ... [EOS]``, BERT's ``[CLS] ... [SEP]``) is applied after.

A saved tokenizer is a directory with ``tokenizer.json`` and ``polymodal_tokenizer.json``
(which tokens are pad/bos/eos); :meth:`TextTokenizer.load` also reads any directory written by
``transformers``' ``save_pretrained``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from polymodal.fsutil import UnreadableFileError, read_json
from polymodal.registry import NAME_PATTERN, PATH_SCHEMES, resolve_path

META_FILE = "polymodal_tokenizer.json"
TOKENIZER_FILE = "tokenizer.json"

PAD, UNK, BOS, EOS, MASK = "[PAD]", "[UNK]", "[BOS]", "[EOS]", "[MASK]"
SPECIAL_TOKENS = [PAD, UNK, BOS, EOS, MASK]  # ids 0..4 in trained tokenizers


def pad_ids(
    sequences: Sequence[Sequence[int]], pad_id: int, length: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad id lists to ``length`` (default: the longest) -> (ids (B, T) long, mask (B, T) bool)."""
    longest = max((len(s) for s in sequences), default=0)
    length = longest if length is None else length
    if longest > length:
        raise ValueError(f"a sequence has {longest} ids, more than the pad length {length}")
    ids = torch.full((len(sequences), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), length), dtype=torch.bool)
    for i, seq in enumerate(sequences):
        ids[i, : len(seq)] = torch.as_tensor(list(seq), dtype=torch.long)
        mask[i, : len(seq)] = True
    return ids, mask


class TextTokenizer:
    """Tokenizer with fixed pad/bos/eos tokens and batch encoding to padded tensors."""

    def __init__(
        self,
        backend: Tokenizer,
        *,
        pad_token: str,
        bos_token: str | None = None,
        eos_token: str | None = None,
        mask_token: str | None = None,
    ) -> None:
        # Padding and truncation are ours (encode_many/pad_ids): a tokenizer.json saved with its own
        # (sentence-transformers' pads every text to 128 and truncates) would pad before the special
        # tokens are added, leaving pad ids inside the sequence.
        backend.no_padding()
        backend.no_truncation()
        self.backend = backend
        self.tokens = {"pad": pad_token, "bos": bos_token, "eos": eos_token, "mask": mask_token}
        for role, token in self.tokens.items():
            if token is not None and backend.token_to_id(token) is None:
                raise ValueError(f"{role} token {token!r} is not in the tokenizer's vocabulary")
        # Number of specials the post-processor adds to a single text; truncation reserves them.
        self._num_special = backend.num_special_tokens_to_add(False)

    # -- ids of the special tokens -----------------------------------------------------------

    def _id(self, role: str) -> int | None:
        token = self.tokens[role]
        return None if token is None else self.backend.token_to_id(token)

    @property
    def pad_id(self) -> int:
        pad = self._id("pad")
        assert pad is not None  # pad_token is required by __init__
        return pad

    @property
    def bos_id(self) -> int | None:
        return self._id("bos")

    @property
    def eos_id(self) -> int | None:
        return self._id("eos")

    @property
    def mask_id(self) -> int | None:
        return self._id("mask")

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    # -- encode / decode ---------------------------------------------------------------------

    def encode(self, text: str, max_length: int) -> list[int]:
        """Ids of one text with special tokens, at most ``max_length`` long (unpadded)."""
        return self.encode_many([text], max_length)[0]

    def encode_many(self, texts: Sequence[str], max_length: int) -> list[list[int]]:
        """Unpadded id lists; the text is truncated so the special tokens always fit."""
        room = max_length - self._num_special
        if room < 1:
            raise ValueError(f"max_length={max_length} leaves no room after {self._num_special} special tokens")
        out = []
        for enc in self.backend.encode_batch(list(texts), add_special_tokens=False):
            enc.truncate(room)
            out.append(self.backend.post_process(enc, None, add_special_tokens=True).ids)
        return out

    def encode_batch(self, texts: Sequence[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(input_ids LongTensor (B, T), attention_mask BoolTensor (B, T)), T = longest <= max_length."""
        return pad_ids(self.encode_many(texts, max_length), self.pad_id)

    def decode(self, ids: Sequence[int] | torch.Tensor, skip_special_tokens: bool = True) -> str:
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        return self.backend.decode(list(ids), skip_special_tokens=skip_special_tokens)

    # -- persistence -------------------------------------------------------------------------

    def save(self, directory: str | os.PathLike) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.backend.save(str(directory / TOKENIZER_FILE))
        meta = {f"{role}_token": token for role, token in self.tokens.items()}
        (directory / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike) -> TextTokenizer:
        """Read a directory written by :meth:`save` or by ``transformers`` ``save_pretrained``, or named as
        ``SCHEME:NAME`` (``pretrained:minilm``: see :data:`polymodal.registry.PATH_SCHEMES`)."""
        given = str(directory)
        directory = Path(resolve_path(directory))
        meta_path = directory / META_FILE
        if meta_path.is_file():
            meta = read_json(meta_path)
            path = directory / TOKENIZER_FILE
            try:
                return cls(Tokenizer.from_file(str(path)), **meta)
            except Exception as e:  # the tokenizers library raises a bare Exception naming no file
                read_json(path)  # says where its JSON breaks off, when it does
                raise UnreadableFileError(path, f"not a tokenizer the tokenizers library reads ({e})") from None
        if not directory.is_dir():
            scheme, sep, _ = given.partition(":")
            unregistered = sep and NAME_PATTERN.fullmatch(scheme) and scheme not in PATH_SCHEMES
            hint = f" (no {scheme!r} path scheme is registered: for pretrained:NAME import polymodal.pretrained)"
            raise FileNotFoundError(f"{directory}: no such tokenizer directory" + (hint if unregistered else ""))
        from transformers import AutoTokenizer  # heavy import, only for HF directories

        try:
            hf = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
        except (OSError, ValueError) as e:
            raise ValueError(f"{directory}: not a polymodal or transformers tokenizer directory ({e})") from None
        return cls.from_transformers(hf)

    @classmethod
    def from_transformers(cls, hf: Any) -> TextTokenizer:
        """Wrap a fast ``transformers`` tokenizer.

        bos/eos fall back to BERT's ``[CLS]``/``[SEP]``; a tokenizer without a pad token
        (GPT-2) pads with its eos token, which the attention mask hides anyway.
        """
        backend = getattr(hf, "backend_tokenizer", None)
        if backend is None:
            raise TypeError(f"{type(hf).__name__} is a slow tokenizer; use its *Fast variant")
        bos = hf.bos_token or getattr(hf, "cls_token", None)
        eos = hf.eos_token or getattr(hf, "sep_token", None)
        pad = hf.pad_token or eos
        if pad is None:
            raise ValueError(f"{type(hf).__name__} has neither a pad nor an eos token")
        mask = getattr(hf, "mask_token", None)
        return cls(backend, pad_token=pad, bos_token=bos, eos_token=eos, mask_token=mask)


def train_tokenizer(
    texts: Iterable[str],
    vocab_size: int,
    kind: Literal["wordlevel", "bpe"] = "wordlevel",
    min_frequency: int = 1,
) -> TextTokenizer:
    """Train a tokenizer on ``texts`` with specials [PAD]=0, [UNK], [BOS], [EOS], [MASK].

    ``wordlevel`` (ShapesWorld's small closed vocabulary): lowercase, split on whitespace and
    punctuation, one id per word. ``bpe``: byte-level BPE (no unknown characters, case kept).
    Both add ``[BOS] text [EOS]`` through a template post-processor.
    """
    if kind == "wordlevel":
        backend = Tokenizer(models.WordLevel(unk_token=UNK))
        backend.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
        backend.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()]
        )
        trainer: Any = trainers.WordLevelTrainer(
            vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=SPECIAL_TOKENS
        )
    elif kind == "bpe":
        backend = Tokenizer(models.BPE(unk_token=UNK))
        backend.normalizer = normalizers.NFKC()
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
        backend.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=SPECIAL_TOKENS,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        )
    else:
        raise ValueError(f"unknown tokenizer kind {kind!r}; allowed: wordlevel, bpe")
    backend.train_from_iterator(texts, trainer=trainer)
    backend.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}",
        pair=f"{BOS} $A {EOS} $B:1 {EOS}:1",
        special_tokens=[(BOS, backend.token_to_id(BOS)), (EOS, backend.token_to_id(EOS))],
    )
    return TextTokenizer(backend, pad_token=PAD, bos_token=BOS, eos_token=EOS, mask_token=MASK)
