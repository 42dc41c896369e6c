"""Text-to-image generators: a diffusion model and a conditional GAN, each conditioned by a polymodal text tower.

Both work in the pixel space the data layer hands them (normalised to [-1, 1]) and ``generate`` returns images
there; seeded, so the same call gives the same pixels. The training objectives (noise prediction; the adversarial
game with its two optimizers) live in ``polymodal.train.objectives``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from polymodal.models.base import MODELS, ComposedModel, Inputs, build_encoders
from polymodal.models.config import DiffusionConfig, GanConfig
from polymodal.modules.generators import ConditionalGenerator, ProjectionDiscriminator, TextConditionedUNet
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


class DiffusionGenerator(ComposedModel):
    capabilities = frozenset({"generate"})

    def __init__(
        self, encoders: Mapping[str, nn.Module], unet: TextConditionedUNet, schedule: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(encoders)
        self.unet = unet
        self.to_context = nn.Linear(self.encoders["text"].output_dim, unet.context_dim)  # type: ignore[arg-type]
        # Classifier-free guidance's "no text": one learned context token (Ho & Salimans 2022).
        self.null_text_embedding = nn.Parameter(torch.zeros(1, 1, unet.context_dim))
        self.schedule = dict(schedule or {})
        self.schedulers = noise_schedulers(**self.schedule)  # stateless templates; sampling copies one

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
        )
        schedule = {
            "num_train_timesteps": config.num_train_timesteps,
            "beta_schedule": config.beta_schedule,
            "prediction_type": config.prediction_type,
        }
        return cls(build_encoders(config.encoders), unet, schedule)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.unet.channels, self.unet.image_size, self.unet.image_size)

    def context(self, inputs: Inputs, drop: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Text tokens projected for cross-attention, and their mask; rows where ``drop`` is True get the learned
        empty text instead (one token, the rest masked)."""
        ids, mask = inputs["text"]
        text = self.encoders["text"](ids, mask)
        context = self.to_context(text.tokens)
        context_mask = text.mask if text.mask is not None else torch.ones(context.shape[:2], device=context.device)
        context_mask = context_mask.bool()
        if drop is not None and bool(drop.any()):
            empty, empty_mask = self._empty_context(context.size(0), context.size(1), context.device)
            context = torch.where(drop[:, None, None], empty.to(context.dtype), context)
            context_mask = torch.where(drop[:, None], empty_mask, context_mask)
        return context, context_mask

    def _empty_context(self, batch: int, length: int, device: torch.device) -> tuple[Tensor, Tensor]:
        empty = self.null_text_embedding.expand(batch, length, -1)
        mask = torch.zeros(batch, length, dtype=torch.bool, device=device)
        mask[:, 0] = True
        return empty, mask

    def forward(self, inputs: Inputs, noisy: Tensor, timesteps: Tensor, drop: Tensor | None = None) -> Tensor:
        """The UNet's prediction (noise, or v) for ``noisy`` images at ``timesteps`` given the text."""
        context, context_mask = self.context(inputs, drop)
        return self.unet(noisy, timesteps, context, context_mask)

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
        its seed alone, so texts batch together without changing their pixels)."""
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
        if steps < 1 or num_per_text < 1:
            raise ValueError(f"steps and num_per_text must be >= 1, got {steps} and {num_per_text}")
        ids, mask = inputs["text"]
        ids = ids.repeat_interleave(num_per_text, 0)
        mask = None if mask is None else mask.repeat_interleave(num_per_text, 0)
        context, context_mask = self.context({"text": (ids, mask)})
        guided = guidance != 1.0
        if guided:
            empty, empty_mask = self._empty_context(context.size(0), context.size(1), context.device)
            context = torch.cat([context, empty.to(context.dtype)])
            context_mask = torch.cat([context_mask, empty_mask])
        template = self.schedulers[sampler]
        scheduler = type(template).from_config(template.config)  # a sampler keeps state (its steps, past outputs)
        scheduler.set_timesteps(steps)
        generators = _noise_generators(seed, len(inputs["text"][0]), num_per_text)
        images = _starting_noise((ids.size(0), *self.image_shape), generators, context.device)
        images = images * scheduler.init_noise_sigma
        for t in scheduler.timesteps:
            x = scheduler.scale_model_input(images, t)
            x = torch.cat([x, x]) if guided else x
            prediction = self.unet(x, t.expand(x.size(0)).to(x.device), context, context_mask).float()
            if guided:
                text_prediction, empty_prediction = prediction.chunk(2)
                prediction = empty_prediction + guidance * (text_prediction - empty_prediction)
            # A stochastic sampler (DDPM) draws each row's noise from that row's generator.
            images = scheduler.step(prediction, t, images, generator=generators).prev_sample
        return images.clamp(-1.0, 1.0)


class AdversarialGenerator(ComposedModel):
    """A conditional GAN: ``generator`` and ``discriminator`` both read the text tower's pooled features; the
    exponential moving average of the generator (``ema_generator``) is what ``generate`` uses."""

    capabilities = frozenset({"generate"})

    def __init__(
        self,
        encoders: Mapping[str, nn.Module],
        generator: ConditionalGenerator,
        discriminator: ProjectionDiscriminator,
        image_shape: tuple[int, int, int],
        ema_decay: float = 0.999,
    ) -> None:
        super().__init__(encoders)
        self.generator = generator
        self.discriminator = discriminator
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
        )
        discriminator = ProjectionDiscriminator(
            text_dim,
            image_size=config.image_size,
            channels=config.channels,
            widths=config.discriminator_widths,
            feature_dim=config.feature_dim,
        )
        shape = (config.channels, config.image_size, config.image_size)
        return cls(encoders, generator, discriminator, shape, config.ema_decay)

    def text_features(self, inputs: Inputs) -> Tensor:
        ids, mask = inputs["text"]
        return self.encoders["text"](ids, mask).pooled  # type: ignore[no-any-return]

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
        text = self.text_features(inputs).repeat_interleave(num_per_text, 0)
        generators = _noise_generators(seed, len(inputs["text"][0]), num_per_text)
        noise = _starting_noise((text.size(0), self.generator.noise_dim), generators, text.device)
        return self.ema_generator(noise, text).float().clamp(-1.0, 1.0)

    def forward(self, inputs: Inputs, noise: Tensor) -> Tensor:
        """Images from the trained (not the EMA) generator."""
        return self.generator(noise, self.text_features(inputs))


MODELS.register("diffusion")(DiffusionGenerator.from_config)
MODELS.register("gan")(AdversarialGenerator.from_config)
