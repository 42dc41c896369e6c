"""The proof that the core is modality-generic: a toy third modality (a fixed-length vector), registered from this
file alone (a processor and an encoder), trains, saves, loads and evaluates in a three-modality fusion classifier
and a three-modality embedding model through the ordinary recipe path, without a line of library code for it."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image
from torch import Tensor, nn

from polymodal.data.errors import BadSampleError
from polymodal.data.processors import PROCESSORS, ModalityBatch, Processor, stack_present
from polymodal.models import SavedModel
from polymodal.modules.encoders import ENCODERS, Encoder, EncoderOutput
from polymodal.train.recipe import Recipe
from polymodal.train.run import run_recipe

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "yellow": (230, 220, 30)}
DIM = 6


class VectorProcessor(Processor):
    """An inline list of ``dim`` numbers -> a float tensor; anything else is a bad sample."""

    modality = "vector"
    reads_files = False

    def __init__(self, dim: int) -> None:
        self.dim = dim

    def prepare(
        self, ref: Any, generator: torch.Generator | None = None, *, source: str | None = None, row: int | None = None
    ) -> Tensor:
        if not isinstance(ref, list) or len(ref) != self.dim:
            raise BadSampleError(
                f"expected a list of {self.dim} numbers, got {ref!r}",
                source=source,
                row=row,
                field="vector",
                kind="bad_vector",
            )
        return torch.tensor(ref, dtype=torch.float32)

    def collate(self, values: Sequence[Tensor | None]) -> ModalityBatch:
        return stack_present(values, self.modality)

    def settings(self) -> dict[str, Any]:
        return {"dim": self.dim}

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], directory: Path) -> VectorProcessor:
        return cls(int(settings["dim"]))


class VectorEncoder(Encoder):
    """An MLP over the vector: one token."""

    modality = "vector"

    def __init__(self, dim: int, width: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, width), nn.GELU(), nn.Linear(width, width))
        self.output_dim = width

    def forward(self, x: Tensor, mask: Tensor | None = None) -> EncoderOutput:
        pooled = self.net(x)
        return EncoderOutput(tokens=pooled.unsqueeze(1), pooled=pooled)


@pytest.fixture(scope="module", autouse=True)
def vector_modality() -> Iterator[None]:
    PROCESSORS.register("vector")(VectorProcessor)
    ENCODERS.register("vector_mlp")(VectorEncoder)
    yield
    PROCESSORS.unregister("vector")
    ENCODERS.unregister("vector_mlp")


def _rows(root: Path, n: int, seed: int) -> list[dict[str, Any]]:
    """Each row: a square of one colour, its name as text, and a vector holding the colour (one-hot + noise)
    and the label (sign of the last entry): only the vector knows the label."""
    g = torch.Generator().manual_seed(seed)
    names = list(COLOURS)
    rows = []
    for i in range(n):
        c = int(torch.randint(len(names), (), generator=g))
        label = int(torch.randint(2, (), generator=g))
        path = root / "images" / f"{names[c]}.png"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (16, 16), COLOURS[names[c]]).save(path)
        vector = [1.0 if j == c else 0.0 for j in range(len(names))] + [0.1 * float(torch.randn((), generator=g))]
        vector.append(1.0 if label else -1.0)
        rows.append(
            {
                "id": f"s{seed}-{i}",
                "image": f"images/{names[c]}.png",
                "text": f"a {names[c]} square",
                "vector": vector,
                "label": "yes" if label else "no",
            }
        )
    return rows


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("vector-data")
    for name, n, seed in (("train.jsonl", 256, 0), ("val.jsonl", 64, 1)):
        lines = [json.dumps(r) for r in _rows(root, n, seed)]
        if name == "train.jsonl":
            lines.append(json.dumps({"id": "bad", "text": "a red square", "vector": [1, 2], "label": "yes"}))
        (root / name).write_text("\n".join(lines) + "\n")
    return root


TOWERS = {
    "image": {"name": "cnn", "params": {"widths": [8, 16], "depths": [1, 1]}},
    "text": {"name": "rnn_text", "params": {"vocab_size": 64, "width": 16}},
    "vector": {"name": "vector_mlp", "params": {"dim": DIM}},
}


def _recipe(data: Path, model: dict[str, Any], objective: dict[str, Any], metric: str, view: str | None) -> Recipe:
    return Recipe.model_validate(
        {
            "name": "vector-toy",
            "model": {"config": model},
            "data": {
                "path": str(data),
                "view": view,
                "image": {"image_size": 16, "crop": "none"},
                "vocab_size": 64,
                "max_length": 8,
                "processors": {"vector": {"dim": DIM}},
            },
            "objective": objective,
            "train": {
                "steps": 120,
                "batch_size": 32,
                "lr": 3e-3,
                "warmup_steps": 10,
                "eval_every": 60,
                "metric": metric,
                "precision": "fp32",
            },
        }
    )


def test_a_three_modality_fusion_classifier_trains_saves_loads_and_evaluates(data: Path, tmp_path: Path) -> None:
    model = {
        "kind": "fusion_classifier",
        "encoders": TOWERS,
        "fusion": {"name": "concat", "params": {"hidden_dim": 32}},
        "fusion_dim": 32,
        "num_classes": 2,
    }
    result = run_recipe(
        _recipe(data, model, {"kind": "classification"}, "accuracy", "labels"), tmp_path / "run", progress=False
    )
    assert result.best_metric is not None and result.best_metric > 0.9  # only the vector knows the label
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert list(summary["bad_samples_by_kind"]) == ["bad_vector"]  # the malformed row: counted each draw, not fatal
    logged = [json.loads(line) for line in (tmp_path / "run" / "bad_samples.jsonl").read_text().splitlines()]
    assert {(r["id"], r["row"], r["field"]) for r in logged} == {("bad", 257, "vector")}
    assert logged[0]["source"].endswith("train.jsonl")

    saved = SavedModel.load(tmp_path / "run" / "model")
    assert json.loads((saved.path / "processors.json").read_text())["vector"] == {"dim": DIM}
    assert isinstance(saved.processors["vector"], VectorProcessor) and saved.answers == ["no", "yes"]
    rows = _rows(tmp_path, 64, seed=7)
    inputs = {
        "image": saved.inputs("image", [Image.open(tmp_path / r["image"]) for r in rows]),
        "text": saved.inputs("text", [r["text"] for r in rows]),
        "vector": saved.inputs("vector", [r["vector"] for r in rows]),
    }
    truth = torch.tensor([saved.answers.index(r["label"]) for r in rows])
    with torch.no_grad():
        accuracy = (saved.model(inputs).argmax(-1) == truth).float().mean()
        # Dropping the vector through the model's own forward leaves the label unknowable: near chance.
        dropped = saved.model(inputs, {"vector": torch.zeros(len(rows), dtype=torch.bool)}).argmax(-1)
    assert accuracy > 0.9
    assert (dropped == truth).float().mean() < 0.75


def test_a_three_modality_embedding_model_aligns_every_pair(data: Path, tmp_path: Path) -> None:
    model = {"kind": "embedding", "encoders": TOWERS, "embed_dim": 16}
    result = run_recipe(
        _recipe(data, model, {"kind": "contrastive"}, "recall@1", None), tmp_path / "run", progress=False
    )
    assert result.last_losses is not None and {
        "contrastive_image_text",
        "contrastive_image_vector",
        "contrastive_text_vector",
    } <= set(result.last_losses)
    saved = SavedModel.load(tmp_path / "run" / "model")
    names = list(COLOURS)
    with torch.no_grad():
        texts = saved.model.embed("text", *saved.inputs("text", [f"a {n} square" for n in names]))
        vectors = [[1.0 if j == c else 0.0 for j in range(len(names))] + [0.0, 1.0] for c in range(len(names))]
        from_vectors = saved.model.embed("vector", *saved.inputs("vector", vectors))
        images = saved.model.embed(
            "image", *saved.inputs("image", [Image.new("RGB", (16, 16), COLOURS[n]) for n in names])
        )
    # Each colour's vector and image find that colour's caption among the four.
    assert (from_vectors @ texts.T).argmax(-1).tolist() == list(range(len(names)))
    assert (images @ texts.T).argmax(-1).tolist() == list(range(len(names)))


def test_a_captioner_and_a_question_answerer_over_the_toy_modality(tmp_path: Path) -> None:
    """The captioner describes any source modality and the question answerer answers about any modality."""
    from polymodal.data.processors import TextProcessor
    from polymodal.data.text import train_tokenizer
    from polymodal.models import build_model, parse_model_config, save_model

    tokenizer = train_tokenizer(["a red square", "what colour is it", "red", "green"], vocab_size=32)
    processors = {"vector": VectorProcessor(DIM), "text": TextProcessor(tokenizer, 8)}
    vector = TOWERS["vector"]
    decoder = {"name": "lstm", "vocab_size": tokenizer.vocab_size, "max_length": 8, "params": {"width": 16, "depth": 1}}
    text = {"name": "rnn_text", "params": {"vocab_size": tokenizer.vocab_size, "width": 16}}
    configs = {
        "captioner": {"kind": "captioner", "encoders": {"vector": vector}, "source": "vector", "decoder": decoder},
        "qa": {
            "kind": "question_answering",
            "encoders": {"vector": vector, "text": text},
            "fusion": {"name": "gmu"},
            "fusion_dim": 16,
            "num_answers": 2,
        },
    }
    vectors = [[1.0, 0, 0, 0, 0.1, 1.0], [0, 1.0, 0, 0, -0.1, -1.0]]
    for kind, config in configs.items():
        model = build_model(parse_model_config(config)).eval()
        save_model(tmp_path / kind, model, processors, {"red": 0, "green": 1} if kind == "qa" else None)
        saved = SavedModel.load(tmp_path / kind)
        inputs = {"vector": saved.inputs("vector", vectors)}
        with torch.no_grad():
            if kind == "captioner":
                ids = saved.model.generate(inputs, strategy="beam", num_beams=2, max_new_tokens=5)
                assert ids.shape[0] == 2 and all(isinstance(saved.text.decode(row), str) for row in ids)
            else:
                inputs["text"] = saved.inputs("text", ["what colour is it"] * 2)
                logits = saved.model(inputs)
                assert logits.shape == (2, 2) and torch.equal(logits, model(inputs))
