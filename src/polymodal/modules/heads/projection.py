"""Projection into a shared contrastive embedding space."""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn

PROJECTION_KINDS = ("linear", "mlp")


class ProjectionHead(nn.Module):
    """``forward(x (B, in_dim)) -> (B, out_dim)``, unnormalised (the contrastive loss normalises).

    ``kind="linear"``: one bias-free Linear, CLIP's projection. ``kind="mlp"``:
    Linear -> GELU -> Linear with a ``hidden`` width (default ``in_dim``), SimCLR's projector.
    """

    def __init__(
        self, in_dim: int, out_dim: int, kind: Literal["linear", "mlp"] = "linear", hidden: int | None = None
    ) -> None:
        super().__init__()
        if kind not in PROJECTION_KINDS:
            raise ValueError(f"ProjectionHead kind must be one of {PROJECTION_KINDS}; got {kind!r}")
        self.in_dim = in_dim
        self.out_dim = out_dim
        self.kind = kind
        if kind == "linear":
            self.proj: nn.Module = nn.Linear(in_dim, out_dim, bias=False)
        else:
            width = hidden or in_dim
            self.proj = nn.Sequential(nn.Linear(in_dim, width), nn.GELU(), nn.Linear(width, out_dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x)
