"""Validation during training: a small, fast metric per objective for best-checkpoint selection and early
stopping (the full benchmark suites live in the evaluation layer)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader

from polymodal.data.collate import Batch
from polymodal.data.dataset import MultimodalDataset
from polymodal.modules.losses import CaptionLoss
from polymodal.train.objectives import denoising_target

Validator = Callable[[nn.Module], dict[str, float]]

# The metric each objective's validation reports, by objective kind (contrastive: see contrastive_metrics;
# adversarial: one per kind of pair the discriminator judges). Classification's depends on its loss.
OBJECTIVE_METRIC = {
    "classification": "accuracy",
    "vqa": "accuracy",
    "caption": "caption_loss",
    "matching": "accuracy",
    "masked_lm": "accuracy",
    "diffusion": "denoising_loss",
}
LOSS_METRIC = {"bce": "exact_match", "mse": "rmse"}  # classification under another loss than cross_entropy
JUDGED = ("real", "generated", "mismatched")  # the adversarial validation's kinds of pair


def _judged_metric(name: str) -> str:
    return f"discriminator_{name}_accuracy"


def _direction_names(a: str, b: str) -> tuple[str, str]:
    return ("i", "t") if (a, b) == ("image", "text") else (a, b)


def contrastive_metrics(pairs: Sequence[tuple[str, str]]) -> list[str]:
    """The contrastive validation's metrics: both directions of one pair, or one per pair; and their mean."""
    if len(pairs) == 1:
        x, y = _direction_names(*pairs[0])
        return [f"{x}2{y}_recall@1", f"{y}2{x}_recall@1", "recall@1"]
    return [f"{a}-{b}_recall@1" for a, b in pairs] + ["recall@1"]


def validation_metrics(objective: str, loss: str | None, pairs: Sequence[tuple[str, str]]) -> list[str]:
    """The names of the metrics :func:`make_validator` reports for an objective of kind ``objective`` with
    ``loss`` and the modality ``pairs`` it aligns: what ``train.metric`` may name."""
    if objective == "contrastive":
        return contrastive_metrics(pairs)
    if objective == "adversarial":
        return [_judged_metric(name) for name in JUDGED]
    if objective == "classification" and loss in LOSS_METRIC:
        return [LOSS_METRIC[loss]]
    return [OBJECTIVE_METRIC[objective]]


def _batches(dataset: MultimodalDataset, batch_size: int, model: nn.Module) -> Iterator[Batch]:
    """Validation batches on the model's device; empty batches (all samples bad) skipped."""
    device = next(model.parameters()).device
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=dataset.collate_fn):
        if len(batch):
            yield batch.to(device)


def recall_at_1(a: torch.Tensor, b: torch.Tensor, names: tuple[str, str] = ("i", "t")) -> dict[str, float]:
    """One ``b`` row per ``a`` row, row i matches row i: recall@1 in both directions (``i2t_recall@1`` ...)."""
    sim = a @ b.T  # (N, N)
    target = torch.arange(sim.shape[0], device=sim.device)
    forward = (sim.argmax(1) == target).float().mean().item()
    backward = (sim.argmax(0) == target).float().mean().item()
    x, y = names
    return {f"{x}2{y}_recall@1": forward, f"{y}2{x}_recall@1": backward, "recall@1": (forward + backward) / 2}


