"""What every benchmark run shares: the loaded model, batching, the files read, options.

The model is loaded once, lazily, in both forms a suite may need: the :class:`Backend`
(embed / caption / answer, for any kind of model) and, for polymodal model directories only, the
:class:`SavedModel` (the suites that call a fusion model directly).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
from PIL import Image

from polymodal.backends import Backend, load_backend
from polymodal.backends.base import accepts, embed, logit_scale, pixel_tower
from polymodal.data.image import decode_image
from polymodal.models import ComposedModel, SavedModel
from polymodal.models.transfer import cache_towers, freeze_towers
from polymodal.modules.attacks import pgd_images

T = TypeVar("T")
# An image a benchmark holds: a path, encoded bytes, or pixels already decoded (CIFAR).
ImageRef = str | bytes | Image.Image
# An item of a benchmark's media modality: an image as above, other media as a path or encoded bytes.
ItemRef = ImageRef
# Applied to every decoded image before the model sees it: (image, item index) -> image.
ImageFn = Callable[[Image.Image, int], Image.Image]


ATTACK_STEPS = 10  # PGD-10: the usual evaluation attack (Madry et al. 2018 used 7-20 steps)


@dataclass(frozen=True)
class Attack:
    """PGD on the images: ``steps`` signed-gradient steps from a random start, each pixel at most ``epsilon`` (of
    its [0, 1] range) from where it was, raising the cross-entropy of each image's true class."""

    epsilon: float
    steps: int = ATTACK_STEPS


class NotApplicable(ValueError):
    """A benchmark cannot score this model (a capability it lacks) or this split (nothing of the kind it scores):
    ``run_eval`` records it as skipped, with this message as the reason, and runs the other benchmarks."""


def loaded_from(backend: Backend, spec: str) -> Path | None:
    """The directory ``backend`` (loaded from ``spec``) was read from: a polymodal model's own (``best/`` of a run),
    else ``spec`` when it is a directory; None for a named model such as ``polymodal-base``."""
    saved = getattr(backend, "saved", None)
    if isinstance(saved, SavedModel):
        return saved.path
    path = Path(spec)
    return path if path.is_dir() else None


