"""Which kind of Hugging Face checkpoint a directory holds, from its ``config.json`` alone."""

from __future__ import annotations

import os

from polymodal.interop.hub import HFLoadError, read_hf_config

CLIP = "clip"
BLIP_CAPTION = "blip-caption"
VISION_ENCODER_DECODER = "vision-encoder-decoder"

# architectures entry -> kind; checked before model_type, which is ambiguous for BLIP
# (a BlipForQuestionAnswering directory also says model_type "blip").
_ARCHITECTURES = {
    "CLIPModel": CLIP,
    "BlipForConditionalGeneration": BLIP_CAPTION,
    "VisionEncoderDecoderModel": VISION_ENCODER_DECODER,
}
_MODEL_TYPES = {"clip": CLIP, "vision-encoder-decoder": VISION_ENCODER_DECODER}

SUPPORTED = {
    CLIP: "CLIPModel (embed: zero-shot classification, search)",
    BLIP_CAPTION: "BlipForConditionalGeneration (caption)",
    VISION_ENCODER_DECODER: "VisionEncoderDecoderModel, e.g. ViT + GPT-2 (caption)",
}


class UnsupportedHFModel(HFLoadError):
    """A transformers checkpoint of an architecture polymodal cannot serve (yet)."""


def supported_list() -> str:
    return "; ".join(f"{kind}: {what}" for kind, what in SUPPORTED.items())


def detect_hf_kind(directory: str | os.PathLike[str]) -> str | None:
    """``"clip"``, ``"blip-caption"`` or ``"vision-encoder-decoder"``; None when ``directory`` is
    not a transformers checkpoint at all (so a dispatcher can try other formats).

    A transformers checkpoint of another architecture raises :class:`UnsupportedHFModel`
    naming what it is and listing what is supported.
    """
    config = read_hf_config(directory)
    if config is None:
        return None
    architectures = config.get("architectures") or []
    for arch in architectures:
        if arch in _ARCHITECTURES:
            return _ARCHITECTURES[arch]
    model_type = config.get("model_type")
    if not architectures and model_type in _MODEL_TYPES:
        return _MODEL_TYPES[model_type]
    found = ", ".join(architectures) or f"model_type {model_type!r}"
    raise UnsupportedHFModel(f"{directory}: Hugging Face {found} is not supported; supported: {supported_list()}")
