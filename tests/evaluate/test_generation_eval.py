"""Measuring generated ShapesWorld images: prompts, the cell geometry and the scoring of the scene checker, CLIP
score through the API, FD (EfficientNet-Lite0); the checker trained for real on a small ShapesWorld (slow)."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from polymodal.data.errors import BadSampleError
from polymodal.data.shapes import COLORS, HELD_OUT, POSITIONS, ShapeObject, load_split, make_example, objects_of, render
from polymodal.evaluate.generation import (
    FD_NAME,
    SCENE_CHECKER_RECIPE,
    SceneChecker,
    attribute_accuracy,
    cell_crops,
    cell_labels,
    checker_accuracy,
    clip_score,
    efficientnet_features,
    frechet_efficientnet_distance,
    load_shapes_images,
    scene_prompt,
    to_pil_images,
    write_scene_checker_data,
)
from polymodal.metrics.generation import SceneObject


def _obj(color: str, shape: str, position: str) -> dict[str, str]:
    return {"shape": shape, "color": color, "size": "small", "position": position}


def test_the_full_spec_prompt_names_every_object_with_its_cell() -> None:
    assert scene_prompt([_obj("red", "circle", "top left")]) == "a red circle in the top left"
    objects = [
        _obj("red", "circle", "top left"),
        _obj("orange", "star", "center"),
        _obj("blue", "heart", "bottom right"),
    ]
    assert scene_prompt(objects) == (
        "a red circle in the top left, an orange star in the center and a blue heart in the bottom right"
    )


def test_the_prompt_is_the_rows_positions_caption_up_to_object_order() -> None:
    def phrases(text: str) -> set[str]:
        return set(re.split(r", | and ", text))

    rows = [make_example(seed=3, index=i, image_size=32, novel=i % 2 == 1)[1] for i in range(12)]
    assert {len(r["objects"]) for r in rows} == {1, 2, 3}
    for row in rows:
        prompt = scene_prompt(row["objects"])
        assert prompt.startswith(
            f"a{'n' if row['objects'][0]['color'][0] in 'aeiou' else ''} {row['objects'][0]['color']}"
        )
        assert sum(phrases(c) == phrases(prompt) for c in row["captions"]) == 1


def _saturation(image: Image.Image) -> int:
    """The largest spread between colour channels of any pixel: 0 on the grey background."""
    pixels = np.asarray(image, dtype=np.int16)
    return int((pixels.max(-1) - pixels.min(-1)).max())


@pytest.mark.parametrize("size", [32, 64])
def test_cells_hold_exactly_the_objects_of_their_labels(size: int) -> None:
    for index in range(6):
        image, row = make_example(seed=0, index=index, image_size=size, novel=index % 2 == 1)
        labels = cell_labels(row["objects"])
        crops = cell_crops(image)
        assert len(crops) == 9 and all(c.size == (16, 16) for c in crops)
        for label, crop in zip(labels, crops):
            assert (_saturation(crop) > 60) == (label != ["empty"]), (index, label)
        for obj in row["objects"]:
            assert labels[POSITIONS.index(obj["position"])] == [obj["color"], obj["shape"]]


def test_tensors_and_pil_images_read_alike_and_out_of_range_floats_are_refused() -> None:
    pixels = torch.randint(0, 256, (2, 3, 8, 6), dtype=torch.uint8)
    from_uint8 = to_pil_images(pixels)
    from_float = to_pil_images(pixels.float() / 255)
    from_list = to_pil_images([from_uint8[0], pixels[1]])
    for images in (from_uint8, from_float, from_list):
        assert [np.asarray(i).tolist() for i in images] == [p.permute(1, 2, 0).tolist() for p in pixels]
    with pytest.raises(ValueError, match=r"lie in \[0, 1\]"):
        to_pil_images(pixels.float() / 127.5 - 1)  # a generator's [-1, 1] output, not mapped
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        to_pil_images(torch.zeros(2, 1, 8, 8))


class FakeChecker:
    """Reads a fixed scene per image (the images are keyed by their size)."""

    def __init__(self, scenes: dict[int, list[SceneObject]]) -> None:
        self.scenes = scenes

    def read(self, images: Sequence[Image.Image]) -> list[list[SceneObject]]:
        return [self.scenes[image.width] for image in images]


PROMPTED = [_obj("red", "circle", "top left"), _obj("blue", "square", "center")]
RIGHT = [("top left", "red", "circle"), ("center", "blue", "square")]


@pytest.mark.parametrize(
    ("seen", "lowered"),
    [
        ([("top left", "green", "circle"), RIGHT[1]], {"color_accuracy", "present_accuracy", "position_accuracy"}),
        ([("top left", "red", "star"), RIGHT[1]], {"shape_accuracy", "present_accuracy", "position_accuracy"}),
        (
            [RIGHT[1]],
            {
                "count_accuracy",
                "cell_accuracy",
                "color_accuracy",
                "shape_accuracy",
                "present_accuracy",
                "position_accuracy",
            },
        ),
        ([*RIGHT, ("bottom left", "pink", "heart")], {"count_accuracy"}),
        (
            [("top right", "red", "circle"), RIGHT[1]],
            {"cell_accuracy", "color_accuracy", "shape_accuracy", "position_accuracy"},
        ),
    ],
    ids=["wrong colour", "wrong shape", "missing object", "extra object", "wrong cell"],
)
def test_each_mistake_in_a_generated_scene_lowers_its_metric(seen: list[SceneObject], lowered: set[str]) -> None:
    images = [Image.new("RGB", (8, 8)), Image.new("RGB", (9, 9))]  # image 1 right, image 2 with the mistake
    scores = attribute_accuracy(FakeChecker({8: RIGHT, 9: seen}), images, [PROMPTED, PROMPTED])  # type: ignore[arg-type]
    assert scores["all_correct"] == 0.5
    metrics = {"count_accuracy", "cell_accuracy", "color_accuracy", "shape_accuracy", "present_accuracy"}
    metrics.add("position_accuracy")
    assert {m for m in metrics if scores[m] < 1.0} == lowered


def test_a_model_without_the_scene_classes_is_not_a_checker(tiny_dual_encoder_dir: Path) -> None:
    with pytest.raises(ValueError, match="not a scene checker"):
        SceneChecker.load(tiny_dual_encoder_dir)


def test_clip_score_embeds_through_the_api(tiny_dual_encoder_dir: Path) -> None:
    import polymodal

    model = polymodal.load(str(tiny_dual_encoder_dir))
    images = [make_example(0, i, 32, novel=False)[0] for i in range(3)]
    texts = ["a red circle in the top left", "a blue square in the center", "two objects"]
    cos = (model.embed("image", images) * model.embed("text", texts)).sum(1)
    expected = float(np.mean(100 * np.clip(cos, 0, None)))
    assert clip_score(model, images, texts) == pytest.approx(expected, rel=1e-5)
    tensors = torch.stack([torch.from_numpy(np.array(i)).permute(2, 0, 1) for i in images])
    assert clip_score(model, tensors, texts) == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="3 images for 2 texts"):
        clip_score(model, images, texts[:2])


def test_efficientnet_features_are_pooled_1280_d_whatever_the_size_and_batch() -> None:
    images = [make_example(0, i, 32 if i % 2 else 64, novel=False)[0] for i in range(5)]
    one_batch = efficientnet_features(images, batch_size=8)
    assert one_batch.shape == (5, 1280) and np.isfinite(one_batch).all()
    assert np.allclose(efficientnet_features(images, batch_size=2), one_batch, atol=1e-4)
    assert frechet_efficientnet_distance(one_batch, one_batch) == pytest.approx(0.0, abs=1e-6)
    assert FD_NAME == "FD (EfficientNet-Lite0)"


@pytest.mark.slow
def test_fd_ranks_real_images_closer_than_shuffled_pixels(tmp_path: Path) -> None:
    real = [make_example(0, i, 32, novel=False)[0] for i in range(96)]
    rng = np.random.default_rng(0)
    shuffled = [
        Image.fromarray(np.asarray(im).reshape(-1, 3)[rng.permutation(32 * 32)].reshape(32, 32, 3)) for im in real[48:]
    ]
    floor = frechet_efficientnet_distance(real[:48], real[48:])
    assert 0 < floor < frechet_efficientnet_distance(real[:48], shuffled) / 3


def _wrong_colour(row: dict, index: int) -> Image.Image:
    """The row's scene drawn again with each object's colour replaced by the next one in COLORS."""
    names = list(COLORS)
    objects = [ShapeObject(o.shape, names[(names.index(o.color) + 1) % 8], o.size, o.cell) for o in objects_of(row)]
    return render(objects, np.random.default_rng([99, index]), 32)[0]


@pytest.mark.slow
def test_a_checker_trained_on_real_cells_reads_real_scenes_and_catches_wrong_colours(tmp_path: Path) -> None:
    from polymodal.data.shapes import generate_shapesworld
    from polymodal.train.recipe import load_recipe
    from polymodal.train.run import run_recipe

    shapes = tmp_path / "shapes"
    generate_shapesworld(shapes, 1000, seed=1, image_size=32, progress=False)
    cells = write_scene_checker_data(shapes, tmp_path / "cells", image_size=32)
    assert (cells / "train.jsonl").is_file() and (cells / "val.jsonl").is_file()
    recipe = load_recipe(SCENE_CHECKER_RECIPE, [f"data.path={cells}", "train.steps=400", "train.eval_every=400"])
    run_recipe(recipe, tmp_path / "run", progress=False)
    checker = SceneChecker.load(tmp_path / "run")

    own = checker_accuracy(checker, shapes)
    for split in ("test", "test_novel"):
        assert own[split]["count_accuracy"] > 0.95 and own[split]["color_accuracy"] > 0.95, own
        assert own[split]["shape_accuracy"] > 0.7, own

    rows = load_split(shapes, "test")
    wrong = attribute_accuracy(checker, [_wrong_colour(r, i) for i, r in enumerate(rows)], [r["objects"] for r in rows])
    assert wrong["color_accuracy"] < 0.1 and wrong["all_correct"] < 0.05
    assert wrong["count_accuracy"] > 0.9 and wrong["shape_accuracy"] > own["test"]["shape_accuracy"] - 0.15
    # Larger images are read after downscaling to the checker's resolution.
    big = [image.resize((64, 64), Image.Resampling.BICUBIC) for image in load_shapes_images(shapes, rows[:20])]
    assert attribute_accuracy(checker, big, [r["objects"] for r in rows[:20]])["count_accuracy"] > 0.9


def test_checker_data_hold_every_val_cell_and_the_held_out_combinations_in_train(
    shapes_dir: Path, tmp_path: Path
) -> None:
    cells = write_scene_checker_data(shapes_dir, tmp_path / "cells", image_size=32)
    train = [json.loads(line) for line in (cells / "train.jsonl").read_text().splitlines()]
    val = [json.loads(line) for line in (cells / "val.jsonl").read_text().splitlines()]
    n_train, n_val = len(load_split(shapes_dir, "train")), len(load_split(shapes_dir, "val"))
    assert len(val) == 9 * n_val
    images = {row["id"].split("-")[0] for row in train}
    assert len(images) == n_train + round(0.25 * n_train)  # the train split and test_novel-style extras
    assert sum(row["label"] == ["empty"] for row in train) == len(images)  # one empty cell per image
    combos = {tuple(row["label"]) for row in train}
    assert {(c, s) for c, s in HELD_OUT} <= combos
    assert all(Image.open(cells / row["image"]).size == (16, 16) for row in train[:20])


def test_a_row_with_an_unknown_position_is_named(shapes_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "shapes"
    shutil.copytree(shapes_dir, broken)
    lines = (broken / "train.jsonl").read_text().splitlines()
    row = json.loads(lines[2])
    row["objects"][0]["position"] = "upstairs"
    lines[2] = json.dumps(row)
    (broken / "train.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(BadSampleError, match=r"train\.jsonl.*3.*position 'upstairs' is not one of") as info:
        write_scene_checker_data(broken, tmp_path / "cells")
    assert info.value.field == "objects" and not (tmp_path / "cells").exists()
    teal = [_obj("teal", "circle", "center")]
    with pytest.raises(ValueError, match="object #0: color 'teal' is not one of red, orange"):
        attribute_accuracy(FakeChecker({8: []}), [Image.new("RGB", (8, 8))], [teal])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="object #0: color 'teal'"):
        scene_prompt(teal)
