"""Hugging Face checkpoints as polymodal models: detection, conversion, preprocessing.

``detect_hf_kind(dir)`` says what a transformers directory holds; ``load_clip(dir)`` turns a
``CLIPModel`` into a polymodal :class:`EmbeddingModel` with its tokenizer and image preprocessing.
Serving them (``load_hf_backend``) lives in :mod:`polymodal.backends.hf`.
"""

from polymodal.interop.clip import ConvertedCLIP, clip_features, embedding_model_from_clip, load_clip
from polymodal.interop.detect import SUPPORTED, UnsupportedHFModel, detect_hf_kind
from polymodal.interop.hub import HFLoadError, resolve_model_dir
from polymodal.interop.preprocess import HFImagePreprocess, load_hf_preprocess, preprocess_from_hf

__all__ = [
    "SUPPORTED",
    "ConvertedCLIP",
    "HFImagePreprocess",
    "HFLoadError",
    "UnsupportedHFModel",
    "clip_features",
    "detect_hf_kind",
    "embedding_model_from_clip",
    "load_clip",
    "load_hf_preprocess",
    "preprocess_from_hf",
    "resolve_model_dir",
]
