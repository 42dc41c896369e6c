"""``polymodal eval --benchmark shapes-generation``: prompts from the rows, images judged by the scene checker and
CLIP, FD against the real images, examples written where asked, the same numbers from the same command."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from polymodal.cli.main import app
from polymodal.data.processors import ImageProcessor
from polymodal.data.shapes import COLORS, SHAPES, generate_shapesworld, load_split
from polymodal.data.transforms import ImagePreprocess
from polymodal.evaluate import benchmarks
from polymodal.evaluate.generation import CELL_PIXELS, EMPTY
from polymodal.evaluate.provenance import model_hash
from polymodal.evaluate.results import load_results
from polymodal.evaluate.runner import run_eval
from polymodal.models import build_preset, load_model, save_model
from polymodal.models.saved import load_processors
from polymodal.report import write_report


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


def test_eval_writes_the_generated_images_beside_the_result_and_the_report_shows_them(
    tiny_gan_dir: Path, shapes32: Path, untrained_checker: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(benchmarks, "GENERATION_PROMPTS", 3)
    out = tmp_path / "run" / "eval.json"
    args = ["eval", str(tiny_gan_dir), "-b", "shapes-generation", "--data", str(shapes32), "--split", "test"]
    args += ["--judge", f"checker={untrained_checker}", "--resamples", "20", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    written = sorted((tmp_path / "run" / "eval-generated" / "shapes-generation-test").glob("*.png"))
    examples = load_results(out).results[0].examples
    assert len(written) == len(examples) == 3
    assert [e.image for e in examples] == [str(p.resolve()) for p in written]

    report = write_report([tmp_path / "run"], tmp_path / "report")
    markdown = report.markdown.read_text()
    assert "checker reads:" in markdown and markdown.count("report_assets/") >= 3
    assert f"checker {untrained_checker} ({model_hash(untrained_checker, '')[:12]})" in markdown  # the judges row


def test_the_judges_are_in_the_provenance_and_a_retrained_one_changes_its_hash(
    tiny_gan_dir: Path,
    tiny_dual_encoder_dir: Path,
    shapes32: Path,
    untrained_checker: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(benchmarks, "GENERATION_PROMPTS", 2)
    checker = tmp_path / "checker"
    shutil.copytree(untrained_checker, checker)

    def provenance():  # type: ignore[no-untyped-def]
        judges = {"checker": str(checker), "clip": str(tiny_dual_encoder_dir)}
        doc = run_eval(str(tiny_gan_dir), "shapes-generation", data=shapes32, splits=["test"], judges=judges)
        return doc.provenance

    before = provenance()
    assert before.judges is not None and set(before.judges) == {"checker", "clip"}
    assert before.judges["checker"].path == str(checker)
    assert before.judges["checker"].hash == model_hash(checker, "unused")  # as the evaluated model's is computed
    assert before.judges["clip"].hash == model_hash(tiny_dual_encoder_dir, "unused")
    model = load_model(checker)
    with torch.no_grad():
        next(model.parameters()).add_(0.5)  # "retrained" into the same path
    save_model(checker, model, load_processors(checker), dict(zip([EMPTY, *COLORS, *SHAPES], range(17))))
    after = provenance()
    assert after.judges["checker"].hash != before.judges["checker"].hash  # type: ignore[index]
    assert after.judges["clip"] == before.judges["clip"] and after.model_hash == before.model_hash  # type: ignore[index]
