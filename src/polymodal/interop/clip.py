"""A transformers ``CLIPModel`` as a polymodal :class:`EmbeddingModel`, with its processor.

The HF towers are wrapped as they are (``HFImageEncoder`` over the vision transformer,
``HFTextEncoder`` with EOS pooling over the text transformer) and HF's projection matrices
are copied into polymodal's bias-free linear ``ProjectionHead``s: the same weights, so
``embed("image", ...)``/``embed("text", ...)`` equal ``get_image_features``/``get_text_features``
normalised. The CLIP tokenizer ends every text with its EOS token (truncation keeps it), so
polymodal's "last real token" pooling picks the same token as HF's pooler.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image

from polymodal.data.text import TextTokenizer
from polymodal.interop.hub import HFLoadError, resolve_model_dir
from polymodal.interop.preprocess import HFImagePreprocess, load_hf_preprocess
from polymodal.models.embedding import EmbeddingModel
from polymodal.modules.encoders.hf import HFImageEncoder, HFTextEncoder

if TYPE_CHECKING:
    from transformers import CLIPModel


@dataclass
class ConvertedCLIP:
    """A CLIP checkpoint as polymodal parts: model, tokenizer and image preprocessing."""

    model: EmbeddingModel
    tokenizer: TextTokenizer
    preprocess: HFImagePreprocess
    logit_scale: float  # exp(HF logit_scale): multiply cosine similarities by it for CLIP's logits
    max_length: int  # the text tower's position-embedding count
    directory: Path

    def pixels(self, images: list[Image.Image]) -> torch.Tensor:
        """Decoded RGB images -> (N, 3, S, S) float32, preprocessed as the checkpoint says."""
        return torch.stack([self.preprocess.to_tensor(img) for img in images])

    def tokens(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(input_ids (N, T), attention_mask (N, T) bool), T = longest text, at most ``max_length``."""
        return self.tokenizer.encode_batch(texts, self.max_length)


def embedding_model_from_clip(clip: CLIPModel) -> EmbeddingModel:
    """Wrap a loaded ``CLIPModel``'s towers and copy its projections (no weights are cloned:
    the towers are the same modules)."""
    image_encoder = HFImageEncoder(clip.vision_model)
    text_encoder = HFTextEncoder(clip.text_model, pooling="eos")
    model = EmbeddingModel({"image": image_encoder, "text": text_encoder}, embed_dim=clip.config.projection_dim)
    with torch.no_grad():
        model.projections["image"].proj.weight.copy_(clip.visual_projection.weight)  # (embed, vision_width)
        model.projections["text"].proj.weight.copy_(clip.text_projection.weight)  # (embed, text_width)
    # The projections are built in float32; follow the towers' dtype (bf16 when loaded so).
    return model.to(clip.dtype).eval()


def load_clip(id_or_dir: str | os.PathLike[str], *, dtype: torch.dtype | None = None) -> ConvertedCLIP:
    """Load a ``CLIPModel`` checkpoint (a directory in the ``openai/clip-vit-base-patch32``
    layout, or a Hub id when the Hub is reachable) as polymodal parts.

    ``dtype=torch.bfloat16`` keeps the weights in bf16: about 2x faster on CPUs with AVX-512
    bf16, at a cosine similarity of ~0.9999 to the float32 features (docs/huggingface.md).
    """
    from transformers import CLIPModel

    directory = resolve_model_dir(id_or_dir)
    try:
        clip = CLIPModel.from_pretrained(str(directory), local_files_only=True)
    except (OSError, ValueError) as e:
        raise HFLoadError(f"{directory}: not a loadable CLIPModel checkpoint ({e})") from None
    if dtype is not None:
        clip.to(dtype)  # after loading: from_pretrained's dtype keyword differs between transformers 4 and 5
    try:
        tokenizer = TextTokenizer.load(directory)
    except (OSError, ValueError, TypeError) as e:
        raise HFLoadError(f"{directory}: no usable tokenizer (tokenizer.json) in the checkpoint ({e})") from None
    return ConvertedCLIP(
        model=embedding_model_from_clip(clip),
        tokenizer=tokenizer,
        preprocess=load_hf_preprocess(directory),
        logit_scale=math.exp(clip.logit_scale.item()),
        max_length=int(clip.config.text_config.max_position_embeddings),
        directory=directory,
    )


def clip_features(clip: CLIPModel, **inputs: Any) -> torch.Tensor:
    """``get_image_features``/``get_text_features`` as a tensor: transformers 5 returns an
    output object whose ``pooler_output`` holds the projected features, 4.x a tensor."""
    fn = clip.get_image_features if "pixel_values" in inputs else clip.get_text_features
    out = fn(**inputs)
    return out if isinstance(out, torch.Tensor) else out.pooler_output
