"""Text-to-image generators: a diffusion model and a conditional GAN, each conditioned by a polymodal text tower.

Both work in the pixel space the data layer hands them (normalised to [-1, 1]) and ``generate`` returns images
there; seeded, so the same call gives the same pixels. The training objectives (noise prediction; the adversarial
game with its two optimizers) live in ``polymodal.train.objectives``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from polymodal.models.base import MODELS, ComposedModel, Inputs, build_encoders
from polymodal.models.config import DiffusionConfig, GanConfig
from polymodal.modules.generators import (
    ConditionalGenerator,
    ProjectionDiscriminator,
    TextCondition,
    TextConditionedUNet,
)
from polymodal.modules.generators.unet import SAMPLERS, noise_schedulers

Seeds = int | Sequence[int]


def _noise_generators(seeds: Seeds, texts: int, num_per_text: int) -> list[torch.Generator]:
    """One CPU generator per text, seeded with its seed (an int: the same for every text), repeated for each of its
    images: a text's pixels then depend on its own seed only, never on the other texts of the call."""
    per_text = [seeds] * texts if isinstance(seeds, int) else list(seeds)
    if len(per_text) != texts:
        raise ValueError(f"{len(per_text)} seeds for {texts} texts: give one seed, or one per text")
    generators = [torch.Generator().manual_seed(int(seed)) for seed in per_text]
    return [g for g in generators for _ in range(num_per_text)]


def _starting_noise(shape: tuple[int, ...], generators: list[torch.Generator], device: torch.device) -> Tensor:
    """Gaussian noise of ``shape`` (one row per generator), drawn on the CPU: the same pixels on every device."""
    return torch.stack([torch.randn(shape[1:], generator=g) for g in generators]).to(device)


