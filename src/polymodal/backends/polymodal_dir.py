"""A polymodal model directory (config, weights, processors, answers) as a Backend."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from polymodal.backends.base import ANSWER, CAPTION, EMBED, GENERATE, PREDICT, PixelTower
from polymodal.data.errors import BadSampleError
from polymodal.data.processors import ImageProcessor
from polymodal.data.readers.base import PathResolver
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
        if "classify" in model.capabilities:  # a fusion classifier predicts rows of its modalities
            self.capabilities |= {PREDICT}
        width = (getattr(model, "embed_dim", None) or model.config.embed_dim) if EMBED in self.capabilities else None
        self.embed_dim = None if width is None else int(width)
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
        if PREDICT in self.capabilities:  # the towers it has a processor for: what a row's columns are named
            self.media[PREDICT] = frozenset(m for m in model.encoders if m in saved.processors)
        self.device = torch.device("cpu")

    @property
    def classes(self) -> list[str]:
        """A classifier's output names: its answers.json, else each output's index (a regression: its one value)."""
        outputs = int(getattr(self.saved.model.config, "num_classes", 0))
        return list(self.saved.answers) if self.saved.answers is not None else [str(i) for i in range(outputs)]

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

    def pixel_tower(self) -> PixelTower | None:
        """The image tower an attack moves pixels against (None without an image tower that embeds)."""
        processor = self.saved.processors.get("image")
        if (
            EMBED not in self.capabilities
            or "image" not in self.media[EMBED]
            or not isinstance(processor, ImageProcessor)
        ):
            return None
        model = self.saved.model
        return PixelTower(
            pixels=lambda images: self._inputs("image", images),
            embed=lambda pixels, mask: model.embed("image", pixels, mask),  # type: ignore[operator]
            mean=tuple(processor.preprocess.mean),
            std=tuple(processor.preprocess.std),
        )

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

    def prepare(self, modality: str, value: object, resolver: PathResolver, row: int) -> Any:
        """One row's ``modality`` cell (a path, resolved by ``resolver`` when the processor reads files; a text ...)
        prepared as the model was trained, to pass to :meth:`predict`; a bad one raises BadSampleError naming the
        table, ``row`` and the modality."""
        processor = self.saved.processors[modality]
        ref = resolver.resolve(value, modality, row) if processor.reads_files and isinstance(value, str) else value
        try:
            return processor.prepare(ref, source=resolver.source, row=row)
        except BadSampleError as e:
            if e.field is not None:
                raise
            raise BadSampleError(e.reason, source=e.source, row=e.row, field=modality, kind=e.kind) from None

    @torch.inference_mode()
    def predict(self, values: Mapping[str, Sequence[Any]], absent: bool = False) -> torch.Tensor | None:
        """(B, outputs) float32 logits of a fusion classifier for one batch: per modality, each row's value from
        :meth:`prepare`, or None where the row lacks it (its ``present`` mask is False). None when no row has any
        input. ``absent``: every row treated as lacking every input (what the model predicts from nothing)."""
        inputs, present = {}, {}
        for modality, cells in values.items():
            batch = self.saved.processors[modality].collate(list(cells))
            if batch.x is None:
                continue  # no row has it: the tower does not run
            mask = None if batch.mask is None else batch.mask.to(self.device)
            inputs[modality] = (batch.x.to(self.device), mask)
            present[modality] = (batch.present & (not absent)).to(self.device)
        if not inputs:
            return None
        return self.saved.model(inputs, present).float().cpu()  # type: ignore[no-any-return]

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
