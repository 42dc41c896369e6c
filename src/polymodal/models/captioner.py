"""Captioner: an image encoder whose tokens a text decoder cross-attends to.

With a ``contrastive_text_encoder`` it is CoCa-style: the same model also returns
normalised image and text features so a contrastive loss can be added to the captioning loss.
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor

from polymodal.models.base import ComposedModel
from polymodal.models.config import CaptionerConfig, DecoderConfig
from polymodal.modules.encoders import ENCODERS
from polymodal.modules.encoders.base import Encoder
from polymodal.modules.heads import ProjectionHead
from polymodal.modules.heads.decoder import TransformerDecoder
from polymodal.modules.heads.generation import generate


def build_decoder(config: DecoderConfig, memory_dim: int) -> TransformerDecoder:
    return TransformerDecoder(memory_dim=memory_dim, **config.model_dump())


class Captioner(ComposedModel):
    config_class = CaptionerConfig

    def __init__(
        self,
        image_encoder: Encoder,
        decoder: TransformerDecoder,
        contrastive_text_encoder: Encoder | None = None,
        embed_dim: int = 256,
    ) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.decoder = decoder
        self.text_encoder = contrastive_text_encoder
        if contrastive_text_encoder is not None:
            self.image_projection = ProjectionHead(image_encoder.output_dim, embed_dim)
            self.text_projection = ProjectionHead(contrastive_text_encoder.output_dim, embed_dim)

    @classmethod
    def from_config(cls, config: CaptionerConfig) -> Captioner:
        image_encoder = ENCODERS.build(config.image_encoder.name, **config.image_encoder.params)
        text_encoder = None
        if config.contrastive_text_encoder is not None:
            c = config.contrastive_text_encoder
            text_encoder = ENCODERS.build(c.name, **c.params)
        model = cls(image_encoder, build_decoder(config.decoder, image_encoder.output_dim), text_encoder, config.embed_dim)
        model.config = config
        return model

    def forward(self, images: Tensor, input_ids: Tensor, attention_mask: Tensor | None = None) -> dict[str, Tensor]:
        """Teacher forcing: logits (B, T, V) for every position of ``input_ids``."""
        image = self.image_encoder(images)
        out = {"logits": self.decoder(input_ids, image.tokens, memory_mask=image.mask, attention_mask=attention_mask)}
        if self.text_encoder is not None:
            out["image_features"] = F.normalize(self.image_projection(image.pooled), dim=-1)
            text = self.text_encoder(input_ids, attention_mask)
            out["text_features"] = F.normalize(self.text_projection(text.pooled), dim=-1)
        return out

    def generate(self, images: Tensor, **kwargs: Any) -> Tensor:
        """Caption token ids (B, L); kwargs go to :func:`generate` (strategy, num_beams ...)."""
        image = self.image_encoder(images)
        ids, _scores = generate(self.decoder, image.tokens, image.mask, **kwargs)
        return ids
