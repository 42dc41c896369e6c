"""Early fusion: concatenate per-modality pooled features, then an MLP."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from polymodal.modules.encoders.base import EncoderOutput
from polymodal.modules.fusion._common import MaskedFusion, any_present, mlp
from polymodal.modules.fusion.base import FusionOutput


class ConcatFusion(MaskedFusion):
    """Early fusion: project each pooled feature, concatenate, MLP to ``output_dim``.

    An absent modality's slot holds a learned "missing" embedding (``missing="learned"``) or
    zeros (``missing="zeros"``), so the MLP can tell "absent" from "present but small".
    """

    def __init__(
        self,
        input_dims: Mapping[str, int],
        output_dim: int,
        hidden_dim: int = 256,
        missing: str = "learned",
        dropout: float = 0.0,
    ) -> None:
        super().__init__(input_dims, output_dim)
        if missing not in ("learned", "zeros"):
            raise ValueError(f"ConcatFusion: missing must be 'learned' or 'zeros', got {missing!r}")
        self.proj = nn.ModuleDict({m: nn.Linear(d, hidden_dim) for m, d in self.input_dims.items()})
        missing_init = torch.zeros(len(self.modalities), hidden_dim)
        if missing == "learned":
            self.missing = nn.Parameter(missing_init)
        else:  # a buffer, so unfreezing the model cannot make the zeros trainable
            self.register_buffer("missing", missing_init, persistent=False)
        self.mlp = mlp(hidden_dim * len(self.modalities), hidden_dim, output_dim, dropout)

    def forward(self, features: dict[str, EncoderOutput], present: dict[str, Tensor]) -> FusionOutput:
        inputs = self.gather(features, present)
        slots = [
            torch.where(x.present.unsqueeze(-1), self.proj[m](x.pooled), self.missing[i])
            for i, (m, x) in enumerate(inputs.items())
        ]
        return self.finish(self.mlp(torch.cat(slots, dim=-1)), any_present(inputs))  # cat: (B, M * hidden)
