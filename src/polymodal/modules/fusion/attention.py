"""Cross-modal attention fusion: one direction (``cross_attention``) or all (``co_attention``).

Each modality's tokens are projected to a shared width ``dim`` (plus a learned modality
embedding). A *query* modality's tokens are updated by stacked pre-norm blocks that attend
to the tokens of every other modality (their padding and absent samples masked out). The
fused tokens, projected to ``output_dim``, are returned with their mask (a caption decoder
can attend to them); ``pooled`` is their masked mean, optionally gated by other modalities
(``gate_by``: a product after the attention).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from polymodal.modules.encoders.base import EncoderOutput, masked_mean
from polymodal.modules.fusion._common import MaskedFusion, ModalityFeatures, any_present, keep_where, mlp
from polymodal.modules.fusion.base import FusionOutput
from polymodal.modules.fusion.product import present_product
from polymodal.modules.layers import attend


class CrossAttentionBlock(nn.Module):
    """Pre-norm block: ``x += Attn(LN(x), LN(ctx))``, then ``x += MLP(LN(x))``.

    A sample with no real context token (the other modalities are all absent) skips the
    attention and keeps its own tokens (:func:`~polymodal.modules.layers.attend` keeps its
    all-masked rows finite; their result is discarded).
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"CrossAttentionBlock: dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.dropout = dropout
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim)
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = mlp(dim, int(dim * mlp_ratio), dim, dropout)

    def forward(self, x: Tensor, ctx: Tensor, ctx_mask: Tensor) -> Tensor:
        """x (B, Tq, D), ctx (B, Tk, D), ctx_mask (B, Tk) bool -> (B, Tq, D)."""
        B, Tq, D = x.shape
        Tk, H = ctx.shape[1], self.heads
        has_ctx = ctx_mask.any(1)  # (B,)
        q = self.q(self.norm_q(x)).view(B, Tq, H, D // H).transpose(1, 2)  # (B, H, Tq, hd)
        k, v = self.kv(self.norm_kv(ctx)).view(B, Tk, 2, H, D // H).permute(2, 0, 3, 1, 4)  # 2 x (B, H, Tk, hd)
        # attend lets a row with no real key see every key (finite, and discarded by keep_where below).
        attended = attend(q, k, v, ctx_mask, dropout=self.dropout if self.training else 0.0)
        attended = attended.transpose(1, 2).reshape(B, Tq, D)  # (B, Tq, D)
        x = x + keep_where(self.out(attended), has_ctx)
        return x + self.mlp(self.norm_mlp(x))


class AttentionFusion(MaskedFusion):
    """Stacked cross-attention where each modality in ``queries`` attends to all the others.

    The output tokens are the fused query tokens. A sample that lacks every query modality
    falls back to the mean of the other modalities' (projected) tokens for ``pooled``.

    ``gate_by`` (non-query modalities): ``pooled`` is multiplied element-wise by ``1 + g_m`` for each, ``g_m`` a
    projection of modality ``m``'s mean token (an absent ``m``: no gate). An answer that is an XOR of what the
    query read and what ``m`` holds ("the X made the sound": X acted first, the sound came first) is then a linear
    function of the product, as in a product fusion, where the attention's sums leave it to be found by chance.
    """

    def __init__(
        self,
        input_dims: Mapping[str, int],
        output_dim: int,
        queries: Sequence[str],
        dim: int = 256,
        heads: int = 4,
        layers: int = 2,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        gate_by: Sequence[str] = (),
    ) -> None:
        super().__init__(input_dims, output_dim)
        if len(self.modalities) < 2:
            raise ValueError(f"{type(self).__name__} needs at least two modalities, got {self.modalities}")
        unknown = [q for q in queries if q not in self.input_dims]
        if unknown or not queries:
            raise ValueError(f"{type(self).__name__}: query modalities {list(queries)} must be among {self.modalities}")
        self.queries = list(queries)
        self.proj = nn.ModuleDict({m: nn.Linear(d, dim) for m, d in self.input_dims.items()})
        self.modality_embed = nn.Parameter(torch.randn(len(self.modalities), dim) * 0.02)
        self.blocks = nn.ModuleList(
            nn.ModuleDict({q: CrossAttentionBlock(dim, heads, mlp_ratio, dropout) for q in self.queries})
            for _ in range(layers)
        )
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, output_dim)
        bad_gates = [m for m in gate_by if m not in self.input_dims or m in self.queries]
        if bad_gates:
            others = [m for m in self.modalities if m not in self.queries]
            raise ValueError(
                f"{type(self).__name__}: gate_by {bad_gates} must be among the non-query modalities {others}"
            )
        self.gates = nn.ModuleDict({m: nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, output_dim)) for m in gate_by})

    def forward(self, features: dict[str, EncoderOutput], present: dict[str, Tensor]) -> FusionOutput:
        inputs = self.gather(features, present)
        return self.fuse(inputs, self.project(inputs))

    def project(self, inputs: dict[str, ModalityFeatures]) -> dict[str, Tensor]:
        """Each modality's tokens at the shared width, with its modality embedding: (B, T, dim)."""
        return {m: self.proj[m](x.tokens) + self.modality_embed[i] for i, (m, x) in enumerate(inputs.items())}

    def fuse(self, inputs: dict[str, ModalityFeatures], streams: dict[str, Tensor]) -> FusionOutput:
        """The query streams through the attention blocks, normed, projected and pooled."""
        for layer in self.blocks:
            updated = {}
            for q in self.queries:  # every query reads the previous layer's streams (simultaneous update)
                others = [m for m in self.modalities if m != q]
                ctx = torch.cat([streams[m] for m in others], dim=1)  # (B, sum T, dim)
                ctx_mask = torch.cat([inputs[m].mask for m in others], dim=1)  # (B, sum T)
                updated[q] = layer[q](streams[q], ctx, ctx_mask)
            streams.update(updated)

        rest = [m for m in self.modalities if m not in self.queries]
        tokens = self.head(self.norm(torch.cat([streams[q] for q in self.queries], dim=1)))  # (B, Tq, out)
        mask = torch.cat([inputs[q].mask for q in self.queries], dim=1)  # (B, Tq)
        pooled = masked_mean(tokens, mask)
        if rest:
            rest_tokens = self.head(self.norm(torch.cat([streams[m] for m in rest], dim=1)))
            fallback = masked_mean(rest_tokens, torch.cat([inputs[m].mask for m in rest], dim=1))
            pooled = torch.where(mask.any(1, keepdim=True), pooled, fallback)
        if self.gates:
            gates = {m: 1 + gate(masked_mean(streams[m], inputs[m].mask)) for m, gate in self.gates.items()}
            pooled = pooled * present_product(gates, inputs)
        return self.finish(pooled, any_present(inputs), tokens=tokens, mask=mask)


class CrossAttentionFusion(AttentionFusion):
    """One-direction cross-attention: ``query``'s tokens (default: the first modality) attend
    to the tokens of all other modalities.
    """

    def __init__(
        self,
        input_dims: Mapping[str, int],
        output_dim: int,
        query: str | None = None,
        dim: int = 256,
        heads: int = 4,
        layers: int = 2,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        gate_by: Sequence[str] = (),
    ) -> None:
        query = query if query is not None else next(iter(input_dims), "")
        super().__init__(input_dims, output_dim, [query], dim, heads, layers, mlp_ratio, dropout, gate_by)


class CoAttentionFusion(AttentionFusion):
    """Co-attention: every modality's tokens attend to all the others' (ViLBERT-style
    two-stream blocks, generalised to any number of modalities). Output tokens are all
    modalities' fused tokens, concatenated.
    """

    def __init__(
        self,
        input_dims: Mapping[str, int],
        output_dim: int,
        dim: int = 256,
        heads: int = 4,
        layers: int = 2,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(input_dims, output_dim, list(input_dims), dim, heads, layers, mlp_ratio, dropout)