def make_validator(
    objective_module: nn.Module, objective: str, dataset: MultimodalDataset, batch_size: int = 64
) -> Validator:
    """The validation metric of an objective of kind ``objective``: ``contrastive`` (recall@1, averaged over
    the pairs), ``classification`` and ``vqa`` (accuracy), ``caption`` (caption loss), ``matching`` (accuracy
    on matches and on partners shifted by one), ``masked_lm`` (accuracy on masked tokens, the same masks each
    time), ``diffusion`` (denoising loss), ``adversarial`` (the discriminator's accuracy on each kind of pair)."""
    pairs = getattr(objective_module, "pairs", None) or [getattr(objective_module, "pair", ("image", "text"))]

    def contrastive(model: nn.Module) -> dict[str, float]:
        features: dict[str, list[torch.Tensor]] = {}
        for batch in _batches(dataset, batch_size, model):
            for modality, value in model(batch.inputs).items():
                features.setdefault(modality, []).append(value.float())
        joined = {m: torch.cat(v) for m, v in features.items()}
        if len(pairs) == 1:
            ((a, b),) = pairs
            return recall_at_1(joined[a], joined[b], _direction_names(a, b))
        names = contrastive_metrics(pairs)[:-1]
        out = {name: recall_at_1(joined[a], joined[b])["recall@1"] for name, (a, b) in zip(names, pairs, strict=True)}
        out["recall@1"] = sum(out.values()) / len(out)
        return out

    def classification(model: nn.Module) -> dict[str, float]:
        loss_kind = type(getattr(objective_module, "loss", None)).__name__
        if loss_kind in ("MSELoss", "BCELoss"):
            return regression_or_multilabel(model, loss_kind)
        correct = total = 0
        for batch in _batches(dataset, batch_size, model):
            logits = model(batch.inputs, batch.present)
            keep = batch.label_present
            correct += int((logits.argmax(-1)[keep] == batch.labels[keep]).sum())
            # VQA: an answer outside the training vocabulary has no label but counts as a miss.
            total += len(batch) if objective == "vqa" else int(keep.sum())
        return {OBJECTIVE_METRIC[objective]: correct / max(total, 1)}

    def regression_or_multilabel(model: nn.Module, loss_kind: str) -> dict[str, float]:
        squared = hits = total = 0.0
        for batch in _batches(dataset, batch_size, model):
            keep = batch.label_present
            out = model(batch.inputs, batch.present)[keep]
            labels = batch.labels[keep].to(out.dtype).view_as(out)
            if loss_kind == "MSELoss":
                squared += float(((out - labels) ** 2).sum())
            else:  # a row counts when every one of its labels is predicted right
                hits += float(((out > 0) == (labels > 0.5)).all(-1).sum())
            total += int(keep.sum())
        if loss_kind == "MSELoss":
            return {LOSS_METRIC["mse"]: (squared / max(total, 1)) ** 0.5}
        return {LOSS_METRIC["bce"]: hits / max(total, 1)}

    def caption(model: nn.Module) -> dict[str, float]:
        loss_fn = CaptionLoss()
        losses, n = 0.0, 0
        for batch in _batches(dataset, batch_size, model):
            ids, mask = batch.input("text")
            logits = model(batch.inputs, ids, mask, batch.present)["logits"]
            losses += float(loss_fn(logits, ids, mask)) * len(batch)
            n += len(batch)
        return {OBJECTIVE_METRIC["caption"]: losses / max(n, 1)}

    def matching(model: nn.Module) -> dict[str, float]:
        (a, b), correct, total = pairs[0], 0, 0
        for batch in _batches(dataset, batch_size, model):
            (xa, ma), (xb, mb) = batch.input(a), batch.input(b)
            if len(batch) < 2:
                continue
            shifted = torch.roll(torch.arange(len(batch), device=xb.device), 1)
            for rows, label in ((None, 1), (shifted, 0)):
                other = (xb, mb) if rows is None else (xb[rows], None if mb is None else mb[rows])
                correct += int((model({a: (xa, ma), b: other}).argmax(-1) == label).sum())
                total += len(batch)
        return {OBJECTIVE_METRIC["matching"]: correct / max(total, 1)}

    def masked_lm(model: nn.Module) -> dict[str, float]:
        generator = torch.Generator().manual_seed(0)
        correct = total = 0
        for batch in _batches(dataset, batch_size, model):
            ids, mask = batch.input("text")
            inputs, labels = objective_module.corrupt(ids.cpu(), None if mask is None else mask.cpu(), generator)  # type: ignore[operator]
            logits = objective_module.head(model.encoders["text"](inputs.to(ids.device), mask).tokens)  # type: ignore[operator]
            chosen = labels.to(ids.device) != -100
            correct += int((logits.argmax(-1)[chosen] == labels.to(ids.device)[chosen]).sum())
            total += int(chosen.sum())
        return {OBJECTIVE_METRIC["masked_lm"]: correct / max(total, 1)}

    def diffusion(model: nn.Module) -> dict[str, float]:
        """The denoising loss at the same noise and timesteps every time (drawn from a fixed seed)."""
        generator = torch.Generator().manual_seed(0)
        scheduler = model.schedulers["train"]  # type: ignore[index]
        total, n = 0.0, 0
        for batch in _batches(dataset, batch_size, model):
            images, text = batch.input("image")[0], {"text": batch.input("text")}
            noise = torch.randn(images.shape, generator=generator).to(images.device)
            steps = scheduler.config.num_train_timesteps
            timesteps = torch.randint(0, steps, (images.size(0),), generator=generator).to(images.device)
            prediction = model(text, scheduler.add_noise(images, noise, timesteps), timesteps)
            target = denoising_target(scheduler, images, noise, timesteps)
            total += float(((prediction.float() - target) ** 2).mean()) * len(batch)
            n += len(batch)
        return {OBJECTIVE_METRIC["diffusion"]: total / max(n, 1)}

    def adversarial(model: nn.Module) -> dict[str, float]:
        """How often the discriminator is right: real pairs judged real; generated images (EMA generator, fixed
        noise) and real images with another row's text judged fake."""
        generator = torch.Generator().manual_seed(0)
        right = dict.fromkeys(JUDGED, 0)
        n = 0
        for batch in _batches(dataset, batch_size, model):
            images, text = batch.input("image")[0], model.text_features({"text": batch.input("text")})  # type: ignore[operator]
            noise = model.noise(images.size(0), images.device, generator)  # type: ignore[operator]
            shifted = torch.roll(torch.arange(len(batch), device=images.device), 1)
            judged = {
                "real": model.discriminator(images, text) > 0,  # type: ignore[operator]
                "generated": model.discriminator(model.ema_generator(noise, text), text) < 0,  # type: ignore[operator]
                "mismatched": model.discriminator(images, text[shifted]) < 0,  # type: ignore[operator]
            }
            for name, correct in judged.items():
                right[name] += int(correct.sum())
            n += len(batch)
        return {_judged_metric(name): count / max(n, 1) for name, count in right.items()}

    validators = {
        "contrastive": contrastive,
        "classification": classification,
        "vqa": classification,
        "caption": caption,
        "matching": matching,
        "masked_lm": masked_lm,
        "diffusion": diffusion,
        "adversarial": adversarial,
    }
    return validators[objective]
