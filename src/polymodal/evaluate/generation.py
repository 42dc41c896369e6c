"""Measuring text-to-image generation on ShapesWorld by what the images show.

- Attribute accuracy: a scene checker, trained on real ShapesWorld images only (never on a generator's output or
  weights), reads each of the 9 grid cells -- empty, or which colour and shape -- and the reading is scored against
  the prompted objects (:func:`polymodal.metrics.generation.scene_scores`). The checker is an ordinary saved
  polymodal model: recipe ``shapes-scene-checker`` on the cells written by :func:`write_scene_checker_data`. It
  judges colour and shape separately, so held-out colour-shape combinations (test_novel) stay readable.
- :func:`frechet_efficientnet_distance`: the Fréchet distance between two image sets in the pooled 1280-d features
  of the packaged ImageNet EfficientNet-Lite0 -- reported as ``FD (EfficientNet-Lite0)``; it is not the
  Inception-v3 FID and its values do not compare with published FIDs.
- :func:`clip_score`: text-image agreement in a polymodal embedding model's space.

Images are PIL images or tensors, (N, 3, H, W) or (3, H, W), float in [0, 1] or uint8.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
from PIL import Image

from polymodal.data.errors import BadSampleError
from polymodal.data.image import decode_image, to_rgb
from polymodal.data.shapes import (
    COLORS,
    MANIFEST_NAME,
    POSITIONS,
    SHAPES,
    encode_png,
    load_split,
    make_example,
    objects_of,
    positions_caption,
    read_manifest,
)
from polymodal.data.transforms import ImagePreprocess
from polymodal.fsutil import atomic_directory, write_atomic
from polymodal.metrics.generation import SceneObject, frechet_distance_of_features, scene_scores
from polymodal.metrics.generation import clip_score as clip_score_of_embeddings
from polymodal.models import SavedModel, find_model_dir
from polymodal.modules.encoders.efficientnet_lite import EfficientNetLite0
from polymodal.pretrained.imagenet import EFFICIENTNET_LITE0_PREPROCESS, load_efficientnet_lite0

if TYPE_CHECKING:
    from polymodal.backends import Backend

ImagesInput = Sequence[Image.Image] | Sequence[torch.Tensor] | torch.Tensor

FD_NAME = "FD (EfficientNet-Lite0)"
# The weights' own statistics and bicubic resize to 224, but of the whole image: the ImageNet centre crop (224 of
# 256) would cut 6% off each side, clipping the large objects of the border cells.
FD_PREPROCESS = EFFICIENTNET_LITE0_PREPROCESS.model_copy(update={"crop": "none", "resize": None})

_UNIT_PIXELS = ImagePreprocess(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))  # tensors in [0, 1] as they are

SCENE_CHECKER_RECIPE = "shapes-scene-checker"
CELL_PIXELS = 16  # a grid cell resampled to this square (10.7 px in a 32 px image); the recipe's image_size
EMPTY = "empty"  # the label of a cell without an object


# ------------------------------------------------------------------------------------------------- images


def to_pil_images(images: ImagesInput) -> list[Image.Image]:
    """RGB PIL images from PIL images or tensors ((N, 3, H, W), (3, H, W); float in [0, 1] or uint8)."""
    if isinstance(images, torch.Tensor):
        return _tensor_images(images, "images")
    out = []
    for i, image in enumerate(images):
        if isinstance(image, Image.Image):
            out.append(to_rgb(image))
        elif isinstance(image, torch.Tensor) and image.ndim == 3:
            out.extend(_tensor_images(image, f"image #{i}"))
        else:
            raise ValueError(f"image #{i}: expected a PIL image or a (3, H, W) tensor, got {type(image).__name__}")
    return out


def _tensor_images(pixels: torch.Tensor, where: str) -> list[Image.Image]:
    if pixels.dtype == torch.uint8:
        pixels = pixels.float() / 255.0
    elif not pixels.is_floating_point():
        raise ValueError(f"{where}: expected uint8 or float pixels, got {pixels.dtype}")
    elif not bool(torch.isfinite(pixels).all()) or pixels.min() < 0 or pixels.max() > 1:
        raise ValueError(f"{where}: float pixels must be finite and lie in [0, 1] (map a generator's output first)")
    return _UNIT_PIXELS.to_images(pixels)


def load_shapes_images(
    shapes_dir: str | Path, rows: Sequence[dict[str, Any]], image_size: int | None = None
) -> list[Image.Image]:
    """The images of ShapesWorld ``rows``, box-downscaled to ``image_size`` when given and larger."""
    images = []
    for row in rows:
        image = decode_image(Path(shapes_dir) / row["image"], field="image")
        if image_size is not None and image.size != (image_size, image_size):
            image = image.resize((image_size, image_size), Image.Resampling.BOX)
        images.append(image)
    return images


# ------------------------------------------------------------------------------------- Fréchet distance


@lru_cache(maxsize=1)
def _efficientnet() -> EfficientNetLite0:
    # channels_last: PyTorch's CPU depthwise/pointwise convolutions run faster on NHWC.
    return load_efficientnet_lite0().to(memory_format=torch.channels_last)


@torch.inference_mode()
def efficientnet_features(
    images: ImagesInput, batch_size: int = 32, encoder: EfficientNetLite0 | None = None
) -> np.ndarray:
    """(N, 1280) pooled features of the packaged ImageNet EfficientNet-Lite0, images of any size (see
    :data:`FD_PREPROCESS`), in float32 and eval mode."""
    model = (encoder or _efficientnet()).eval()
    pil = to_pil_images(images)
    chunks = []
    for start in range(0, len(pil), batch_size):
        pixels = torch.stack([FD_PREPROCESS(image) for image in pil[start : start + batch_size]])  # (B, 3, 224, 224)
        chunks.append(model(pixels.contiguous(memory_format=torch.channels_last)).pooled.float())
    if not chunks:
        raise ValueError("efficientnet_features needs at least one image")
    return torch.cat(chunks).numpy()


def frechet_efficientnet_distance(
    images_a: ImagesInput | np.ndarray, images_b: ImagesInput | np.ndarray, batch_size: int = 32
) -> float:
    """``FD (EfficientNet-Lite0)`` between two image sets; either may be its (N, 1280) features already (from
    :func:`efficientnet_features`, to embed a reference set once). Small sets bias it upwards: compare values
    at equal set sizes."""
    features = [x if isinstance(x, np.ndarray) else efficientnet_features(x, batch_size) for x in (images_a, images_b)]
    return frechet_distance_of_features(*features)


# ---------------------------------------------------------------------------------------- CLIP score


class Embedder(Protocol):
    """What :func:`clip_score` needs of a model: ``polymodal.api.Model.embed`` (unit vectors, (N, D))."""

    def embed(self, modality: str, items: object) -> np.ndarray: ...


def clip_score(model: Embedder, images: ImagesInput, texts: Sequence[str]) -> float:
    """Mean ``100 * max(cos, 0)`` of each image with its text, both embedded by ``model`` (a loaded
    ``polymodal.api`` model with image and text towers)."""
    pil = to_pil_images(images)
    if len(pil) != len(texts):
        raise ValueError(f"{len(pil)} images for {len(texts)} texts")
    return clip_score_of_embeddings(model.embed("image", pil), model.embed("text", list(texts)))


# ------------------------------------------------------------------------------------------ prompts


def scene_prompt(objects: Sequence[dict[str, Any]]) -> str:
    """The full-spec prompt of a ShapesWorld row's objects, in their order, worded as the ``positions`` caption:
    "a red circle in the top left and a blue square in the center"."""
    scene_of(objects)  # unknown values are errors naming the object
    return positions_caption(objects_of({"objects": objects}))


def scene_of(objects: Sequence[dict[str, Any]]) -> list[SceneObject]:
    """A row's objects as (position, colour, shape); an unknown value is an error naming the object and field."""
    scene = []
    for i, obj in enumerate(objects):
        for field, allowed in (("position", POSITIONS), ("color", tuple(COLORS)), ("shape", SHAPES)):
            if obj.get(field) not in allowed:
                raise ValueError(f"object #{i}: {field} {obj.get(field)!r} is not one of {', '.join(allowed)}")
        scene.append((obj["position"], obj["color"], obj["shape"]))
    return scene