def batches(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@dataclass
class EvalContext:
    model: str
    data: Path | None = None
    templates: str | None = None  # None: each benchmark's own default set
    seed: int = 0
    batch_size: int = 64
    n_resamples: int = 1000  # bootstrap resamples for the 95% CIs
    meteor: bool = True  # METEOR when java exists (a Java start costs ~20 s)
    judges: dict[str, str] = field(default_factory=dict)  # name -> model path: instruments a benchmark scores with
    media_dir: Path | None = None  # where a benchmark writes what the model made (generated images), for examples
    files_read: set[Path] = field(default_factory=set)
    # The judges loaded: name -> (model directory or None, identity), hashed into the provenance like the model.
    judges_loaded: dict[str, tuple[Path | None, str]] = field(default_factory=dict)
    _backend: Backend | None = field(default=None, init=False, repr=False)
    _text_cache: dict[tuple[str, ...], torch.Tensor] = field(default_factory=dict, init=False, repr=False)
    _media_cache: dict[tuple[Any, ...], torch.Tensor] = field(default_factory=dict, init=False, repr=False)

    # -- model ------------------------------------------------------------------------------------------
    @property
    def backend(self) -> Backend:
        if self._backend is None:
            self._backend = load_backend(self.model)
            if self.is_polymodal:
                _cache_image_towers(self._backend.saved.model)  # type: ignore[attr-defined]
        return self._backend

    @property
    def is_polymodal(self) -> bool:
        """True when the model is a polymodal model directory (its :class:`SavedModel` is available)."""
        return isinstance(getattr(self.backend, "saved", None), SavedModel)

    @property
    def saved(self) -> SavedModel:
        """The polymodal model with its processors (the backend's own, not a second copy)."""
        if not self.is_polymodal:
            raise NotApplicable(f"{self.model}: this suite needs a polymodal model directory")
        return self.backend.saved  # type: ignore[attr-defined, no-any-return]

    @property
    def model_dir(self) -> Path | None:
        """The directory the model was loaded from (None for a named model such as ``polymodal-base``)."""
        return loaded_from(self.backend, self.model)

    def require(self, capability: str, benchmark: str, modality: str | None = None) -> None:
        """Refuse a model that lacks ``capability`` (for ``modality``, when given) before any data is read."""
        if capability not in self.backend.capabilities:
            can = ", ".join(sorted(self.backend.capabilities)) or "nothing"
            raise NotApplicable(f"benchmark {benchmark} needs a model that can {capability}; {self.model} can: {can}")
        if modality is not None and not self.takes(capability, modality):
            takes = ", ".join(sorted(accepts(self.backend, capability)))
            raise NotApplicable(
                f"benchmark {benchmark} needs a model that can {capability} {modality}; "
                f"{self.model} can {capability}: {takes}"
            )

    def judge(self, name: str, benchmark: str) -> str:
        """The model a benchmark scores with (``--judge NAME=PATH``), or an error saying which is missing."""
        if name not in self.judges:
            given = ", ".join(sorted(self.judges)) or "none"
            raise ValueError(f"benchmark {benchmark} needs --judge {name}=PATH (judges given: {given})")
        return self.judges[name]

    def judge_backend(self, name: str, benchmark: str) -> Backend:
        """The judge ``name`` loaded (as :func:`load_backend` loads a model), noted for the result's provenance."""
        spec = self.judge(name, benchmark)
        backend = load_backend(spec)
        self.judges_loaded[name] = (loaded_from(backend, spec), backend.identity)
        return backend

    def takes(self, capability: str, modality: str) -> bool:
        """True when the model can ``capability`` (embed, caption, ...) items of ``modality`` (embed: clips too, by
        frames, for an image-text model without a video tower)."""
        return modality in accepts(self.backend, capability)

    # -- data -------------------------------------------------------------------------------------------
    def read(self, *paths: str | Path) -> None:
        """Record files a benchmark read, for the dataset hash."""
        self.files_read.update(Path(p) for p in paths)

    def images(self, refs: Sequence[ImageRef], indices: Sequence[int], image_fn: ImageFn | None) -> list[Image.Image]:
        """Decode ``refs`` and apply ``image_fn`` (item ``indices`` seed per-image corruptions)."""
        out = []
        for ref, index in zip(refs, indices):
            img = ref.convert("RGB") if isinstance(ref, Image.Image) else decode_image(ref)
            out.append(image_fn(img, index) if image_fn is not None else img)
        return out

    def map_media(
        self,
        fn: Callable[[list[Any]], T],
        modality: str,
        refs: Sequence[Any],
        image_fn: ImageFn | None = None,
    ) -> list[T]:
        """``fn`` over batches of ``refs``: images decoded here (one batch at a time keeps memory flat) and
        corrupted by ``image_fn``; other media passed as references, which the model's processor decodes."""
        out = []
        for start in range(0, len(refs), self.batch_size):
            chunk = refs[start : start + self.batch_size]
            out.append(fn(self.decode(modality, chunk, range(start, start + len(chunk)), image_fn)))
        return out

    def decode(
        self, modality: str, refs: Sequence[Any], indices: Sequence[int], image_fn: ImageFn | None = None
    ) -> list[Any]:
        """What the model takes for ``refs``: images decoded and corrupted (see :meth:`images`), other media as
        they are (the model's processor decodes them)."""
        if modality == "image":
            return self.images(refs, indices, image_fn)
        if image_fn is not None:
            raise ValueError(f"image corruptions do not apply to {modality}")
        return list(refs)

    # -- embeddings -------------------------------------------------------------------------------------
    def embed_media(self, modality: str, refs: Sequence[Any], image_fn: ImageFn | None = None) -> torch.Tensor:
        """(N, D) embeddings of ``refs`` of ``modality`` (``image_fn`` corrupts images first). Other media are
        cached: nothing corrupts them, and one benchmark may score the same clips twice (zero-shot and a probe)."""

        def run() -> torch.Tensor:
            out = self.map_media(
                lambda items: embed(self.backend, modality, items, frame_batch=self.batch_size),
                modality,
                refs,
                image_fn,
            )
            return torch.cat(out).float()  # (N, D)

        if modality == "image":
            return run()
        key = (modality, *refs)
        if key not in self._media_cache:
            self._media_cache[key] = run()
        return self._media_cache[key]

    def embed_attacked(
        self,
        refs: Sequence[ImageRef],
        targets: Sequence[int | Sequence[int]],
        candidates: torch.Tensor,
        attack: Attack,
    ) -> torch.Tensor:
        """(N, D) embeddings of the images ``refs`` after ``attack`` moved each against its ``targets[i]`` (rows of
        the (C, D) unit ``candidates``: its true class among class prompts, or its captions among a split's
        captions), raising the cross-entropy of the targets' share of the softmax over logits scaled as zero-shot
        classification scales them. An image without targets stays as it is. Each batch draws its random start from
        a generator seeded by the run's seed and the batch's first index."""
        tower = pixel_tower(self.backend)
        if tower is None:
            raise NotApplicable(
                f"{self.model}: no image tower in PyTorch that embeds into the text space (polymodal-base's classifier "
                "is not one): nothing to attack"
            )
        scale = logit_scale(self.backend, "image")
        out = []
        with torch.inference_mode(False):  # the runner scores in inference mode; an attack needs gradients
            candidates = candidates.detach().clone().float()  # a normal tensor: an inference one cannot enter autograd
            for start in range(0, len(refs), self.batch_size):
                chunk = refs[start : start + self.batch_size]
                images = self.images(chunk, range(start, start + len(chunk)), None)
                pixels, mask = tower.pixels(images)
                own = torch.zeros(len(chunk), len(candidates), dtype=torch.bool, device=pixels.device)
                for row, target in enumerate(targets[start : start + len(chunk)]):
                    own[row, [operator.index(target)] if not isinstance(target, Sequence) else list(target)] = True
                moved_rows = own.any(dim=1)

                def loss_of(
                    x: torch.Tensor,
                    mask: torch.Tensor | None = mask,
                    own: torch.Tensor = own[moved_rows],
                    rows: torch.Tensor = moved_rows,
                ) -> torch.Tensor:
                    logits = scale * tower.embed(x, mask)[rows].float() @ candidates.T  # rows with targets only
                    theirs = logits.masked_fill(~own, float("-inf"))
                    return (torch.logsumexp(logits, dim=1) - torch.logsumexp(theirs, dim=1)).sum() / max(len(own), 1)

                with torch.enable_grad():
                    moved = pgd_images(
                        loss_of,
                        pixels,
                        epsilon=attack.epsilon,
                        steps=attack.steps,
                        mean=tower.mean,
                        std=tower.std,
                        rows=moved_rows,
                        generator=torch.Generator().manual_seed(self.seed * 1_000_003 + start),
                    )
                with torch.no_grad():  # an input asking for gradients skips a cached tower's store: seen once only
                    out.append(tower.embed(moved.requires_grad_(True), mask).float())
        return torch.cat(out)

    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """(N, D) text embeddings, cached: robustness reruns change the images, never the texts."""
        key = tuple(texts)
        if key not in self._text_cache:
            out = [self.backend.embed_text(list(chunk)) for chunk in batches(texts, self.batch_size * 4)]
            self._text_cache[key] = torch.cat(out).float()
        return self._text_cache[key]


# Image outputs kept while evaluating: a VQA or statements suite asks many questions about each image (about 17
# per ShapesWorld image), so each image tower runs once per distinct image instead of once per question.
IMAGE_CACHE_ITEMS = 2048


def _cache_image_towers(model: ComposedModel) -> None:
    """Lock and cache the image tower of a model loaded for evaluation only (nothing trains it here)."""
    if "image" in model.encoders:
        freeze_towers(model, {"encoders.image": 0})
        cache_towers(model, {"encoders.image": IMAGE_CACHE_ITEMS})
