"""Tiny saved models for tests: every kind, built and saved in seconds, no training, no downloads.

Use the session fixtures in ``tests/conftest.py`` (``tiny_dual_encoder_dir`` ...) rather than calling these
directly, so a test session builds each kind once.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from polymodal.data.text import train_tokenizer
from polymodal.models import build_preset

IMAGE_SIZE = 32
CORPUS = [
    "a red circle", "a blue square", "a green triangle", "two yellow stars", "a purple heart left of a cyan cross",
    "what color is the shape", "how many shapes are there", "is there a circle", "yes", "no", "one", "two", "three",
]
ANSWERS = ["red", "blue", "green", "yes", "no", "1", "2", "3"]
_KIND_PRESET = {"dual_encoder": "shapes-clip", "captioner": "shapes-caption", "vqa": "shapes-vqa", "fusion": "shapes-fusion"}


def save_tiny_model(kind: str, directory: Path, seed: int = 0) -> Path:
    """Build the ``shapes-*`` preset of ``kind`` at 32 px with a word-level tokenizer, save it, return the dir."""
    tokenizer = train_tokenizer(CORPUS, vocab_size=64, kind="wordlevel")
    torch.manual_seed(seed)
    overrides: dict[str, int] = {"vocab_size": tokenizer.vocab_size, "image_size": IMAGE_SIZE, "max_length": 16}
    if kind == "vqa":
        overrides["num_answers"] = len(ANSWERS)
    model = build_preset(_KIND_PRESET[kind], **overrides).eval()
    model.save(directory, preprocess={"image_size": IMAGE_SIZE}, tokenizer=tokenizer)
    if kind == "vqa":
        (directory / "answers.json").write_text(json.dumps({a: i for i, a in enumerate(ANSWERS)}))
    return directory
