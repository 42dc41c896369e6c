"""A polymodal model directory (``config.json`` + ``model.safetensors`` + tokenizer + preprocessing) as a Backend."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from PIL import Image

from polymodal.backends.base import ANSWER, CAPTION, EMBED
from polymodal.data.transforms import ImagePipeline
from polymodal.evaluate.bundle import ModelBundle, load_bundle
from polymodal.fsutil import hash_files
from polymodal.models import Captioner, DualEncoder, VQAModel
from polymodal.models.base import find_model_dir

class PolymodalBackend:
    """Wraps a :class:`ModelBundle`; the model's kind decides what it can do."""

    def __init__(self, bundle: ModelBundle) -> None:
        self.bundle = bundle
        self.name = f"polymodal:{bundle.path}"
        self.source = str(Path(bundle.path).resolve())
        self.identity = hash_files([p for p in bundle.path.rglob("*") if p.is_file()], root=bundle.path)
        model = bundle.model
        caps: set[str] = set()
        if isinstance(model, DualEncoder) or (isinstance(model, Captioner) and model.text_encoder is not None):
            caps.add(EMBED)
        if isinstance(model, Captioner):
            caps.add(CAPTION)
        if isinstance(model, VQAModel):
            caps.add(ANSWER)
        self.capabilities = frozenset(caps)
        self.embed_dim = int(model.config.embed_dim) if EMBED in caps else None
        self._pipeline = ImagePipeline(bundle.preprocess)
        self.device = torch.device("cpu")

    @classmethod
    def load(cls, path: str | Path) -> PolymodalBackend:
        return cls(load_bundle(find_model_dir(path)))

    def to(self, device: str | torch.device) -> PolymodalBackend:
        self.device = torch.device(device)
        self.bundle.model.to(self.device)
        return self

    # -- inputs -------------------------------------------------------------------------------------------
    def _pixels(self, images: Sequence[Image.Image]) -> torch.Tensor:
        return torch.stack([self._pipeline(img) for img in images]).to(self.device)  # (N, 3, H, W)

    def _tokens(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        if self.bundle.tokenizer is None:
            raise ValueError(f"{self.bundle.path}: the model directory has no tokenizer/")
        ids, mask = self.bundle.tokenizer.encode_batch(list(texts), self.bundle.max_text_length)
        return ids.to(self.device), mask.to(self.device)

    # -- tasks --------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def embed_text(self, texts: Sequence[str]) -> torch.Tensor:
        return self.bundle.model.encode_text(*self._tokens(texts)).float()  # type: ignore[operator]

    @torch.inference_mode()
    def embed_images(self, images: Sequence[Image.Image]) -> torch.Tensor:
        return self.bundle.model.encode_image(self._pixels(images)).float()  # type: ignore[operator]

    @torch.inference_mode()
    def caption(self, images: Sequence[Image.Image], *, max_new_tokens: int = 30, num_beams: int = 1) -> list[str]:
        strategy = {"strategy": "beam", "num_beams": num_beams} if num_beams > 1 else {"strategy": "greedy"}
        # The decoder's positions end at max_text_length (one of them holds BOS): a longer request is capped.
        max_new_tokens = min(max_new_tokens, self.bundle.max_text_length - 1)
        ids = self.bundle.model.generate(self._pixels(images), max_new_tokens=max_new_tokens, **strategy)  # type: ignore[operator]
        return [self.bundle.tokenizer.decode(row) for row in ids]  # type: ignore[union-attr]

    @torch.inference_mode()
    def answer(self, images: Sequence[Image.Image], questions: Sequence[str]) -> list[str]:
        model: VQAModel = self.bundle.model  # type: ignore[assignment]
        pixels, (ids, mask) = self._pixels(images), self._tokens(questions)
        if model.decoder is not None:
            out = model.generate(pixels, ids, mask, strategy="greedy", max_new_tokens=8)
            return [self.bundle.tokenizer.decode(row) for row in out]  # type: ignore[union-attr]
        if self.bundle.answers is None:
            raise ValueError(f"{self.bundle.path}: a classifying VQA model needs its answers.json")
        return [self.bundle.answers[i] for i in model(pixels, ids, mask).argmax(-1).tolist()]

