"""Multiplicative fusion: element-wise product and low-rank bilinear pooling (MLB / MFB).

An absent modality contributes a factor of ones, the neutral element of the product, so the
output is the product of the modalities the sample has and stays defined with any subset.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polymodal.modules.encoders.base import EncoderOutput
from polymodal.modules.fusion._common import MaskedFusion, ModalityFeatures, any_present
from polymodal.modules.fusion.base import FusionOutput


def present_product(factors: dict[str, Tensor], inputs: Mapping[str, ModalityFeatures]) -> Tensor:
    """Element-wise product of per-modality (B, D) factors; absent samples contribute ones."""
    out: Tensor | None = None
    for m, factor in factors.items():
        one = torch.ones((), dtype=factor.dtype, device=factor.device)
        factor = torch.where(inputs[m].present.unsqueeze(-1), factor, one)
        out = factor if out is None else out * factor
    assert out is not None  # MaskedFusion guarantees at least one modality
    return out


class ProductFusion(MaskedFusion):
    """Project each pooled feature to ``output_dim`` and multiply them element-wise."""

    def __init__(self, input_dims: Mapping[str, int], output_dim: int) -> None:
        super().__init__(input_dims, output_dim)
        self.proj = nn.ModuleDict({m: nn.Linear(d, output_dim) for m, d in self.input_dims.items()})

    def forward(self, features: dict[str, EncoderOutput], present: dict[str, Tensor]) -> FusionOutput:
        inputs = self.gather(features, present)
        joint = present_product({m: self.proj[m](x.pooled) for m, x in inputs.items()}, inputs)
        return self.finish(joint, any_present(inputs))


class BilinearFusion(MaskedFusion):
    """Low-rank bilinear pooling of two or more modalities.

    ``mode="mlb"`` (Kim et al. 2017): ``P(tanh(U x) * tanh(V y))`` with joint size ``rank``.
    ``mode="mfb"`` (Yu et al. 2017): ``U x * V y`` of size ``output_dim * factors``, summed over
    each group of ``factors`` (sum pooling), then power (signed sqrt) and L2 normalisation.
    """

    def __init__(
        self,
        input_dims: Mapping[str, int],
        output_dim: int,
        mode: str = "mfb",
        rank: int = 512,
        factors: int = 5,
        dropout: float = 0.1,
    ) -> None:
        super().__init__(input_dims, output_dim)
        if mode not in ("mlb", "mfb"):
            raise ValueError(f"BilinearFusion: mode must be 'mlb' or 'mfb', got {mode!r}")
        self.mode = mode
        self.factors = factors
        joint_dim = rank if mode == "mlb" else output_dim * factors
        self.proj = nn.ModuleDict({m: nn.Linear(d, joint_dim) for m, d in self.input_dims.items()})
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(rank, output_dim) if mode == "mlb" else nn.Identity()

    def forward(self, features: dict[str, EncoderOutput], present: dict[str, Tensor]) -> FusionOutput:
        inputs = self.gather(features, present)
        projected = {m: self.proj[m](x.pooled) for m, x in inputs.items()}
        if self.mode == "mlb":
            joint = self.out(self.dropout(present_product({m: p.tanh() for m, p in projected.items()}, inputs)))
        else:
            joint = self.dropout(present_product(projected, inputs))
            joint = joint.view(joint.shape[0], self.output_dim, self.factors).sum(-1)  # (B, out): sum pooling
            # Signed sqrt with an epsilon: the plain sqrt has an infinite gradient at 0.
            joint = joint.sign() * (joint.abs() + 1e-8).sqrt()
            joint = F.normalize(joint, dim=-1)
        return self.finish(joint, any_present(inputs))
