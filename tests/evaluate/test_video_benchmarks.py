"""Video benchmarks on a tiny generated ShapesWorld-moves dataset and tiny untrained video models, each checked against
a slow per-clip reference computed with the saved model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from polymodal.backends import load_backend
from polymodal.data.audio import AudioFeatures
from polymodal.data.processors import AudioProcessor, TextProcessor, VideoProcessor
from polymodal.data.shapes_video import ACTIONS, generate_shapesworld_video
from polymodal.data.text import train_tokenizer
from polymodal.data.transforms import ImagePreprocess
from polymodal.data.video import VideoSampling
from polymodal.evaluate.prompts import ACTION_TEMPLATES
from polymodal.evaluate.runner import run_eval
from polymodal.models import FusionClassifier, SavedModel, build_model, parse_model_config, save_model

from .conftest import IMG, VIT, _text, embed_each, evaluate_test

VIDEO = {
    "name": "video_frames",
    "params": {"frame_encoder": VIT, "temporal": "transformer", "width": 16, "max_frames": 8},
}


@pytest.fixture(scope="module")
def moves(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("moves") / "shapes-video"
    generate_shapesworld_video(out, 40, size=32, frames=8)
    return out


def _rows(moves: Path, manifest: str = "test") -> list[dict]:
    return [json.loads(line) for line in (moves / f"{manifest}.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def video_models(moves: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """clip: video + text in one space; caption: a video captioner; statements: video + text fusion; action: a video
    classifier of the first event's action."""
    torch.manual_seed(0)
    rows = [json.loads(line) for f in moves.glob("*.jsonl") for line in f.read_text().splitlines()]
    words = [t for r in rows for t in r["captions"]] + [t.format(a) for t in ACTION_TEMPLATES for a in ACTIONS]
    tokenizer = train_tokenizer(words, vocab_size=128, kind="wordlevel")
    vocab = tokenizer.vocab_size
    processors = {
        "video": VideoProcessor(VideoSampling(frames=8), ImagePreprocess(image_size=IMG)),
        "text": TextProcessor(tokenizer, 24),
    }
    decoder = {"vocab_size": vocab, "max_length": 24, "params": {"width": 16, "depth": 1, "heads": 2}}
    fusion = {"kind": "fusion_classifier", "fusion": {"name": "concat"}, "fusion_dim": 16}
    configs = {
        "clip": {"kind": "embedding", "encoders": {"video": VIDEO, "text": _text(vocab)}, "embed_dim": 8},
        "caption": {"kind": "captioner", "encoders": {"video": VIDEO}, "source": "video", "decoder": decoder},
        "statements": {**fusion, "encoders": {"video": VIDEO, "text": _text(vocab)}, "num_classes": 2},
        "action": {**fusion, "encoders": {"video": VIDEO}, "num_classes": len(ACTIONS)},
    }
    root = tmp_path_factory.mktemp("video_models")
    out = {}
    for name, config in configs.items():
        answers = {a: i for i, a in enumerate(sorted(ACTIONS))} if name == "action" else None
        model = build_model(parse_model_config(config))
        out[name] = save_model(root / name, model, processors, answers)
    return out


def test_shapes_video_retrieval_both_ways_matches_brute_force(moves: Path, video_models: dict) -> None:
    result, saved = evaluate_test(video_models["clip"], "shapes-video-retrieval", moves, with_robustness=True)
    rows = _rows(moves)
    clips = embed_each(saved, "video", [str(moves / r["video"]) for r in rows])
    texts = [t for r in rows for t in r["captions"]]
    owner = [i for i, r in enumerate(rows) for _ in r["captions"]]
    sims = embed_each(saved, "text", texts) @ clips.T  # (N_text, N_clip)
    assert result.headline == "t2v_R@1" and set(result.details.recall_at_k) == {"v2t", "t2v"}
    assert result.metrics["t2v_R@1"] == pytest.approx(
        np.mean([int(s.argmax()) == owner[j] for j, s in enumerate(sims)])
    )
    v2t = np.mean([owner[int(sims[:, i].argmax())] == i for i in range(len(rows))])
    assert result.metrics["v2t_R@1"] == pytest.approx(v2t)
    assert result.examples[0].retrieved[0].text in texts
    # Image corruptions do not apply to clips: no curves, and the reason is in the result.
    assert result.robustness.corruptions is None and "video" in result.robustness.skipped["corruptions"]