# ------------------------------------------------------------------------------------- scene checker


def cell_crops(image: Image.Image, size: int = CELL_PIXELS) -> list[Image.Image]:
    """The 9 grid cells of ``image`` (row by row, as :data:`~polymodal.data.shapes.POSITIONS`), each resampled from
    its exact box (fractional at 32 px) to ``size`` x ``size``."""
    width, height = image.size
    return [
        image.resize(
            (size, size),
            Image.Resampling.BILINEAR,
            box=(col * width / 3, row * height / 3, (col + 1) * width / 3, (row + 1) * height / 3),
        )
        for row in range(3)
        for col in range(3)
    ]


def cell_labels(objects: Sequence[dict[str, Any]]) -> list[list[str]]:
    """Per cell the checker's targets: ``[colour, shape]`` of its object, or ``["empty"]``."""
    by_cell = {POSITIONS.index(position): [color, shape] for position, color, shape in scene_of(objects)}
    return [by_cell.get(c, [EMPTY]) for c in range(9)]


def write_scene_checker_data(
    shapes_dir: str | Path,
    out_dir: str | Path,
    image_size: int = 32,
    empty_per_image: int = 1,
    novel_fraction: float = 0.25,
) -> Path:
    """Write the scene checker's training data: the cells of real ShapesWorld images (downscaled to
    ``image_size``) as ``cells/*.png``, and ``train.jsonl`` / ``val.jsonl`` with their labels.

    Train holds the train split plus ``novel_fraction`` as many test_novel-style images (a held-out combination
    first), drawn as images ``total, total + 1, ...`` of the dataset's seed: never among its images, so the checker
    meets every colour-shape combination -- it measures, it is not the model under test -- but none of the
    evaluation images. Train keeps every occupied cell and ``empty_per_image`` empty ones per image (the ~7 empty
    cells would drown the shape signal); val (the val split) keeps all 9, so its accuracy is that of whole scenes.
    """
    manifest = read_manifest(shapes_dir)
    if manifest is None:
        raise FileNotFoundError(f"{shapes_dir}: no complete ShapesWorld dataset ({MANIFEST_NAME} missing)")
    seed, total = manifest["params"]["seed"], sum(manifest["counts"].values())
    train = _with_images(shapes_dir, "train", image_size)
    extra = range(total, total + round(novel_fraction * len(train)))
    novel = [make_example(seed, index, image_size, novel=True) for index in extra]
    splits = {
        "train": train + [(row, image) for image, row in novel],
        "val": _with_images(shapes_dir, "val", image_size),
    }
    with atomic_directory(out_dir) as tmp:
        (tmp / "cells").mkdir()
        for split, examples in splits.items():
            if not examples:
                raise ValueError(f"{shapes_dir}: the {split} split has no images")
            lines = []
            for i, (row, image) in enumerate(examples):
                try:
                    labels = cell_labels(row["objects"])
                except (KeyError, ValueError) as e:
                    where = Path(shapes_dir) / f"{split}.jsonl"
                    raise BadSampleError(
                        str(e), source=where, row=i + 1, field="objects", sample_id=row.get("id")
                    ) from None
                empty = [c for c in range(9) if labels[c] == [EMPTY]]
                keep = set(range(9)) if split == "val" else {c for c in range(9) if c not in empty[empty_per_image:]}
                for cell, crop in enumerate(cell_crops(image)):
                    if cell in keep:
                        name = f"cells/{row['id']}-{cell}.png"
                        (tmp / name).write_bytes(encode_png(crop))
                        lines.append(json.dumps({"id": f"{row['id']}-{cell}", "image": name, "label": labels[cell]}))
            write_atomic(tmp / f"{split}.jsonl", "\n".join(lines) + "\n")
    return Path(out_dir)


