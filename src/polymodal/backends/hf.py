"""Hugging Face checkpoints as Backends: ``CLIPModel`` (embed) and image captioners (caption).

``load_hf_backend(path)`` reads ``config.json`` (:func:`detect_hf_kind`) and builds the right
backend. CLIP runs as a polymodal :class:`EmbeddingModel` (see :mod:`polymodal.interop.clip`);
BLIP and VisionEncoderDecoder captioners run transformers' own ``generate``, fed by
polymodal's image preprocessing and tokenizer.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from polymodal.backends.base import CAPTION, EMBED, PixelTower, TaskNotSupported
from polymodal.data.text import TextTokenizer
from polymodal.fsutil import hash_files
from polymodal.interop.clip import ConvertedCLIP, load_clip
from polymodal.interop.detect import BLIP_CAPTION, CLIP, VISION_ENCODER_DECODER, detect_hf_kind, supported_list
from polymodal.interop.hub import HF_CONFIG_FILE, HFLoadError, resolve_model_dir
from polymodal.interop.preprocess import HFImagePreprocess, load_hf_preprocess


def checkpoint_identity(directory: Path) -> str:
    """sha256 of ``config.json`` and the weight files: a copy of the checkpoint has the same
    identity, a fine-tuned one does not."""
    files = [directory / HF_CONFIG_FILE, *directory.glob("*.safetensors"), *directory.glob("*.bin")]
    return hash_files([f for f in files if f.is_file()], root=directory)


class _HFBackend:
    """What both HF backends share: naming, identity, device moves, refusing missing tasks."""

    capabilities: frozenset[str] = frozenset()
    embed_dim: int | None = None

    def __init__(self, kind: str, directory: Path, model: torch.nn.Module, preprocess: HFImagePreprocess) -> None:
        self.name = f"hf-{kind}:{directory}"
        self.source = str(Path(directory).resolve())
        self.identity = checkpoint_identity(directory)
        self.directory = directory
        self.preprocess = preprocess
        self._module = model
        self.device = torch.device("cpu")

    def to(self, device: str | torch.device) -> _HFBackend:
        self.device = torch.device(device)
        self._module.to(self.device)
        return self

    def _pixels(self, images: Sequence[Image.Image]) -> torch.Tensor:
        return torch.stack([self.preprocess.to_tensor(img) for img in images]).to(self.device)  # (N, 3, S, S)

    def embed_text(self, texts: Sequence[str]) -> torch.Tensor:
        raise TaskNotSupported(self, "embed text")  # type: ignore[arg-type]

    def embed_images(self, images: Sequence[Image.Image]) -> torch.Tensor:
        raise TaskNotSupported(self, "embed images")  # type: ignore[arg-type]

    def caption(self, images: Sequence[Image.Image], *, max_new_tokens: int = 30, num_beams: int = 1) -> list[str]:
        raise TaskNotSupported(self, "caption")  # type: ignore[arg-type]

    def answer(self, images: Sequence[Image.Image], questions: Sequence[str]) -> list[str]:
        raise TaskNotSupported(self, "answer questions")  # type: ignore[arg-type]

    def generate(self, texts: Sequence[str], **options: object) -> list[Image.Image]:
        raise TaskNotSupported(self, "generate images")  # type: ignore[arg-type]


class HFClipBackend(_HFBackend):
    """A ``CLIPModel`` directory served by polymodal's EmbeddingModel over the same weights."""

    capabilities = frozenset({EMBED})

    def __init__(self, clip: ConvertedCLIP) -> None:
        super().__init__(CLIP, clip.directory, clip.model, clip.preprocess)
        self.clip = clip
        self.embed_dim = clip.model.embed_dim

    @classmethod
    def load(cls, id_or_dir: str | os.PathLike[str], dtype: torch.dtype | None = None) -> HFClipBackend:
        """``dtype=torch.bfloat16`` trades a little accuracy for ~2x CPU speed (see load_clip)."""
        return cls(load_clip(id_or_dir, dtype=dtype))

    @property
    def logit_scales(self) -> dict[str, float]:
        """CLIP's learned temperature: logits = scale * cosine similarity."""
        return {"image-text": self.clip.logit_scale}

    @torch.inference_mode()
    def embed_text(self, texts: Sequence[str]) -> torch.Tensor:
        ids, mask = self.clip.tokens(list(texts))
        return self.clip.model.embed("text", ids.to(self.device), mask.to(self.device)).float()

    @torch.inference_mode()
    def embed_images(self, images: Sequence[Image.Image]) -> torch.Tensor:
        return self.clip.model.embed("image", self._pixels(images)).float()

    def pixel_tower(self) -> PixelTower:
        """The image tower an attack moves pixels against."""
        return PixelTower(
            pixels=lambda images: (self._pixels(images), None),
            embed=lambda pixels, mask: self.clip.model.embed("image", pixels),
            mean=tuple(self.preprocess.mean),
            std=tuple(self.preprocess.std),
        )


class HFCaptionBackend(_HFBackend):
    """A BLIP (``BlipForConditionalGeneration``) or ``VisionEncoderDecoderModel`` captioner."""

    capabilities = frozenset({CAPTION})

    def __init__(
        self, kind: str, directory: Path, model: Any, tokenizer: TextTokenizer, preprocess: HFImagePreprocess
    ) -> None:
        super().__init__(kind, directory, model, preprocess)
        self.model = model.eval()
        self.tokenizer = tokenizer

    @classmethod
    def load(cls, id_or_dir: str | os.PathLike[str], kind: str | None = None) -> HFCaptionBackend:
        import transformers

        directory = resolve_model_dir(id_or_dir)
        kind = kind or detect_hf_kind(directory)
        classes = {BLIP_CAPTION: "BlipForConditionalGeneration", VISION_ENCODER_DECODER: "VisionEncoderDecoderModel"}
        if kind not in classes:
            raise HFLoadError(f"{directory}: not a captioning checkpoint; supported: {supported_list()}")
        try:
            model = getattr(transformers, classes[kind]).from_pretrained(str(directory), local_files_only=True)
            tokenizer = TextTokenizer.load(directory)
        except (OSError, ValueError, TypeError) as e:
            raise HFLoadError(f"{directory}: could not load the {classes[kind]} checkpoint ({e})") from None
        return cls(kind, directory, model, tokenizer, load_hf_preprocess(directory))

    @torch.inference_mode()
    def caption(self, images: Sequence[Image.Image], *, max_new_tokens: int = 30, num_beams: int = 1) -> list[str]:
        # Greedy (num_beams=1) or beam search, never sampling: a caption is reproducible.
        ids = self.model.generate(
            pixel_values=self._pixels(images), max_new_tokens=max_new_tokens, num_beams=num_beams, do_sample=False
        )  # (N, L)
        return [self.tokenizer.decode(row).strip() for row in ids]


def load_hf_backend(id_or_dir: str | os.PathLike[str]) -> HFClipBackend | HFCaptionBackend:
    """The backend for a transformers checkpoint directory (or Hub id), chosen from its config.json."""
    directory = resolve_model_dir(id_or_dir)
    kind = detect_hf_kind(directory)
    if kind is None:
        raise HFLoadError(
            f"{directory}: not a Hugging Face checkpoint (no transformers config.json); supported: {supported_list()}"
        )
    if kind == CLIP:
        return HFClipBackend.load(directory)
    return HFCaptionBackend.load(directory, kind)
