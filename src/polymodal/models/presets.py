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
    DiffusionConfig,
    EmbeddingConfig,
    FusionClassifierConfig,
    GanConfig,
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


AUDIO_TOWERS = ("cnn", "transformer", "lstm")


def _small_audio(kind: str, channels: int = 64) -> ComponentConfig:
    """A small audio tower over ``channels`` feature bands (log-mel bands or MFCCs): ``cnn`` (PANNs-style, a token
    per 8 frames), ``transformer`` (AST-style patches) or ``lstm`` (over the frames)."""
    if kind == "cnn":
        return ComponentConfig(
            name="audio_cnn",
            params={"channels": channels, "widths": [16, 32, 64], "width": 128, "frequency": "flatten"},
        )
    if kind == "transformer":
        return ComponentConfig(
            name="audio_transformer",
            params={"channels": channels, "patch_size": min(8, channels), "width": 128, "depth": 3, "heads": 4},
        )
    if kind == "lstm":
        return ComponentConfig(name="audio_lstm", params={"channels": channels, "width": 128})
    raise ValueError(f"audio_encoder must be one of {', '.join(AUDIO_TOWERS)}, got {kind!r}")


VIDEO_TOWERS = ("mean", "transformer", "lstm", "space_time", "vit")


def _small_video(kind: str, image_encoder: str, image_size: int, frames: int) -> ComponentConfig:
    """A video tower over clips of up to ``frames`` frames: ``mean``, ``transformer`` or ``lstm`` is the
    ``image_encoder`` tower on every frame (``efficientnet``: locked and cached as ``encoders.video.frames``) under
    that temporal model (CLIP4Clip's meanP, seqTransf, seqLSTM, or ``space_time``: every frame's cells and their
    changes as tokens, for the ``track`` fusion to follow); ``vit`` a space-time ViT from scratch."""
    if kind == "vit":
        return ComponentConfig(
            name="video_vit",
            params={
                "frames": frames,
                "image_size": image_size,
                "patch_size": 8,
                "tubelet": 2,
                "width": 128,
                "depth": 4,
                "heads": 4,
            },
        )
    if kind in ("mean", "transformer", "lstm", "space_time"):
        frame = _small_image(image_encoder, image_size)
        frame_params = dict(frame.params)
        if image_encoder == "efficientnet":
            # ImageNet stages 1-5 (112-d at stride 16): a linear probe of the first action from their 4x4 cells
            # scores 0.66 on ShapesWorld moves, the full network's 1280-d pool 0.29 (docs/video.md), at a tenth
            # of the cost per frame.
            frame_params["stages"] = 5
        # Each frame: its feature map in 4x4 cells of 32-d (where a shape is, not only what), projected to 128-d.
        params = {
            "frame_encoder": {"name": frame.name, "params": frame_params},
            "temporal": kind,
            "width": 128,
            "depth": {"transformer": 2, "space_time": 0}.get(kind, 1),
            "max_frames": frames,
            "spatial_grid": 4,
            "motion": "feature_difference",
            # space_time: each cell keeps all the tower's channels, standardised; projected to 32-d the words'
            # grounding on the cells stalls (docs/video.md).
            **({"feature_norm": "batch", "cell_width": None} if kind == "space_time" else {}),
        }
        return ComponentConfig(name="video_frames", params=params)
    raise ValueError(f"video_encoder must be one of {', '.join(VIDEO_TOWERS)}, got {kind!r}")


SOURCES = ("image", "audio", "video")  # several join with "+": "video+audio" is a clip's frames and its sound