def _with_images(shapes_dir: str | Path, split: str, image_size: int) -> list[tuple[dict[str, Any], Image.Image]]:
    rows = load_split(shapes_dir, split)
    return list(zip(rows, load_shapes_images(shapes_dir, rows, image_size)))


class SceneChecker:
    """A trained scene checker: reads which colour and shape (or nothing) is in each grid cell of an image."""

    def __init__(self, saved: SavedModel) -> None:
        answers = saved.answers or []
        missing = [name for name in (EMPTY, *COLORS, *SHAPES) if name not in answers]
        if missing:
            raise ValueError(f"{saved.path}: not a scene checker (its classes lack {', '.join(missing)})")
        self.saved = saved
        self.empty = answers.index(EMPTY)
        self.colors = [answers.index(c) for c in COLORS]
        self.shapes = [answers.index(s) for s in SHAPES]

    @classmethod
    def load(cls, path: str | Path) -> SceneChecker:
        """From a saved model directory or a run directory (its best model)."""
        return cls(SavedModel.load(find_model_dir(path)))

    @classmethod
    def of_backend(cls, backend: Backend) -> SceneChecker:
        """The checker a loaded model is (a polymodal classifier with the scene classes; anything else is refused)."""
        saved = getattr(backend, "saved", None)
        if not isinstance(saved, SavedModel):
            raise ValueError(f"{backend.source}: not a scene checker (it must be a polymodal model directory)")
        return cls(saved)

    @torch.inference_mode()
    def read(self, images: ImagesInput, batch_size: int = 64) -> list[list[SceneObject]]:
        """Per image the objects seen, (position, colour, shape), in cell order."""
        pil = to_pil_images(images)
        scenes = []
        for start in range(0, len(pil), batch_size):
            chunk = pil[start : start + batch_size]
            cells = [crop for image in chunk for crop in cell_crops(image)]
            logits = self.saved.model({"image": self.saved.inputs("image", cells)}).float()  # (9B, classes)
            occupied = (logits[:, self.empty] <= 0).view(len(chunk), 9).tolist()
            colors = logits[:, self.colors].argmax(-1).view(len(chunk), 9).tolist()
            shapes = logits[:, self.shapes].argmax(-1).view(len(chunk), 9).tolist()
            for full, color, shape in zip(occupied, colors, shapes):
                scenes.append([(POSITIONS[c], list(COLORS)[color[c]], SHAPES[shape[c]]) for c in range(9) if full[c]])
        return scenes


