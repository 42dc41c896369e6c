"""QuestionAnswerer: a question tower and towers for what it asks about, fused, then an answer head that
classifies over an answer vocabulary or a text decoder that generates the answer (VQA is the image case)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from polymodal.models.base import MODELS, ComposedModel, Inputs, Presence, build_encoders
from polymodal.models.captioner import build_decoder
from polymodal.models.config import QuestionAnsweringConfig
from polymodal.models.fusion_classifier import build_fusion, build_head
from polymodal.modules.fusion import Fusion, FusionOutput
from polymodal.modules.heads import TextDecoder, generate
from polymodal.modules.heads.generation import Strategy


class QuestionAnswerer(ComposedModel):
    capabilities = frozenset({"answer"})

    def __init__(
        self,
        encoders: Mapping[str, nn.Module],
        fusion: Fusion,
        head: nn.Module | None = None,
        decoder: TextDecoder | None = None,
        question: str = "text",
    ) -> None:
        super().__init__(encoders)
        if (head is None) == (decoder is None):
            raise ValueError("QuestionAnswerer needs exactly one of head (classify) or decoder (generate)")
        if question not in self.encoders:
            raise ValueError(f"question modality {question!r} has no encoder; encoders: {self.modalities}")
        self.question = question
        self.fusion = fusion
        self.head = head
        self.decoder = decoder

    @property
    def answer_mode(self) -> str:
        return "classify" if self.head is not None else "generate"

    @classmethod
    def from_config(cls, config: QuestionAnsweringConfig) -> QuestionAnswerer:
        encoders = build_encoders(config.encoders)
        fusion = build_fusion(config.fusion, encoders, config.fusion_dim)
        head = decoder = None
        if config.answer_mode == "classify":
            head = build_head(config.head, fusion.output_dim, config.num_answers)  # type: ignore[arg-type]
        else:
            decoder = build_decoder(config.decoder, fusion.output_dim)  # type: ignore[arg-type]
        return cls(encoders, fusion, head, decoder, config.question)

    def fuse(self, inputs: Inputs, present: Presence | None = None) -> FusionOutput:
        if self.question not in inputs:
            raise ValueError(f"a question ({self.question!r} input) is required")
        return self.fusion(*self.encode(inputs, present))

    def _memory(self, fused: FusionOutput) -> tuple[Tensor, Tensor | None]:
        # Decoders attend to the fused token sequence when the fusion keeps one (attention,
        # graph), otherwise to the single pooled vector.
        if fused.tokens is not None and fused.tokens.shape[-1] == fused.pooled.shape[-1]:
            return fused.tokens, fused.mask
        return fused.pooled.unsqueeze(1), None  # (B, 1, D)

    def forward(
        self,
        inputs: Inputs,
        present: Presence | None = None,
        answer_ids: Tensor | None = None,
        answer_mask: Tensor | None = None,
        auxiliary: dict[str, Tensor] | None = None,
    ) -> Tensor:
        """classify: answer logits (B, A). generate: decoder logits (B, T, V) for ``answer_ids``. A dict given as
        ``auxiliary`` receives the fusion's auxiliary training losses (``FusionOutput.losses``)."""
        fused = self.fuse(inputs, present)
        if auxiliary is not None:
            auxiliary.update(fused.losses)
        if self.head is not None:
            return self.head(fused.pooled)  # type: ignore[no-any-return]
        if answer_ids is None:
            raise ValueError("generative question answering needs answer_ids for teacher forcing; use generate()")
        memory, memory_mask = self._memory(fused)
        return self.decoder(answer_ids, memory, memory_mask=memory_mask, attention_mask=answer_mask)  # type: ignore[misc]

    def generate(
        self,
        inputs: Inputs,
        present: Presence | None = None,
        *,
        strategy: Strategy = "greedy",
        max_new_tokens: int = 20,
        num_beams: int = 4,
        length_penalty: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        use_cache: bool = True,
    ) -> Tensor:
        """Answer token ids (B, L) of a generating model; the options are :meth:`Captioner.generate`'s (each
        described there), passed to :func:`~polymodal.modules.heads.generate`."""
        if self.decoder is None:
            raise ValueError("this model classifies answers; call forward() and take the argmax")
        memory, memory_mask = self._memory(self.fuse(inputs, present))
        ids, _scores = generate(
            self.decoder,
            memory,
            memory_mask,
            strategy=strategy,
            max_new_tokens=max_new_tokens,
            num_beams=num_beams,
            length_penalty=length_penalty,
            top_k=top_k,
            top_p=top_p,
            temperature=temperature,
            generator=generator,
            use_cache=use_cache,
        )
        return ids


MODELS.register("question_answering")(QuestionAnswerer.from_config)
