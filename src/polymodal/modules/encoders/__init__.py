"""Encoders: one interface (``forward(x, mask) -> EncoderOutput``) for every modality.

``ENCODERS`` maps a name to a builder with small defaults; ``ENCODERS.describe()`` lists
their parameters. Builders only wire: each variant is a class in ``text``, ``image``, ``hf``.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from polymodal.modules.encoders.base import Encoder, EncoderOutput, last_token, masked_mean
from polymodal.modules.encoders.efficientnet_lite import EfficientNetLite0
from polymodal.modules.encoders.hf import HFImageEncoder, HFTextEncoder
from polymodal.modules.encoders.image import ConvImageEncoder, ViTImageEncoder
from polymodal.modules.encoders.text import RNNTextEncoder, TransformerTextEncoder
from polymodal.registry import Registry

ENCODERS: Registry[Callable[..., Encoder]] = Registry("encoder")


@ENCODERS.register("transformer_text")
def transformer_text(
    vocab_size: int = 1000,
    width: int = 128,
    depth: int = 2,
    heads: int = 4,
    max_length: int = 77,
    positions: str = "learned",
    pooling: str = "cls",
    pad_id: int = 0,
    causal: bool = False,
) -> TransformerTextEncoder:
    """Transformer text encoder trained from scratch (learned or rotary positions)."""
    return TransformerTextEncoder(vocab_size, width, depth, heads, max_length, positions, pooling, pad_id, causal)


@ENCODERS.register("rnn_text")
def rnn_text(
    vocab_size: int = 1000,
    width: int = 128,
    cell: str = "lstm",
    layers: int = 2,
    bidirectional: bool = True,
    pooling: str = "last",
    pad_id: int = 0,
) -> RNNTextEncoder:
    """LSTM/GRU text encoder over packed sequences."""
    return RNNTextEncoder(vocab_size, width, cell, layers, bidirectional, pooling, pad_id)


@ENCODERS.register("hf_text")
def hf_text(path: str | os.PathLike[str], pooling: str = "cls") -> HFTextEncoder:
    """A Hugging Face text model (BERT, MiniLM, GPT-2 ...) from a local directory."""
    return HFTextEncoder.from_pretrained(path, pooling=pooling)


@ENCODERS.register("vit")
def vit(
    image_size: int = 32,
    patch_size: int = 8,
    width: int = 128,
    depth: int = 2,
    heads: int = 4,
    pooling: str = "cls",
) -> ViTImageEncoder:
    """Vision Transformer trained from scratch."""
    return ViTImageEncoder(image_size, patch_size, width, depth, heads, pooling)


@ENCODERS.register("cnn")
def cnn(
    widths: tuple[int, ...] = (32, 64, 128),
    depths: tuple[int, ...] = (1, 1, 1),
    norm: str = "batch",
) -> ConvImageEncoder:
    """Small ResNet-style CNN; tokens are the final feature map."""
    return ConvImageEncoder(widths, depths, norm)


@ENCODERS.register("hf_image")
def hf_image(path: str | os.PathLike[str]) -> HFImageEncoder:
    """A Hugging Face vision model (ViTModel, CLIPVisionModel) from a local directory."""
    return HFImageEncoder.from_pretrained(path)


ENCODERS.register("efficientnet_lite0")(EfficientNetLite0)  # random init; ImageNet weights: polymodal.pretrained

__all__ = [
    "ENCODERS",
    "ConvImageEncoder",
    "EfficientNetLite0",
    "Encoder",
    "EncoderOutput",
    "HFImageEncoder",
    "HFTextEncoder",
    "RNNTextEncoder",
    "TransformerTextEncoder",
    "ViTImageEncoder",
    "last_token",
    "masked_mean",
]
