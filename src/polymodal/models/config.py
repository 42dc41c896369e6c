"""Typed configs for composed models.

A component is ``{name: <registry name>, params: {...}}``; the name is checked against its
registry when the config is validated, so a typo fails before any weights are built, with
the list of known names. Towers are always ``encoders: {modality: component}``.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from collections.abc import Callable, Collection, Mapping
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from polymodal.config import Config
from polymodal.plugins import PLUGINS_ENV
from polymodal.registry import Registry


class ComponentConfig(Config):
    name: str
    params: dict[str, Any] = Field(default_factory=dict)


def _registry(attr: str, module: str) -> Registry[Any]:
    # Imported lazily: the registries fill up when the module packages are imported.
    return getattr(importlib.import_module(module), attr)  # type: ignore[no-any-return]


def unknown_name(registry: Registry[Any], name: str) -> str | None:
    """Why ``name`` cannot be built from ``registry`` (with the names it knows), or None when it can."""
    if name in registry:
        return None
    return (
        f"unknown {registry.kind} {name!r} (a plugin's? import the module that registers it before loading; "
        f"CLI: set {PLUGINS_ENV}=module); "
        f"allowed: {', '.join(registry.names())}"
    )


def params_problem(
    builder: Callable[..., Any],
    params: Mapping[str, Any],
    given: Collection[str] = (),
    positional: int = 0,
    required: bool = False,
) -> str | None:
    """What is wrong with ``params`` as keyword arguments of ``builder`` (names it does not take; with ``required``,
    ones it needs that are not there), listing its parameters; None when they fit. The model itself passes the
    parameters named in ``given`` and the first ``positional`` ones. A builder taking ``**kwargs`` takes any name."""
    try:
        signature = list(inspect.signature(builder).parameters.values())
    except (TypeError, ValueError):  # a builder whose signature cannot be read: left to build time
        return None
    passed = {p.name for p in signature[:positional]} | set(given)
    own = {p.name: p for p in signature if p.name not in passed and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    takes_any = any(p.kind is p.VAR_KEYWORD for p in signature)
    problems = []
    unknown = [] if takes_any else sorted(set(params) - set(own))
    if unknown:
        problems.append("unknown " + ", ".join(_why_unknown(n, own, passed) for n in unknown))
    missing = sorted(n for n, p in own.items() if required and p.default is p.empty and n not in params)
    if missing:
        problems.append(f"missing {', '.join(missing)}")
    if not problems:
        return None
    return "; ".join([*problems, f"its parameters: {', '.join(sorted(own)) or '(none)'}"])


def _why_unknown(name: str, own: Collection[str], passed: Collection[str]) -> str:
    if name in passed:
        return f"{name} (the model sets it)"
    close = difflib.get_close_matches(name, own, n=1)
    return f"{name} (did you mean {close[0]}?)" if close else name


def _error(loc: tuple[str | int, ...], given: Any, message: str) -> InitErrorDetails:
    return InitErrorDetails(
        type=PydanticCustomError("component", "{message}", {"message": message}), loc=loc, input=given
    )


def _component_errors(
    component: ComponentConfig,
    registry: Registry[Any],
    loc: tuple[str | int, ...] = (),
    given: Collection[str] = (),
    positional: int = 0,
) -> list[InitErrorDetails]:
    """A component names a registered builder that takes its ``params`` (errors at ``loc`` and ``loc.params``)."""
    problem = unknown_name(registry, component.name)
    if problem:
        return [_error(loc, component.model_dump(), problem)]
    problem = params_problem(registry.get(component.name), component.params, given, positional)
    return [_error((*loc, "params"), component.params, problem)] if problem else []


def _raise(errors: list[InitErrorDetails], title: str) -> None:
    # Raised from a validator, these errors keep their own locations below the field's.
    if errors:
        raise ValidationError.from_exception_data(title, errors)


def _check_encoders(cls: type, value: dict[str, ComponentConfig]) -> dict[str, ComponentConfig]:
    if not value:
        raise ValueError("at least one encoder (modality: component) is required")
    encoders = _registry("ENCODERS", "polymodal.modules.encoders")
    _raise([e for modality, c in value.items() for e in _component_errors(c, encoders, (modality,))], "encoders")
    return value


# What build_fusion passes to every fusion itself, and build_head to every head (its first two arguments:
# the input width and the number of outputs); the rest are the component's own ``params``.
_FUSION_GIVEN = ("input_dims", "output_dim")
_HEAD_POSITIONAL = 2


def _check_fusion(cls: type, value: ComponentConfig) -> ComponentConfig:
    _raise(_component_errors(value, _registry("FUSIONS", "polymodal.modules.fusion"), given=_FUSION_GIVEN), "fusion")
    return value


def _check_head(cls: type, value: ComponentConfig) -> ComponentConfig:
    heads = _registry("HEADS", "polymodal.modules.heads")
    _raise(_component_errors(value, heads, positional=_HEAD_POSITIONAL), "head")
    return value


class EmbeddingConfig(Config):
    """Towers for N >= 2 modalities projected into one space (CLIP is the image-text case)."""

    kind: Literal["embedding"] = "embedding"
    encoders: dict[str, ComponentConfig]
    embed_dim: int = Field(256, ge=1)
    projection: Literal["linear", "mlp"] = "linear"
    # Each trained pair's learned temperature ("image-text": 15.2): zero-shot probabilities are softmax(scale *
    # cosine). Written when a contrastive run saves the model; empty for one trained otherwise.
    logit_scales: dict[str, float] = Field(default_factory=dict)

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
        problem = unknown_name(_registry("DECODERS", "polymodal.modules.heads"), value)
        if problem:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _params_fit(self) -> DecoderConfig:
        builder = _registry("DECODERS", "polymodal.modules.heads").get(self.name)
        problem = params_problem(builder, self.params, given=_DECODER_GIVEN, required=True)
        _raise([_error(("params",), self.params, problem)] if problem else [], "decoder")
        return self


# What a model passes to every decoder itself; the rest are the decoder's own ``params``.
_DECODER_GIVEN = ("memory_dim", "vocab_size", "max_length", "pad_id", "bos_id", "eos_id")


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
        raise ConfigError(format_validation_errors(e, source, title="model config")) from None
