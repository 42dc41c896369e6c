"""Late fusion: one predictor per modality, predictions averaged over present modalities."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from polymodal.modules.encoders.base import EncoderOutput
from polymodal.modules.fusion._common import MaskedFusion, mlp, presence, present_weighted_sum
from polymodal.modules.fusion.base import FusionOutput


class LateFusion(MaskedFusion):
    """Late fusion: per-modality logits (Linear, or MLP if ``hidden_dim``) combined per sample.

    ``combine="mean"`` averages the logits of the modalities a sample has; ``"learned"`` uses
    softmax weights over learned per-modality scores, renormalised over present modalities.
    A linear head after it keeps it late fusion (weights summing to one commute with an affine map): the
    prediction is the weighted average of each modality's own classifier, head(predictor(x)). A hidden layer
    belongs in the predictors (``hidden_dim``); in the head it would act on the average (``predictions_only``).
    """

    predictions_only = True

    def __init__(
        self,
        input_dims: Mapping[str, int],
        output_dim: int,
        hidden_dim: int | None = None,
        combine: str = "mean",
        dropout: float = 0.0,
    ) -> None:
        super().__init__(input_dims, output_dim)
        if combine not in ("mean", "learned"):
            raise ValueError(f"LateFusion: combine must be 'mean' or 'learned', got {combine!r}")
        self.combine = combine
        self.predictors = nn.ModuleDict(
            {
                m: nn.Linear(d, output_dim) if not hidden_dim else mlp(d, hidden_dim, output_dim, dropout)
                for m, d in self.input_dims.items()
            }
        )
        scores = torch.zeros(len(self.modalities))
        if combine == "learned":
            self.scores = nn.Parameter(scores)
        else:  # a buffer, so unfreezing the model cannot make "mean" trainable
            self.register_buffer("scores", scores, persistent=False)

    def modality_logits(self, features: dict[str, EncoderOutput], present: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Each modality's prediction and presence: (B, M, output_dim), (B, M) bool."""
        inputs = self.gather(features, present)
        logits = torch.stack([self.predictors[m](x.pooled) for m, x in inputs.items()], dim=1)  # (B, M, out)
        return logits, presence(inputs)

    def forward(self, features: dict[str, EncoderOutput], present: dict[str, Tensor]) -> FusionOutput:
        logits, here = self.modality_logits(features, present)
        # Zero scores give exactly the mean over present modalities, so "mean" freezes them.
        return self.finish(present_weighted_sum(logits, here, self.scores), here.any(1))
