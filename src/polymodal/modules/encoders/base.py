"""The one interface every encoder offers, whatever its modality.

``forward(x, mask=None) -> EncoderOutput`` where ``tokens`` is (B, T, D), ``pooled`` is (B, D)
and ``mask`` is (B, T) bool with True for real tokens (None when every token is real, e.g.
image patches). ``output_dim`` is D. Audio and video encoders will implement the same.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass
class EncoderOutput:
    tokens: Tensor  # (B, T, D)
    pooled: Tensor  # (B, D)
    mask: Tensor | None = None  # (B, T) bool, True = real token
    # (h, w) when the last h*w tokens are a spatial feature map in row-major order (any tokens before
    # them, e.g. a CLS token, are not on it); None for sequences. FiLM fusion convolves over it.
    grid: tuple[int, int] | None = None
    # When tokens are a clip's frames in time order, each frame's cells in a row (a video tower's space-time
    # tokens, (B, T * cells, D)): the cells per frame. Tracking fusion reads each frame's cells apart.
    cells_per_frame: int | None = None


class Encoder(nn.Module):
    """Base class: subclasses set ``modality`` and ``output_dim`` and implement ``forward``.

    Freezing helpers work on ``blocks()`` (the ordered list of layers), so partial
    unfreezing is uniform across architectures. A fully frozen encoder stays in eval mode (and
    :class:`~polymodal.modules.encoders.cache.CachedEncoder` can then memoise its outputs).
    """

    modality: str = "unknown"
    output_dim: int
    grad_checkpointing: bool = False  # subclasses honour it in forward while training

    def forward(self, x: Tensor, mask: Tensor | None = None) -> EncoderOutput:  # pragma: no cover
        raise NotImplementedError

    def pooled(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """(B, D): ``forward(x, mask).pooled``. An embedding reads nothing else, so an encoder may compute it with
        less work than all its tokens take."""
        return self(x, mask).pooled

    @property
    def frozen(self) -> bool:
        """No parameter trains (read from ``requires_grad`` each time, so unfreezing by hand counts)."""
        return not any(p.requires_grad for p in self.parameters())

    def train(self, mode: bool = True) -> Encoder:
        # Frozen means frozen, statistics included: in train mode a frozen tower's BatchNorm would
        # normalise with batch statistics (and overwrite its running ones) and dropout would stay on.
        return super().train(mode and not self.frozen)

    def blocks(self) -> list[nn.Module]:
        """The encoder's stacked layers, first to last. Override in subclasses."""
        return []

    def freeze(self, unfreeze_last: int = 0) -> None:
        """Freeze every parameter, then unfreeze the last ``unfreeze_last`` blocks."""
        for p in self.parameters():
            p.requires_grad_(False)
        if unfreeze_last > 0:
            for block in self.blocks()[-unfreeze_last:]:
                for p in block.parameters():
                    p.requires_grad_(True)
        if self.frozen:
            self.eval()

    def unfreeze(self) -> None:
        for p in self.parameters():
            p.requires_grad_(True)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable


def masked_mean(tokens: Tensor, mask: Tensor | None) -> Tensor:
    """Mean over real tokens; (B, T, D), (B, T) -> (B, D). All-padding rows give zeros."""
    if mask is None:
        return tokens.mean(dim=1)
    weights = mask.to(tokens.dtype).unsqueeze(-1)  # (B, T, 1)
    return (tokens * weights).sum(1) / weights.sum(1).clamp_min(1.0)


def last_index(mask: Tensor) -> Tensor:
    """(B,) the position of each right-padded row's last real token (0 for a row of padding only)."""
    return mask.long().sum(1).clamp_min(1) - 1


def last_token(tokens: Tensor, mask: Tensor | None) -> Tensor:
    """The last real token of each row (EOS pooling); (B, T, D) -> (B, D)."""
    if mask is None:
        return tokens[:, -1]
    return tokens[torch.arange(tokens.size(0), device=tokens.device), last_index(mask)]
