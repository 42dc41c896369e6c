"""The interface every fusion module offers.

``forward(features, present) -> FusionOutput``:
- ``features``: modality name -> EncoderOutput for the modalities that were encoded in this
  batch. A modality absent from the whole batch is simply not in the dict.
- ``present``: modality name -> (B,) bool, False where that sample lacks the modality (its
  features are placeholders and must not influence the output or receive gradient).
A fusion module is built with ``input_dims`` (modality -> D) and exposes ``output_dim``.
It must never produce NaN, even when a sample has no modality at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor, nn

from polymodal.modules.encoders.base import EncoderOutput


@dataclass
class FusionOutput:
    pooled: Tensor  # (B, output_dim)
    tokens: Tensor | None = None  # (B, T, D) for fusion that keeps a sequence (attention, graph)
    mask: Tensor | None = None  # (B, T) bool
    # Auxiliary training losses the fusion asks to be minimised beside the task's (name -> scalar, weighted).
    losses: dict[str, Tensor] = field(default_factory=dict)


class Fusion(nn.Module):
    output_dim: int
    # True where the fused vector is an average of per-modality predictions (late fusion): a model's head on it
    # must be linear, so that head(average) is the average of each modality's head(prediction).
    predictions_only: bool = False

    def forward(
        self, features: dict[str, EncoderOutput], present: dict[str, Tensor]
    ) -> FusionOutput:  # pragma: no cover
        raise NotImplementedError
