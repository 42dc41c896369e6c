"""Thin supervised losses with one signature: ``forward(logits, targets, mask=None) -> loss``.

``mask`` is an optional (B,) bool, True for samples that count (e.g. samples whose label is
missing are False). The loss is the mean over counted samples, and zero - still attached to the
graph, so ``backward`` works - when no sample counts, where a plain mean would give NaN.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def masked_sample_mean(per_sample: Tensor, mask: Tensor | None) -> Tensor:
    """Mean of a (B,) per-sample loss over samples where ``mask`` is True."""
    if mask is None:
        return per_sample.mean()
    if mask.shape != per_sample.shape:
        raise ValueError(f"mask must be (B,) = {tuple(per_sample.shape)}; got {tuple(mask.shape)}")
    mask = mask.bool()
    # where() rather than multiplication: a masked-out NaN times 0 would still be NaN.
    total = torch.where(mask, per_sample, torch.zeros_like(per_sample)).sum()
    return total / mask.sum().clamp_min(1)


def token_cross_entropy(
    logits: Tensor, labels: Tensor, ignore_index: int = -100, label_smoothing: float = 0.0
) -> Tensor:
    """Mean cross entropy over the positions whose label is not ``ignore_index``.

    ``logits`` (..., V), ``labels`` (...). Summing then dividing by the clamped count (instead
    of ``reduction="mean"``) gives zero rather than NaN when nothing is labelled, without a
    host-device sync.
    """
    vocab = logits.size(-1)
    flat_labels = labels.reshape(-1)
    total = F.cross_entropy(
        logits.reshape(-1, vocab),  # (N, V)
        flat_labels,
        ignore_index=ignore_index,
        label_smoothing=label_smoothing,
        reduction="sum",
    )
    return total / (flat_labels != ignore_index).sum().clamp_min(1)


def _per_sample(loss: Tensor) -> Tensor:
    """Average an element-wise loss (B, ...) over everything but the batch dimension -> (B,)."""
    return loss.reshape(loss.size(0), -1).mean(dim=1)


class CrossEntropyLoss(nn.Module):
    """Classification loss: ``logits`` (B, C); ``targets`` (B,) class indices or (B, C) probabilities.

    Index targets equal to ``ignore_index`` are excluded like masked-out samples.
    """

    def __init__(self, label_smoothing: float = 0.0, ignore_index: int = -100) -> None:
        super().__init__()
        self.label_smoothing = label_smoothing
        self.ignore_index = ignore_index

    def forward(self, logits: Tensor, targets: Tensor, mask: Tensor | None = None) -> Tensor:
        if not targets.is_floating_point():
            labelled = targets != self.ignore_index
            mask = labelled if mask is None else mask.bool() & labelled
        per_sample = F.cross_entropy(
            logits, targets, ignore_index=self.ignore_index, label_smoothing=self.label_smoothing, reduction="none"
        )  # (B,)
        return masked_sample_mean(per_sample, mask)


class BCELoss(nn.Module):
    """Binary / multi-label loss on logits: ``logits`` and float ``targets`` of the same shape (B, ...)."""

    def __init__(self, pos_weight: Tensor | None = None) -> None:
        super().__init__()
        self.register_buffer("pos_weight", pos_weight)

    def forward(self, logits: Tensor, targets: Tensor, mask: Tensor | None = None) -> Tensor:
        _check_same_shape(logits, targets, "BCELoss")
        loss = F.binary_cross_entropy_with_logits(
            logits, targets.to(logits.dtype), pos_weight=self.pos_weight, reduction="none"
        )
        return masked_sample_mean(_per_sample(loss), mask)


class MSELoss(nn.Module):
    """Regression loss: predictions ``logits`` and ``targets`` of the same shape (B, ...)."""

    def forward(self, logits: Tensor, targets: Tensor, mask: Tensor | None = None) -> Tensor:
        _check_same_shape(logits, targets, "MSELoss")
        loss = F.mse_loss(logits, targets.to(logits.dtype), reduction="none")
        return masked_sample_mean(_per_sample(loss), mask)


def _check_same_shape(logits: Tensor, targets: Tensor, who: str) -> None:
    # Broadcasting (B, 1) against (B,) silently builds a (B, B) loss; refuse it loudly.
    if logits.shape != targets.shape:
        raise ValueError(f"{who}: logits {tuple(logits.shape)} and targets {tuple(targets.shape)} must match")
