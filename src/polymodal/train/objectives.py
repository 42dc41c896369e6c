"""Training objectives join a composed model with its weighted losses.

An objective is an ``nn.Module`` (so learnable loss parameters such as the CLIP temperature are
optimised and checkpointed with the model) whose ``forward(model, batch)`` returns a dict of
named loss values plus their weighted sum under ``"loss"``. The batch is a
:class:`polymodal.data.collate.Batch` (or anything with the same attributes).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polymodal.modules.attacks import pgd_images
from polymodal.modules.generators import matching_gradient_penalty
from polymodal.modules.losses import (
    CaptionLoss,
    ClipLoss,
    CrossEntropyLoss,
    ItmLoss,
    MaskedLMLoss,
    hinge_discriminator_loss,
    hinge_generator_loss,
    learned_scale,
    mask_tokens,
)


def _weighted(parts: dict[str, tuple[float, Tensor]]) -> dict[str, Tensor]:
    out = {name: value for name, (_, value) in parts.items()}
    out["loss"] = sum(weight * value for weight, value in parts.values())  # type: ignore[assignment]
    return out


class ContrastiveObjective(nn.Module):
    """Embedding model + a contrastive loss (CLIP or SigLIP) per listed modality pair, summed (ImageBind-style
    with more than two modalities). A pair scores the rows that have both modalities, and counts zero when the
    batch has none (with several processes, rows must then be present alike on every rank: the loss gathers equal
    shapes). With the batch's hard negative captions (``negative_text_ids``) they are extra candidates for a pair
    ending in ``text`` (NegCLIP)."""

    def __init__(
        self, pairs: Sequence[tuple[str, str]] = (("image", "text"),), make_loss: Callable[[], nn.Module] = ClipLoss
    ) -> None:
        super().__init__()
        if not pairs:
            raise ValueError("a contrastive objective needs at least one modality pair")
        self.pairs = [(a, b) for a, b in pairs]
        self.losses = nn.ModuleDict({f"{a}-{b}": make_loss() for a, b in self.pairs})

    def _name(self, a: str, b: str) -> str:
        return "contrastive" if len(self.pairs) == 1 else f"contrastive_{a}_{b}"

    def logit_scales(self) -> dict[str, float]:
        """Each pair's learned multiplier of cosine similarities (as its loss applies it), for the saved model."""
        return {name: learned_scale(loss) for name, loss in self.losses.items()}

    def forward(self, model: nn.Module, batch: Any) -> dict[str, Tensor]:
        paired = {m for pair in self.pairs for m in pair}
        inputs = {m: value for m, value in batch.inputs.items() if m in paired}  # towers in no pair do not run
        negatives = getattr(batch, "negative_text_ids", None) if "text" in inputs else None
        if negatives is not None:
            # One forward over captions + negatives (a DDP-wrapped model must see each parameter used once per step).
            # Rows without a negative stay in (all padding) so the shapes do not depend on them; the loss drops them.
            ids, mask = inputs["text"]
            inputs["text"] = _stack_padded([(ids, mask), (negatives, batch.negative_text_mask)])
        features = model(inputs)
        negative_features = None
        if negatives is not None:
            features["text"], negative_features = features["text"].split([ids.size(0), negatives.size(0)])
        parts = {}
        for a, b in self.pairs:
            loss = self.losses[f"{a}-{b}"]
            if a not in features or b not in features:  # a modality no sample of this batch has
                parts[self._name(a, b)] = (1.0, sum(f.sum() for f in features.values()) * 0.0)
                continue
            both = batch.present[a] & batch.present[b]
            if not bool(both.any()):
                parts[self._name(a, b)] = (1.0, (features[a].sum() + features[b].sum()) * 0.0)
                continue
            rows = None if bool(both.all()) else both
            fa, fb = (features[a], features[b]) if rows is None else (features[a][rows], features[b][rows])
            if b == "text" and negative_features is not None:
                neg, neg_present = negative_features, batch.negative_present
                if rows is not None:
                    neg, neg_present = neg[rows], neg_present[rows]
                parts[self._name(a, b)] = (1.0, loss(fa, fb, neg, neg_present))
            else:
                parts[self._name(a, b)] = (1.0, loss(fa, fb))
        return _weighted(parts)


