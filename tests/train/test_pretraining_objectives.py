"""The matching (ITM) and masked-LM objectives train from a recipe like the others and beat chance."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from polymodal.config import ConfigError
from polymodal.data.shapes import generate_shapesworld
from polymodal.models import SavedModel
from polymodal.train.recipe import Recipe, load_recipe
from polymodal.train.run import run_recipe


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("shapes")
    generate_shapesworld(out, 300, seed=0, image_size=32, progress=False)
    return out


def _overrides(data: Path, steps: int) -> list[str]:
    return [f"data.path={data}", "data.image.image_size=32", f"train.steps={steps}", "train.batch_size=32",
            f"train.warmup_steps={min(5, steps)}", f"train.eval_every={steps}", "train.metric=accuracy", "train.precision=fp32",
            "data.max_val_samples=128"]


COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "yellow": (230, 220, 30)}


@pytest.fixture(scope="module")
def squares(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Squares of four colours captioned with their colour: a caption matches an image when the colours agree."""
    root = tmp_path_factory.mktemp("squares")
    for name, rgb in COLOURS.items():
        Image.new("RGB", (16, 16), rgb).save(root / f"{name}.png")
    names = list(COLOURS)
    for split, n in (("train", 256), ("val", 64)):
        rows = [{"id": f"{split}{i}", "image": f"{names[i % 4]}.png", "text": f"a {names[i % 4]} square"} for i in range(n)]
        (root / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_matching_trains_a_two_class_fusion_classifier(squares: Path, tmp_path: Path) -> None:
    recipe = load_recipe("shapes-fusion", [*_overrides(squares, 400), "objective.kind=matching", "train.lr=3e-3",
                                           "data.image.image_size=16", "data.vocab_size=32"])
    towers = {"image": {"name": "cnn", "params": {"widths": [8, 16], "depths": [1, 1]}},
              "text": {"name": "rnn_text", "params": {"vocab_size": 32, "width": 16}}}
    config = {"kind": "fusion_classifier", "encoders": towers, "fusion": {"name": "bilinear"}, "fusion_dim": 32,
              "num_classes": 2}
    recipe = Recipe.model_validate({**recipe.model_dump(), "model": {"config": config}})
    result = run_recipe(recipe, tmp_path / "itm", progress=False)
    assert "matching" in result.last_losses
    # Matches against partners shifted by one (another colour, as rows cycle through the four): chance 0.5.
    assert result.best_metric > 0.85
    assert SavedModel.load(tmp_path / "itm" / "model").model.config.num_classes == 2


def test_masked_lm_pretrains_the_text_tower(shapes: Path, tmp_path: Path) -> None:
    recipe = load_recipe("shapes-clip", [*_overrides(shapes, 150), "objective.kind=masked_lm", "objective.hard_negatives=null",
                                         "train.lr=2e-3"])
    result = run_recipe(recipe, tmp_path / "mlm", progress=False)
    assert "masked_lm" in result.last_losses
    assert result.best_metric > 0.3  # masked words of captions: chance is about 1 in the vocabulary (~60)


def test_matching_needs_a_two_class_fusion_classifier(shapes: Path, tmp_path: Path) -> None:
    recipe = load_recipe("shapes-clip", [*_overrides(shapes, 2), "objective.kind=matching", "objective.hard_negatives=null"])
    with pytest.raises(ConfigError, match="matching trains a fusion classifier with num_classes: 2"):
        run_recipe(recipe, tmp_path / "bad", progress=False)
