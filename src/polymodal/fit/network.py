"""The trained part of a fitted predictor: per-input standardisation -> a registered fusion module -> a head.

Its inputs are the featurizers' vectors, each passed to the fusion module as a one-token encoder output, so every
fusion in :data:`polymodal.modules.fusion.FUSIONS` works unchanged and absent inputs are its presence masks.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from polymodal.modules.encoders.base import EncoderOutput
from polymodal.modules.fusion import FUSIONS
from polymodal.modules.heads.classification import MLPHead


@dataclass(frozen=True)
class Candidate:
    """One architecture the search tries: a fusion (with its options), the fused width and the head."""

    fusion: str
    params: dict[str, Any] = field(default_factory=dict)
    fusion_dim: int = 128
    head_hidden: int | None = None
    dropout: float = 0.1
    lr: float = 1e-3
    weight_decay: float = 1e-4
    solver: str = "adamw"  # or "lbfgs": full batch, weight_decay as an L2 penalty (see fit.search)

    @property
    def label(self) -> str:
        if self.fusion == "late" and not self.params.get("hidden_dim") and not self.head_hidden:
            return "linear (late fusion of linear predictors)"
        head = f"head {self.head_hidden}" if self.head_hidden else "linear head"
        return f"{self.fusion} {self.fusion_dim}, {head}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


MIN_STD = 1e-4  # a feature whose training std is at most this was constant in training: it is given no weight


class Standardize(nn.Module):
    """``(x - mean) / std`` per feature, with the statistics of the training rows that have the input. A feature
    constant in training (a missing flag or "other" slot never set, std <= MIN_STD) reads 0: its weight was never
    trained, so a value it first takes at predict time (a blank cell, an unseen category) must not reach the network.
    Saved predictors keep ``std`` clamped to MIN_STD, so older ones are read the same way."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    def set_statistics(self, x: Tensor) -> None:
        if len(x):
            self.mean.copy_(x.mean(0))
            self.std.copy_(x.std(0, unbiased=False).clamp(min=MIN_STD) if len(x) > 1 else torch.ones_like(x[0]))

    def forward(self, x: Tensor) -> Tensor:
        return torch.where(self.std > MIN_STD, (x - self.mean) / self.std, torch.zeros_like(x))


class FeatureNetwork(nn.Module):
    """Fuses the inputs' feature vectors and predicts ``outputs`` values (class logits, or a regression target)."""

    def __init__(self, input_dims: dict[str, int], candidate: Candidate, outputs: int) -> None:
        super().__init__()
        self.input_dims = dict(input_dims)
        self.candidate = candidate
        self.norms = nn.ModuleDict({name: Standardize(dim) for name, dim in input_dims.items()})
        self.fusion = FUSIONS.build(
            candidate.fusion, input_dims=input_dims, output_dim=candidate.fusion_dim, **candidate.params
        )
        if self.fusion.predictions_only and candidate.head_hidden:
            raise ValueError(
                f"{candidate.fusion} fusion averages predictions: its head must be linear (no head_hidden)"
            )
        self.head = MLPHead(self.fusion.output_dim, outputs, candidate.head_hidden, candidate.dropout)

    def set_statistics(self, features: dict[str, Tensor], present: dict[str, Tensor]) -> None:
        for name, norm in self.norms.items():
            norm.set_statistics(features[name][present[name]])  # type: ignore[operator]

    def forward(self, features: dict[str, Tensor], present: dict[str, Tensor]) -> Tensor:
        encoded = {}
        for name, x in features.items():
            x = self.norms[name](x)
            encoded[name] = EncoderOutput(x.unsqueeze(1), x)
        return self.head(self.fusion(encoded, present).pooled)  # type: ignore[no-any-return]