def _stack_padded(parts: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    """Concatenate (ids, mask) pairs of different lengths along the batch, right-padding with 0 / False."""
    length = max(ids.size(1) for ids, _ in parts)
    ids = torch.cat([F.pad(i, (0, length - i.size(1))) for i, _ in parts])  # (sum B, T)
    mask = torch.cat([F.pad(m, (0, length - m.size(1))) for _, m in parts])
    return ids, mask


def _auxiliary_parts(auxiliary: dict[str, Tensor]) -> dict[str, tuple[float, Tensor]]:
    """A model's auxiliary losses (already weighted by the module that made them) as parts of the total."""
    return {name: (1.0, value) for name, value in auxiliary.items()}


def labels_of(batch: Any) -> tuple[Tensor, Tensor]:
    """Targets and their presence mask: unlabelled samples must not train as class 0."""
    if batch.labels is None:
        raise ValueError(f"batch of {len(batch.ids)} samples has no labels (ids {batch.ids[:3]}...)")
    return batch.labels, batch.label_present


class ClassificationObjective(nn.Module):
    """Fusion classifier (or a classifying question answerer) + a supervised loss on ``batch.labels``
    (cross-entropy by default; BCE for multi-label, MSE for regression); per-sample absence goes in as presence
    masks."""

    def __init__(self, loss: nn.Module | None = None, name: str = "classification") -> None:
        super().__init__()
        self.loss = loss if loss is not None else CrossEntropyLoss()
        self.name = name

    def forward(self, model: nn.Module, batch: Any) -> dict[str, Tensor]:
        auxiliary: dict[str, Tensor] = {}
        logits = model(batch.inputs, batch.present, auxiliary=auxiliary)
        labels, present = labels_of(batch)
        if labels.is_floating_point() and labels.shape != logits.shape and labels.numel() == logits.numel():
            labels = labels.view_as(logits)  # one regression target per row: (B,) against (B, 1)
        return _weighted({self.name: (1.0, self.loss(logits, labels, present)), **_auxiliary_parts(auxiliary)})


class CaptionObjective(nn.Module):
    """Captioner + teacher-forced LM loss on the batch's texts; with ``contrastive_weight > 0`` and a
    CoCa-style captioner, a CLIP loss on the same pairs is added."""

    def __init__(self, contrastive_weight: float = 0.0, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.caption_loss = CaptionLoss(label_smoothing=label_smoothing)
        self.contrastive_weight = contrastive_weight
        self.contrastive_loss = ClipLoss() if contrastive_weight > 0 else None

    def forward(self, model: nn.Module, batch: Any) -> dict[str, Tensor]:
        ids, mask = batch.input("text")
        out = model(batch.inputs, ids, mask, batch.present)
        parts = {"caption": (1.0, self.caption_loss(out["logits"], ids, mask))}
        if self.contrastive_loss is not None and "features" in out:  # none when no sample has the source
            source = out["features"]
            parts["contrastive"] = (self.contrastive_weight, self.contrastive_loss(*source.values()))
        return _weighted(parts)


class AnswerObjective(nn.Module):
    """Question answerer: cross-entropy over the answer vocabulary (``batch.labels``), or the LM loss on answer
    tokens (``batch.extra['answer_ids']`` / ``['answer_mask']``) for a generating one (which the recipe pipeline
    does not feed yet: ``make_objective`` refuses it)."""

    def __init__(self, answer_mode: str = "classify") -> None:
        super().__init__()
        self.answer_mode = answer_mode
        self.classify = ClassificationObjective(name="answer")
        self.generate_loss = CaptionLoss()

    def forward(self, model: nn.Module, batch: Any) -> dict[str, Tensor]:
        if self.answer_mode == "classify":
            return self.classify(model, batch)  # type: ignore[no-any-return]
        if "answer_ids" not in batch.extra:
            raise ValueError(
                "generative question answering needs tokenized answers (batch.extra['answer_ids'/'answer_mask'])"
            )
        answer_ids, answer_mask = batch.extra["answer_ids"], batch.extra["answer_mask"]
        auxiliary: dict[str, Tensor] = {}
        logits = model(batch.inputs, batch.present, answer_ids=answer_ids, answer_mask=answer_mask, auxiliary=auxiliary)
        loss = self.generate_loss(logits, answer_ids, answer_mask)
        return _weighted({"answer": (1.0, loss), **_auxiliary_parts(auxiliary)})


class MatchingObjective(nn.Module):
    """Image-text matching (ITM, as in ALBEF/BLIP) on a two-class fusion classifier: each batch's pairs are
    matches (class 1), and every item also meets a partner drawn uniformly from the other items of the batch
    (one per side, class 0)."""

    def __init__(self, pair: tuple[str, str] = ("image", "text")) -> None:
        super().__init__()
        self.pair = pair
        self.loss = ItmLoss()

    def forward(self, model: nn.Module, batch: Any) -> dict[str, Tensor]:
        a, b = self.pair
        (xa, ma), (xb, mb) = batch.input(a), batch.input(b)
        similarity = torch.zeros(len(batch), len(batch), device=xa.device)

        def pair_logits(ia: Tensor, ib: Tensor) -> Tensor:
            inputs = {a: (xa[ia], None if ma is None else ma[ia]), b: (xb[ib], None if mb is None else mb[ib])}
            return model(inputs)  # type: ignore[no-any-return]

        return _weighted({"matching": (1.0, self.loss(similarity, pair_logits))})


class MaskedLMObjective(nn.Module):
    """Masked language modelling (BERT) on the model's ``text`` tower: 15% of the real tokens corrupted
    (80/10/10), predicted by a head the objective owns (pretraining only: it is not saved with the model)."""

    def __init__(self, width: int, vocab_size: int, mask_id: int, special_ids: Sequence[int]) -> None:
        super().__init__()
        self.head = nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.LayerNorm(width), nn.Linear(width, vocab_size))
        self.vocab_size, self.mask_id, self.special_ids = vocab_size, mask_id, list(special_ids)
        self.loss = MaskedLMLoss()

    def corrupt(
        self, ids: Tensor, mask: Tensor | None, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        return mask_tokens(ids, mask, self.vocab_size, self.mask_id, self.special_ids, generator=generator)

    def forward(self, model: nn.Module, batch: Any) -> dict[str, Tensor]:
        ids, mask = batch.input("text")
        inputs, labels = self.corrupt(ids, mask)
        tokens = model.encoders["text"](inputs, mask).tokens  # (B, T, width)
        return _weighted({"masked_lm": (1.0, self.loss(self.head(tokens), labels))})


def _image_rows(batch: Any) -> tuple[Tensor, dict[str, Any], Tensor | None, Tensor]:
    """The batch's images (the target of a generator), its text input, which rows have text, and which rows of the
    batch these are (rows without an image are dropped)."""
    images, _ = batch.input("image")
    ids, mask = batch.input("text") if "text" in batch.inputs else (None, None)
    has_text = batch.present.get("text") if ids is not None else None
    keep = batch.present["image"]
    if not bool(keep.all()):
        images = images[keep]
        if ids is not None:
            ids, mask = ids[keep], (None if mask is None else mask[keep])
            has_text = None if has_text is None else has_text[keep]
    if ids is None:
        raise ValueError(f"a text-to-image objective needs texts; batch of {len(batch.ids)} has none")
    return images, {"text": (ids, mask)}, has_text, keep


def _word_swapped(batch: Any, keep: Tensor) -> tuple[dict[str, Any], Tensor] | None:
    """The batch's hard negative texts (one colour or shape word swapped, ``objective.hard_negatives``) of the kept
    rows, and which of those rows have one; None without any."""
    ids = getattr(batch, "negative_text_ids", None)
    if ids is None:
        return None
    present = batch.negative_present[keep]
    if not bool(present.any()):
        return None
    mask = batch.negative_text_mask
    return {"text": (ids[keep][present], None if mask is None else mask[keep][present])}, present


def _image_text_contrast(
    discriminator: nn.Module, features: Tensor, text: Any, swapped: tuple[Any, Tensor] | None
) -> Tensor:
    """InfoNCE between the discriminator's image features ``phi(x)`` (B, feature_dim) and their texts over the
    batch, in the discriminator's contrastive space; ``swapped`` (the word-swapped texts and which rows have one)
    adds each row's swapped caption as one more text its image must not pick."""
    image = discriminator.embed_image(features).float()  # (B, D)
    negatives, present = None, None
    if swapped is not None:
        swapped_text, present = swapped
        negatives = image.new_zeros(image.shape)  # rows without a swapped caption stay zero; the loss leaves them out
        negatives[present] = discriminator.embed_text(swapped_text).float()
    return _IMAGE_TEXT_CONTRAST(image, discriminator.embed_text(text).float(), negatives, present)


def denoising_target(scheduler: Any, images: Tensor, noise: Tensor, timesteps: Tensor) -> Tensor:
    """What a diffusion model learns to predict from the noised ``images``: by its scheduler's ``prediction_type``,
    the noise, the velocity ``v``, or the clean image."""
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return scheduler.get_velocity(images, noise, timesteps)  # type: ignore[no-any-return]
    if kind == "sample":
        return images
    raise ValueError(f"unknown prediction_type {kind!r}")


class DiffusionObjective(nn.Module):
    """DDPM training of a text-to-image diffusion model: noise each image at a uniformly drawn timestep and regress
    the noise (or ``v``); a share ``empty_text_rate`` of the rows, and every row without a text, see the learned
    empty text instead, so the model also learns the unconditional prediction classifier-free guidance needs."""

    def __init__(self, empty_text_rate: float = 0.1) -> None:
        super().__init__()
        self.empty_text_rate = empty_text_rate

    def forward(self, model: nn.Module, batch: Any) -> dict[str, Tensor]:
        images, text, has_text, _ = _image_rows(batch)
        scheduler = model.schedulers["train"]
        noise = torch.randn_like(images)
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (images.size(0),), device=images.device)
        noisy = scheduler.add_noise(images, noise, timesteps)
        drop = torch.rand(images.size(0), device=images.device) < self.empty_text_rate
        if has_text is not None:
            drop |= ~has_text
        prediction = model(text, noisy, timesteps, drop)
        target = denoising_target(scheduler, images, noise, timesteps)
        return _weighted({"denoising": (1.0, F.mse_loss(prediction.float(), target.float()))})


# XMC-GAN's fixed temperature (0.1): with nothing to learn, the loss holds no state, so one instance serves every
# adversarial objective and adds nothing to their checkpoints.
_IMAGE_TEXT_CONTRAST = ClipLoss(init_temperature=0.1, learn_temperature=False)


class AdversarialObjective(nn.Module):
    """Conditional GAN training in two phases per step: the discriminator (hinge loss; real images with their
    text are real, generated ones and real images with another row's text are fake: matching-aware, so the text
    must matter; with ``objective.hard_negatives``, real images with their text one colour or shape word off are
    fake too, so every word must), then the generator (hinge loss against the updated discriminator), then the
    generator's EMA.

    Two optional terms, weighted by the model (:class:`~polymodal.models.generator.AdversarialGenerator`), push the
    discriminator to check which words go together: ``matching_penalty`` (DF-GAN's matching-aware gradient penalty at
    the real pairs) and ``contrastive_weight`` (an InfoNCE between the discriminator's image features and the texts
    of the batch, the word-swapped captions as extra negatives: on real images in the discriminator's phase, on the
    generated ones in the generator's, as XMC-GAN does).

    The text tower trains with the discriminator (or stays frozen); the generator reads its features detached."""

    phases = ("discriminator", "generator")

    def phase_modules(self, model: nn.Module) -> dict[str, list[str]]:
        return {"discriminator": ["discriminator", "encoders"], "generator": ["generator"]}

    def forward(self, model: nn.Module, batch: Any, phase: str) -> dict[str, Tensor]:
        images, text_input, _, keep = _image_rows(batch)
        text = model.text_features(text_input)
        noise = model.noise(images.size(0), images.device)
        swapped = _word_swapped(batch, keep)
        discriminator = model.discriminator
        if phase == "discriminator":
            with torch.no_grad():
                fakes = model.generator(noise, text.detach())
            real = discriminator.judge(images, text)
            fake_logits = [discriminator.judge(fakes, text).logits]
            mismatched = text[torch.roll(torch.arange(len(text), device=text.device), 1)]
            fake_logits.append(discriminator.judge(images, mismatched).logits)
            swapped_text = None if swapped is None else (model.text_features(swapped[0]), swapped[1])
            if swapped_text is not None:
                fake_logits.append(discriminator.judge(images[swapped_text[1]], swapped_text[0]).logits)
            parts = {"discriminator": (1.0, hinge_discriminator_loss(real.logits, torch.cat(fake_logits)))}
            if model.matching_penalty > 0:
                penalty = matching_gradient_penalty(discriminator, images, text, model.matching_penalty_power)
                parts["matching_penalty"] = (model.matching_penalty, penalty)
            if model.contrastive_weight > 0:
                contrast = _image_text_contrast(discriminator, real.features, text, swapped_text)
                parts["contrastive_real"] = (model.contrastive_weight, contrast)
            return _weighted(parts)
        if phase == "generator":
            text = text.detach()
            generated = discriminator.judge(model.generator(noise, text), text)
            parts = {"generator": (1.0, hinge_generator_loss(generated.logits))}
            if model.contrastive_weight > 0:
                with torch.no_grad():
                    swapped_text = None if swapped is None else (model.text_features(swapped[0]), swapped[1])
                contrast = _image_text_contrast(discriminator, generated.features, text, swapped_text)
                parts["contrastive_generated"] = (model.contrastive_weight, contrast)
            return _weighted(parts)
        raise ValueError(f"unknown phase {phase!r}; phases: {', '.join(self.phases)}")

    def after_phase(self, model: nn.Module, phase: str | None) -> None:
        if phase == "generator":
            model.update_ema()


class AdversarialExamples(nn.Module):
    """Trains ``objective`` on its batch's images moved by projected gradient descent towards a higher loss, each
    pixel at most ``epsilon`` (of [0, 1]) from the original (Madry et al. 2018), so small crafted changes to an
    image cannot flip what the model says. The attack runs with the model in eval mode (batch-norm statistics and
    dropout as at inference); with ``clean_weight`` the clean images' loss is added, weighted, as ``loss_clean``.
    Every call of ``objective`` in one step draws the same random numbers (matching's partners), so the attack
    raises the loss the step then trains on."""

    def __init__(
        self,
        objective: nn.Module,
        *,
        epsilon: float,
        steps: int,
        mean: Sequence[float],
        std: Sequence[float],
        step_size: float | None = None,
        clean_weight: float = 0.0,
        modality: str = "image",
    ) -> None:
        super().__init__()
        self.objective = objective
        self.epsilon, self.steps, self.step_size, self.clean_weight = epsilon, steps, step_size, clean_weight
        self.mean, self.std, self.modality = tuple(mean), tuple(std), modality

    def forward(self, model: nn.Module, batch: Any) -> dict[str, Tensor]:
        if not _everywhere(self.modality in batch.inputs, model):  # a batch without images, on some process
            return self.objective(model, batch)  # type: ignore[no-any-return]
        images, mask = batch.inputs[self.modality]
        draws = _RandomState()

        def run(x: Tensor) -> dict[str, Tensor]:
            draws.restore()
            moved_batch = dataclasses.replace(batch, inputs={**batch.inputs, self.modality: (x, mask)})
            return self.objective(model, moved_batch)  # type: ignore[no-any-return]

        training = model.training
        model.eval()
        try:
            moved = pgd_images(
                lambda x: run(x)["loss"],
                images,
                epsilon=self.epsilon,
                steps=self.steps,
                step_size=self.step_size,
                mean=self.mean,
                std=self.std,
                rows=batch.present.get(self.modality),
            )
        finally:
            model.train(training)
        losses = dict(run(moved))
        if self.clean_weight > 0:  # the same draws as the attacked pass, whichever runs first
            clean = run(images)["loss"]
            losses["loss_clean"] = clean
            losses["loss"] = losses["loss"] + self.clean_weight * clean
        return losses


def _everywhere(flag: bool, model: nn.Module) -> bool:
    """``flag`` on every process of a distributed run (on this one alone otherwise): processes must make the same
    forward passes, since contrastive losses gather across them at each."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return flag
    device = next(model.parameters()).device
    agreed = torch.tensor([int(flag)], device=device)
    torch.distributed.all_reduce(agreed, op=torch.distributed.ReduceOp.MIN)
    return bool(agreed.item())


class _RandomState:
    """The CPU and CUDA random states at creation, to be restored before each call that must draw the same."""

    def __init__(self) -> None:
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state_all(self.cuda)
