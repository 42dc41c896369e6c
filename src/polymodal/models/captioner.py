"""Captioner: a source tower (image, or any modality) whose tokens a text decoder cross-attends to.

With a ``text`` tower beside the source it is CoCa-style: the same model also returns normalised source
and caption features so a contrastive loss can be added to the captioning loss.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polymodal.models.base import MODELS, ComposedModel, Inputs, Presence, build_encoders
from polymodal.models.config import CaptionerConfig, DecoderConfig
from polymodal.modules.heads import DECODERS, ProjectionHead, TextDecoder, generate
from polymodal.modules.heads.generation import Strategy


def build_decoder(config: DecoderConfig, memory_dim: int) -> TextDecoder:
    return DECODERS.build(  # type: ignore[no-any-return]
        config.name,
        memory_dim=memory_dim,
        vocab_size=config.vocab_size,
        max_length=config.max_length,
        pad_id=config.pad_id,
        bos_id=config.bos_id,
        eos_id=config.eos_id,
        **config.params,
    )


def memory_of(tokens: Tensor, mask: Tensor | None, present: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """Tokens for a decoder to attend to, masked where padding or where the sample lacks the modality."""
    if present is None or bool(present.all()):
        return tokens, mask
    here = present.to(torch.bool)[:, None].expand(tokens.shape[:2])
    return tokens, here if mask is None else here & mask.bool()


class Captioner(ComposedModel):
    capabilities = frozenset({"caption"})

    def __init__(
        self, encoders: Mapping[str, nn.Module], decoder: TextDecoder, source: str = "image", embed_dim: int = 256
    ) -> None:
        super().__init__(encoders)
        if source not in self.encoders:
            raise ValueError(f"source {source!r} has no encoder; encoders: {self.modalities}")
        self.source = source
        self.decoder = decoder
        self.contrastive = source != "text" and "text" in self.encoders
        if self.contrastive:
            self.projections = nn.ModuleDict(
                {m: ProjectionHead(e.output_dim, embed_dim) for m, e in self.encoders.items()}  # type: ignore[arg-type]
            )
            self.capabilities = frozenset({"caption", "embed"})  # type: ignore[misc]

    @classmethod
    def from_config(cls, config: CaptionerConfig) -> Captioner:
        encoders = build_encoders(config.encoders)
        decoder = build_decoder(config.decoder, encoders[config.source].output_dim)
        return cls(encoders, decoder, config.source, config.embed_dim)

    def embed(self, modality: str, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """CoCa-style only: one modality's inputs -> (B, embed_dim) unit vectors."""
        if not self.contrastive:
            raise ValueError("this captioner has no contrastive text tower, so it does not embed")
        return F.normalize(self.projections[modality](self.encoders[modality](x, mask).pooled), dim=-1)

    def _memory(self, inputs: Inputs, present: Presence | None, batch: int) -> tuple[Tensor, Tensor | None, Any]:
        """Source tokens and mask for the decoder, and the source's encoder output; when no sample of the batch has
        the source, one masked placeholder token (the decoders gate a fully masked memory to zero) and None."""
        if self.source not in inputs:
            weight = next(self.decoder.parameters())
            tokens = weight.new_zeros(batch, 1, self.encoders[self.source].output_dim)
            return tokens, torch.zeros(batch, 1, dtype=torch.bool, device=weight.device), None
        x, mask = inputs[self.source]
        source = self.encoders[self.source](x, mask)
        here = None if present is None else present.get(self.source)
        memory, memory_mask = memory_of(source.tokens, source.mask, here)
        return memory, memory_mask, source

    def forward(
        self, inputs: Inputs, caption_ids: Tensor, caption_mask: Tensor | None = None, present: Presence | None = None
    ) -> dict[str, Any]:
        """Teacher forcing: ``logits`` (B, T, V) for every position of ``caption_ids``; CoCa-style also
        ``features`` (modality -> (B, embed_dim) unit vectors of the source and of the caption) when the batch
        has the source."""
        memory, memory_mask, source = self._memory(inputs, present, caption_ids.size(0))
        out: dict[str, Any] = {
            "logits": self.decoder(caption_ids, memory, memory_mask=memory_mask, attention_mask=caption_mask)
        }
        if self.contrastive and source is not None:
            text = self.encoders["text"](caption_ids, caption_mask)
            out["features"] = {
                self.source: F.normalize(self.projections[self.source](source.pooled), dim=-1),
                "text": F.normalize(self.projections["text"](text.pooled), dim=-1),
            }
        return out

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
        """Caption token ids (B, L), L <= ``max_new_tokens``, ending at EOS then padded; the options go to
        :func:`~polymodal.modules.heads.generate`:

        - ``strategy``: "greedy", "beam" or "sample".
        - ``max_new_tokens``: the most tokens to generate, at most the decoder's max_length.
        - ``num_beams``: how many hypotheses "beam" keeps per sample.
        - ``length_penalty``: a sequence's score is its log-probability over ``length ** length_penalty``.
        - ``top_k``: "sample" draws from the k likeliest tokens only (0: all).
        - ``top_p``: "sample" draws from the smallest set of tokens holding probability ``top_p`` (1.0: all).
        - ``temperature``: "sample" divides the logits by it (> 0; lower is closer to greedy).
        - ``generator``: the torch generator "sample" draws with, for reproducible samples.
        - ``use_cache``: False re-runs the whole prefix at every step (slow; the reference for the cache).
        """
        if self.source not in inputs:
            raise ValueError(f"a caption needs the {self.source!r} input to describe; got {sorted(inputs)}")
        memory, memory_mask, _ = self._memory(inputs, present, 0)
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


MODELS.register("captioner")(Captioner.from_config)
