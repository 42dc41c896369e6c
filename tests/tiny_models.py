"""Tiny saved models for tests: every kind, built and saved in seconds, no training, no downloads.

Use the session fixtures in ``tests/conftest.py`` (``tiny_dual_encoder_dir`` ...) rather than calling these
directly, so a test session builds each kind once.
"""

from __future__ import annotations

from pathlib import Path

import torch

from polymodal.data.processors import ImageProcessor, TextProcessor
from polymodal.data.text import TextTokenizer, train_tokenizer
from polymodal.data.transforms import ImagePreprocess
from polymodal.models import ComposedModel, build_preset, save_model

IMAGE_SIZE = 32
CORPUS = [
    "a red circle",
    "a blue square",
    "a green triangle",
    "two yellow stars",
    "a purple heart left of a cyan cross",
    "what color is the shape",
    "how many shapes are there",
    "is there a circle",
    "yes",
    "no",
    "one",
    "two",
    "three",
]
ANSWERS = ["red", "blue", "green", "yes", "no", "1", "2", "3"]
_KIND_PRESET = {
    "dual_encoder": "shapes-clip",
    "captioner": "shapes-caption",
    "vqa": "shapes-vqa",
    "fusion": "shapes-fusion",
    "diffusion": "shapes-diffusion",
    "gan": "shapes-gan",
}


def save_tiny_model(kind: str, directory: Path, seed: int = 0) -> Path:
    """Build the ``shapes-*`` preset of ``kind`` at 32 px with a word-level tokenizer, save it, return the dir."""
    tokenizer = train_tokenizer(CORPUS, vocab_size=64, kind="wordlevel")
    torch.manual_seed(seed)
    overrides: dict[str, int] = {"vocab_size": tokenizer.vocab_size, "image_size": IMAGE_SIZE, "max_length": 16}
    if kind == "vqa":
        overrides["num_answers"] = len(ANSWERS)
    model = build_preset(_KIND_PRESET[kind], **overrides).eval()
    answers = {a: i for i, a in enumerate(ANSWERS)} if kind == "vqa" else None
    # Generators work in [-1, 1] pixels, as their recipes' statistics say.
    statistics = "half" if "generate" in model.capabilities else None
    return save_image_text_model(model, directory, tokenizer, IMAGE_SIZE, 16, answers, statistics)


def save_image_text_model(
    model: ComposedModel,
    directory: Path,
    tokenizer: TextTokenizer,
    image_size: int,
    max_length: int,
    answers: dict[str, int] | None = None,
    statistics: str | None = None,
) -> Path:
    """Save ``model`` with an image processor at ``image_size`` (``statistics``: a preprocess preset; default:
    the default statistics) and a text processor."""
    preprocess = ImagePreprocess(image_size=image_size)
    if statistics is not None:
        preprocess = ImagePreprocess.preset(statistics, image_size=image_size)
    processors = {
        "image": ImageProcessor(preprocess),
        "text": TextProcessor(tokenizer, max_length),
    }
    return save_model(directory, model, processors, answers)