def test_shapes_video_caption_uses_the_video_captioner(moves: Path, video_models: dict, models: dict) -> None:
    result, _ = evaluate_test(video_models["caption"], "shapes-video-caption", moves, meteor=False)
    first = str(moves / _rows(moves)[0]["video"])
    assert result.headline == "CIDEr-D" and {"BLEU-4", "CIDEr-D"} <= set(result.metrics)
    assert result.examples[0].prediction == load_backend(video_models["caption"]).caption([first])[0]
    with pytest.raises(ValueError, match="shapes-video-caption needs a model that can caption video.*caption: image"):
        run_eval(str(models["caption"]), "shapes-video-caption", data=moves, splits=["test"])


def test_shapes_video_action_zero_shot_matches_per_clip_reference(moves: Path, video_models: dict) -> None:
    result, saved = evaluate_test(video_models["clip"], "shapes-video-action", moves)
    rows = _rows(moves)
    clips = embed_each(saved, "video", [str(moves / r["video"]) for r in rows])
    prompts = torch.nn.functional.normalize(
        embed_each(saved, "text", [t.format(a) for a in ACTIONS for t in ACTION_TEMPLATES]), dim=-1
    )
    classes = prompts.view(len(ACTIONS), len(ACTION_TEMPLATES), -1).mean(1)
    predicted = (clips @ classes.T).argmax(1).tolist()
    truth = [ACTIONS.index(r["label"]["action"]) for r in rows]
    assert result.headline == "accuracy" and result.details.confusion.classes == list(ACTIONS)
    assert result.metrics["accuracy"] == pytest.approx(np.mean(np.equal(predicted, truth)))
    for action, accuracy in result.details.per_class.items():  # per action present in the split
        own = [p == t for p, t in zip(predicted, truth) if ACTIONS[t] == action]
        assert accuracy == pytest.approx(np.mean(own))


def test_shapes_video_action_classifier_accuracy_per_action(moves: Path, video_models: dict) -> None:
    result, saved = evaluate_test(video_models["action"], "shapes-video-action", moves)
    hits = []
    for r in _rows(moves):
        with torch.no_grad():
            logits = saved.model({"video": saved.inputs("video", [str(moves / r["video"])])})
        hits.append(saved.answers[int(logits.argmax())] == r["label"]["action"])
    assert result.metrics["accuracy"] == pytest.approx(np.mean(hits))
    first = {r["label"]["action"] for r in _rows(moves)}
    assert set(result.details.per_statement_type) == first
    assert result.examples[0].prediction in ACTIONS


def test_shapes_video_statements_with_modality_drops(moves: Path, video_models: dict, models: dict) -> None:
    result, saved = evaluate_test(video_models["statements"], "shapes-video-statements", moves, with_robustness=True)

    def accuracy(drop: str | None) -> float:
        hits = []
        for r in _rows(moves):
            for st in r["statements"]:
                inputs = {
                    "video": saved.inputs("video", [str(moves / r["video"])]),
                    "text": saved.inputs("text", [st["text"]]),
                }
                present = None if drop is None else {drop: torch.zeros(1, dtype=torch.bool)}
                with torch.no_grad():
                    hits.append(int(saved.model(inputs, present).argmax()) == int(st["label"]))
        return float(np.mean(hits))

    assert result.metrics["accuracy"] == pytest.approx(accuracy(None))
    types = {st["type"] for r in _rows(moves) for st in r["statements"]}
    assert set(result.details.per_statement_type) == types and "action" in types
    missing = result.robustness.missing_modality
    assert missing["video"] == pytest.approx(accuracy("video")) and missing["text"] == pytest.approx(accuracy("text"))
    assert result.robustness.corruptions is None
    with pytest.raises(
        ValueError, match="shapes-video-statements needs a polymodal fusion classifier of text and video"
    ):
        run_eval(str(models["fusion"]), "shapes-video-statements", data=moves, splits=["test"])


AUDIO = {"name": "audio_cnn", "params": {"channels": 32, "widths": [8, 16], "width": 32}}


