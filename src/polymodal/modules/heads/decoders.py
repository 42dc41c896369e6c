"""The interface every text decoder offers, so that generation and the models treat them as one type.

A decoder maps token ids and a memory (B, S, memory_dim) with an optional ``memory_mask`` (B, S)
bool, True = real, to next-token logits, two ways:

- ``forward(input_ids, memory, memory_mask, attention_mask)`` — teacher forcing, (B, T, V);
- ``forward_step(input_ids, memory, memory_mask, cache)`` — incremental decoding from a cache
  that ``init_cache(memory, memory_mask)`` starts. Both must give the same logits.

Beam search moves hypotheses between rows, so every cache can ``reorder`` its batch rows.
A decoder must never produce NaN, even for a row whose memory is all padding.
"""

from __future__ import annotations

from typing import Generic, Protocol, TypeVar

import torch
from torch import Tensor, nn


class DecoderState(Protocol):
    """What generation needs of a decoder's cache: a copy holding the given batch rows."""

    def reorder(self, index: Tensor) -> DecoderState: ...


CacheT = TypeVar("CacheT", bound=DecoderState)


class TextDecoder(nn.Module, Generic[CacheT]):
    """Base of the autoregressive text decoders: the special token ids and the three decoding methods.

    ``bos_id`` starts every generated sequence, ``eos_id`` ends it and ``pad_id`` fills the
    positions after it (see ``polymodal.modules.heads.generation``); no sequence, BOS included,
    may be longer than ``max_length``.
    """

    def __init__(self, vocab_size: int, max_length: int, pad_id: int, bos_id: int, eos_id: int) -> None:
        super().__init__()
        for name, value in (("pad_id", pad_id), ("bos_id", bos_id), ("eos_id", eos_id)):
            if not 0 <= value < vocab_size:
                raise ValueError(f"{name}={value} is outside the vocabulary [0, {vocab_size})")
        if max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {max_length}")
        self.vocab_size = vocab_size
        self.max_length = max_length
        self.pad_id, self.bos_id, self.eos_id = pad_id, bos_id, eos_id

    def forward(
        self,
        input_ids: Tensor,
        memory: Tensor,
        memory_mask: Tensor | None = None,
        attention_mask: Tensor | None = None,
    ) -> Tensor:  # pragma: no cover
        """Teacher forcing: (B, T) token ids (right-padded where ``attention_mask`` is False) -> (B, T, V)."""
        raise NotImplementedError

    def init_cache(self, memory: Tensor, memory_mask: Tensor | None = None) -> CacheT:  # pragma: no cover
        """An empty cache for decoding from ``memory``."""
        raise NotImplementedError

    def forward_step(
        self,
        input_ids: Tensor,
        memory: Tensor,
        memory_mask: Tensor | None = None,
        cache: CacheT | None = None,
    ) -> tuple[Tensor, CacheT]:  # pragma: no cover
        """Decode new tokens (B, t) after those in ``cache`` (None = start): -> ((B, t, V) logits, cache)."""
        raise NotImplementedError

    def check_length(self, length: int) -> None:
        """Refuse a sequence longer than ``max_length`` (the position table or the cache is that long)."""
        if length > self.max_length:
            raise ValueError(f"sequence length {length} exceeds the decoder's max_length={self.max_length}")


def safe_memory_mask(memory_mask: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor | None]:
    """(B, S) memory mask -> ((B, S) mask safe to softmax over, (B,) gate or None).

    A row with no real memory would give an all-masked softmax (NaN), so it attends to
    everything instead and the gate (0 for that row, 1 elsewhere) zeroes what it read.
    The gate is None when every row has memory.
    """
    memory_mask = memory_mask.bool()
    has_memory = memory_mask.any(dim=1)  # (B,)
    safe = memory_mask | ~has_memory[:, None]
    gate = None if bool(has_memory.all()) else has_memory.to(dtype)
    return safe, gate
