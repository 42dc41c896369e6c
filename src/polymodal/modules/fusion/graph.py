"""Graph fusion: attention-based message passing over modality and token nodes."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polymodal.modules.encoders.base import EncoderOutput, masked_mean
from polymodal.modules.fusion._common import MaskedFusion, any_present, keep_where, masked_softmax, mlp
from polymodal.modules.fusion.base import FusionOutput


class GraphAttentionLayer(nn.Module):
    """One round of GAT-style message passing (Velickovic et al. 2018) in a pre-norm block.

    Edge score ``e_ij = LeakyReLU(a_dst . W h_i + a_src . W h_j)`` per head, softmax over the
    neighbours ``j`` allowed by ``edges``; then ``h += out(messages)`` and ``h += MLP(LN(h))``.
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"GraphAttentionLayer: dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.norm = nn.LayerNorm(dim)
        self.value = nn.Linear(dim, dim, bias=False)
        self.att_src = nn.Parameter(torch.randn(heads, dim // heads) * (dim // heads) ** -0.5)
        self.att_dst = nn.Parameter(torch.randn(heads, dim // heads) * (dim // heads) ** -0.5)
        self.out = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = mlp(dim, int(dim * mlp_ratio), dim, dropout)

    def forward(self, h: Tensor, edges: Tensor) -> Tensor:
        """h (B, N, D), edges (B, N, N) bool (receiver i, sender j) -> (B, N, D)."""
        B, N, D = h.shape
        wh = self.value(self.norm(h)).view(B, N, self.heads, D // self.heads).transpose(1, 2)  # (B, H, N, hd)
        src = (wh * self.att_src.unsqueeze(1)).sum(-1)  # (B, H, N)
        dst = (wh * self.att_dst.unsqueeze(1)).sum(-1)  # (B, H, N)
        scores = F.leaky_relu(dst.unsqueeze(-1) + src.unsqueeze(-2), 0.2)  # (B, H, N_i, N_j)
        weights = self.dropout(masked_softmax(scores, edges.unsqueeze(1), dim=-1))
        messages = (weights @ wh).transpose(1, 2).reshape(B, N, D)  # (B, N, D)
        h = h + keep_where(self.out(messages), edges.any(-1))  # nodes with no neighbour get no update
        return h + self.mlp(self.norm_mlp(h))


class GraphFusion(MaskedFusion):
    """Nodes: one per modality (its pooled feature) plus token nodes; edges join all present nodes.

    ``top_tokens`` keeps the k highest-scoring tokens of each modality as nodes (scored by a
    learned linear layer and scaled by the sigmoid of that score, so the scorer trains, as in
    gPool); ``None`` keeps every token and 0 keeps only the modality nodes. After ``layers``
    rounds of message passing the readout is the mean over present modality nodes. ``tokens``
    and ``mask`` in the output are all nodes, projected to ``output_dim``.
    """

    def __init__(
        self,
        input_dims: Mapping[str, int],
        output_dim: int,
        dim: int = 256,
        heads: int = 4,
        layers: int = 2,
        top_tokens: int | None = 8,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(input_dims, output_dim)
        self.top_tokens = top_tokens
        self.proj = nn.ModuleDict({m: nn.Linear(d, dim) for m, d in self.input_dims.items()})
        # Row 2i marks modality i's own node, row 2i + 1 its token nodes.
        self.node_type = nn.Parameter(torch.randn(2 * len(self.modalities), dim) * 0.02)
        self.scorer = nn.Linear(dim, 1) if top_tokens else None
        self.layers = nn.ModuleList(GraphAttentionLayer(dim, heads, dropout=dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, output_dim)

    def forward(self, features: dict[str, EncoderOutput], present: dict[str, Tensor]) -> FusionOutput:
        inputs = self.gather(features, present)
        nodes, node_mask, is_modality_node = [], [], []
        for i, (m, x) in enumerate(inputs.items()):
            nodes.append((self.proj[m](x.pooled) + self.node_type[2 * i]).unsqueeze(1))  # (B, 1, dim)
            node_mask.append(x.present.unsqueeze(1))
            is_modality_node.append(True)
            if self.top_tokens == 0:
                continue
            tokens = self.proj[m](x.tokens) + self.node_type[2 * i + 1]  # (B, T, dim)
            tokens, mask = self._select(tokens, x.mask)
            nodes.append(tokens)
            node_mask.append(mask)
            is_modality_node.extend([False] * tokens.shape[1])
        h = torch.cat(nodes, dim=1)  # (B, N, dim)
        mask = torch.cat(node_mask, dim=1)  # (B, N)
        edges = mask.unsqueeze(2) & mask.unsqueeze(1)  # (B, N, N), self loops included
        for layer in self.layers:
            h = layer(h, edges)
        out = self.head(self.norm(h))  # (B, N, out)
        modality_nodes = torch.tensor(is_modality_node, device=mask.device)
        pooled = masked_mean(out[:, modality_nodes], mask[:, modality_nodes])
        return self.finish(pooled, any_present(inputs), tokens=out, mask=mask)

    def _select(self, tokens: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Keep the ``top_tokens`` best-scoring real tokens: (B, T, dim) -> (B, k, dim), (B, k)."""
        if self.scorer is None:
            return tokens, mask
        score = self.scorer(tokens).squeeze(-1)  # (B, T)
        ranked = torch.where(mask, score, torch.full((), float("-inf"), dtype=score.dtype, device=score.device))
        k = min(self.top_tokens or tokens.shape[1], tokens.shape[1])
        idx = ranked.topk(k, dim=1).indices  # (B, k); padding is picked only when too few real tokens
        picked = tokens.gather(1, idx.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))  # (B, k, dim)
        gate = score.gather(1, idx).sigmoid().unsqueeze(-1)  # (B, k, 1)
        return picked * gate, mask.gather(1, idx)
