"""A polymodal model directory (config, weights, processors, answers) as a Backend."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image

from polymodal.backends.base import ANSWER, CAPTION, EMBED, GENERATE
from polymodal.data.processors import ImageProcessor
from polymodal.fsutil import hash_files
from polymodal.models import SavedModel, find_model_dir


def directory_identity(directory: Path) -> str:
    """A saved model's identity: the hash of every file in its directory (config, weights, processors ...)."""
    return hash_files([p for p in directory.rglob("*") if p.is_file()], root=directory)


class PolymodalBackend:
    """Wraps a :class:`SavedModel`; the model's capabilities decide what it can do."""

    def __init__(self, saved: SavedModel) -> None:
        self.saved = saved
        self.name = f"polymodal:{saved.path}"
        self.source = str(Path(saved.path).resolve())
        self.identity = directory_identity(saved.path)
        model = saved.model
        self.capabilities = frozenset(c for c in (EMBED, CAPTION, ANSWER, GENERATE) if c in model.capabilities)
        self.embed_dim = int(model.config.embed_dim) if EMBED in self.capabilities else None
        self.logit_scales: dict[str, float] = dict(getattr(model.config, "logit_scales", None) or {})
        # capability -> the modalities it takes: every tower embeds, a captioner reads its source, a question
        # answerer the towers beside its question's.
        self.media = {EMBED: frozenset(model.encoders)}
        if CAPTION in self.capabilities:
            self.media[CAPTION] = frozenset({model.source})  # type: ignore[arg-type]
        if ANSWER in self.capabilities:
            self.media[ANSWER] = frozenset(model.encoders) - {model.question}  # type: ignore[operator]
        if GENERATE in self.capabilities:
            self.media[GENERATE] = frozenset({"text"})
        self.device = torch.device("cpu")

    @classmethod
    def load(cls, path: str | Path) -> PolymodalBackend:
        return cls(SavedModel.load(find_model_dir(path)))

    def to(self, device: str | torch.device) -> PolymodalBackend:
        self.device = torch.device(device)
        self.saved.model.to(self.device)
        return self

    def _inputs(self, modality: str, refs: Sequence[object]) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.saved.inputs(modality, refs, self.device)

    # -- capabilities -------------------------------------------------------------------------------------
    @torch.inference_mode()
    def embed(self, modality: str, refs: Sequence[object]) -> torch.Tensor:
        """(N, D) unit embeddings of ``refs`` of any modality the model has a tower for (images decoded, texts as
        strings, audio as paths or encoded bytes: whatever that modality's processor reads)."""
        return self.saved.model.embed(modality, *self._inputs(modality, refs)).float()  # type: ignore[operator]

    def embed_text(self, texts: Sequence[str]) -> torch.Tensor:
        return self.embed("text", texts)

    def text_lengths(self, texts: Sequence[str]) -> list[int]:
        """Token counts of ``texts`` as the model reads them (special tokens in, truncated to its length)."""
        return [len(ids) for ids in self.saved.text.prepare_many(texts)]

    def embed_images(self, images: Sequence[Image.Image]) -> torch.Tensor:
        return self.embed("image", images)

    @torch.inference_mode()
    def caption(self, images: Sequence[Image.Image], *, max_new_tokens: int = 30, num_beams: int = 1) -> list[str]:
        """Captions of the captioner's source items (images, or references of its source modality)."""
        strategy = {"strategy": "beam", "num_beams": num_beams} if num_beams > 1 else {"strategy": "greedy"}
        # The decoder's positions end at the text length (one of them holds BOS): a longer request is capped.
        max_new_tokens = min(max_new_tokens, self.saved.model.decoder.max_length - 1)  # type: ignore[union-attr]
        model = self.saved.model
        ids = model.generate(
            {model.source: self._inputs(model.source, images)},
            max_new_tokens=max_new_tokens,  # type: ignore[operator, union-attr]
            **strategy,
        )
        return [self.saved.text.decode(row) for row in ids]

    @property
    def answer_source(self) -> str:
        """The one modality the question answerer's items are of (image, video, audio)."""
        own = sorted(self.media.get(ANSWER, ()))
        if len(own) != 1:
            raise ValueError(f"{self.saved.path}: answering takes items of one modality; this model reads {own}")
        return own[0]

    @torch.inference_mode()
    def answer(self, items: Sequence[object], questions: Sequence[str], drop: str | None = None) -> list[str]:
        """Answers about each item of the model's source modality (images decoded, other media as references its
        processor reads); ``drop`` names a modality every item is treated as lacking."""
        model = self.saved.model
        source = self.answer_source
        inputs = {source: self._inputs(source, items), model.question: self._inputs(model.question, questions)}
        present = None if drop is None else {drop: torch.zeros(len(questions), dtype=torch.bool, device=self.device)}
        if model.answer_mode == "generate":  # type: ignore[union-attr]
            out = model.generate(inputs, present, strategy="greedy", max_new_tokens=8)  # type: ignore[operator]
            return [self.saved.text.decode(row) for row in out]
        if self.saved.answers is None:
            raise ValueError(f"{self.saved.path}: a classifying question-answering model needs its answers.json")
        return [self.saved.answers[i] for i in model(inputs, present).argmax(-1).tolist()]

    @torch.inference_mode()
    def generate(
        self,
        texts: Sequence[str],
        *,
        num_per_text: int,
        steps: int,
        guidance: float,
        seed: int | Sequence[int],
        sampler: str,
    ) -> list[Image.Image]:
        """``num_per_text`` images per text, text-major, mapped from model space to pixels by the image processor the
        model was saved with."""
        image = self.saved.processors.get("image")
        if not isinstance(image, ImageProcessor):
            raise ValueError(f"{self.saved.path}: a generator needs its image processor (processors.json 'image')")
        pixels = self.saved.model.generate(  # type: ignore[operator]
            {"text": self._inputs("text", texts)},
            num_per_text=num_per_text,
            steps=steps,
            guidance=guidance,
            seed=seed,
            sampler=sampler,
        )  # (len(texts) * num_per_text, 3, S, S)
        return image.preprocess.to_images(pixels)
