"""FiLM fusion (Perez et al., 2018): the other modalities modulate a spatial feature map.

An image tower's grid of tokens (``EncoderOutput.grid``) is projected to ``dim`` channels, and a learned
projection of each position's (row, column) is added (the paper appends coordinate maps, CoordConv:
claims such as "left of" or "in the top right" need to know where a feature is). Residual blocks then
each run ``conv -> norm -> FiLM -> ReLU``, where FiLM is a per-channel affine map
``(1 + gamma) * h + beta`` whose ``gamma`` and ``beta`` are predicted from the other modalities' pooled
features (a statement, a question). The result is pooled over positions (max by default: "is there a
red circle anywhere").

True and false claims about the same image differ in one word, so only an interaction between text and
image separates them: FiLM's ``gamma * h`` is one from the first step, at every position of the map,
while fusions of pooled features (concat, GMU) cannot see where anything is (their position claims stay
at chance on ShapesWorld; docs/training.md).

The image is required: a sample without it gets the same output whatever its text (the positions it
would pool are all masked). Hugging Face towers give no grid, so they cannot feed FiLM.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polymodal.modules.encoders.base import EncoderOutput
from polymodal.modules.fusion._common import MaskedFusion, any_present, keep_where
from polymodal.modules.fusion.base import FusionOutput


def coordinate_channels(height: int, width: int, like: Tensor) -> Tensor:
    """(h * w, 2) row and column of each grid position in row-major order, scaled to [-1, 1]."""
    rows = torch.linspace(-1.0, 1.0, height, dtype=like.dtype, device=like.device) if height > 1 else like.new_zeros(1)
    cols = torch.linspace(-1.0, 1.0, width, dtype=like.dtype, device=like.device) if width > 1 else like.new_zeros(1)
    return torch.stack(torch.meshgrid(rows, cols, indexing="ij"), dim=-1).reshape(height * width, 2)


class FiLMBlock(nn.Module):
    """``x + ReLU((1 + gamma) * Norm(Conv(x)) + beta)`` on a (B, C, h, w) map."""

    def __init__(self, channels: int, condition_dim: int, kernel: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel, padding=kernel // 2)
        # The affine part is FiLM's: a norm with its own scale and shift would only duplicate it.
        self.norm = nn.GroupNorm(1, channels, affine=False)
        self.film = nn.Linear(condition_dim, 2 * channels)

    def forward(self, x: Tensor, condition: Tensor) -> Tensor:
        gamma, beta = self.film(condition)[..., None, None].chunk(2, dim=1)  # 2 x (B, C, 1, 1)
        return x + F.relu((1 + gamma) * self.norm(self.conv(x)) + beta)


class FiLMFusion(MaskedFusion):
    """FiLM: the pooled features of every other modality modulate ``visual``'s feature map.

    ``visual`` (default ``"image"``) must come from an encoder with a spatial grid (ViT, ResNet,
    EfficientNet); tokens before the grid (a CLS token) are ignored. ``layers`` FiLM blocks of width
    ``dim`` with ``kernel`` x ``kernel`` convolutions; ``pool`` is ``max`` or ``mean`` over positions.
    Output tokens are the per-position features (a decoder can attend to them).
    """

    def __init__(
        self,
        input_dims: Mapping[str, int],
        output_dim: int,
        visual: str = "image",
        dim: int = 128,
        layers: int = 3,
        kernel: int = 3,
        pool: str = "max",
    ) -> None:
        super().__init__(input_dims, output_dim)
        if visual not in self.input_dims or len(self.modalities) < 2:
            raise ValueError(
                f"FiLMFusion: visual modality {visual!r} and at least one other must be among {self.modalities}; "
                f"name the tower with a feature map in fusion.params.visual"
            )
        if pool not in ("max", "mean"):
            raise ValueError(f"FiLMFusion: pool must be 'max' or 'mean', got {pool!r}")
        if kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"FiLMFusion: kernel must be odd (same-size convolutions), got {kernel}")
        self.visual, self.pool = visual, pool
        self.conditions = [m for m in self.modalities if m != visual]
        condition_dim = sum(self.input_dims[m] for m in self.conditions)
        self.proj = nn.Linear(self.input_dims[visual], dim)
        # The coordinates get their own projection: as 2 of the 1,282 inputs of one (fan-in scaled) layer they
        # would start about 25x weaker than the features (docs/training.md).
        self.position = nn.Linear(2, dim)
        self.blocks = nn.ModuleList(FiLMBlock(dim, condition_dim, kernel) for _ in range(layers))
        self.classifier = nn.Linear(dim, dim)  # per position, before pooling (FiLM's 1x1 conv classifier stem)
        self.head = nn.Linear(dim, output_dim)

    def forward(self, features: dict[str, EncoderOutput], present: dict[str, Tensor]) -> FusionOutput:
        inputs = self.gather(features, present)
        image = inputs[self.visual]
        if image.grid is None:
            if image.present.any():
                raise ValueError(
                    f"FiLMFusion: modality {self.visual!r} has no spatial grid (EncoderOutput.grid); "
                    "use an image encoder with a feature map (vit, cnn, efficientnet; not a Hugging Face tower)"
                )
            grid = (1, 1)  # absent from the whole batch: one masked position (gather's placeholder)
        else:
            grid = image.grid
        height, width = grid
        if image.tokens.shape[1] < height * width:
            raise ValueError(
                f"FiLMFusion: modality {self.visual!r} has {image.tokens.shape[1]} tokens, fewer than its "
                f"{height}x{width} grid"
            )
        tokens, mask = image.tokens[:, -height * width :], image.mask[:, -height * width :]  # (B, hw, D), (B, hw)
        batch = tokens.shape[0]
        x = self.proj(tokens) + self.position(coordinate_channels(height, width, tokens))  # (B, hw, dim)
        x = x.transpose(1, 2).reshape(batch, -1, height, width)
        condition = torch.cat([inputs[m].pooled for m in self.conditions], dim=-1)  # absent ones are zeros
        for block in self.blocks:
            x = block(x, condition)
        per_position = keep_where(F.relu(self.classifier(x.flatten(2).transpose(1, 2))), mask)  # (B, hw, dim), >= 0
        if self.pool == "max":
            pooled = per_position.max(dim=1).values  # masked positions are 0, the floor of a ReLU
        else:
            pooled = per_position.sum(1) / mask.sum(1, keepdim=True).clamp(min=1).to(per_position.dtype)
        tokens_out = keep_where(self.head(per_position), mask)  # masked positions hold zeros, not the head's bias
        return self.finish(self.head(pooled), any_present(inputs), tokens=tokens_out, mask=mask)
