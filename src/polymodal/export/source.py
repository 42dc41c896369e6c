"""What an export starts from: an image-text embedding model with its tokenizer and image preprocessing,
loaded from a polymodal model directory or a Hugging Face CLIP checkpoint."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from polymodal.data.text import TextTokenizer
from polymodal.data.transforms import ImagePreprocess
from polymodal.models import EmbeddingModel


class ExportError(ValueError):
    """The model cannot be exported as asked; the message says why."""


@dataclass
class DualEncoderSource:
    model: EmbeddingModel
    tokenizer: TextTokenizer | None
    preprocess: ImagePreprocess
    max_length: int  # longest token sequence the text tower accepts
    kind: str  # "polymodal" or "hf-clip"
    path: Path


def load_dual_encoder(path: str | os.PathLike[str]) -> DualEncoderSource:
    """A polymodal dual-encoder directory (or run directory), or a Hugging Face CLIPModel
    directory or Hub id (resolved to a local snapshot; a clear error when offline and not cached)."""
    from polymodal.interop import detect_hf_kind, load_clip, resolve_model_dir

    path = resolve_model_dir(path)  # a directory as is; raises HFLoadError for anything else
    kind = detect_hf_kind(path)  # raises, listing what is supported, for other HF architectures
    if kind == "clip":
        clip = load_clip(path)
        return DualEncoderSource(clip.model, clip.tokenizer, clip.preprocess, clip.max_length, "hf-clip", path)
    if kind is not None:
        raise ExportError(f"{path}: a Hugging Face {kind} checkpoint; ONNX export supports dual encoders (CLIP) only")

    from polymodal.models import SavedModel, find_model_dir

    try:
        saved = SavedModel.load(find_model_dir(path))
    except FileNotFoundError as e:
        raise ExportError(str(e)) from None
    model = saved.model
    if not isinstance(model, EmbeddingModel) or sorted(model.modalities) != ["image", "text"]:
        what = f"{model.config.kind} model over {sorted(model.modalities)}"
        raise ExportError(f"{saved.path}: a {what}; ONNX export supports image-text embedding models only")
    image = saved.processors["image"]
    return DualEncoderSource(model, saved.tokenizer, image.preprocess, saved.text.max_length, "polymodal", saved.path)  # type: ignore[attr-defined]
