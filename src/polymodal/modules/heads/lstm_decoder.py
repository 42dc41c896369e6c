"""LSTM text decoder with soft attention over a memory (Show, Attend and Tell, Xu et al. 2015).

The memory (B, S, memory_dim), e.g. image patch tokens, with an optional ``memory_mask`` (B, S)
bool, True = real, is used twice:

- it sets the initial state: h0 and c0 of every layer are ``tanh(linear(masked mean of memory))``;
- at every step, additive attention queried by the top layer's previous hidden state reads a
  context vector from it, which enters the LSTM beside the token embedding and the output layer
  beside the new hidden state.

The recurrence is causal by construction, so teacher forcing and stepping run the same
token-by-token loop (``_decode``) and their logits agree (tested to 1e-5).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from polymodal.modules.heads.decoders import TextDecoder, safe_memory_mask


@dataclass
class LSTMCache:
    """Recurrent state after ``length`` tokens, and the memory with its attention keys (projected once)."""

    h: Tensor  # (depth, B, width)
    c: Tensor  # (depth, B, width)
    keys: Tensor  # (B, S, width)
    memory: Tensor  # (B, S, memory_dim)
    length: int = 0

    def reorder(self, index: Tensor) -> LSTMCache:
        """Rows ``index`` of every cached tensor (the LSTM state keeps its batch in dim 1)."""
        return LSTMCache(
            self.h.index_select(1, index),
            self.c.index_select(1, index),
            self.keys.index_select(0, index),
            self.memory.index_select(0, index),
            self.length,
        )


class LSTMDecoder(TextDecoder[LSTMCache]):
    """Show-attend-tell decoder: an LSTM started from the pooled memory, attending to it at every step."""

    def __init__(
        self,
        vocab_size: int,
        width: int,
        depth: int,
        max_length: int,
        memory_dim: int,
        pad_id: int,
        bos_id: int,
        eos_id: int,
        dropout: float = 0.0,
        tie_embeddings: bool = True,
    ) -> None:
        super().__init__(vocab_size, max_length, pad_id, bos_id, eos_id)
        self.width, self.depth = width, depth
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.init_h = nn.Linear(memory_dim, depth * width)
        self.init_c = nn.Linear(memory_dim, depth * width)
        self.attn_key = nn.Linear(memory_dim, width)
        self.attn_query = nn.Linear(width, width, bias=False)
        self.attn_score = nn.Linear(width, 1, bias=False)
        self.lstm = nn.LSTM(
            width + memory_dim, width, num_layers=depth, batch_first=True, dropout=dropout if depth > 1 else 0.0
        )
        self.dropout = nn.Dropout(dropout)
        self.output = nn.Linear(width + memory_dim, width)
        self.lm_head = nn.Linear(width, vocab_size, bias=False)
        # Small embeddings keep the initial (tied) logits near uniform; N(0, 1) would make them peaked.
        nn.init.uniform_(self.token_embedding.weight, -0.1, 0.1)
        if tie_embeddings:
            self.lm_head.weight = self.token_embedding.weight
        else:
            nn.init.uniform_(self.lm_head.weight, -0.1, 0.1)

    def init_cache(self, memory: Tensor, memory_mask: Tensor | None = None) -> LSTMCache:
        """The state before the first token: h0, c0 from the masked mean of ``memory``, and its attention keys."""
        if memory_mask is None:
            pooled = memory.mean(dim=1)
        else:
            real = memory_mask.bool()[..., None]  # (B, S, 1)
            # A row with no real memory pools to zeros, so its state does not depend on the memory.
            pooled = memory.masked_fill(~real, 0.0).sum(dim=1) / real.sum(dim=1).clamp_min(1)  # (B, memory_dim)
        B = memory.size(0)
        h = torch.tanh(self.init_h(pooled)).view(B, self.depth, self.width).transpose(0, 1).contiguous()
        c = torch.tanh(self.init_c(pooled)).view(B, self.depth, self.width).transpose(0, 1).contiguous()
        return LSTMCache(h, c, self.attn_key(memory), memory)

    def forward(
        self,
        input_ids: Tensor,
        memory: Tensor,
        memory_mask: Tensor | None = None,
        attention_mask: Tensor | None = None,
    ) -> Tensor:
        """Teacher forcing: (B, T) token ids -> (B, T, V) next-token logits.

        ``attention_mask`` is accepted for the common interface and not needed: right padding
        comes after every real token, and the recurrence never looks ahead.
        """
        logits, _ = self._decode(input_ids, self.init_cache(memory, memory_mask), memory_mask)
        return logits

    def forward_step(
        self,
        input_ids: Tensor,
        memory: Tensor,
        memory_mask: Tensor | None = None,
        cache: LSTMCache | None = None,
    ) -> tuple[Tensor, LSTMCache]:
        """Decode new tokens (B, t) after those in ``cache``: -> ((B, t, V) logits, advanced cache).

        ``memory`` is only read when ``cache`` is None (the first step); pass the same
        ``memory_mask`` on every step.
        """
        if cache is None:
            cache = self.init_cache(memory, memory_mask)
        return self._decode(input_ids, cache, memory_mask)

    def _decode(self, input_ids: Tensor, cache: LSTMCache, memory_mask: Tensor | None) -> tuple[Tensor, LSTMCache]:
        T = input_ids.size(1)
        self.check_length(cache.length + T)
        mask, gate = (None, None) if memory_mask is None else safe_memory_mask(memory_mask, cache.memory.dtype)
        embedded = self.dropout(self.token_embedding(input_ids))  # (B, T, width)
        h, c = cache.h, cache.c
        features = []
        for t in range(T):
            context = self._attend(h[-1], cache.keys, cache.memory, mask, gate)  # (B, memory_dim)
            step_input = torch.cat([embedded[:, t], context], dim=-1)[:, None]  # (B, 1, width + memory_dim)
            out, (h, c) = self.lstm(step_input, (h, c))  # out: (B, 1, width)
            features.append(torch.cat([out[:, 0], context], dim=-1))
        hidden = self.output(self.dropout(torch.stack(features, dim=1)))  # (B, T, width)
        return self.lm_head(hidden), LSTMCache(h, c, cache.keys, cache.memory, cache.length + T)

    def _attend(self, query: Tensor, keys: Tensor, memory: Tensor, mask: Tensor | None, gate: Tensor | None) -> Tensor:
        """Additive attention: (B, width) query over (B, S) memory positions -> (B, memory_dim) context."""
        scores = self.attn_score(torch.tanh(keys + self.attn_query(query)[:, None])).squeeze(-1)  # (B, S)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        context = torch.bmm(scores.softmax(dim=-1)[:, None], memory)[:, 0]  # (B, memory_dim)
        # A row with no real memory attended to all of it (to avoid NaN); drop what it read.
        return context if gate is None else context * gate[:, None]
