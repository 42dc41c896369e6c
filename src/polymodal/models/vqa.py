"""VQAModel: image and question encoders, a fusion module, and an answer head that either
classifies over an answer vocabulary or generates the answer with a text decoder."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from polymodal.models.base import ComposedModel
from polymodal.models.captioner import build_decoder
from polymodal.models.config import VQAConfig
from polymodal.models.fusion_classifier import encode_modalities
from polymodal.modules.encoders import ENCODERS
from polymodal.modules.encoders.base import Encoder
from polymodal.modules.fusion import FUSIONS
from polymodal.modules.fusion.base import Fusion, FusionOutput
from polymodal.modules.heads import ClassificationHead
from polymodal.modules.heads.decoder import TransformerDecoder
from polymodal.modules.heads.generation import generate


class VQAModel(ComposedModel):
    config_class = VQAConfig

    def __init__(
        self,
        image_encoder: Encoder,
        text_encoder: Encoder,
        fusion: Fusion,
        answer_head: nn.Module | None = None,
        decoder: TransformerDecoder | None = None,
    ) -> None:
        super().__init__()
        if (answer_head is None) == (decoder is None):
            raise ValueError("VQAModel needs exactly one of answer_head (classify) or decoder (generate)")
        self.encoders = nn.ModuleDict({"image": image_encoder, "text": text_encoder})
        self.fusion = fusion
        self.answer_head = answer_head
        self.decoder = decoder

    @classmethod
    def from_config(cls, config: VQAConfig) -> VQAModel:
        image_encoder = ENCODERS.build(config.image_encoder.name, **config.image_encoder.params)
        text_encoder = ENCODERS.build(config.text_encoder.name, **config.text_encoder.params)
        fusion = FUSIONS.build(
            config.fusion.name,
            input_dims={"image": image_encoder.output_dim, "text": text_encoder.output_dim},
            output_dim=config.fusion_dim,
            **config.fusion.params,
        )
        head = decoder = None
        if config.answer_mode == "classify":
            if config.num_answers is None:
                raise ValueError("vqa: answer_mode 'classify' needs num_answers")
            head = ClassificationHead(fusion.output_dim, config.num_answers)
        else:
            if config.decoder is None:
                raise ValueError("vqa: answer_mode 'generate' needs a decoder config")
            decoder = build_decoder(config.decoder, fusion.output_dim)
        model = cls(image_encoder, text_encoder, fusion, head, decoder)
        model.config = config
        return model

    def fuse(self, images: Tensor, question_ids: Tensor, question_mask: Tensor | None) -> FusionOutput:
        features, present = encode_modalities(
            self.encoders, {"image": (images, None), "text": (question_ids, question_mask)}, None
        )
        return self.fusion(features, present)

    def _memory(self, fused: FusionOutput) -> tuple[Tensor, Tensor | None]:
        # Decoders attend to the fused token sequence when the fusion keeps one (attention,
        # graph), otherwise to the single pooled vector.
        if fused.tokens is not None and fused.tokens.shape[-1] == fused.pooled.shape[-1]:
            return fused.tokens, fused.mask
        return fused.pooled.unsqueeze(1), None  # (B, 1, D)

    def forward(
        self,
        images: Tensor,
        question_ids: Tensor,
        question_mask: Tensor | None = None,
        answer_ids: Tensor | None = None,
        answer_mask: Tensor | None = None,
    ) -> Tensor:
        """classify: answer logits (B, A). generate: decoder logits (B, T, V) for ``answer_ids``."""
        fused = self.fuse(images, question_ids, question_mask)
        if self.answer_head is not None:
            return self.answer_head(fused.pooled)
        if answer_ids is None:
            raise ValueError("generative VQA needs answer_ids for teacher forcing; use generate() at inference")
        memory, memory_mask = self._memory(fused)
        return self.decoder(answer_ids, memory, memory_mask=memory_mask, attention_mask=answer_mask)

    def generate(self, images: Tensor, question_ids: Tensor, question_mask: Tensor | None = None, **kwargs: Any) -> Tensor:
        if self.decoder is None:
            raise ValueError("this VQA model classifies answers; call forward() and take the argmax")
        memory, memory_mask = self._memory(self.fuse(images, question_ids, question_mask))
        ids, _scores = generate(self.decoder, memory, memory_mask, **kwargs)
        return ids