def _source_tower(
    source: str,
    image_encoder: str,
    image_size: int,
    audio_encoder: str,
    video_encoder: str = "transformer",
    frames: int = 16,
    audio_channels: int = 64,
) -> dict[str, ComponentConfig]:
    """The towers of a model's non-text modalities: ``image``, ``audio``, ``video`` (frames of ``image_size``) or
    several of them joined by ``+``, one tower each."""
    towers: dict[str, ComponentConfig] = {}
    for part in source.split("+"):
        if part == "image":
            towers["image"] = _small_image(image_encoder, image_size)
        elif part == "audio":
            towers["audio"] = _small_audio(audio_encoder, audio_channels)
        elif part == "video":
            towers["video"] = _small_video(video_encoder, image_encoder, image_size, frames)
        else:
            raise ValueError(f"source must be one of {', '.join(SOURCES)} or several joined by '+', got {source!r}")
    return towers


def _fusion(name: str, params: dict[str, Any] | None = None) -> ComponentConfig:
    """The fusion ``name`` with ``params`` (its constructor's keyword arguments). Cross-attention reads from the
    text: the statement's or question's tokens query the image patches, as in VQA models, rather than 64 patches
    each looking for a word."""
    query = {"query": "text"} if name in ("cross_attention", "track") else {}
    return ComponentConfig(name=name, params={**query, **(params or {})})


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
    vocab_size: int = 512,
    image_size: int = 64,
    max_length: int = 32,
    image_encoder: str = "vit",
    embed_dim: int = 128,
    source: str = "image",
    audio_encoder: str = "cnn",
    video_encoder: str = "transformer",
    frames: int = 16,
    audio_channels: int = 64,
) -> EmbeddingConfig:
    """CLIP-style embedding model: a small ``source`` tower (image: ViT; audio; video: ``video_encoder`` over
    ``frames`` frames) + text transformer, 128-d embedding space."""
    encoders = _source_tower(source, image_encoder, image_size, audio_encoder, video_encoder, frames, audio_channels)
    return EmbeddingConfig(encoders={**encoders, "text": _small_text(vocab_size, max_length)}, embed_dim=embed_dim)


@PRESETS.register("shapes-clap")
def shapes_clap(
    vocab_size: int = 512,
    max_length: int = 32,
    audio_encoder: str = "cnn",
    image_encoder: str | None = None,
    image_size: int = 64,
    embed_dim: int = 128,
    audio_channels: int = 64,
) -> EmbeddingConfig:
    """CLAP-style audio-text embedding model; with ``image_encoder`` an image tower joins the same space (binding
    image, audio and text)."""
    encoders = {"audio": _small_audio(audio_encoder, audio_channels), "text": _small_text(vocab_size, max_length)}
    if image_encoder is not None:
        encoders["image"] = _small_image(image_encoder, image_size)
    return EmbeddingConfig(encoders=encoders, embed_dim=embed_dim)