def _fixed_length_text(tower: nn.Module, ids: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """``ids`` (B, T) and ``mask`` padded to the tower's ``max_length`` when it has one, so that attention over a
    text's tokens has the same shape whatever the other texts of the call: in bf16 the padded length changes the
    attention's sums, and with them the pixels."""
    length = getattr(tower, "max_length", None)
    if length is None or ids.size(1) >= length:
        return ids, mask
    extra = length - ids.size(1)
    ids = torch.cat([ids, ids.new_full((ids.size(0), extra), getattr(tower, "pad_id", 0))], dim=1)  # (B, max_length)
    if mask is not None:
        mask = torch.cat([mask, mask.new_zeros((mask.size(0), extra))], dim=1)
    return ids, mask


class Conditioning(NamedTuple):
    """What the UNet reads of a text: its projected tokens and their mask, and (optionally) a pooled vector."""

    tokens: Tensor  # (B, T, context_dim)
    mask: Tensor  # (B, T) bool
    pooled: Tensor | None  # (B, context_dim)


class DiffusionGenerator(ComposedModel):
    capabilities = frozenset({"generate"})

    def __init__(
        self,
        encoders: Mapping[str, nn.Module],
        unet: TextConditionedUNet,
        schedule: Mapping[str, Any] | None = None,
        pooled_conditioning: bool = False,
    ) -> None:
        super().__init__(encoders)
        self.unet = unet
        text_dim = self.encoders["text"].output_dim
        self.to_context = nn.Linear(text_dim, unet.context_dim)  # type: ignore[arg-type]
        # Classifier-free guidance's "no text": one learned context token (Ho & Salimans 2022), and a pooled one.
        self.null_text_embedding = nn.Parameter(torch.zeros(1, 1, unet.context_dim))
        self.to_pooled = nn.Linear(text_dim, unet.context_dim) if pooled_conditioning else None  # type: ignore[arg-type]
        self.null_pooled_embedding = nn.Parameter(torch.zeros(1, unet.context_dim)) if pooled_conditioning else None
        self.schedulers = noise_schedulers(**(schedule or {}))  # stateless templates; sampling copies one

    @classmethod
    def from_config(cls, config: DiffusionConfig) -> DiffusionGenerator:
        unet = TextConditionedUNet(
            image_size=config.image_size,
            channels=config.channels,
            widths=config.widths,
            layers_per_block=config.layers_per_block,
            attention_levels=config.attention_levels,
            context_dim=config.context_dim,
            head_dim=config.head_dim,
            norm_groups=config.norm_groups,
            pooled_dim=config.context_dim if config.pooled_conditioning else None,
        )
        schedule = {
            "num_train_timesteps": config.num_train_timesteps,
            "beta_schedule": config.beta_schedule,
            "prediction_type": config.prediction_type,
        }
        return cls(build_encoders(config.encoders), unet, schedule, config.pooled_conditioning)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.unet.channels, self.unet.image_size, self.unet.image_size)

    def context(self, inputs: Inputs, drop: Tensor | None = None) -> Conditioning:
        """Text tokens projected for cross-attention, their mask and the pooled vector; rows where ``drop`` is True
        get the learned empty text instead (one token, the rest masked)."""
        ids, mask = inputs["text"]
        text = self.encoders["text"](ids, mask)
        tokens = self.to_context(text.tokens)
        token_mask = text.mask if text.mask is not None else torch.ones(tokens.shape[:2], device=tokens.device)
        token_mask = token_mask.bool()
        pooled = None if self.to_pooled is None else self.to_pooled(text.pooled)
        if drop is not None and bool(drop.any()):
            empty = self._empty_context(tokens.size(0), tokens.size(1), tokens.device)
            tokens = torch.where(drop[:, None, None], empty.tokens.to(tokens.dtype), tokens)
            token_mask = torch.where(drop[:, None], empty.mask, token_mask)
            if pooled is not None and empty.pooled is not None:
                pooled = torch.where(drop[:, None], empty.pooled.to(pooled.dtype), pooled)
        return Conditioning(tokens, token_mask, pooled)

    def _empty_context(self, batch: int, length: int, device: torch.device) -> Conditioning:
        tokens = self.null_text_embedding.expand(batch, length, -1)
        mask = torch.zeros(batch, length, dtype=torch.bool, device=device)
        mask[:, 0] = True
        pooled = None if self.null_pooled_embedding is None else self.null_pooled_embedding.expand(batch, -1)
        return Conditioning(tokens, mask, pooled)

    def forward(self, inputs: Inputs, noisy: Tensor, timesteps: Tensor, drop: Tensor | None = None) -> Tensor:
        """The UNet's prediction (noise, v or the clean image) for ``noisy`` images at ``timesteps`` given the
        text."""
        condition = self.context(inputs, drop)
        return self.unet(noisy, timesteps, condition.tokens, condition.mask, condition.pooled)

    @torch.no_grad()
    def generate(
        self,
        inputs: Inputs,
        num_per_text: int = 1,
        steps: int = 25,
        guidance: float = 3.0,
        seed: Seeds = 0,
        sampler: str = "ddim",
    ) -> Tensor:
        """``num_per_text`` images per text (B * n, C, S, S) in [-1, 1], text-major; ``guidance`` 1 turns
        classifier-free guidance off. ``seed``: one for every text, or one per text (each text's images depend on
        its seed alone, so texts batch together without changing their pixels beyond float rounding)."""
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
        if steps < 1 or num_per_text < 1:
            raise ValueError(f"steps and num_per_text must be >= 1, got {steps} and {num_per_text}")
        ids, mask = _fixed_length_text(self.encoders["text"], *inputs["text"])
        ids = ids.repeat_interleave(num_per_text, 0)
        mask = None if mask is None else mask.repeat_interleave(num_per_text, 0)
        condition = self.context({"text": (ids, mask)})
        guided = guidance != 1.0
        if guided:
            empty = self._empty_context(condition.tokens.size(0), condition.tokens.size(1), condition.tokens.device)
            condition = Conditioning(
                torch.cat([condition.tokens, empty.tokens.to(condition.tokens.dtype)]),
                torch.cat([condition.mask, empty.mask]),
                None if condition.pooled is None else torch.cat([condition.pooled, empty.pooled]),  # type: ignore[list-item]
            )
        device = condition.tokens.device
        template = self.schedulers[sampler]
        scheduler = type(template).from_config(template.config)  # a sampler keeps state (its steps, past outputs)
        scheduler.set_timesteps(steps)
        generators = _noise_generators(seed, len(inputs["text"][0]), num_per_text)
        images = _starting_noise((ids.size(0), *self.image_shape), generators, device)
        images = images * scheduler.init_noise_sigma
        for t in scheduler.timesteps:
            x = scheduler.scale_model_input(images, t)
            x = torch.cat([x, x]) if guided else x
            timesteps = t.expand(x.size(0)).to(x.device)
            prediction = self.unet(x, timesteps, condition.tokens, condition.mask, condition.pooled).float()
            if guided:
                text_prediction, empty_prediction = prediction.chunk(2)
                prediction = empty_prediction + guidance * (text_prediction - empty_prediction)
            # A stochastic sampler (DDPM) draws each row's noise from that row's generator.
            images = scheduler.step(prediction, t, images, generator=generators).prev_sample
        return images.clamp(-1.0, 1.0)