def read_scenes(checker: SceneChecker, images: ImagesInput) -> list[list[SceneObject]]:
    """Per image the (position, colour, shape) of every object the checker sees."""
    return checker.read(images)


def attribute_accuracy(
    checker: SceneChecker, images: ImagesInput, objects_per_image: Sequence[Sequence[dict[str, Any]]]
) -> dict[str, float]:
    """How well ``images`` show their prompted objects (ShapesWorld object dicts), as read by ``checker``: count
    accuracy and all_correct per image, colour, shape, presence and position accuracy per prompted object (see
    :func:`~polymodal.metrics.generation.scene_scores`)."""
    return scene_scores(read_scenes(checker, images), [scene_of(objects) for objects in objects_per_image])


def checker_accuracy(
    checker: SceneChecker,
    shapes_dir: str | Path,
    splits: Sequence[str] = ("test", "test_novel"),
    image_size: int = 32,
) -> dict[str, dict[str, float]]:
    """The checker's own attribute accuracy on real ShapesWorld images (downscaled to ``image_size``): the ceiling
    of what it can say about generated ones."""
    out = {}
    for split in splits:
        rows = load_split(shapes_dir, split)
        images = load_shapes_images(shapes_dir, rows, image_size)
        out[split] = attribute_accuracy(checker, images, [row["objects"] for row in rows])
    return out
