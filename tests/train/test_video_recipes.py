"""The shapes-video-* recipes build and train a few steps on a tiny ShapesWorld-moves dataset; the frame tower stays
the packaged EfficientNet-Lite0, cached per frame, while the temporal model and heads learn."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file as load_state

from polymodal.data.shapes_video import ACTIONS, generate_shapesworld_video
from polymodal.models.presets import PRESETS
from polymodal.pretrained import load_efficientnet_lite0
from polymodal.train.recipe import load_recipe
from polymodal.train.run import run_recipe


@pytest.fixture(scope="module")
def moves(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("moves") / "shapes-video"
    generate_shapesworld_video(out, 30, size=32, frames=8)
    return out


def _train(name: str, data: Path, out: Path, *extra: str):  # type: ignore[no-untyped-def]
    overrides = [
        f"data.path={data}",
        "data.processors.video.image.image_size=64",  # 32 px frames at 64 px: a 2x2 EfficientNet grid, fast
        "train.steps=3",
        "train.batch_size=8",
        "train.warmup_steps=1",
        "train.eval_every=3",
        "train.precision=no",
        *extra,
    ]
    return run_recipe(load_recipe(name, overrides), out, progress=False)


def _frame_tower_is_packaged(model_dir: Path) -> None:
    trained = load_state(model_dir / "model.safetensors")
    prefix = "encoders.video.frames."
    frames = {k.removeprefix(prefix): v for k, v in trained.items() if k.startswith(prefix)}
    packaged = load_efficientnet_lite0().state_dict()
    assert frames and set(frames) <= set(packaged)
    assert all(torch.equal(v, packaged[k]) for k, v in frames.items())


def test_shapes_video_clip_trains_the_temporal_model_on_the_locked_frame_tower(moves: Path, tmp_path: Path) -> None:
    import polymodal

    result = _train("shapes-video-clip", moves, tmp_path / "run")
    assert result.step == 3 and all(torch.isfinite(torch.tensor(v)) for v in result.last_losses.values())
    _frame_tower_is_packaged(tmp_path / "run" / "model")
    config = json.loads((tmp_path / "run" / "model" / "config.json").read_text())["config"]
    assert config["encoders"]["video"]["params"]["temporal"] == "transformer"
    loaded = polymodal.load(tmp_path / "run")
    row = json.loads((moves / "test.jsonl").read_text().splitlines()[0])
    clip = loaded.embed("video", [str(moves / row["video"])])
    text = loaded.embed_text(row["captions"][:1])
    assert clip.shape == text.shape == (1, 128)


def test_shapes_video_caption_trains_and_captions_a_clip(moves: Path, tmp_path: Path) -> None:
    import polymodal

    _train("shapes-video-caption", moves, tmp_path / "run")
    _frame_tower_is_packaged(tmp_path / "run" / "model")
    row = json.loads((moves / "test.jsonl").read_text().splitlines()[0])
    (caption,) = polymodal.load(tmp_path / "run").caption([str(moves / row["video"])])
    assert isinstance(caption, str)


def test_shapes_video_action_classifies_the_first_event(moves: Path, tmp_path: Path) -> None:
    result = _train("shapes-video-action", moves, tmp_path / "run")
    assert result.best_metric is not None and 0.0 <= result.best_metric <= 1.0
    answers = json.loads((tmp_path / "run" / "model" / "answers.json").read_text())
    first = {json.loads(line)["label"]["action"] for line in (moves / "train.jsonl").read_text().splitlines()}
    assert set(answers) == first and set(answers) <= set(ACTIONS)  # classes: the first events' actions
    config = json.loads((tmp_path / "run" / "model" / "config.json").read_text())["config"]
    assert set(config["encoders"]) == {"video"} and config["num_classes"] == len(first)


def test_shapes_video_qa_answers_questions_about_clips(moves: Path, tmp_path: Path) -> None:
    result = _train("shapes-video-qa", moves, tmp_path / "run")
    assert result.best_metric is not None
    answers = json.loads((tmp_path / "run" / "model" / "answers.json").read_text())
    rows = [json.loads(line) for line in (moves / "train.jsonl").read_text().splitlines()]
    assert set(answers) == {qa["answer"] for r in rows for qa in r["qa"]}
    _frame_tower_is_packaged(tmp_path / "run" / "model")


def test_shapes_video_av_trains_a_fusion_of_frames_sound_and_text(tmp_path: Path) -> None:
    data = tmp_path / "moves"
    generate_shapesworld_video(data, 30, size=32, frames=8, sound=True)
    result = _train("shapes-video-av", data, tmp_path / "run")
    assert result.step == 3 and result.best_metric is not None and 0.0 <= result.best_metric <= 1.0
    model_dir = tmp_path / "run" / "model"
    _frame_tower_is_packaged(model_dir)
    config = json.loads((model_dir / "config.json").read_text())["config"]
    assert set(config["encoders"]) == {"video", "audio", "text"} and config["num_classes"] == 2
    assert config["encoders"]["audio"]["name"] == "audio_transformer"  # its tokens know their time
    assert config["encoders"]["video"]["params"]["temporal"] == "space_time" and config["fusion"]["name"] == "track"
    losses = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert any(entry.get("grounding", 0) > 0 for entry in losses)  # the track fusion's grounding loss trains
    processors = json.loads((model_dir / "processors.json").read_text())
    assert processors["audio"]["clip_seconds"] == 2.0 and processors["video"]["frames"] == 8
    with pytest.raises(ValueError, match="one of image, audio, video or several joined by '\\+', got 'video\\+smell'"):
        PRESETS.build("shapes-fusion", source="video+smell")