class AdversarialGenerator(ComposedModel):
    """A conditional GAN: ``generator`` and ``discriminator`` both read the text tower's pooled features (and, if
    configured, its tokens); the exponential moving average of the generator (``ema_generator``) is what
    ``generate`` uses. ``matching_penalty`` (with ``matching_penalty_power``) and ``contrastive_weight`` are the
    weights of the adversarial objective's extra terms for this model (0: off; see :class:`GanConfig`); a
    contrastive term needs a discriminator with contrastive heads."""

    capabilities = frozenset({"generate"})

    def __init__(
        self,
        encoders: Mapping[str, nn.Module],
        generator: ConditionalGenerator,
        discriminator: ProjectionDiscriminator,
        image_shape: tuple[int, int, int],
        ema_decay: float = 0.999,
        matching_penalty: float = 0.0,
        matching_penalty_power: float = 6.0,
        contrastive_weight: float = 0.0,
    ) -> None:
        super().__init__(encoders)
        if contrastive_weight > 0 and discriminator.contrastive_image is None:
            raise ValueError("contrastive_weight > 0 needs a discriminator built with contrastive_dim")
        self.generator = generator
        self.discriminator = discriminator
        self.matching_penalty, self.matching_penalty_power = matching_penalty, matching_penalty_power
        self.contrastive_weight = contrastive_weight
        self.ema_generator = copy.deepcopy(generator).requires_grad_(False)
        self.ema_decay = ema_decay
        self.register_buffer("ema_updates", torch.zeros((), dtype=torch.long))
        self.image_shape = image_shape

    @classmethod
    def from_config(cls, config: GanConfig) -> AdversarialGenerator:
        encoders = build_encoders(config.encoders)
        text_dim = encoders["text"].output_dim
        generator = ConditionalGenerator(
            text_dim,
            noise_dim=config.noise_dim,
            condition_dim=config.condition_dim,
            image_size=config.image_size,
            channels=config.channels,
            widths=config.generator_widths,
            word_attention=config.word_attention,
            word_dim=config.word_dim,
        )
        discriminator = ProjectionDiscriminator(
            text_dim,
            image_size=config.image_size,
            channels=config.channels,
            widths=config.discriminator_widths,
            feature_dim=config.feature_dim,
            word_matching=config.word_matching,
            word_dim=config.word_dim,
            contrastive_dim=config.contrastive_dim if config.contrastive_weight > 0 else None,
        )
        shape = (config.channels, config.image_size, config.image_size)
        return cls(
            encoders,
            generator,
            discriminator,
            shape,
            config.ema_decay,
            matching_penalty=config.matching_penalty,
            matching_penalty_power=config.matching_penalty_power,
            contrastive_weight=config.contrastive_weight,
        )

    def text_features(self, inputs: Inputs) -> TextCondition:
        """The text tower's pooled features, tokens and token mask, indexed and detached together."""
        ids, mask = inputs["text"]
        text = self.encoders["text"](ids, mask)
        return TextCondition(text.pooled, text.tokens, text.mask)

    def noise(self, batch: int, device: torch.device, generator: torch.Generator | None = None) -> Tensor:
        return torch.randn(batch, self.generator.noise_dim, generator=generator).to(device)

    @torch.no_grad()
    def update_ema(self) -> None:
        """Move the EMA generator towards the trained one; the decay ramps up over the first updates,
        ``(1 + n) / (10 + n)`` up to ``ema_decay``, so a short run's average is not its random start."""
        n = int(self.ema_updates)
        decay = min(self.ema_decay, (1 + n) / (10 + n))
        for ema, live in zip(self.ema_generator.parameters(), self.generator.parameters(), strict=True):
            ema.lerp_(live.detach(), 1.0 - decay)
        for ema_buffer, live_buffer in zip(self.ema_generator.buffers(), self.generator.buffers(), strict=True):
            ema_buffer.copy_(live_buffer)
        self.ema_updates += 1

    @torch.no_grad()
    def generate(self, inputs: Inputs, num_per_text: int = 1, seed: Seeds = 0, **_: Any) -> Tensor:
        """``num_per_text`` images per text (B * n, C, S, S) in [-1, 1], text-major, from the EMA generator;
        ``seed`` as for :meth:`DiffusionGenerator.generate` (sampler settings such as ``steps`` and ``guidance``
        are a diffusion model's and do not apply)."""
        if num_per_text < 1:
            raise ValueError(f"num_per_text must be >= 1, got {num_per_text}")
        fixed = _fixed_length_text(self.encoders["text"], *inputs["text"])
        text = self.text_features({"text": fixed}).repeat_interleave(num_per_text, 0)
        generators = _noise_generators(seed, len(inputs["text"][0]), num_per_text)
        noise = _starting_noise((text.size(0), self.generator.noise_dim), generators, text.device)
        return self.ema_generator(noise, text).float().clamp(-1.0, 1.0)

    def forward(self, inputs: Inputs, noise: Tensor) -> Tensor:
        """Images from the trained (not the EMA) generator."""
        return self.generator(noise, self.text_features(inputs))


MODELS.register("diffusion")(DiffusionGenerator.from_config)
MODELS.register("gan")(AdversarialGenerator.from_config)
