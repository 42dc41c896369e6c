"""Named presets: small readable functions that return a model config.

Each preset is a recipe you can read in one glance; ``build_preset(name, **overrides)``
validates the config (so a typo in an override fails with the allowed values) and builds it.
The ``shapes-*`` presets are sized to train on ShapesWorld on a laptop CPU in minutes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from polymodal.models.base import ComposedModel, build_model
from polymodal.models.config import (
    CaptionerConfig,
    ComponentConfig,
    DecoderConfig,
    EmbeddingConfig,
    FusionClassifierConfig,
    ModelConfig,
    QuestionAnsweringConfig,
)
from polymodal.registry import Registry

PRESETS: Registry[Callable[..., ModelConfig]] = Registry("preset")


IMAGE_TOWERS = ("vit", "cnn", "efficientnet")


def _small_image(kind: str, image_size: int) -> ComponentConfig:
    """A ~0.8M-parameter image tower whose tokens form an 8x8 grid at 64 px.

    ``vit`` is the CLIP-standard choice, here with a convolutional stem: from scratch on a few thousand images a
    plain patch stem learns colour but never shape (see :class:`ViTImageEncoder`). ``cnn`` is a small ResNet,
    about 2x the FLOPs per image. ``efficientnet`` is EfficientNet-Lite0 with the packaged ImageNet weights
    (the ``pretrained`` extra), 1280-d tokens on the stride-32 grid, meant to be locked (``model.freeze``)
    and cached (``model.cache``); it wants its own pixel statistics (the shapes-clip-imagenet recipe).
    """
    if kind == "efficientnet":
        return ComponentConfig(name="efficientnet_lite0_imagenet", params={})
    if kind == "cnn":
        return ComponentConfig(name="cnn", params={"widths": [32, 64, 128, 128], "depths": [1, 1, 1, 1]})
    if kind == "vit":
        return ComponentConfig(
            name="vit",
            params={"image_size": image_size, "patch_size": 8, "width": 128, "depth": 4, "heads": 4, "stem": "conv"},
        )
    raise ValueError(f"image_encoder must be one of {', '.join(IMAGE_TOWERS)}, got {kind!r}")


def _fusion(name: str) -> ComponentConfig:
    # Cross-attention reads from the text: the statement's or question's tokens query the image patches,
    # as in VQA models, rather than 64 patches each looking for a word.
    return ComponentConfig(name=name, params={"query": "text"} if name == "cross_attention" else {})


def _small_text(vocab_size: int, max_length: int) -> ComponentConfig:
    return ComponentConfig(
        name="transformer_text",
        params={
            "vocab_size": vocab_size,
            "width": 128,
            "depth": 3,
            "heads": 4,
            "max_length": max_length,
            "pooling": "eos",
        },
    )


@PRESETS.register("shapes-clip")
def shapes_clip(
    vocab_size: int = 512, image_size: int = 64, max_length: int = 32, image_encoder: str = "vit", embed_dim: int = 128
) -> EmbeddingConfig:
    """CLIP-style embedding model: small ViT + text transformer, 128-d embedding space."""
    return EmbeddingConfig(
        encoders={"image": _small_image(image_encoder, image_size), "text": _small_text(vocab_size, max_length)},
        embed_dim=embed_dim,
    )


@PRESETS.register("shapes-fusion")
def shapes_fusion(
    vocab_size: int = 512,
    image_size: int = 64,
    max_length: int = 32,
    image_encoder: str = "vit",
    fusion: str = "cross_attention",
    num_classes: int = 2,
) -> FusionClassifierConfig:
    """Image + statement classifier; ``fusion`` picks any registered fusion module."""
    return FusionClassifierConfig(
        encoders={"image": _small_image(image_encoder, image_size), "text": _small_text(vocab_size, max_length)},
        fusion=_fusion(fusion),
        fusion_dim=128,
        num_classes=num_classes,
    )


@PRESETS.register("shapes-caption")
def shapes_caption(
    vocab_size: int = 512,
    image_size: int = 64,
    max_length: int = 32,
    image_encoder: str = "vit",
    contrastive: bool = False,
    decoder: str = "transformer",
) -> CaptionerConfig:
    """Image tower + a cross-attending text decoder (``transformer``: 2 layers; ``lstm``: show-attend-and-tell);
    ``contrastive`` adds a text tower and 128-d projections (CoCa-style) so the recipe's
    ``objective.contrastive_weight`` can add a CLIP loss to captioning."""
    encoders = {"image": _small_image(image_encoder, image_size)}
    if contrastive:
        encoders["text"] = _small_text(vocab_size, max_length)
    return CaptionerConfig(encoders=encoders, decoder=_decoder(decoder, vocab_size, max_length), embed_dim=128)


def _decoder(name: str, vocab_size: int, max_length: int) -> DecoderConfig:
    params = {"width": 128, "depth": 2, "heads": 4} if name == "transformer" else {"width": 256, "depth": 1}
    return DecoderConfig(name=name, vocab_size=vocab_size, max_length=max_length, params=params)


@PRESETS.register("shapes-vqa")
def shapes_vqa(
    vocab_size: int = 512,
    image_size: int = 64,
    max_length: int = 32,
    image_encoder: str = "vit",
    num_answers: int = 64,
    fusion: str = "cross_attention",
) -> QuestionAnsweringConfig:
    """ViT + question transformer, fused, classifying over an answer vocabulary."""
    return QuestionAnsweringConfig(
        encoders={"image": _small_image(image_encoder, image_size), "text": _small_text(vocab_size, max_length)},
        fusion=_fusion(fusion),
        fusion_dim=128,
        answer_mode="classify",
        num_answers=num_answers,
    )


def build_preset(name: str, **overrides: Any) -> ComposedModel:
    """Build the model a preset describes; overrides go to the preset function."""

    return build_model(PRESETS.build(name, **overrides))
