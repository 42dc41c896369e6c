"""Validation during training: a small, fast metric per task for best-checkpoint selection
and early stopping (the full benchmark suites live in the evaluation layer)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader

from polymodal.data.dataset import MultimodalDataset
from polymodal.data.text import TextTokenizer
from polymodal.modules.losses import CaptionLoss
from polymodal.train.tasks import classifier_inputs

Evaluator = Callable[[nn.Module], dict[str, float]]


def _batches(dataset: MultimodalDataset, batch_size: int, model: nn.Module):  # type: ignore[no-untyped-def]
    """Validation batches on the model's device; empty batches (all samples bad) skipped."""
    device = next(model.parameters()).device
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=dataset.collate_fn):
        if len(batch):
            yield batch.to(device)


def recall_at_1(image_features: torch.Tensor, text_features: torch.Tensor) -> dict[str, float]:
    """One caption per image, row i matches row i: recall@1 in both directions."""
    sim = image_features @ text_features.T  # (N, N)
    target = torch.arange(sim.shape[0], device=sim.device)
    i2t = (sim.argmax(1) == target).float().mean().item()
    t2i = (sim.argmax(0) == target).float().mean().item()
    return {"i2t_recall@1": i2t, "t2i_recall@1": t2i, "recall@1": (i2t + t2i) / 2}


def make_evaluator(kind: str, dataset: MultimodalDataset, tokenizer: TextTokenizer, batch_size: int = 64) -> Evaluator:
    def contrastive(model: nn.Module) -> dict[str, float]:
        images, texts = [], []
        for batch in _batches(dataset, batch_size, model):
            out = model(batch.images, batch.text_ids, batch.text_mask)
            images.append(out["image_features"].float())
            texts.append(out["text_features"].float())
        return recall_at_1(torch.cat(images), torch.cat(texts))

    def classification(model: nn.Module) -> dict[str, float]:
        correct = total = 0
        for batch in _batches(dataset, batch_size, model):
            if kind == "vqa":
                logits = model(batch.images, batch.text_ids, batch.text_mask)
            else:
                logits = model(*classifier_inputs(batch))
            keep = batch.label_present
            correct += int((logits.argmax(-1)[keep] == batch.labels[keep]).sum())
            # VQA: an answer outside the training vocabulary has no label but counts as a miss.
            total += len(batch) if kind == "vqa" else int(keep.sum())
        return {"accuracy": correct / max(total, 1)}

    def caption(model: nn.Module) -> dict[str, float]:
        loss_fn = CaptionLoss()
        losses, n = 0.0, 0
        for batch in _batches(dataset, batch_size, model):
            logits = model(batch.images, batch.text_ids, batch.text_mask)["logits"]
            losses += float(loss_fn(logits, batch.text_ids, batch.text_mask)) * len(batch)
            n += len(batch)
        return {"caption_loss": losses / max(n, 1)}

    return {"contrastive": contrastive, "classification": classification, "vqa": classification, "caption": caption}[kind]
