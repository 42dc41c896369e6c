"""Typed configs for composed models.

A component is ``{name: <registry name>, params: {...}}``; the name is checked against its
registry when the config is validated, so a typo fails before any weights are built, with
the list of known names. Towers are always ``encoders: {modality: component}``.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from polymodal.config import Config


class ComponentConfig(Config):
    name: str
    params: dict[str, Any] = Field(default_factory=dict)


def _known(value: ComponentConfig, registry_attr: str, module: str) -> ComponentConfig:
    # Imported lazily: the registries fill up when the module packages are imported.
    registry = getattr(importlib.import_module(module), registry_attr)
    if value.name not in registry:
        raise ValueError(f"unknown {registry.kind} {value.name!r}; allowed: {', '.join(registry.names())}")
    return value


def _check_encoders(cls: type, value: dict[str, ComponentConfig]) -> dict[str, ComponentConfig]:
    if not value:
        raise ValueError("at least one encoder (modality: component) is required")
    for component in value.values():
        _known(component, "ENCODERS", "polymodal.modules.encoders")
    return value


def _check_fusion(cls: type, value: ComponentConfig) -> ComponentConfig:
    return _known(value, "FUSIONS", "polymodal.modules.fusion")


def _check_head(cls: type, value: ComponentConfig) -> ComponentConfig:
    return _known(value, "HEADS", "polymodal.modules.heads")


class EmbeddingConfig(Config):
    """Towers for N >= 2 modalities projected into one space (CLIP is the image-text case)."""

    kind: Literal["embedding"] = "embedding"
    encoders: dict[str, ComponentConfig]
    embed_dim: int = Field(256, ge=1)
    projection: Literal["linear", "mlp"] = "linear"

    check_encoders = field_validator("encoders")(_check_encoders)

    @field_validator("encoders")
    @classmethod
    def _two_or_more(cls, value: dict[str, ComponentConfig]) -> dict[str, ComponentConfig]:
        if len(value) < 2:
            raise ValueError(f"an embedding model binds at least two modalities, got {sorted(value)}")
        return value


class FusionClassifierConfig(Config):
    kind: Literal["fusion_classifier"] = "fusion_classifier"
    encoders: dict[str, ComponentConfig]
    fusion: ComponentConfig
    fusion_dim: int = Field(256, ge=1)
    num_classes: int = Field(ge=1)
    head: ComponentConfig = ComponentConfig(name="classification", params={"dropout": 0.1})

    check_encoders = field_validator("encoders")(_check_encoders)
    check_fusion = field_validator("fusion")(_check_fusion)
    check_head = field_validator("head")(_check_head)


class DecoderConfig(Config):
    """A text decoder from ``polymodal.modules.heads.DECODERS``; ``params`` are its own (width, depth ...)."""

    name: str = "transformer"
    vocab_size: int = Field(ge=2)
    max_length: int = Field(32, ge=2)
    pad_id: int = 0
    bos_id: int = 2
    eos_id: int = 3
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _known_decoder(cls, value: str) -> str:
        registry = importlib.import_module("polymodal.modules.heads").DECODERS
        if value not in registry:
            raise ValueError(f"unknown decoder {value!r}; allowed: {', '.join(registry.names())}")
        return value

    @model_validator(mode="after")
    def _params_fit(self) -> DecoderConfig:
        builder = importlib.import_module("polymodal.modules.heads").DECODERS.get(self.name)
        own = {n: p for n, p in inspect.signature(builder).parameters.items() if n not in _DECODER_GIVEN}
        unknown = sorted(set(self.params) - set(own))
        missing = sorted(n for n, p in own.items() if p.default is p.empty and n not in self.params)
        if unknown or missing:
            problem = f"unknown {unknown}" if unknown else f"missing {missing}"
            raise ValueError(f"params of decoder {self.name!r}: {problem}; its parameters: {sorted(own)}")
        return self


# What a model passes to every decoder itself; the rest are the decoder's own ``params``.
_DECODER_GIVEN = {"self", "memory_dim", "vocab_size", "max_length", "pad_id", "bos_id", "eos_id"}


class CaptionerConfig(Config):
    """Describes its ``source`` modality in text. A ``text`` tower beside the source makes it CoCa-style:
    projections for a contrastive loss next to captioning."""

    kind: Literal["captioner"] = "captioner"
    encoders: dict[str, ComponentConfig]
    source: str = "image"
    decoder: DecoderConfig
    embed_dim: int = Field(256, ge=1)

    check_encoders = field_validator("encoders")(_check_encoders)

    @model_validator(mode="after")
    def _towers_fit(self) -> CaptionerConfig:
        if self.source not in self.encoders:
            raise ValueError(f"source {self.source!r} has no encoder; encoders: {sorted(self.encoders)}")
        if self.source == "text":
            raise ValueError("a captioner's source cannot be text: its captions are the target")
        others = set(self.encoders) - {self.source}
        if others - {"text"}:
            raise ValueError(
                f"besides the source, a captioner takes only a contrastive 'text' tower; got {sorted(others)}"
            )
        return self

    @property
    def contrastive(self) -> bool:
        return self.source != "text" and "text" in self.encoders


class QuestionAnsweringConfig(Config):
    """Answers a ``question`` (a text tower) about the other modalities, fused; the answer is a class of an
    answer vocabulary (``answer_mode: classify``) or generated by a decoder over the fused tokens."""

    kind: Literal["question_answering"] = "question_answering"
    encoders: dict[str, ComponentConfig]
    question: str = "text"
    fusion: ComponentConfig
    fusion_dim: int = Field(256, ge=1)
    answer_mode: Literal["classify", "generate"] = "classify"
    num_answers: int | None = Field(None, ge=2)  # classify: size of the answer vocabulary
    head: ComponentConfig = ComponentConfig(name="classification")
    decoder: DecoderConfig | None = None  # generate

    check_encoders = field_validator("encoders")(_check_encoders)
    check_fusion = field_validator("fusion")(_check_fusion)
    check_head = field_validator("head")(_check_head)

    @model_validator(mode="after")
    def _parts_fit(self) -> QuestionAnsweringConfig:
        if self.question not in self.encoders or len(self.encoders) < 2:
            raise ValueError(
                f"needs a {self.question!r} tower for the question and at least one other; "
                f"encoders: {sorted(self.encoders)}"
            )
        if self.answer_mode == "classify" and self.num_answers is None:
            raise ValueError("answer_mode 'classify' needs num_answers")
        if self.answer_mode == "generate" and self.decoder is None:
            raise ValueError("answer_mode 'generate' needs a decoder")
        return self


def _text_condition_only(cls: type, value: dict[str, ComponentConfig]) -> dict[str, ComponentConfig]:
    if set(value) != {"text"}:
        raise ValueError(f"a generator is conditioned by one 'text' tower; got encoders {sorted(value)}")
    return value


class DiffusionConfig(Config):
    """Text-to-image diffusion: a text tower whose tokens a UNet cross-attends to while it denoises ``image``
    (pixels normalised to [-1, 1]); DDPM training, DDIM / DPM-Solver / DDPM sampling, classifier-free guidance."""

    kind: Literal["diffusion"] = "diffusion"
    encoders: dict[str, ComponentConfig]
    target: Literal["image"] = "image"
    image_size: int = Field(32, ge=8)
    channels: int = Field(3, ge=1)
    widths: list[int] = Field(default_factory=lambda: [32, 64, 64], min_length=1)
    layers_per_block: int = Field(1, ge=1)
    attention_levels: int = Field(2, ge=0, description="the lowest-resolution levels that cross-attend to the text")
    context_dim: int = Field(128, ge=1)
    head_dim: int = Field(8, ge=1)
    norm_groups: int = Field(8, ge=1)
    pooled_conditioning: bool = Field(
        True, description="also add the pooled text to the timestep embedding every block reads (as Imagen does)"
    )
    num_train_timesteps: int = Field(1000, ge=2)
    beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2"] = "squaredcos_cap_v2"
    prediction_type: Literal["epsilon", "v_prediction", "sample"] = Field(
        "epsilon", description="what the UNet predicts: the noise, v (Salimans & Ho 2022), or the clean image"
    )

    check_encoders = field_validator("encoders")(_check_encoders)
    text_only = field_validator("encoders")(_text_condition_only)


class GanConfig(Config):
    """Text-to-image GAN: a generator from noise and the text tower's pooled features, a projection discriminator
    judging image and text together, and an exponential moving average of the generator that is what generates;
    optionally both also read the text's tokens (``word_attention``, ``word_matching``), and the discriminator's
    training checks word binding harder (``matching_penalty``, ``contrastive_weight``)."""

    kind: Literal["gan"] = "gan"
    encoders: dict[str, ComponentConfig]
    target: Literal["image"] = "image"
    image_size: int = Field(32, ge=8)
    channels: int = Field(3, ge=1)
    noise_dim: int = Field(64, ge=1)
    condition_dim: int = Field(128, ge=1)
    generator_widths: list[int] = Field(default_factory=lambda: [256, 128, 64], min_length=1)
    discriminator_widths: list[int] = Field(default_factory=lambda: [64, 128, 256], min_length=1)
    feature_dim: int = Field(256, ge=1)
    ema_decay: float = Field(0.999, ge=0, lt=1)
    # Word-level conditioning (AttnGAN): the generator's feature-map sides that cross-attend to the text's tokens,
    # and the discriminator's feature-map side whose regions the tokens are matched against (None: off).
    word_attention: list[int] = Field(default_factory=list)
    word_matching: int | None = Field(None, ge=1)
    word_dim: int = Field(64, ge=1)
    # Discriminator terms that ask it to check which words go together (0: off). DF-GAN's matching-aware gradient
    # penalty, ``matching_penalty * mean ||(dD/dx, dD/dt)||**matching_penalty_power`` at real images with their own
    # text (DF-GAN: 2 and 6); and an InfoNCE between the discriminator's image features and the pooled text over
    # the batch (word-swapped captions as extra negatives), on real images for the discriminator and on generated
    # ones for the generator, each weighted ``contrastive_weight``, in a space of ``contrastive_dim`` (XMC-GAN).
    matching_penalty: float = Field(0.0, ge=0)
    matching_penalty_power: float = Field(6.0, gt=0)
    contrastive_weight: float = Field(0.0, ge=0)
    contrastive_dim: int = Field(128, ge=1)

    check_encoders = field_validator("encoders")(_check_encoders)
    text_only = field_validator("encoders")(_text_condition_only)


ModelConfig = Annotated[
    EmbeddingConfig | FusionClassifierConfig | CaptionerConfig | QuestionAnsweringConfig | DiffusionConfig | GanConfig,
    Field(discriminator="kind"),
]
MODEL_KINDS = ("embedding", "fusion_classifier", "captioner", "question_answering", "diffusion", "gan")


def parse_model_config(data: Any, source: str = "<config>") -> Any:
    """Validate a model config dict (a format-1 config is upgraded first); errors name ``source`` and the field."""
    from pydantic import TypeAdapter, ValidationError

    from polymodal.config import ConfigError, format_validation_errors
    from polymodal.models.legacy import upgrade_config

    if not isinstance(data, dict) or "kind" not in data:
        raise ConfigError(f"{source}: model config needs a 'kind' ({', '.join(MODEL_KINDS)})")
    try:
        return TypeAdapter(ModelConfig).validate_python(upgrade_config(data))
    except ValidationError as e:
        raise ConfigError(format_validation_errors(e, source, type(None))) from None  # type: ignore[arg-type]
