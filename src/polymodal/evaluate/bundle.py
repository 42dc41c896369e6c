"""A saved model with what it needs at inference: tokenizer, preprocessing, answer vocabulary."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from polymodal.data.text import TextTokenizer
from polymodal.data.transforms import ImagePreprocess
from polymodal.models import ComposedModel, load_model
from polymodal.models.base import TOKENIZER_DIR

ANSWERS_FILE = "answers.json"


@dataclass
class ModelBundle:
    model: ComposedModel
    tokenizer: TextTokenizer | None
    preprocess: ImagePreprocess
    answers: list[str] | None  # class index -> answer/label, for classifiers over a vocabulary
    path: Path

    @property
    def max_text_length(self) -> int:
        """The longest token sequence the text encoder or decoder was built for (32 when it does not say)."""
        cfg = self.model.config
        for name in ("text_encoder", "decoder"):
            section = getattr(cfg, name, None)
            params = getattr(section, "params", None) or {}
            if "max_length" in params:
                return int(params["max_length"])
            if hasattr(section, "max_length"):
                return int(section.max_length)
        return 32


def load_bundle(directory: str | Path) -> ModelBundle:
    directory = Path(directory)
    model = load_model(directory).eval()
    tokenizer = TextTokenizer.load(directory / TOKENIZER_DIR) if (directory / TOKENIZER_DIR).is_dir() else None
    preprocess = ImagePreprocess.load(directory) if (directory / "preprocess.json").is_file() else ImagePreprocess()
    answers = None
    if (directory / ANSWERS_FILE).is_file():
        vocab: dict[str, int] = json.loads((directory / ANSWERS_FILE).read_text())
        answers = [a for a, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    return ModelBundle(model, tokenizer, preprocess, answers, directory)
