"""Weighted sum of projected per-modality features."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from polymodal.modules.encoders.base import EncoderOutput
from polymodal.modules.fusion._common import MaskedFusion, presence, present_weighted_sum
from polymodal.modules.fusion.base import FusionOutput


class WeightedSumFusion(MaskedFusion):
    """Project each pooled feature to ``output_dim`` and sum with learned weights.

    The weights are a softmax over learned per-modality scores, renormalised per sample over
    the modalities it has, so a missing modality shifts its weight to the others.
    """

    def __init__(self, input_dims: Mapping[str, int], output_dim: int) -> None:
        super().__init__(input_dims, output_dim)
        self.proj = nn.ModuleDict({m: nn.Linear(d, output_dim) for m, d in self.input_dims.items()})
        self.scores = nn.Parameter(torch.zeros(len(self.modalities)))

    def forward(self, features: dict[str, EncoderOutput], present: dict[str, Tensor]) -> FusionOutput:
        inputs = self.gather(features, present)
        projected = torch.stack([self.proj[m](x.pooled) for m, x in inputs.items()], dim=1)  # (B, M, out)
        here = presence(inputs)  # (B, M)
        return self.finish(present_weighted_sum(projected, here, self.scores), here.any(1))
