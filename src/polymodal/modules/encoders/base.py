"""The one interface every encoder offers, whatever its modality.

``forward(x, mask=None) -> EncoderOutput`` where ``tokens`` is (B, T, D), ``pooled`` is (B, D)
and ``mask`` is (B, T) bool with True for real tokens (None when every token is real, e.g.
image patches). ``output_dim`` is D. Audio and video encoders will implement the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from polymodal.modules.encoders.cache import FeatureCache


@dataclass
class EncoderOutput:
    tokens: Tensor  # (B, T, D)
    pooled: Tensor  # (B, D)
    mask: Tensor | None = None  # (B, T) bool, True = real token
    # (h, w) when the last h*w tokens are a spatial feature map in row-major order (any tokens before
    # them, e.g. a CLS token, are not on it); None for sequences. FiLM fusion convolves over it.
    grid: tuple[int, int] | None = None


class Encoder(nn.Module):
    """Base class: subclasses set ``modality`` and ``output_dim`` and implement ``forward``.

    Freezing helpers work on ``blocks()`` (the ordered list of layers), so partial
    unfreezing is uniform across architectures. A fully frozen encoder stays in eval mode, and
    :meth:`cache_outputs` can then memoise its outputs per input sample.
    """

    modality: str = "unknown"
    output_dim: int
    grad_checkpointing: bool = False  # subclasses honour it in forward while training
    feature_cache: FeatureCache | None = None

    def forward(self, x: Tensor, mask: Tensor | None = None) -> EncoderOutput:  # pragma: no cover
        raise NotImplementedError

    def __call__(self, x: Tensor, mask: Tensor | None = None) -> EncoderOutput:
        if self.feature_cache is not None:
            return self.feature_cache.lookup(self, x, mask)
        return super().__call__(x, mask)

    @property
    def frozen(self) -> bool:
        """No parameter trains (read from ``requires_grad`` each time, so unfreezing by hand counts)."""
        return not any(p.requires_grad for p in self.parameters())

    def train(self, mode: bool = True) -> Encoder:
        # Frozen means frozen, statistics included: in train mode a frozen tower's BatchNorm would
        # normalise with batch statistics (and overwrite its running ones) and dropout would stay on.
        return super().train(mode and not self.frozen)

    def cache_outputs(self, max_items: int) -> None:
        """Memoise this (fully frozen) encoder's outputs per input sample, up to ``max_items`` samples.

        A locked tower then costs one forward pass per distinct input instead of one per step
        (see :class:`~polymodal.modules.encoders.cache.FeatureCache`). Raises ValueError when a
        parameter still trains.
        """
        from polymodal.modules.encoders.cache import FeatureCache

        self.feature_cache = FeatureCache.for_encoder(self, max_items)
        if not hasattr(self, "_cache_reload_hook"):  # new weights, new store: outputs of the old ones must not be served
            self._cache_reload_hook = self.register_load_state_dict_post_hook(_refresh_feature_cache)

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
        self.feature_cache = None

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable


def _refresh_feature_cache(encoder: nn.Module, incompatible_keys: object) -> None:
    cache = encoder.feature_cache  # type: ignore[union-attr]
    if cache is not None:
        encoder.cache_outputs(cache.max_items)  # type: ignore[operator]


def masked_mean(tokens: Tensor, mask: Tensor | None) -> Tensor:
    """Mean over real tokens; (B, T, D), (B, T) -> (B, D). All-padding rows give zeros."""
    if mask is None:
        return tokens.mean(dim=1)
    weights = mask.to(tokens.dtype).unsqueeze(-1)  # (B, T, 1)
    return (tokens * weights).sum(1) / weights.sum(1).clamp_min(1.0)


def last_token(tokens: Tensor, mask: Tensor | None) -> Tensor:
    """The last real token of each row (EOS pooling); (B, T, D) -> (B, D)."""
    if mask is None:
        return tokens[:, -1]
    lengths = mask.long().sum(1).clamp_min(1) - 1  # (B,)
    return tokens[torch.arange(tokens.size(0), device=tokens.device), lengths]
