"""Shared transformer building blocks: attention, MLP, rotary positions, pre-norm block.

Encoders and decoders use the same :class:`TransformerBlock`. Masks follow the convention of
:mod:`polymodal.modules.encoders.base`: a (B, S) bool ``key_mask`` is True for real tokens
(the opposite of ``nn.MultiheadAttention.key_padding_mask``, which marks tokens to ignore).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.checkpoint import checkpoint

# On CPU, PyTorch's fused (flash) SDPA kernel is slower than plain matmul + softmax for short sequences,
# mostly in the backward pass: shapes-clip trains at 159 ms/step with it and 104 ms/step with the math
# kernel (bf16, 2 cores). Above this many query x key pairs the fused kernel's O(T) memory wins.
CPU_MATH_ATTENTION_MAX_PAIRS = 256 * 256
# Without a backward pass the fused kernel wins much sooner, from about 24 x 24 pairs (benchmarks/README.md, "On AVX2
# kernels"): inference uses this bound.
CPU_MATH_INFERENCE_MAX_PAIRS = 24 * 24


def attention_mask(
    key_mask: Tensor | None, q_len: int, k_len: int, causal: bool, device: torch.device | None = None
) -> Tensor | None:
    """Boolean mask (B or 1, 1, Tq or 1, Tk) for SDPA, True = may attend; None when nothing is masked.

    ``key_mask`` (B, Tk) marks real keys. ``causal`` lets query i see keys j <= i (queries and
    keys aligned at the end, so a query block continuing a cached prefix also works).
    A query that could see no key at all (an all-padding row) is allowed to see every key:
    its output is meaningless but finite, where a fully masked softmax would give NaN.
    """
    if key_mask is None and not causal:
        return None
    mask = torch.ones(1, 1, 1, k_len, dtype=torch.bool, device=device)
    if key_mask is not None:
        mask = key_mask.bool()[:, None, None, :]  # (B, 1, 1, Tk), broadcast over heads and queries
    if causal:
        mask = mask & torch.ones(q_len, k_len, dtype=torch.bool, device=device).tril(k_len - q_len)  # (.., Tq, Tk)
    return mask | ~mask.any(dim=-1, keepdim=True)


def attend(
    q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor | None = None, causal: bool = False, dropout: float = 0.0
) -> Tensor:
    """Scaled dot-product attention on (B, H, T, hd) tensors, with padding and causal masks."""
    if causal and key_mask is None and q.size(-2) == k.size(-2):
        # No explicit mask lets SDPA pick its fused causal kernels.
        return scaled_dot_product(q, k, v, is_causal=True, dropout=dropout)
    mask = attention_mask(key_mask, q.size(-2), k.size(-2), causal, device=q.device)
    return scaled_dot_product(q, k, v, attn_mask=mask, dropout=dropout)


def scaled_dot_product(
    q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | None = None, is_causal: bool = False, dropout: float = 0.0
) -> Tensor:
    """``F.scaled_dot_product_attention`` with the faster kernel for short sequences on CPU (see
    :data:`CPU_MATH_ATTENTION_MAX_PAIRS`). Every attention in polymodal goes through here."""
    math_pairs = CPU_MATH_ATTENTION_MAX_PAIRS if torch.is_grad_enabled() else CPU_MATH_INFERENCE_MAX_PAIRS
    if q.device.type == "cpu" and q.size(-2) * k.size(-2) <= math_pairs:
        with sdpa_kernel(SDPBackend.MATH):
            return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout, is_causal=is_causal)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout, is_causal=is_causal)


class Packing:
    """The real tokens of a padded (B, T) batch as rows of one (N, ...) matrix, and the way back.

    Linear layers, norms and activations act on each token alone, so they can run on the N real tokens and skip
    the padding; only attention needs the padded (B, T) layout, where a key mask keeps padding out.
    """

    def __init__(self, mask: Tensor) -> None:
        self.mask = mask.bool()  # (B, T), True = real token
        self.batch, self.length = self.mask.shape
        self.rows = self.mask.reshape(-1).nonzero().squeeze(1)  # (N,) positions of the real tokens in B * T

    def pack(self, x: Tensor) -> Tensor:
        """(B, T, ...) -> (N, ...)."""
        return x.reshape(self.batch * self.length, *x.shape[2:])[self.rows]

    def pad(self, x: Tensor) -> Tensor:
        """(N, ...) -> (B, T, ...), zeros at the padding."""
        out = x.new_zeros(self.batch * self.length, *x.shape[1:])
        out[self.rows] = x
        return out.view(self.batch, self.length, *x.shape[1:])

    def positions(self) -> Tensor:
        """(N,) the index of each real token in its row (its position, whichever side the padding is on)."""
        return torch.arange(self.length, device=self.mask.device).expand(self.batch, -1)[self.mask]


class RotaryEmbedding(nn.Module):
    """Rotary position embedding (RoFormer), rotate-half layout as in GPT-NeoX / LLaMA.

    Rotating queries and keys by position-dependent angles makes q.k depend only on the
    relative offset, so no position table limits the sequence length.
    """

    def __init__(self, head_dim: int, base: float = 10000.0) -> None:
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"rotary embedding needs an even head_dim, got {head_dim}")
        inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        # Not persistent: derived from head_dim, so checkpoints need not carry it.
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, x: Tensor, offset: int = 0) -> Tensor:
        """Rotate (B, H, T, hd) by the angles of positions offset .. offset+T-1."""
        t = torch.arange(offset, offset + x.size(-2), device=x.device, dtype=torch.float32)
        freqs = torch.outer(t, self.inv_freq)  # (T, hd/2)
        angles = torch.cat([freqs, freqs], dim=-1)  # (T, hd)
        cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
        x1, x2 = x.chunk(2, dim=-1)
        return x * cos + torch.cat([-x2, x1], dim=-1) * sin


class Attention(nn.Module):
    """Multi-head attention; self-attention by default, cross-attention when given ``context``.

    ``context_dim`` sets the width of the cross-attention inputs (defaults to ``dim``).
    Rotary positions, when given, apply to self-attention only: keys from another modality
    have no positions aligned with the queries.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        context_dim: int | None = None,
        dropout: float = 0.0,
        rotary: RotaryEmbedding | None = None,
    ) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.dropout = dropout
        self.rotary = rotary
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(context_dim or dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def _split(self, x: Tensor) -> Tensor:
        b, t, d = x.shape
        return x.view(b, t, self.heads, d // self.heads).transpose(1, 2)  # (B, H, T, hd)

    def forward(
        self,
        x: Tensor,
        key_mask: Tensor | None = None,
        causal: bool = False,
        context: Tensor | None = None,
    ) -> Tensor:
        """x (B, T, D); ``key_mask`` (B, S) marks real keys (of ``context`` if given, else of x)."""
        b, t, d = x.shape
        q = self._split(self.q(x))
        k, v = (self.kv(x if context is None else context)).chunk(2, dim=-1)
        k, v = self._split(k), self._split(v)
        if self.rotary is not None and context is None:
            q, k = self.rotary(q), self.rotary(k)
        y = attend(q, k, v, key_mask, causal, self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(b, t, d))  # (B, T, D)


class MLP(nn.Module):
    """Two-layer feed-forward network with GELU."""

    def __init__(self, dim: int, hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(self.act(self.fc1(x))))


class TransformerBlock(nn.Module):
    """Pre-norm block: self-attention, optional cross-attention, MLP, each residual.

    With ``cross_attention=True`` the block attends to ``context`` (B, S, context_dim) after
    self-attention, as in a captioning / VQA decoder.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        rotary: RotaryEmbedding | None = None,
        cross_attention: bool = False,
        context_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, dropout=dropout, rotary=rotary)
        self.cross_norm = nn.LayerNorm(dim) if cross_attention else None
        self.cross_attn = Attention(dim, heads, context_dim, dropout) if cross_attention else None
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, int(dim * mlp_ratio), dropout)
        self.drop = nn.Dropout(dropout)

    def forward(
        self,
        x: Tensor,
        key_mask: Tensor | None = None,
        causal: bool = False,
        context: Tensor | None = None,
        context_mask: Tensor | None = None,
    ) -> Tensor:
        """x (B, T, D) -> (B, T, D). ``context``/``context_mask`` feed the cross-attention."""
        x = x + self.drop(self.attn(self.norm1(x), key_mask, causal))
        if self.cross_attn is not None:
            if context is None:
                raise ValueError("this block has cross-attention: pass context")
            x = x + self.drop(self.cross_attn(self.cross_norm(x), context_mask, context=context))
        return x + self.mlp(self.norm2(x))


def init_transformer_weights(module: nn.Module, std: float = 0.02) -> None:
    """Truncated-normal(std) for linear/embedding weights, zero biases, unit LayerNorm.

    Use with ``model.apply(init_transformer_weights)``.
    """
    if isinstance(module, (nn.Linear, nn.Conv2d)):
        nn.init.trunc_normal_(module.weight, std=std, a=-2 * std, b=2 * std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.trunc_normal_(module.weight, std=std, a=-2 * std, b=2 * std)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def maybe_checkpoint(fn: Callable[..., Any], *args: Any, enabled: bool, **kwargs: Any) -> Any:
    """Call ``fn(*args, **kwargs)``, through activation checkpointing when ``enabled``.

    Non-reentrant checkpointing: it supports keyword arguments and inputs that do not
    require grad (e.g. the first block of a frozen embedding).
    """
    if enabled:
        return checkpoint(fn, *args, use_reentrant=False, **kwargs)
    return fn(*args, **kwargs)


__all__ = [
    "MLP",
    "Packing",
    "Attention",
    "RotaryEmbedding",
    "TransformerBlock",
    "attend",
    "attention_mask",
    "init_transformer_weights",
    "maybe_checkpoint",
]