@pytest.fixture(scope="module")
def av_moves(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("av") / "shapes-video"
    generate_shapesworld_video(out, 60, size=32, frames=8, sound=True)
    return out


@pytest.fixture(scope="module")
def av_models(av_moves: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """fused: video + audio + text; video, audio: a baseline that reads one of them beside the text."""
    torch.manual_seed(0)
    rows = [json.loads(line) for f in av_moves.glob("av_*.jsonl") for line in f.read_text().splitlines()]
    tokenizer = train_tokenizer([st["text"] for r in rows for st in r["statements"]], vocab_size=64, kind="wordlevel")
    processors = {
        "video": VideoProcessor(VideoSampling(frames=8), ImagePreprocess(image_size=IMG)),
        "audio": AudioProcessor(
            AudioFeatures(sample_rate=8000, clip_seconds=1.0, n_fft=256, hop_length=128, n_mels=32)
        ),
        "text": TextProcessor(tokenizer, 24),
    }
    towers = {"video": VIDEO, "audio": AUDIO, "text": _text(tokenizer.vocab_size)}
    root = tmp_path_factory.mktemp("av_models")
    out = {}
    for name, media in {"fused": ("video", "audio"), "video": ("video",), "audio": ("audio",)}.items():
        keep = (*media, "text")
        config = {
            "kind": "fusion_classifier",
            "encoders": {m: towers[m] for m in keep},
            "fusion": {"name": "concat"},
            "fusion_dim": 16,
            "num_classes": 2,
        }
        out[name] = save_model(root / name, build_model(parse_model_config(config)), {m: processors[m] for m in keep})
    return out


def _av_predictions(saved: SavedModel, moves: Path, drop: str | None = None) -> tuple[list[int], list[int]]:
    """Statement by statement (the slow reference), each clip's file read by every clip tower the model has:
    the predicted and the true classes."""
    predicted, truth = [], []
    for r in _rows(moves, "av_test"):
        # Who acted first and when the sound came (training aids) are not scored.
        for st in (s for s in r["statements"] if s["type"] not in ("acted_first", "sound_time")):
            inputs = {m: saved.inputs(m, [str(moves / r[m])]) for m in ("video", "audio") if m in saved.model.encoders}
            inputs["text"] = saved.inputs("text", [st["text"]])
            present = None if drop is None else {drop: torch.zeros(1, dtype=torch.bool)}
            with torch.no_grad():
                predicted.append(int(saved.model(inputs, present).argmax()))
            truth.append(int(st["label"]))
    return predicted, truth


def _av_accuracy(saved: SavedModel, moves: Path, drop: str | None = None) -> float:
    predicted, truth = _av_predictions(saved, moves, drop)
    return float(np.mean(np.equal(predicted, truth)))


def test_shapes_video_av_fuses_frames_sound_and_text_with_drops_and_baselines(
    av_moves: Path, av_models: dict, models: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: set[tuple[tuple[str, ...], tuple[str, ...]]] = set()  # (modalities given, modalities marked absent)
    forward = FusionClassifier.forward

    def spy(self: FusionClassifier, inputs: dict, present: dict | None = None) -> torch.Tensor:
        absent = tuple(sorted(m for m, p in (present or {}).items() if not p.any()))
        seen.add((tuple(sorted(inputs)), absent))
        return forward(self, inputs, present)

    monkeypatch.setattr(FusionClassifier, "forward", spy)
    result, saved = evaluate_test(av_models["fused"], "shapes-video-av", av_moves, with_robustness=True)
    monkeypatch.undo()
    given = ("audio", "text", "video")  # every batch reads the clip's frames and its sound, whatever is dropped
    assert seen == {(given, ()), (given, ("video",)), (given, ("audio",))}  # not the text: that is 0.5 by design
    fused = _av_predictions(saved, av_moves)[0]
    assert [e.prediction for e in result.examples] == [("false", "true")[p] for p in fused][: len(result.examples)]
    assert result.headline == "accuracy" and result.metrics["accuracy"] == pytest.approx(_av_accuracy(saved, av_moves))
    heard = {r["label"]["order"] for r in _rows(av_moves, "av_test")}
    assert set(result.details.per_statement_type) == heard and heard <= {"first", "second"}
    missing = result.robustness.missing_modality
    assert set(missing) == {"none", "video", "audio"}
    for dropped in ("video", "audio"):
        assert missing[dropped] == pytest.approx(_av_accuracy(saved, av_moves, dropped)), dropped
    assert result.robustness.corruptions is None and "video" in result.robustness.skipped["corruptions"]
    example = result.examples[0]
    assert example.video == example.audio and example.video.endswith(".mp4") and "made the sound" in example.text
    for baseline in ("video", "audio"):  # the unimodal baselines: one clip tower and the text
        result, saved = evaluate_test(av_models[baseline], "shapes-video-av", av_moves, with_robustness=True)
        assert result.metrics["accuracy"] == pytest.approx(_av_accuracy(saved, av_moves))
        assert set(result.robustness.missing_modality) == {"none", baseline}
    with pytest.raises(
        ValueError, match="shapes-video-av needs a polymodal fusion classifier of audio or text or video"
    ):
        run_eval(str(models["fusion"]), "shapes-video-av", data=av_moves, splits=["test"])


@pytest.fixture(scope="module")
def video_qa_dir(moves: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A question answerer of clips trained here by the shapes-video-qa recipe for a few steps, a small ViT per frame
    in place of EfficientNet-Lite0 (its run directory)."""
    from polymodal.train.recipe import load_recipe
    from polymodal.train.run import run_recipe

    overrides = [
        f"data.path={moves}",
        "model.params.image_encoder=vit",
        f"data.image.image_size={IMG}",
        f"data.processors.video.image.image_size={IMG}",
        "train.steps=20",
        "train.batch_size=16",
        "train.warmup_steps=2",
        "train.eval_every=20",
        "train.precision=no",
    ]
    out = tmp_path_factory.mktemp("video-qa") / "run"
    run_recipe(load_recipe("shapes-video-qa", overrides), out, progress=False)
    return out / "model"


def _answers_each(saved: SavedModel, moves: Path, manifest: str) -> tuple[list[str], list[str], list[str]]:
    """Question by question (the slow reference): the model's answers, the true ones and the question types."""
    predicted, truth, types = [], [], []
    for r in _rows(moves, manifest):
        for qa in r["qa"]:
            inputs = {
                "video": saved.inputs("video", [str(moves / r["video"])]),
                "text": saved.inputs("text", [qa["question"]]),
            }
            with torch.no_grad():
                predicted.append(saved.answers[int(saved.model(inputs).argmax())])
            truth.append(qa["answer"])
            types.append(qa["type"])
    return predicted, truth, types


def test_shapes_video_qa_exact_match_per_question_type(moves: Path, video_qa_dir: Path, models: dict) -> None:
    (test, novel) = run_eval(str(video_qa_dir), "shapes-video-qa", data=moves, n_resamples=20).results
    saved = SavedModel.load(video_qa_dir)
    for result, manifest in ((test, "test"), (novel, "test_novel")):
        predicted, truth, types = _answers_each(saved, moves, manifest)
        hits = np.equal(predicted, truth)
        assert result.split == manifest and result.headline == "vqa_accuracy"
        assert result.metrics["vqa_accuracy"] == pytest.approx(np.mean(hits))
        assert set(result.details.per_question_type) == set(types) == {"action", "order", "count"}
        for kind in ("action", "order", "count"):
            own = [h for h, t in zip(hits, types) if t == kind]
            assert result.metrics[f"vqa_accuracy_{kind}"] == pytest.approx(np.mean(own)), kind
        assert result.examples[0].video.endswith(".mp4") and result.examples[0].prediction == predicted[0]
    with pytest.raises(ValueError, match="shapes-video-qa needs a model that can answer video.*answer: image"):
        run_eval(str(models["vqa"]), "shapes-video-qa", data=moves, splits=["test"])


def test_a_video_question_answerer_answers_about_clips_through_the_api(moves: Path, video_qa_dir: Path) -> None:
    import polymodal

    model = polymodal.load(video_qa_dir)
    assert model.media("answer") == {"video"}
    rows = _rows(moves)[:3]
    clips = [str(moves / r["video"]) for r in rows]
    questions = [r["qa"][-1]["question"] for r in rows]  # "how many shapes are there"
    saved = SavedModel.load(video_qa_dir)
    expected = []
    for clip, question in zip(clips, questions):
        inputs = {"video": saved.inputs("video", [clip]), "text": saved.inputs("text", [question])}
        with torch.no_grad():
            expected.append(saved.answers[int(saved.model(inputs).argmax())])
    assert model.answer(clips, questions) == expected
    assert model.answer((moves / rows[0]["video"]).read_bytes(), questions[:1]) == expected[:1]  # encoded bytes too
