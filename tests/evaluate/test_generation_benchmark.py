"""``polymodal eval --benchmark shapes-generation``: prompts from the rows, images judged by the scene checker and
CLIP, FD against the real images, examples written where asked, the same numbers from the same command."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from polymodal.data.processors import ImageProcessor
from polymodal.data.shapes import COLORS, SHAPES, generate_shapesworld, load_split
from polymodal.data.transforms import ImagePreprocess
from polymodal.evaluate import benchmarks
from polymodal.evaluate.generation import CELL_PIXELS, EMPTY
from polymodal.evaluate.runner import run_eval
from polymodal.models import build_preset, save_model


@pytest.fixture(scope="module")
def shapes32(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("shapes32")
    generate_shapesworld(out, 40, seed=0, image_size=32, progress=False)
    return out


@pytest.fixture(scope="module")
def untrained_checker(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model with the scene checker's classes and processors, untrained: the plumbing, not the readings."""
    classes = [EMPTY, *COLORS, *SHAPES]
    torch.manual_seed(0)
    config = {"source": "image", "text": False, "image_encoder": "cnn", "fusion": "concat", "image_size": CELL_PIXELS}
    model = build_preset("shapes-fusion", num_classes=len(classes), **config).eval()
    processors = {"image": ImageProcessor(ImagePreprocess.preset("half", CELL_PIXELS, crop="none"))}
    return save_model(tmp_path_factory.mktemp("checker") / "model", model, processors, dict(zip(classes, range(17))))


def test_generation_is_judged_with_ci_examples_and_the_checkers_reading_of_real_images(
    tiny_diffusion_dir: Path,
    tiny_dual_encoder_dir: Path,
    shapes32: Path,
    untrained_checker: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(benchmarks, "GENERATION_PROMPTS", 6)

    def evaluate(media: Path):  # type: ignore[no-untyped-def]
        judges = {"checker": str(untrained_checker), "clip": str(tiny_dual_encoder_dir)}
        return run_eval(
            str(tiny_diffusion_dir),
            "shapes-generation",
            data=shapes32,
            splits=["test"],
            judges=judges,
            media_dir=media,
            n_resamples=50,
            batch_size=4,
        )

    doc = evaluate(tmp_path / "a")
    (result,) = doc.results
    metrics = result.metrics
    assert result.headline == "all_correct" and 0 <= metrics["all_correct"] <= 1
    for name in ("count_accuracy", "color_accuracy", "shape_accuracy", "position_accuracy", "clip_score"):
        assert name in metrics and f"real_{name}" in metrics
    assert metrics["FD (EfficientNet-Lite0)"] > 0 and set(result.ci95) >= {"all_correct", "position_accuracy"}
    shown = sorted((tmp_path / "a" / "shapes-generation-test").glob("*.png"))
    assert len(shown) == len(result.examples) == min(6, len(load_split(shapes32, "test")))
    assert result.examples[0].image == str(shown[0].resolve()) and result.examples[0].text.startswith("a")
    again = evaluate(tmp_path / "b").results[0]
    assert again.metrics == metrics  # one seed per prompt: the same command, the same images and numbers


def test_without_a_checker_the_benchmark_says_which_judge_is_missing(tiny_diffusion_dir: Path, shapes32: Path) -> None:
    with pytest.raises(ValueError, match=r"needs --judge checker=PATH \(judges given: none\)"):
        run_eval(str(tiny_diffusion_dir), "shapes-generation", data=shapes32, splits=["test"])


def test_a_model_that_cannot_generate_is_refused(tiny_dual_encoder_dir: Path, shapes32: Path) -> None:
    with pytest.raises(ValueError, match="needs a model that can generate"):
        run_eval(str(tiny_dual_encoder_dir), "shapes-generation", data=shapes32, splits=["test"])
