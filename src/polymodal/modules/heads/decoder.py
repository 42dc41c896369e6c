"""Autoregressive text decoder: causal self-attention + cross-attention to a memory, with a KV cache.

The memory is whatever the model conditions on (image patch tokens, fused tokens): (B, S,
memory_dim) with an optional ``memory_mask`` (B, S) bool, True = real. Two ways to run it:

- ``forward(input_ids, memory)`` — teacher forcing over a whole (right-padded) sequence;
- ``forward_step(input_ids, memory, memory_mask, cache)`` — incremental decoding. The cache holds
  each block's self-attention keys/values so far and its cross-attention keys/values, which are
  projected from the memory once, on the first step.

Both run the same ``_decode`` code, so the logits agree. The interface it shares with the other decoders
is ``decoders.TextDecoder``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from polymodal.modules.heads.decoders import TextDecoder, safe_memory_mask
from polymodal.modules.layers import scaled_dot_product


@dataclass
class LayerCache:
    """One block's cached keys/values, each (B, H, length, head_dim)."""

    cross_k: Tensor
    cross_v: Tensor
    self_k: Tensor | None = None  # None before the first token
    self_v: Tensor | None = None


@dataclass
class DecoderCache:
    """Per-block caches plus ``length``: the number of positions already decoded."""

    layers: list[LayerCache]
    length: int = 0

    def reorder(self, index: Tensor) -> DecoderCache:
        """Rows ``index`` of every cached tensor (beam search: each new beam continues an old one)."""

        def pick(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.index_select(0, index)

        layers = [
            LayerCache(pick(c.cross_k), pick(c.cross_v), pick(c.self_k), pick(c.self_v))  # type: ignore[arg-type]
            for c in self.layers
        ]
        return DecoderCache(layers, self.length)


class Attention(nn.Module):
    """Multi-head attention whose keys/values come from a separate input (``kv_dim`` wide)."""

    def __init__(self, width: int, heads: int, kv_dim: int) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(width, width)
        self.kv = nn.Linear(kv_dim, 2 * width)
        self.out = nn.Linear(width, width)

    def split_heads(self, x: Tensor) -> Tensor:
        B, T, D = x.shape
        return x.view(B, T, self.heads, D // self.heads).transpose(1, 2)  # (B, H, T, hd)

    def keys_values(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Project (B, S, kv_dim) into keys and values, each (B, H, S, hd)."""
        k, v = self.kv(x).chunk(2, dim=-1)
        return self.split_heads(k), self.split_heads(v)

    def forward(self, x: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
        """Queries from ``x`` (B, T, width) attend to ``k``/``v``; ``mask`` is bool, True = may attend."""
        q = self.split_heads(self.q(x))  # (B, H, T, hd)
        y = scaled_dot_product(q, k, v, attn_mask=mask)  # (B, H, T, hd)
        B, H, T, hd = y.shape
        return self.out(y.transpose(1, 2).reshape(B, T, H * hd))  # (B, T, width)


class DecoderBlock(nn.Module):
    """Pre-norm block: causal self-attention, cross-attention to the memory, MLP."""

    def __init__(self, width: int, heads: int, memory_dim: int, mlp_ratio: int = 4) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.self_attn = Attention(width, heads, width)
        self.norm2 = nn.LayerNorm(width)
        self.cross_attn = Attention(width, heads, memory_dim)
        self.norm3 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, mlp_ratio * width), nn.GELU(), nn.Linear(mlp_ratio * width, width))

    def forward(
        self,
        x: Tensor,
        cache: LayerCache,
        self_mask: Tensor | None,
        cross_mask: Tensor | None,
        cross_gate: Tensor | None,
    ) -> tuple[Tensor, LayerCache]:
        """Run the new positions ``x`` (B, T, width); return them and the cache extended by them."""
        h = self.norm1(x)
        k, v = self.self_attn.keys_values(h)  # (B, H, T, hd)
        if cache.self_k is not None:
            k = torch.cat([cache.self_k, k], dim=2)  # (B, H, past + T, hd)
            v = torch.cat([cache.self_v, v], dim=2)  # type: ignore[list-item]
        x = x + self.self_attn(h, k, v, self_mask)
        cross = self.cross_attn(self.norm2(x), cache.cross_k, cache.cross_v, cross_mask)
        # Rows whose memory is all padding attended to junk (to avoid NaN); drop that update.
        x = x + (cross if cross_gate is None else cross * cross_gate)
        x = x + self.mlp(self.norm3(x))
        return x, LayerCache(cache.cross_k, cache.cross_v, k, v)


class TransformerDecoder(TextDecoder[DecoderCache]):
    """Token decoder conditioned on a memory; learned positions; tied input/output embeddings."""

    def __init__(
        self,
        vocab_size: int,
        width: int,
        depth: int,
        heads: int,
        max_length: int,
        memory_dim: int,
        pad_id: int,
        bos_id: int,
        eos_id: int,
        tie_embeddings: bool = True,
    ) -> None:
        if width % heads:
            raise ValueError(f"width ({width}) must be divisible by heads ({heads})")
        super().__init__(vocab_size, max_length, pad_id, bos_id, eos_id)
        self.width = width
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.position_embedding = nn.Parameter(torch.zeros(max_length, width))
        self.blocks = nn.ModuleList(DecoderBlock(width, heads, memory_dim) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.lm_head = nn.Linear(width, vocab_size, bias=False)
        self.apply(_init_weights)
        nn.init.normal_(self.position_embedding, std=0.02)
        if tie_embeddings:
            self.lm_head.weight = self.token_embedding.weight

    def init_cache(self, memory: Tensor, memory_mask: Tensor | None = None) -> DecoderCache:
        """An empty cache holding each block's cross-attention keys/values of ``memory``.

        ``memory_mask`` is not needed here: each step applies it.
        """
        return DecoderCache([LayerCache(*block.cross_attn.keys_values(memory)) for block in self.blocks])

    def forward(
        self,
        input_ids: Tensor,
        memory: Tensor,
        memory_mask: Tensor | None = None,
        attention_mask: Tensor | None = None,
    ) -> Tensor:
        """Teacher forcing: (B, T) token ids -> (B, T, V) next-token logits.

        ``attention_mask`` (B, T), True = real, marks right padding. Causal masking alone
        already keeps padding (which comes after every real token) out of the real positions;
        the mask additionally keeps padded positions from attending to each other.
        """
        T = input_ids.size(1)
        self_mask = _causal_mask(T, 0, input_ids.device)  # (T, T)
        if attention_mask is not None:
            # Each position may always see itself, so a row of padding never has an empty softmax.
            own = torch.eye(T, dtype=torch.bool, device=input_ids.device)
            self_mask = (self_mask & (attention_mask.bool()[:, None, :] | own)).unsqueeze(1)  # (B, 1, T, T)
        logits, _ = self._decode(input_ids, self.init_cache(memory), memory_mask, self_mask)
        return logits

    def forward_step(
        self,
        input_ids: Tensor,
        memory: Tensor,
        memory_mask: Tensor | None = None,
        cache: DecoderCache | None = None,
    ) -> tuple[Tensor, DecoderCache]:
        """Decode new tokens (B, t) after those in ``cache``: -> ((B, t, V) logits, extended cache).

        ``memory`` is only read when ``cache`` is None (the first step); pass the same
        ``memory_mask`` on every step.
        """
        if cache is None:
            cache = self.init_cache(memory)
        t = input_ids.size(1)
        # A single new token may see every cached position, so it needs no mask.
        self_mask = None if t == 1 else _causal_mask(t, cache.length, input_ids.device)
        return self._decode(input_ids, cache, memory_mask, self_mask)

    def _decode(
        self, input_ids: Tensor, cache: DecoderCache, memory_mask: Tensor | None, self_mask: Tensor | None
    ) -> tuple[Tensor, DecoderCache]:
        start, T = cache.length, input_ids.size(1)
        self.check_length(start + T)
        x = self.token_embedding(input_ids) + self.position_embedding[start : start + T]  # (B, T, D)
        cross_mask, cross_gate = _memory_attention_mask(memory_mask, x.dtype)
        layers = []
        for block, layer_cache in zip(self.blocks, cache.layers):
            x, layer_cache = block(x, layer_cache, self_mask, cross_mask, cross_gate)
            layers.append(layer_cache)
        return self.lm_head(self.norm(x)), DecoderCache(layers, start + T)


def _causal_mask(new: int, past: int, device: torch.device) -> Tensor:
    """(new, past + new) bool: new position i (absolute past + i) may attend to keys 0..past + i."""
    return torch.ones(new, past + new, dtype=torch.bool, device=device).tril(diagonal=past)


def _memory_attention_mask(memory_mask: Tensor | None, dtype: torch.dtype) -> tuple[Tensor | None, Tensor | None]:
    """(B, S) memory mask -> ((B, 1, 1, S) attention mask, (B, 1, 1) gate or None).

    A row with no real memory would give an all-masked softmax (NaN), so it attends to
    everything instead and the gate zeroes its cross-attention output.
    """
    if memory_mask is None:
        return None, None
    safe, gate = safe_memory_mask(memory_mask, dtype)
    return safe[:, None, None, :], None if gate is None else gate[:, None, None]


def _init_weights(module: nn.Module) -> None:
    # GPT-2 style: small normal weights keep the initial logits near uniform.
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
