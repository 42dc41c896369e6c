"""Typed configs for composed models.

A component is ``{name: <registry name>, params: {...}}``; the name is checked against its
registry when the config is validated, so a typo fails before any weights are built, with
the list of known names.
"""

from __future__ import annotations

from typing import Any, Literal, Union

from pydantic import Field, field_validator

from polymodal.config import Config


class ComponentConfig(Config):
    name: str
    params: dict[str, Any] = Field(default_factory=dict)


def _known(value: ComponentConfig, registry_attr: str, module: str) -> ComponentConfig:
    import importlib

    # Imported lazily: the registries fill up when the module packages are imported.
    registry = getattr(importlib.import_module(module), registry_attr)
    if value.name not in registry:
        raise ValueError(f"unknown {registry.kind} {value.name!r}; allowed: {', '.join(registry.names())}")
    return value


def _encoder(value: ComponentConfig) -> ComponentConfig:
    return _known(value, "ENCODERS", "polymodal.modules.encoders")


def _fusion(value: ComponentConfig) -> ComponentConfig:
    return _known(value, "FUSIONS", "polymodal.modules.fusion")


def _check_encoder(cls: type, value: ComponentConfig | None) -> ComponentConfig | None:
    return None if value is None else _encoder(value)


def _check_fusion(cls: type, value: ComponentConfig) -> ComponentConfig:
    return _fusion(value)


class DualEncoderConfig(Config):
    kind: Literal["dual_encoder"] = "dual_encoder"
    image_encoder: ComponentConfig
    text_encoder: ComponentConfig
    embed_dim: int = Field(256, ge=1)
    projection: Literal["linear", "mlp"] = "linear"

    check_image = field_validator("image_encoder")(_check_encoder)
    check_text = field_validator("text_encoder")(_check_encoder)


class FusionClassifierConfig(Config):
    kind: Literal["fusion_classifier"] = "fusion_classifier"
    encoders: dict[str, ComponentConfig]  # modality name -> encoder
    fusion: ComponentConfig
    fusion_dim: int = Field(256, ge=1)
    num_classes: int = Field(ge=1)
    head_hidden: int | None = None
    dropout: float = Field(0.1, ge=0, lt=1)

    @field_validator("encoders")
    @classmethod
    def check_encoders(cls, value: dict[str, ComponentConfig]) -> dict[str, ComponentConfig]:
        if not value:
            raise ValueError("at least one encoder is required")
        for component in value.values():
            _encoder(component)
        return value

    check_fusion = field_validator("fusion")(_check_fusion)


class DecoderConfig(Config):
    vocab_size: int = Field(ge=2)
    width: int = Field(256, ge=8)
    depth: int = Field(2, ge=1)
    heads: int = Field(4, ge=1)
    max_length: int = Field(32, ge=2)
    pad_id: int = 0
    bos_id: int = 2
    eos_id: int = 3


class CaptionerConfig(Config):
    kind: Literal["captioner"] = "captioner"
    image_encoder: ComponentConfig
    decoder: DecoderConfig
    # CoCa-style: a text encoder and projections for a contrastive loss beside captioning.
    contrastive_text_encoder: ComponentConfig | None = None
    embed_dim: int = Field(256, ge=1)

    check_image = field_validator("image_encoder")(_check_encoder)
    check_contrastive = field_validator("contrastive_text_encoder")(_check_encoder)


class VQAConfig(Config):
    kind: Literal["vqa"] = "vqa"
    image_encoder: ComponentConfig
    text_encoder: ComponentConfig
    fusion: ComponentConfig
    fusion_dim: int = Field(256, ge=1)
    answer_mode: Literal["classify", "generate"] = "classify"
    num_answers: int | None = Field(None, ge=2)  # classify: size of the answer vocabulary
    decoder: DecoderConfig | None = None  # generate: decoder over the fused tokens

    check_image = field_validator("image_encoder")(_check_encoder)
    check_text = field_validator("text_encoder")(_check_encoder)
    check_fusion = field_validator("fusion")(_check_fusion)


ModelConfig = Union[DualEncoderConfig, FusionClassifierConfig, CaptionerConfig, VQAConfig]
