"""The contract every kind of loadable model meets, so the API, CLI, index and server treat them alike.

A backend is whatever `polymodal.load()` found at a path or name: a polymodal model directory, a Hugging
Face `CLIPModel`/BLIP directory, or the offline pretrained default. It takes decoded RGB images and plain
strings and returns tensors; batching, input decoding, prompt templates and numpy conversion are done once,
above it, in `polymodal.api.Model`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from PIL import Image

from polymodal.backends.video import IMAGE_FRAMES, VIDEO_TOWER, embed_by_frames
from polymodal.chunking import ChunkSizer, map_in_sized_calls
from polymodal.data.video import VideoSampling

# Capabilities a backend can declare; the API refuses a task the backend does not have with a clear error.
EMBED = "embed"  # embed_text + embed_images into one space (zero-shot classify, search)
CAPTION = "caption"
ANSWER = "answer"
GENERATE = "generate"  # text -> images
PREDICT = "predict"  # rows of a table -> predictions: a fitted predictor's (`polymodal fit`), a fusion classifier's
# What a backend that does not say otherwise takes: images (and text, for embedding); a generator reads text.
IMAGE_MEDIA = {
    EMBED: frozenset({"image", "text"}),
    CAPTION: frozenset({"image"}),
    ANSWER: frozenset({"image"}),
    GENERATE: frozenset({"text"}),
}


@runtime_checkable
class Backend(Protocol):
    name: str  # human-readable, e.g. "polymodal:runs/demo/shapes-clip" or "hf-clip:/models/clip"
    source: str  # what load_backend takes to load this model again: an absolute directory or a model name
    identity: str  # stable content hash of config + weights: an index built with one model refuses another
    capabilities: frozenset[str]
    embed_dim: int | None  # None unless EMBED in capabilities

    def embed_text(self, texts: Sequence[str]) -> torch.Tensor:
        """(N, D) float32, L2-normalised rows."""
        ...

    def embed_images(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """(N, D) float32, L2-normalised rows; images are decoded RGB PIL images of any size."""
        ...

    def caption(self, images: Sequence[Image.Image], *, max_new_tokens: int = 30, num_beams: int = 1) -> list[str]: ...

    def answer(self, images: Sequence[Image.Image], questions: Sequence[str]) -> list[str]:
        """One answer per (item, question): decoded images, or references of the modality ``media(ANSWER)`` names."""
        ...

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
        """``num_per_text`` RGB images per text, text-major, from one seeded model call over ``texts`` (``seed``: one
        for all, or one per text)."""
        ...

    def to(self, device: str | torch.device) -> Backend: ...


# What a refused task's message adds when the model has a capability the user likely meant: (task, capability) ->
# hint. Data, not branches: a new confusable pair is one more row.
TASK_HINTS: dict[tuple[str, str], str] = {
    ("classify", PREDICT): (
        "classify is zero-shot over the given labels (--labels) and needs an embedding model; this model predicts "
        "its own classes: use `polymodal predict` (or Model.predict)"
    ),
}


class TaskNotSupported(ValueError):
    """Raised when a model is asked for a task it cannot do (e.g. caption with a dual encoder)."""

    def __init__(self, backend: Backend, task: str, modality: str | None = None, takes: Iterable[str] = ()) -> None:
        if modality is not None:  # the task it can do, but not on this modality
            super().__init__(f"model {backend.name} cannot {task} {modality}: it takes {', '.join(sorted(takes))}")
            return
        can = ", ".join(sorted(backend.capabilities))
        if not can:  # a model with no task of the Python API (scored by `polymodal eval`)
            tasks = ", ".join((EMBED, CAPTION, ANSWER, GENERATE, PREDICT))
            can = f"none of the tasks this API serves ({tasks}); `polymodal eval` scores it"
        hints = [TASK_HINTS[task, c] for c in sorted(backend.capabilities) if (task, c) in TASK_HINTS]
        super().__init__("; ".join([f"model {backend.name} cannot {task}: it supports {can}", *hints]))


DEFAULT_LOGIT_SCALE = 100.0  # CLIP's: for a model that learned none (trained before it was saved, or not contrastively)


def logit_scale(backend: Backend, modality: str) -> float:
    """What zero-shot classification of ``modality`` multiplies cosine similarities to texts by: the temperature the
    model learned for that pair (``logit_scales``, "image-text"), else DEFAULT_LOGIT_SCALE."""
    scales = getattr(backend, "logit_scales", None) or {}
    return float(scales.get(f"{modality}-text") or scales.get(f"text-{modality}") or DEFAULT_LOGIT_SCALE)


@dataclass(frozen=True)
class PixelTower:
    """A model's image tower as an attack on its pixels needs it: ``pixels`` turns decoded images into the (B, 3,
    H, W) tensor and mask it reads, ``embed`` their unit embeddings with gradients passing to the pixels, and
    ``mean``/``std`` its normalisation (pixels in [0, 1] before it)."""

    pixels: Callable[[Sequence[Image.Image]], tuple[torch.Tensor, torch.Tensor | None]]
    embed: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]
    mean: tuple[float, ...]
    std: tuple[float, ...]


def pixel_tower(backend: Backend) -> PixelTower | None:
    """``backend``'s image tower for an attack (a ``pixel_tower`` method), or None: it has no image tower that
    embeds in PyTorch (polymodal-base's classifier has none)."""
    own = getattr(backend, "pixel_tower", None)
    return own() if own is not None else None


def media(backend: Backend, capability: str) -> frozenset[str]:
    """The modalities ``backend`` takes for ``capability`` (a polymodal model says; the others take images)."""
    if capability not in backend.capabilities:
        return frozenset()
    own = getattr(backend, "media", None)
    return frozenset(own[capability]) if own is not None else IMAGE_MEDIA[capability]


def video_embedding(backend: Backend) -> str | None:
    """How ``backend`` embeds clips: ``VIDEO_TOWER`` (its own), ``IMAGE_FRAMES`` (an image-text model without one,
    zero-shot by its image tower per frame) or None (it cannot)."""
    own = media(backend, EMBED)
    if "video" in own:
        return VIDEO_TOWER
    return IMAGE_FRAMES if {"image", "text"} <= own else None


def accepts(backend: Backend, capability: str) -> frozenset[str]:
    """The modalities ``backend`` takes for ``capability``: ``media``, plus for embed video by frames."""
    own = media(backend, capability)
    return own | {"video"} if capability == EMBED and video_embedding(backend) else own


def text_lengths(backend: Backend, texts: Sequence[str]) -> list[int]:
    """How long each text is for ``backend``: its token count where the backend can tell (a ``text_lengths``
    method), otherwise its length in characters. Batching texts of like length keeps padding low."""
    if hasattr(backend, "text_lengths"):
        return list(backend.text_lengths(texts))
    return [len(text) for text in texts]


def embed(
    backend: Backend,
    modality: str,
    refs: Sequence[Any],
    frame_batch: int = 32,
    frame_sizer: ChunkSizer | None = None,
) -> torch.Tensor:
    """(N, D) embeddings of ``refs`` of ``modality``: decoded images, strings, or media references (paths, bytes)
    for the other modalities of a backend that embeds them (one with an ``embed(modality, refs)`` method). Clips
    a backend has no video tower for go through its image tower per frame, ``frame_batch`` frames at a time, each
    batch in the call sizes ``frame_sizer`` picks when given."""
    if modality not in accepts(backend, EMBED):
        raise TaskNotSupported(backend, f"embed {modality}")
    if modality == "video" and video_embedding(backend) == IMAGE_FRAMES:
        one_call = functools.partial(embed, backend, "image")

        def by_image_tower(frames: list[Image.Image]) -> torch.Tensor:
            if frame_sizer is None:
                return one_call(frames)
            return torch.cat(map_in_sized_calls(frame_sizer, one_call, frames))

        return embed_by_frames(by_image_tower, refs, VideoSampling(), frame_batch)
    if hasattr(backend, "embed"):
        return backend.embed(modality, refs)  # type: ignore[no-any-return]
    return backend.embed_images(refs) if modality == "image" else backend.embed_text(refs)
