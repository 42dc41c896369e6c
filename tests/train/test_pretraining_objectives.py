"""The objectives beyond contrastive and cross-entropy train from a recipe like the others and beat chance: image-text
matching, masked-LM pretraining, regression (mse) and multi-label classification (bce)."""

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
    return [
        f"data.path={data}",
        "data.image.image_size=32",
        f"train.steps={steps}",
        "train.batch_size=32",
        f"train.warmup_steps={min(5, steps)}",
        f"train.eval_every={steps}",
        "train.metric=accuracy",
        "train.precision=fp32",
        "data.max_val_samples=128",
    ]


COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "yellow": (230, 220, 30)}


@pytest.fixture(scope="module")
def squares(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Squares of four colours captioned with their colour: a caption matches an image when the colours agree."""
    root = tmp_path_factory.mktemp("squares")
    for name, rgb in COLOURS.items():
        Image.new("RGB", (16, 16), rgb).save(root / f"{name}.png")
    names = list(COLOURS)
    for split, n in (("train", 256), ("val", 64)):
        rows = [
            {"id": f"{split}{i}", "image": f"{names[i % 4]}.png", "text": f"a {names[i % 4]} square"} for i in range(n)
        ]
        (root / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def _tiny_fusion(
    data: Path, outputs: int, overrides: list[str], steps: int = 300, fusion: dict | None = None
) -> Recipe:
    """The shapes-fusion recipe on 16 px data with a tiny CNN + RNN model of ``outputs`` classes."""
    recipe = load_recipe(
        "shapes-fusion",
        [*_overrides(data, steps), "train.lr=3e-3", "data.image.image_size=16", "data.vocab_size=32", *overrides],
    )
    config = tiny_fusion_config(outputs, fusion)
    return Recipe.model_validate({**recipe.model_dump(), "model": {"config": config}})


def tiny_fusion_config(outputs: int, fusion: dict | None = None) -> dict:
    """A 16 px CNN + GRU text fusion classifier of ``outputs`` classes (32-word vocabulary)."""
    towers = {
        "image": {"name": "cnn", "params": {"widths": [8, 16], "depths": [1, 1]}},
        "text": {"name": "rnn_text", "params": {"vocab_size": 32, "width": 16}},
    }
    return {
        "kind": "fusion_classifier",
        "encoders": towers,
        "fusion": fusion or {"name": "concat", "params": {"hidden_dim": 32}},
        "fusion_dim": 32,
        "num_classes": outputs,
    }


def test_matching_trains_a_two_class_fusion_classifier(squares: Path, tmp_path: Path) -> None:
    recipe = _tiny_fusion(squares, 2, ["objective.kind=matching"], steps=400, fusion={"name": "bilinear"})
    result = run_recipe(recipe, tmp_path / "itm", progress=False)
    assert "matching" in result.last_losses
    # Matches against partners shifted by one (another colour, as rows cycle through the four): chance 0.5.
    assert result.best_metric > 0.85
    assert SavedModel.load(tmp_path / "itm" / "model").model.config.num_classes == 2


def test_masked_lm_pretrains_the_text_tower(shapes: Path, tmp_path: Path) -> None:
    recipe = load_recipe(
        "shapes-clip",
        [
            *_overrides(shapes, 150),
            "objective.kind=masked_lm",
            "objective.hard_negatives=null",
            "objective.loss=null",
            "train.lr=2e-3",
        ],
    )
    result = run_recipe(recipe, tmp_path / "mlm", progress=False)
    assert "masked_lm" in result.last_losses
    assert result.best_metric > 0.3  # masked words of captions: chance is about 1 in the vocabulary (~60)


def test_matching_needs_a_two_class_fusion_classifier(shapes: Path, tmp_path: Path) -> None:
    recipe = load_recipe(
        "shapes-clip",
        [*_overrides(shapes, 2), "objective.kind=matching", "objective.hard_negatives=null", "objective.loss=null"],
    )
    with pytest.raises(ConfigError, match="matching trains a fusion classifier with num_classes: 2"):
        run_recipe(recipe, tmp_path / "bad", progress=False)


def _square_rows(root: Path, labels: list) -> None:  # type: ignore[type-arg]
    names = list(COLOURS)
    for name, rgb in COLOURS.items():
        Image.new("RGB", (16, 16), rgb).save(root / f"{name}.png")
    for split, n in (("train", 128), ("val", 32)):
        rows = [
            {
                "id": f"{split}{i}",
                "image": f"{names[i % 4]}.png",
                "text": f"a {names[i % 4]} square",
                "label": labels[i % 4],
            }
            for i in range(n)
        ]
        (root / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_regression_and_multi_label_classification_from_a_recipe(tmp_path: Path) -> None:
    """loss: mse learns a number per row (RMSE reported); loss: bce learns several labels per row."""
    (tmp_path / "reg").mkdir()
    _square_rows(tmp_path / "reg", [0.0, 1.0, 2.0, 3.0])
    recipe = _tiny_fusion(
        tmp_path / "reg", 1, ["data.view=labels", "objective.loss=mse", "train.metric=rmse", "train.metric_mode=min"]
    )
    result = run_recipe(recipe, tmp_path / "reg-run", progress=False)
    assert result.best_metric < 0.5  # labels spread 0..3 (std 1.1): the colour decides the number
    assert SavedModel.load(tmp_path / "reg-run" / "model").model.config.num_classes == 1

    (tmp_path / "multi").mkdir()
    _square_rows(tmp_path / "multi", [["warm", "primary"], ["cool"], ["cool", "primary"], ["warm"]])
    recipe = _tiny_fusion(tmp_path / "multi", 3, ["data.view=labels", "objective.loss=bce", "train.metric=exact_match"])
    result = run_recipe(recipe, tmp_path / "multi-run", progress=False)
    assert result.best_metric > 0.9
    saved = SavedModel.load(tmp_path / "multi-run" / "model")
    assert saved.answers == ["cool", "primary", "warm"] and saved.model.config.num_classes == 3


def test_a_loss_that_does_not_go_with_the_objective_is_refused() -> None:
    with pytest.raises(ConfigError, match="loss 'mse' does not go with kind 'contrastive'"):
        load_recipe("shapes-clip", ["objective.loss=mse", "objective.hard_negatives=null"])


def test_a_contrastive_pair_no_row_has_counts_zero_not_nan() -> None:
    import torch

    from polymodal.data.collate import Batch
    from polymodal.models import build_model, parse_model_config
    from polymodal.train.objectives import ContrastiveObjective

    towers = {
        "a": {"name": "rnn_text", "params": {"vocab_size": 16, "width": 8}},
        "b": {"name": "rnn_text", "params": {"vocab_size": 16, "width": 8}},
        "c": {"name": "rnn_text", "params": {"vocab_size": 16, "width": 8}},
    }
    model = build_model(parse_model_config({"kind": "embedding", "encoders": towers, "embed_dim": 4}))
    ids = torch.randint(1, 16, (4, 5))
    present = {
        "a": torch.tensor([True, True, False, False]),
        "b": torch.tensor([False, False, True, True]),
        "c": torch.ones(4, dtype=torch.bool),
    }
    batch = Batch(ids=list("wxyz"), inputs=dict.fromkeys(towers, (ids, None)), present=present)
    losses = ContrastiveObjective([("a", "b"), ("a", "c"), ("b", "c")])(model, batch)
    assert losses["contrastive_a_b"].item() == 0.0 and torch.isfinite(losses["loss"])
    losses["loss"].backward()  # the pairs that have rows train


@pytest.mark.parametrize("loss", ["clip", "siglip"])
def test_a_contrastive_run_saves_its_learned_temperature_and_classify_uses_it(
    squares: Path, tmp_path: Path, loss: str
) -> None:
    """The saved model keeps the temperature its loss learned (it lived only in the checkpoint's objective), and
    zero-shot probabilities are softmax(that scale * cosine), as open_clip's logit_scale gives them."""
    import numpy as np
    import torch
    from safetensors.torch import load_file

    import polymodal

    overrides = [*_overrides(squares, 30), "data.image.image_size=16", "data.vocab_size=32", f"objective.loss={loss}"]
    overrides += ["objective.hard_negatives=[]", "train.metric=recall@1"]
    recipe = load_recipe("shapes-clip", overrides)
    run_recipe(recipe, tmp_path / "run", progress=False)
    saved = SavedModel.load(tmp_path / "run" / "model")
    (scale,) = saved.model.config.logit_scales.values()
    assert list(saved.model.config.logit_scales) == ["image-text"]
    state = load_file(str(sorted((tmp_path / "run").glob("checkpoint-*"))[-1] / "model.safetensors"))
    learned = state["objective.losses.image-text.logit_scale"].exp().clamp(max=100.0).item()
    assert scale == pytest.approx(learned, rel=1e-6) and scale != 100.0
    model = polymodal.load(tmp_path / "run" / "model", precision="fp32")
    labels = [f"a {name} square" for name in COLOURS]
    image = squares / "red.png"
    got = dict(model.classify(image, labels, templates=["{}"])[0])
    texts = model.embed_text(labels)
    cosines = torch.from_numpy(model.embed_image([image]) @ texts.T)[0]
    want = (scale * cosines).softmax(-1).numpy()
    np.testing.assert_allclose([got[label] for label in labels], want, rtol=1e-4, atol=1e-6)
