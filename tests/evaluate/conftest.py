"""Tiny ShapesWorld data and tiny untrained models of every kind, built once per test session.

Untrained models give chance-level numbers; these tests check the harness (result shape, agreement
with slow references, determinism, error messages), not model quality.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from polymodal.data.readers import read_manifest
from polymodal.data.shapes import generate_shapesworld
from polymodal.data.text import train_tokenizer
from polymodal.evaluate.results import Result
from polymodal.evaluate.runner import run_eval
from polymodal.models import SavedModel, build_model, parse_model_config
from tests.tiny_models import save_image_text_model

IMG = 32
VIT = {"name": "vit", "params": {"image_size": IMG, "patch_size": 8, "width": 16, "depth": 1, "heads": 2}}


def _text(vocab: int) -> dict:
    return {
        "name": "transformer_text",
        "params": {"vocab_size": vocab, "width": 16, "depth": 1, "heads": 2, "max_length": 24},
    }


# The longest text each kind reads or writes: its text tower's max_length, or the caption decoder's.
TEXT_LENGTH = {"clip": 24, "fusion": 24, "caption": 32, "vqa": 24}


def configs(vocab: int) -> dict[str, dict]:
    decoder = {"vocab_size": vocab, "max_length": 32, "params": {"width": 16, "depth": 1, "heads": 2}}
    towers = {"image": VIT, "text": _text(vocab)}
    return {
        "clip": {"kind": "embedding", "encoders": towers, "embed_dim": 8},
        "fusion": {
            "kind": "fusion_classifier",
            "encoders": towers,
            "fusion": {"name": "concat"},
            "fusion_dim": 16,
            "num_classes": 2,
        },
        "caption": {"kind": "captioner", "encoders": {"image": VIT}, "decoder": decoder},
        "vqa": {
            "kind": "question_answering",
            "encoders": towers,
            "fusion": {"name": "concat"},
            "fusion_dim": 16,
            "num_answers": 6,
        },
    }


@pytest.fixture(scope="session")
def shapes_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ShapesWorld with 100 images: test and test_novel hold 10 each."""
    out = tmp_path_factory.mktemp("shapes")
    generate_shapesworld(out, 100, seed=0, image_size=IMG, progress=False)
    return out


@pytest.fixture(scope="session")
def models(shapes_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """kind -> saved model directory (config, weights, tokenizer, preprocess; answers.json for VQA)."""
    import torch

    torch.manual_seed(0)
    texts = []
    for split in ("train", "test", "test_novel"):
        for s in read_manifest(shapes_dir / f"{split}.jsonl"):
            texts += s.text + [qa.question for qa in s.qa] + [st.text for st in s.statements]
    tokenizer = train_tokenizer(texts + ["a photo of", "picture with one object :"], vocab_size=200)
    root = tmp_path_factory.mktemp("models")
    out = {}
    for kind, cfg in configs(tokenizer.vocab_size).items():
        model = build_model(parse_model_config(cfg))
        answers = {a: i for i, a in enumerate(["yes", "no", "red", "circle", "1", "2"])} if kind == "vqa" else None
        out[kind] = save_image_text_model(model, root / kind, tokenizer, IMG, TEXT_LENGTH[kind], answers)
    return out


def embed_each(saved: SavedModel, modality: str, refs: list) -> torch.Tensor:
    """One item at a time: the slow reference for the batched passes."""
    with torch.no_grad():
        return torch.cat([saved.model.embed(modality, *saved.inputs(modality, [r])) for r in refs])


def evaluate_test(model: Path, benchmark: str, data: Path, **kw: object) -> tuple[Result, SavedModel]:
    """The one result of ``benchmark`` on the test split, and the saved model for the slow reference."""
    (result,) = run_eval(str(model), benchmark, data=data, splits=["test"], n_resamples=20, **kw).results  # type: ignore[arg-type]
    return result, SavedModel.load(model)
