"""Tasks join a composed model with its weighted losses.

A task is an ``nn.Module`` (so learnable loss parameters such as the CLIP temperature are
optimised and checkpointed with the model) whose ``forward(model, batch)`` returns a dict of
named loss values plus their weighted sum under ``"loss"``. The batch is a
:class:`polymodal.data.collate.Batch` (or anything with the same attributes).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polymodal.modules.losses import CaptionLoss, ClipLoss, CrossEntropyLoss


def _weighted(parts: dict[str, tuple[float, Tensor]]) -> dict[str, Tensor]:
    out = {name: value for name, (_, value) in parts.items()}
    out["loss"] = sum(weight * value for weight, value in parts.values())  # type: ignore[assignment]
    return out


class ContrastiveTask(nn.Module):
    """Dual encoder + CLIP (or SigLIP) loss on (image, caption) pairs; with the batch's hard
    negative captions (``negative_text_ids``) as extra image->text candidates when it has them."""

    def __init__(self, loss: nn.Module | None = None) -> None:
        super().__init__()
        self.loss = loss if loss is not None else ClipLoss()

    def forward(self, model: nn.Module, batch: Any) -> dict[str, Tensor]:
        negatives = getattr(batch, "negative_text_ids", None)
        if negatives is None:
            out = model(batch.images, batch.text_ids, batch.text_mask)
            return _weighted({"contrastive": (1.0, self.loss(out["image_features"], out["text_features"]))})
        # One forward over captions + negatives (a DDP-wrapped model must see each parameter used once per step).
        # Rows without a negative stay in (all padding) so every process gathers the same shape; the loss drops them.
        ids, mask = _stack_padded([(batch.text_ids, batch.text_mask), (negatives, batch.negative_text_mask)])
        out = model(batch.images, ids, mask)
        texts, negative_features = out["text_features"].split([batch.text_ids.size(0), negatives.size(0)])
        loss = self.loss(out["image_features"], texts, negative_features, batch.negative_present)
        return _weighted({"contrastive": (1.0, loss)})


def _stack_padded(parts: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    """Concatenate (ids, mask) pairs of different lengths along the batch, right-padding with 0 / False."""
    length = max(ids.size(1) for ids, _ in parts)
    ids = torch.cat([F.pad(i, (0, length - i.size(1))) for i, _ in parts])  # (sum B, T)
    mask = torch.cat([F.pad(m, (0, length - m.size(1))) for _, m in parts])
    return ids, mask


class ClassificationTask(nn.Module):
    """FusionClassifier + cross-entropy on ``batch.labels``; modalities absent from the whole
    batch are not passed, per-sample absence goes in as presence masks."""

    def __init__(self, loss: nn.Module | None = None) -> None:
        super().__init__()
        self.loss = loss if loss is not None else CrossEntropyLoss()

    def forward(self, model: nn.Module, batch: Any) -> dict[str, Tensor]:
        logits = model(*classifier_inputs(batch))
        return _weighted({"classification": (1.0, self.loss(logits, *labels_of(batch)))})


def labels_of(batch: Any) -> tuple[Tensor, Tensor]:
    """Targets and their presence mask: unlabelled samples must not train as class 0."""
    if batch.labels is None:
        raise ValueError(f"batch of {len(batch.ids)} samples has no labels (ids {batch.ids[:3]}...)")
    return batch.labels, batch.label_present


def classifier_inputs(batch: Any) -> tuple[dict[str, tuple[Tensor, Tensor | None]], dict[str, Tensor]]:
    inputs: dict[str, tuple[Tensor, Tensor | None]] = {}
    present: dict[str, Tensor] = {}
    if batch.images is not None and bool(batch.image_present.any()):
        inputs["image"] = (batch.images, None)
        present["image"] = batch.image_present
    if batch.text_ids is not None and bool(batch.text_present.any()):
        inputs["text"] = (batch.text_ids, batch.text_mask)
        present["text"] = batch.text_present
    return inputs, present


class CaptionTask(nn.Module):
    """Captioner + teacher-forced LM loss; with ``contrastive_weight > 0`` and a CoCa-style
    captioner, a CLIP loss on the same pairs is added."""

    def __init__(self, contrastive_weight: float = 0.0, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.caption_loss = CaptionLoss(label_smoothing=label_smoothing)
        self.contrastive_weight = contrastive_weight
        self.contrastive_loss = ClipLoss() if contrastive_weight > 0 else None

    def forward(self, model: nn.Module, batch: Any) -> dict[str, Tensor]:
        out = model(batch.images, batch.text_ids, batch.text_mask)
        parts = {"caption": (1.0, self.caption_loss(out["logits"], batch.text_ids, batch.text_mask))}
        if self.contrastive_loss is not None:
            if "image_features" not in out:
                raise ValueError("contrastive_weight > 0 needs a captioner with a contrastive_text_encoder")
            parts["contrastive"] = (self.contrastive_weight, self.contrastive_loss(out["image_features"], out["text_features"]))
        return _weighted(parts)


class VQATask(nn.Module):
    """VQAModel: cross-entropy over the answer vocabulary (``batch.labels``), or the LM loss
    on answer tokens (``batch.extra['answer_ids']`` / ``['answer_mask']``) for generation."""

    def __init__(self) -> None:
        super().__init__()
        self.classify_loss = CrossEntropyLoss()
        self.generate_loss = CaptionLoss()

    def forward(self, model: nn.Module, batch: Any) -> dict[str, Tensor]:
        if getattr(model, "answer_head", None) is not None:
            logits = model(batch.images, batch.text_ids, batch.text_mask)
            return _weighted({"answer": (1.0, self.classify_loss(logits, *labels_of(batch)))})
        if "answer_ids" not in batch.extra:
            raise ValueError(
                "generative VQA training needs tokenized answers (batch.extra['answer_ids'/'answer_mask']); "
                "the recipe pipeline supports answer_mode 'classify' only so far"
            )
        answer_ids, answer_mask = batch.extra["answer_ids"], batch.extra["answer_mask"]
        logits = model(batch.images, batch.text_ids, batch.text_mask, answer_ids=answer_ids, answer_mask=answer_mask)
        return _weighted({"answer": (1.0, self.generate_loss(logits, answer_ids, answer_mask))})
