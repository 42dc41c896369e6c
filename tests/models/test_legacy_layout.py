"""Models saved in the layout polymodal wrote before the modality-generic core (tests/fixtures/legacy_models, made
by tests/fixtures/make_legacy_models.py at commit 3769c81) load and compute what they computed then."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from polymodal.models import Captioner, EmbeddingModel, FusionClassifier, QuestionAnswerer, SavedModel, save_model
from polymodal.models.saved import FORMAT

FIXTURES = Path(__file__).parents[1] / "fixtures" / "legacy_models"


def _load(kind: str) -> tuple[SavedModel, dict, dict]:
    saved = SavedModel.load(FIXTURES / kind)
    inputs = torch.load(FIXTURES / kind / "inputs.pt", weights_only=True)
    expected = json.loads((FIXTURES / kind / "expected.json").read_text())
    return saved, inputs, expected


@torch.no_grad()
def test_dual_encoder_loads_as_an_embedding_model() -> None:
    saved, x, expected = _load("dual_encoder")
    assert isinstance(saved.model, EmbeddingModel) and saved.model.modalities == ["image", "text"]
    torch.testing.assert_close(saved.model.embed("image", x["pixels"]), torch.tensor(expected["image"]))
    torch.testing.assert_close(saved.model.embed("text", x["ids"], x["mask"]), torch.tensor(expected["text"]))
    assert saved.processors["image"].preprocess.image_size == 16 and saved.text.max_length == 12


@torch.no_grad()
def test_captioner_with_contrastive_tower_loads() -> None:
    saved, x, expected = _load("captioner")
    model = saved.model
    assert isinstance(model, Captioner) and model.contrastive and model.source == "image"
    out = model({"image": (x["pixels"], None)}, x["ids"], x["mask"])
    assert float(out["logits"].sum()) == pytest.approx(expected["logits_sum"], rel=1e-5)
    torch.testing.assert_close(out["features"]["image"], torch.tensor(expected["image"]))


@torch.no_grad()
def test_vqa_loads_as_a_question_answerer_with_its_answers() -> None:
    saved, x, expected = _load("vqa")
    assert isinstance(saved.model, QuestionAnswerer) and saved.model.answer_mode == "classify"
    logits = saved.model({"image": (x["pixels"], None), "text": (x["ids"], x["mask"])})
    torch.testing.assert_close(logits, torch.tensor(expected["logits"]))
    assert saved.answers == ["red", "blue", "two"]


@torch.no_grad()
def test_fusion_classifier_loads_with_its_head_settings() -> None:
    saved, x, expected = _load("fusion_classifier")
    assert isinstance(saved.model, FusionClassifier)
    assert saved.model.config.head.params == {"dropout": 0.1, "hidden": 8}
    logits = saved.model({"image": (x["pixels"], None), "text": (x["ids"], x["mask"])})
    torch.testing.assert_close(logits, torch.tensor(expected["logits"]))


@torch.no_grad()
def test_a_legacy_model_saved_again_is_written_in_the_current_layout(tmp_path: Path) -> None:
    saved, x, _ = _load("vqa")
    target = save_model(tmp_path / "again", saved.model, saved.processors, {a: i for i, a in enumerate(saved.answers)})
    meta = json.loads((target / "config.json").read_text())
    assert meta["format"] == FORMAT and meta["config"]["kind"] == "question_answering"
    assert (target / "processors.json").is_file() and not (target / "preprocess.json").exists()
    again = SavedModel.load(target)
    inputs = {"image": (x["pixels"], None), "text": (x["ids"], x["mask"])}
    torch.testing.assert_close(again.model(inputs), saved.model(inputs))


def test_a_legacy_directory_copied_elsewhere_still_loads(tmp_path: Path) -> None:
    shutil.copytree(FIXTURES / "dual_encoder", tmp_path / "m")
    assert SavedModel.load(tmp_path / "m").text.tokenizer.vocab_size > 5


def test_the_text_length_of_a_legacy_fusion_classifier_comes_from_its_text_tower() -> None:
    assert SavedModel.load(FIXTURES / "fusion_classifier").text.max_length == 12


def test_a_directory_of_a_newer_format_is_refused_clearly(tmp_path: Path) -> None:
    from polymodal.config import ConfigError

    shutil.copytree(FIXTURES / "dual_encoder", tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    (tmp_path / "m" / "config.json").write_text(json.dumps({**meta, "format": 99, "polymodal_version": "9.0"}))
    with pytest.raises(ConfigError, match="format 99 by polymodal 9.0.*upgrade polymodal"):
        SavedModel.load(tmp_path / "m")
