"""Encoders: one interface (``forward(x, mask) -> EncoderOutput``) for every modality.

``ENCODERS`` maps a name to an encoder class; ``ENCODERS.describe()`` lists their parameters.
Each variant is a class in ``text``, ``image``, ``audio``, ``video``, ``hf``, ``efficientnet_lite``.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Mapping
from typing import Any

from polymodal.modules.encoders.audio import AudioCNN, AudioLSTM, AudioTransformer
from polymodal.modules.encoders.base import Encoder, EncoderOutput, last_token, masked_mean
from polymodal.modules.encoders.efficientnet_lite import EfficientNetLite0
from polymodal.modules.encoders.hf import HFAudioEncoder, HFImageEncoder, HFTextEncoder
from polymodal.modules.encoders.image import ConvImageEncoder, ViTImageEncoder
from polymodal.modules.encoders.text import RNNTextEncoder, TransformerTextEncoder
from polymodal.modules.encoders.video import FrameEncoder, VideoViT
from polymodal.registry import Registry

ENCODERS: Registry[Callable[..., Encoder]] = Registry("encoder")

# The classes themselves are the builders, so each default lives in one place (the class); presets and
# recipes name the sizes they want. Each registers under its class's ``name`` ("vit", "audio_cnn" ...), the name
# its input errors begin with.
for _encoder in (
    TransformerTextEncoder,
    RNNTextEncoder,
    ViTImageEncoder,
    ConvImageEncoder,
    AudioCNN,
    AudioLSTM,
    AudioTransformer,
    VideoViT,
    EfficientNetLite0,  # random init; ImageNet weights: efficientnet_lite0_imagenet
):
    ENCODERS.register(_encoder.name)(_encoder)
# Builders that need packaged weights (efficientnet_lite0_imagenet) and the ``pretrained:NAME`` paths of the hf
# towers register from polymodal.pretrained, the layer above; polymodal.models imports it.


# Hugging Face towers load from a directory; configs name it ``path``.
@ENCODERS.register(HFTextEncoder.name)
def hf_text(path: str | os.PathLike[str], **kwargs: Any) -> HFTextEncoder:
    """A Hugging Face text model (BERT, MiniLM, GPT-2 ...) from a local directory; kwargs: pooling."""
    return HFTextEncoder.from_pretrained(path, **kwargs)


@ENCODERS.register(HFImageEncoder.name)
def hf_image(path: str | os.PathLike[str], **kwargs: Any) -> HFImageEncoder:
    """A Hugging Face vision model (ViTModel, CLIPVisionModel) from a local directory."""
    return HFImageEncoder.from_pretrained(path, **kwargs)


@ENCODERS.register(HFAudioEncoder.name)
def hf_audio(path: str | os.PathLike[str], **kwargs: Any) -> HFAudioEncoder:
    """A Hugging Face audio tower (Wav2Vec2, HuBERT, Whisper's encoder, AST, CLAP's audio model) from a local
    directory; kwargs: normalize."""
    return HFAudioEncoder.from_pretrained(path, **kwargs)


@ENCODERS.register(FrameEncoder.name)
def video_frames(frame_encoder: Mapping[str, Any] | Encoder | None = None, **kwargs: Any) -> FrameEncoder:
    """Any image encoder on each real frame, then a temporal model (mean, transformer or lstm; see FrameEncoder).

    ``frame_encoder`` is a component ``{name, params}`` of this registry (default: ``cnn``), e.g.
    ``{name: efficientnet_lite0_imagenet}``, or a built image encoder. With ``motion: pixel_difference`` a named tower
    is built for 6 input channels (the frame and its difference from the previous one)."""
    if isinstance(frame_encoder, Encoder):
        return FrameEncoder(frame_encoder, **kwargs)
    spec = dict(frame_encoder or {"name": "cnn"})
    unknown = set(spec) - {"name", "params"}
    if "name" not in spec or unknown:
        raise ValueError(f"frame_encoder must be {{name, params}}, got keys {sorted(spec)}")
    params = dict(spec.get("params", {}))
    if kwargs.get("motion") == "pixel_difference":
        if "in_channels" not in inspect.signature(ENCODERS.get(spec["name"])).parameters:
            raise ValueError(
                f"motion: {kwargs['motion']} needs a frame encoder with in_channels; {spec['name']} has none"
            )
        params["in_channels"] = 6
    return FrameEncoder(ENCODERS.build(spec["name"], **params), **kwargs)


# describe() lists FrameEncoder's own parameters beside frame_encoder, read from the class, not copied.
video_frames.__signature__ = inspect.signature(
    video_frames
).replace(  # type: ignore[attr-defined]
    parameters=[
        inspect.signature(video_frames).parameters["frame_encoder"],
        *list(inspect.signature(FrameEncoder).parameters.values())[1:],
    ]
)


__all__ = [
    "ENCODERS",
    "AudioCNN",
    "AudioLSTM",
    "AudioTransformer",
    "ConvImageEncoder",
    "EfficientNetLite0",
    "Encoder",
    "EncoderOutput",
    "FrameEncoder",
    "HFAudioEncoder",
    "HFImageEncoder",
    "HFTextEncoder",
    "RNNTextEncoder",
    "TransformerTextEncoder",
    "VideoViT",
    "ViTImageEncoder",
    "last_token",
    "masked_mean",
]
