"""Gated multimodal unit (Arevalo et al. 2017), for any number of modalities."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from polymodal.modules.encoders.base import EncoderOutput
from polymodal.modules.fusion._common import MaskedFusion, keep_where, masked_softmax, presence
from polymodal.modules.fusion.base import FusionOutput


class GatedMultimodalUnit(MaskedFusion):
    """``h = sum_i z_i * tanh(W_i x_i)`` with gates ``z`` computed from all inputs together.

    The gate network sees the concatenated pooled features plus the presence flags.
    ``gate="softmax"`` normalises the gates over the present modalities per feature (for two
    modalities this is the paper's ``z`` / ``1 - z``); ``gate="sigmoid"`` gates each modality
    independently. Absent modalities get gate 0 either way.
    """

    def __init__(self, input_dims: Mapping[str, int], output_dim: int, gate: str = "softmax") -> None:
        super().__init__(input_dims, output_dim)
        if gate not in ("softmax", "sigmoid"):
            raise ValueError(f"GatedMultimodalUnit: gate must be 'softmax' or 'sigmoid', got {gate!r}")
        self.gate = gate
        self.hidden = nn.ModuleDict({m: nn.Linear(d, output_dim) for m, d in self.input_dims.items()})
        n = len(self.modalities)
        self.gates = nn.Linear(sum(self.input_dims.values()) + n, n * output_dim)

    def forward(self, features: dict[str, EncoderOutput], present: dict[str, Tensor]) -> FusionOutput:
        inputs = self.gather(features, present)
        here = presence(inputs)  # (B, M)
        hidden = torch.stack([self.hidden[m](x.pooled).tanh() for m, x in inputs.items()], dim=1)  # (B, M, out)
        gate_in = torch.cat([x.pooled for x in inputs.values()] + [here.to(hidden.dtype)], dim=-1)
        scores = self.gates(gate_in).view_as(hidden)  # (B, M, out)
        if self.gate == "softmax":
            z = masked_softmax(scores, here.unsqueeze(-1), dim=1)
        else:
            z = keep_where(scores.sigmoid(), here)
        return self.finish((z * hidden).sum(1), here.any(1))