@PRESETS.register("shapes-fusion")
def shapes_fusion(
    vocab_size: int = 512,
    image_size: int = 64,
    max_length: int = 32,
    image_encoder: str = "vit",
    fusion: str = "cross_attention",
    num_classes: int = 2,
    source: str | None = "image",
    audio_encoder: str = "cnn",
    text: bool = True,
    video_encoder: str = "transformer",
    frames: int = 16,
    audio_channels: int = 64,
    fusion_params: dict[str, Any] | None = None,
) -> FusionClassifierConfig:
    """``source`` (image, audio, video, or several joined by ``+``: ``video+audio``) + text classifier; ``fusion``
    picks any registered fusion module (``fusion_params``: its settings, e.g. ``{gate_by: [audio]}``). Without
    ``source`` or ``text`` it classifies the other alone (a unimodal baseline)."""
    encoders = (
        _source_tower(source, image_encoder, image_size, audio_encoder, video_encoder, frames, audio_channels)
        if source is not None
        else {}
    )
    if text:
        encoders["text"] = _small_text(vocab_size, max_length)
    if not encoders:
        raise ValueError("a fusion classifier needs a source tower, a text tower or both")
    return FusionClassifierConfig(
        encoders=encoders,
        fusion=_fusion(fusion, fusion_params),
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
    source: str = "image",
    audio_encoder: str = "cnn",
    video_encoder: str = "transformer",
    frames: int = 16,
    audio_channels: int = 64,
) -> CaptionerConfig:
    """``source`` (image, audio or video) tower + a cross-attending text decoder (``transformer``: 2 layers; ``lstm``:
    show-attend-and-tell); ``contrastive`` adds a text tower and 128-d projections (CoCa-style) so the recipe's
    ``objective.contrastive_weight`` can add a CLIP loss to captioning."""
    encoders = _source_tower(source, image_encoder, image_size, audio_encoder, video_encoder, frames, audio_channels)
    if contrastive:
        encoders["text"] = _small_text(vocab_size, max_length)
    return CaptionerConfig(
        encoders=encoders, source=source, decoder=_decoder(decoder, vocab_size, max_length), embed_dim=128
    )


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
    source: str = "image",
    audio_encoder: str = "cnn",
    video_encoder: str = "transformer",
    frames: int = 16,
    audio_channels: int = 64,
    fusion_params: dict[str, Any] | None = None,
) -> QuestionAnsweringConfig:
    """``source`` (image: ViT; audio; video) + question transformer, fused (``fusion_params``: the fusion's
    settings), classifying over an answer vocabulary."""
    encoders = _source_tower(source, image_encoder, image_size, audio_encoder, video_encoder, frames, audio_channels)
    return QuestionAnsweringConfig(
        encoders={**encoders, "text": _small_text(vocab_size, max_length)},
        fusion=_fusion(fusion, fusion_params),
        fusion_dim=128,
        answer_mode="classify",
        num_answers=num_answers,
    )


@PRESETS.register("shapes-diffusion")
def shapes_diffusion(
    vocab_size: int = 512, max_length: int = 32, image_size: int = 32, prediction_type: str = "epsilon"
) -> DiffusionConfig:
    """Text-to-image diffusion on ShapesWorld: a 1.7M-parameter UNet (widths 32/64/64, cross-attention at 1/2 and
    1/4 resolution) conditioned on a text transformer's tokens; ``prediction_type`` epsilon, v_prediction or
    sample (the clean image)."""
    return DiffusionConfig(
        encoders={"text": _small_text(vocab_size, max_length)},
        image_size=image_size,
        prediction_type=prediction_type,  # type: ignore[arg-type]
    )


@PRESETS.register("shapes-gan")
def shapes_gan(
    vocab_size: int = 512,
    max_length: int = 32,
    image_size: int = 32,
    generator_widths: tuple[int, ...] = (128, 64, 32),
    discriminator_widths: tuple[int, ...] = (32, 64, 128),
    word_attention: tuple[int, ...] = (),
    word_matching: int | None = None,
    matching_penalty: float = 0.0,
    contrastive_weight: float = 0.0,
) -> GanConfig:
    """Text-to-image GAN on ShapesWorld: a generator with text-conditioned group norm and a projection
    discriminator with spectral norm, both reading a text transformer's pooled features; ``word_attention`` (the
    generator's feature-map sides that cross-attend to the tokens) and ``word_matching`` (the discriminator's
    feature-map side matched word by word) add word-level conditioning; ``matching_penalty`` (DF-GAN's
    matching-aware gradient penalty, power 6) and ``contrastive_weight`` (an image-text InfoNCE on the
    discriminator's features) are training terms that ask the discriminator to check it (0: off)."""
    return GanConfig(
        encoders={"text": _small_text(vocab_size, max_length)},
        image_size=image_size,
        generator_widths=list(generator_widths),
        discriminator_widths=list(discriminator_widths),
        word_attention=list(word_attention),
        word_matching=word_matching,
        matching_penalty=matching_penalty,
        contrastive_weight=contrastive_weight,
    )


def build_preset(name: str, **overrides: Any) -> ComposedModel:
    """Build the model a preset describes; overrides go to the preset function."""

    return build_model(PRESETS.build(name, **overrides))
