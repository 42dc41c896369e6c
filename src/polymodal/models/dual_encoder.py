"""DualEncoder: an image tower and a text tower projected into one embedding space
(CLIP, SigLIP, LiT). The temperature lives in the loss, not here: the model only returns
L2-normalised features."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from polymodal.models.base import ComposedModel
from polymodal.models.config import DualEncoderConfig
from polymodal.modules.encoders import ENCODERS
from polymodal.modules.encoders.base import Encoder
from polymodal.modules.heads import ProjectionHead


class DualEncoder(ComposedModel):
    config_class = DualEncoderConfig

    def __init__(self, image_encoder: Encoder, text_encoder: Encoder, embed_dim: int = 256, projection: str = "linear") -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.text_encoder = text_encoder
        self.image_projection = ProjectionHead(image_encoder.output_dim, embed_dim, kind=projection)
        self.text_projection = ProjectionHead(text_encoder.output_dim, embed_dim, kind=projection)
        self.embed_dim = embed_dim

    @classmethod
    def from_config(cls, config: DualEncoderConfig) -> DualEncoder:
        model = cls(
            ENCODERS.build(config.image_encoder.name, **config.image_encoder.params),
            ENCODERS.build(config.text_encoder.name, **config.text_encoder.params),
            embed_dim=config.embed_dim,
            projection=config.projection,
        )
        model.config = config
        return model

    def encode_image(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) -> (B, embed_dim), unit norm."""
        return F.normalize(self.image_projection(self.image_encoder(images).pooled), dim=-1)

    def encode_text(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """(B, T) token ids -> (B, embed_dim), unit norm."""
        return F.normalize(self.text_projection(self.text_encoder(input_ids, attention_mask).pooled), dim=-1)

    def forward(self, images: Tensor, input_ids: Tensor, attention_mask: Tensor | None = None) -> dict[str, Tensor]:
        return {
            "image_features": self.encode_image(images),
            "text_features": self.encode_text(input_ids, attention_mask),
        }
