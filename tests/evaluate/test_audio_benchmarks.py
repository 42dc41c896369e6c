"""Audio benchmarks on tiny files written here (ShapesWorld with sounds, ESC-50, AudioCaps, Clotho) and tiny untrained
audio models, each checked against a slow per-item reference computed with the saved model."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from polymodal.backends import EMBED, TaskNotSupported, load_backend
from polymodal.backends.base import embed, media
from polymodal.data.audio import AudioFeatures
from polymodal.data.processors import AudioProcessor, ImageProcessor, TextProcessor
from polymodal.data.text import train_tokenizer
from polymodal.data.transforms import ImagePreprocess
from polymodal.evaluate.probe import fit_logistic_regression
from polymodal.evaluate.runner import run_eval
from polymodal.models import SavedModel, build_model, parse_model_config, save_model
from tests.data.test_audio_readers import audiocaps_tree, write_csv

from .conftest import IMG, VIT, _text, embed_each, evaluate_test

RATE = 8000
FEATURES = {"sample_rate": RATE, "clip_seconds": 0.4, "n_fft": 256, "hop_length": 128, "n_mels": 32}
AUDIO = {"name": "audio_cnn", "params": {"channels": 32, "widths": [8, 16], "width": 32}}
COLOURS = {"red": 220.0, "blue": 440.0, "green": 880.0}
SHAPES = ("circle", "square")


def _tone(path: Path, freq: float, seconds: float = 0.3) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * RATE)) / RATE
    sf.write(path, (0.5 * np.sin(2 * np.pi * freq * t)).astype("float32"), RATE, format="FLAC")
    return str(path)


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture(scope="module")
def sounds_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ShapesWorld-like: test.jsonl with an image and a sound per scene (six one-object scenes, two with two
    objects), speech_test.jsonl (each caption spoken twice), sentiment_test.jsonl."""
    root = tmp_path_factory.mktemp("shapes_audio")
    (root / "images").mkdir()
    rows, speech, sentiment = [], [], []
    combos = [(c, s) for c in COLOURS for s in SHAPES]
    for i, (colour, shape) in enumerate(combos + combos[:2]):
        two = i >= len(combos)
        sid = f"{i:06d}"
        Image.new("RGB", (IMG, IMG), (40 * i, 100, 200 - 20 * i)).save(root / "images" / f"{sid}.png")
        _tone(root / "sounds" / f"{sid}.flac", COLOURS[colour] * (1.5 if two else 1.0) + 30 * SHAPES.index(shape))
        captions = [f"a {colour} {shape}", f"one {shape} that is {colour}"]
        if two:
            captions = [f"a {colour} {shape} and a blue square"]
        objects = [{"shape": shape, "color": colour}] * (2 if two else 1)
        rows.append(
            {
                "id": sid,
                "image": f"images/{sid}.png",
                "audio": f"sounds/{sid}.flac",
                "text": captions,
                "label": {"color_shape": f"{colour} {shape}", "shape": shape, "color": colour},
                "objects": objects,
            }
        )
        for k, caption in enumerate(captions):
            sp = f"{sid}-{k}"
            _tone(root / "speech" / f"{sp}.flac", 300 + 50 * i + 7 * k, 0.25)
            speech.append(
                {"id": sp, "audio": f"speech/{sp}.flac", "text": caption, "image": f"images/{sid}.png", "voice": "en"}
            )
        label = "positive" if i % 2 else "negative"
        _tone(root / "speech" / f"s{sid}.flac", 500 + 40 * i, 0.2)
        sentiment.append(
            {
                "id": f"s{sid}",
                "audio": f"speech/s{sid}.flac",
                "text": f"the {shape} is fine",
                "label": label,
                "delivery": ["sincere", "sarcastic"][i % 3 == 0],
            }
        )
    _jsonl(root / "test.jsonl", rows)
    _jsonl(root / "speech_test.jsonl", speech)
    _jsonl(root / "sentiment_test.jsonl", sentiment)
    return root


def _save(config: dict, directory: Path, tokenizer, processors: tuple[str, ...], answers: dict | None = None) -> Path:
    model = build_model(parse_model_config(config))
    made = {
        "audio": AudioProcessor(AudioFeatures(**FEATURES)),
        "image": ImageProcessor(ImagePreprocess(image_size=IMG)),
        "text": TextProcessor(tokenizer, 24),
    }
    return save_model(directory, model, {m: made[m] for m in processors}, answers)


@pytest.fixture(scope="module")
def audio_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """clap: audio + image + text in one space; caption: an audio captioner; sentiment: audio + text fusion."""
    torch.manual_seed(0)
    words = [f"{c} {s} that is one and a the blue square photo of fine" for c in COLOURS for s in SHAPES]
    tokenizer = train_tokenizer(words, vocab_size=64, kind="wordlevel")
    vocab = tokenizer.vocab_size
    root = tmp_path_factory.mktemp("audio_models")
    decoder = {"vocab_size": vocab, "max_length": 24, "params": {"width": 16, "depth": 1, "heads": 2}}
    clap = {"kind": "embedding", "encoders": {"audio": AUDIO, "image": VIT, "text": _text(vocab)}, "embed_dim": 8}
    caption = {"kind": "captioner", "encoders": {"audio": AUDIO}, "source": "audio", "decoder": decoder}
    fusion = {
        "kind": "fusion_classifier",
        "encoders": {"audio": AUDIO, "text": _text(vocab)},
        "fusion": {"name": "concat"},
        "fusion_dim": 16,
        "num_classes": 2,
    }
    return {
        "clap": _save(clap, root / "clap", tokenizer, ("audio", "image", "text")),
        "caption": _save(caption, root / "caption", tokenizer, ("audio", "text")),
        "sentiment": _save(fusion, root / "sentiment", tokenizer, ("audio", "text"), {"negative": 0, "positive": 1}),
    }


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _recall_at_1(queries: torch.Tensor, gallery: torch.Tensor, owner: list[int]) -> float:
    """Fraction of queries whose most similar gallery item is their own (owner[q] = index of q's gallery item)."""
    return float(np.mean([int((gallery @ q).argmax()) == owner[i] for i, q in enumerate(queries)]))


def test_shapes_audio_zeroshot_matches_per_clip_reference_and_skips_image_corruptions(
    sounds_dir: Path, audio_models: dict
) -> None:
    result, saved = evaluate_test(
        audio_models["clap"], "shapes-audio-zeroshot", sounds_dir, templates="simple", with_robustness=True
    )
    from polymodal.data.shapes import COLORS
    from polymodal.data.shapes import SHAPES as ALL_SHAPES

    classes = [f"{c} {s}" for c in COLORS for s in ALL_SHAPES]
    one = [r for r in _rows(sounds_dir / "test.jsonl") if len(r["objects"]) == 1]
    clips = embed_each(saved, "audio", [str(sounds_dir / r["audio"]) for r in one])
    prompts = embed_each(saved, "text", [f"a photo of a {c}." for c in classes])
    predicted = (clips @ prompts.T).argmax(1).tolist()
    truth = [classes.index(r["label"]["color_shape"]) for r in one]
    assert result.headline == "accuracy" and len(result.details.confusion.matrix) == len(classes)
    assert result.metrics["accuracy"] == pytest.approx(np.mean(np.equal(predicted, truth)))
    n = len(ALL_SHAPES)
    assert result.metrics["color_accuracy"] == pytest.approx(
        np.mean([p // n == t // n for p, t in zip(predicted, truth)])
    )
    assert result.examples[0].audio == str(sounds_dir / one[0]["audio"]) and result.examples[0].image is None
    # Image corruptions do not apply to sounds: no curves, and the reason is in the result.
    assert result.robustness.corruptions is None and "audio" in result.robustness.skipped["corruptions"]
    # The sounds were read: the dataset hash covers them.
    assert str(sounds_dir / one[0]["audio"]) in {str(p) for p in _files_read(audio_models, sounds_dir)}


def _files_read(audio_models: dict, sounds_dir: Path) -> set[Path]:
    from polymodal.evaluate.benchmarks import BENCHMARKS
    from polymodal.evaluate.context import EvalContext

    ctx = EvalContext(model=str(audio_models["clap"]), data=sounds_dir)
    BENCHMARKS["shapes-audio-zeroshot"].load(ctx, "test")
    return ctx.files_read


def test_shapes_audio_retrieval_both_ways_matches_brute_force(sounds_dir: Path, audio_models: dict) -> None:
    result, saved = evaluate_test(audio_models["clap"], "shapes-audio-retrieval", sounds_dir)
    rows = _rows(sounds_dir / "test.jsonl")
    clips = embed_each(saved, "audio", [str(sounds_dir / r["audio"]) for r in rows])
    texts = [t for r in rows for t in r["text"]]
    owner = [i for i, r in enumerate(rows) for _ in r["text"]]
    text_emb = embed_each(saved, "text", texts)
    assert result.headline == "t2a_R@1" and set(result.details.recall_at_k) == {"a2t", "t2a", "i2a", "a2i"}
    assert result.metrics["t2a_R@1"] == pytest.approx(_recall_at_1(text_emb, clips, owner))
    sims = clips @ text_emb.T
    a2t = np.mean([owner[int(sims[i].argmax())] == i for i in range(len(rows))])
    assert result.metrics["a2t_R@1"] == pytest.approx(a2t)
    # The model embeds images too: each scene's image against its own sound, both ways.
    images = embed_each(saved, "image", [str(sounds_dir / r["image"]) for r in rows])
    own = list(range(len(rows)))
    assert result.metrics["a2i_R@1"] == pytest.approx(_recall_at_1(clips, images, own))
    assert result.metrics["i2a_R@1"] == pytest.approx(_recall_at_1(images, clips, own))
    assert "i2t_R@1" not in result.metrics and "t2a_mAP@10" not in result.metrics  # mAP@10: AudioCaps/Clotho only
    assert result.examples[0].audio.endswith("000000.flac") and result.examples[0].retrieved[0].text in texts


def test_shapes_audio_caption_uses_the_audio_captioner(sounds_dir: Path, audio_models: dict, models: dict) -> None:
    doc = run_eval(str(audio_models["caption"]), "shapes-audio-caption", data=sounds_dir, splits=["test"], meteor=False)
    (result,) = doc.results
    backend = load_backend(audio_models["caption"])
    first = str(sounds_dir / _rows(sounds_dir / "test.jsonl")[0]["audio"])
    assert result.headline == "CIDEr-D" and "BLEU-4" in result.metrics
    assert result.examples[0].audio == first and result.examples[0].prediction == backend.caption([first])[0]
    # An image captioner cannot caption sounds: refused before any data is read.
    with pytest.raises(ValueError, match="shapes-audio-caption needs a model that can caption audio.*caption: image"):
        run_eval(str(models["caption"]), "shapes-audio-caption", data=sounds_dir, splits=["test"])


def test_shapes_speech_retrieval_against_text_and_images(sounds_dir: Path, audio_models: dict) -> None:
    result, saved = evaluate_test(audio_models["clap"], "shapes-speech-retrieval", sounds_dir)
    rows = _rows(sounds_dir / "speech_test.jsonl")
    speech = embed_each(saved, "audio", [str(sounds_dir / r["audio"]) for r in rows])
    texts = embed_each(saved, "text", [r["text"] for r in rows])
    images = list(dict.fromkeys(r["image"] for r in rows))
    image_emb = embed_each(saved, "image", [Image.open(sounds_dir / p).convert("RGB") for p in images])
    owner = [images.index(r["image"]) for r in rows]
    assert result.metrics["t2a_R@1"] == pytest.approx(_recall_at_1(texts, speech, list(range(len(rows)))))
    assert result.metrics["a2t_R@1"] == pytest.approx(_recall_at_1(speech, texts, list(range(len(rows)))))
    assert result.metrics["a2i_R@1"] == pytest.approx(_recall_at_1(speech, image_emb, owner), abs=1e-6)
    assert {"i2a_R@1", "i2a_R@10"} <= set(result.metrics)
    assert set(result.details.recall_at_k) == {"a2t", "t2a", "i2a", "a2i"}


def test_shapes_sentiment_fusion_with_modality_drops(sounds_dir: Path, audio_models: dict, models: dict) -> None:
    result, saved = evaluate_test(audio_models["sentiment"], "shapes-sentiment", sounds_dir, with_robustness=True)
    rows = _rows(sounds_dir / "sentiment_test.jsonl")

    def accuracy(drop: str | None) -> float:
        hits = []
        for r in rows:
            inputs = {
                "audio": saved.inputs("audio", [str(sounds_dir / r["audio"])]),
                "text": saved.inputs("text", [r["text"]]),
            }
            present = None if drop is None else {drop: torch.zeros(1, dtype=torch.bool)}
            with torch.no_grad():
                predicted = saved.answers[int(saved.model(inputs, present).argmax())]
            hits.append(predicted == r["label"])
        return float(np.mean(hits))

    assert result.metrics["accuracy"] == pytest.approx(accuracy(None))
    assert set(result.details.per_statement_type) == {"sincere", "sarcastic"} and "accuracy_sarcastic" in result.metrics
    missing = result.robustness.missing_modality
    assert missing["audio"] == pytest.approx(accuracy("audio")) and missing["text"] == pytest.approx(accuracy("text"))
    assert result.robustness.corruptions is None
    assert result.examples[0].prediction in ("positive", "negative") and result.examples[0].audio.endswith(".flac")
    with pytest.raises(ValueError, match="shapes-sentiment needs a polymodal fusion classifier of audio or text"):
        run_eval(str(models["fusion"]), "shapes-sentiment", data=sounds_dir, splits=["test"])


def test_image_text_models_refuse_audio_benchmarks_clearly(sounds_dir: Path, models: dict) -> None:
    with pytest.raises(
        ValueError, match="shapes-audio-retrieval needs a model that can embed audio; .* embed: image, text"
    ):
        run_eval(str(models["clip"]), "shapes-audio-retrieval", data=sounds_dir, splits=["test"])

    class ImageOnly:  # a backend without ``media`` (Hugging Face CLIP, polymodal-base) embeds images and text
        name, capabilities = "hf-clip:x", frozenset({EMBED})

        def embed_images(self, images: list) -> torch.Tensor:
            return torch.ones(len(images), 2)

    backend = ImageOnly()
    assert media(backend, EMBED) == {"image", "text"}  # type: ignore[arg-type]
    assert embed(backend, "image", [1, 2, 3]).shape == (3, 2)  # type: ignore[arg-type]
    with pytest.raises(TaskNotSupported, match="hf-clip:x cannot embed audio"):
        embed(backend, "audio", ["a.wav"])  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------ ESC-50


def _esc50(root: Path) -> Path:
    """Five folds, three classes (targets 0, 10, 41 as in ESC-50), two clips per class and fold."""
    (root / "meta").mkdir(parents=True)
    classes = {0: ("dog", 250.0), 10: ("rain", 900.0), 41: ("chainsaw", 2000.0)}
    rows = []
    for fold in range(1, 6):
        for target, (name, freq) in classes.items():
            for take in "AB":
                filename = f"{fold}-{target}{take}-{take}-{target}.wav"
                _tone(root / "audio" / filename, freq * (1 + 0.03 * fold) + (40 if take == "B" else 0), 0.3)
                rows.append([filename, fold, target, name, target != 41, "x", take])
    write_csv(
        root / "meta" / "esc50.csv", ["filename", "fold", "target", "category", "esc10", "src_file", "take"], rows
    )
    return root


def test_esc50_five_fold_zero_shot_and_linear_probe_match_references(tmp_path: Path, audio_models: dict) -> None:
    from sklearn.linear_model import LogisticRegression

    from polymodal.evaluate.probe import DEFAULT_L2

    root = _esc50(tmp_path / "ESC-50")
    doc = run_eval(str(audio_models["clap"]), "esc50", data=root, templates="simple", n_resamples=20)
    (result,) = doc.results
    assert result.split == "all" and result.headline == "accuracy"
    saved = SavedModel.load(audio_models["clap"])
    with open(root / "meta" / "esc50.csv") as f:
        meta = list(csv.DictReader(f))
    clips = embed_each(saved, "audio", [str(root / "audio" / r["filename"]) for r in meta])
    classes = ["dog", "rain", "chainsaw"]  # by target
    labels = np.array([classes.index(r["category"]) for r in meta])
    folds = np.array([int(r["fold"]) for r in meta])
    prompts = embed_each(saved, "text", [f"a photo of a {c}." for c in classes])
    zero_shot_hits = (clips @ prompts.T).argmax(1).numpy() == labels
    for k in range(1, 6):
        assert result.metrics[f"accuracy_fold{k}"] == pytest.approx(zero_shot_hits[folds == k].mean())
    assert result.metrics["accuracy_fold_mean"] == pytest.approx(zero_shot_hits.mean())  # equal folds
    # The probe: scikit-learn's logistic regression with the same penalty, trained on four folds, tested on the fifth.
    probe_hits = np.zeros(len(meta), dtype=bool)
    x = clips.double().numpy()
    for k in range(1, 6):
        train = folds != k
        ref = LogisticRegression(C=1 / (DEFAULT_L2 * train.sum()), max_iter=5000, tol=1e-10)
        probe_hits[~train] = ref.fit(x[train], labels[train]).predict(x[~train]) == labels[~train]
        assert result.metrics[f"probe_accuracy_fold{k}"] == pytest.approx(probe_hits[~train].mean())
    assert result.metrics["probe_accuracy"] == pytest.approx(probe_hits.mean())
    assert "probe_accuracy" in result.ci95
    # The results table gives the probe a row of its own under the zero-shot headline (it was only in the JSON).
    from polymodal.cli.eval import _rows

    assert result.also == ["probe_accuracy"]
    headline, probe = _rows(doc)[:2]
    assert headline[:3] == ("esc50", "all", "accuracy") and probe[:3] == ("", "", "probe_accuracy")
    assert probe[4] == f"{probe_hits.mean():.4f}" and probe[5].startswith("[")

    esc10 = run_eval(str(audio_models["clap"]), "esc50", data=root, splits=["esc10"], n_resamples=20).results[0]
    assert esc10.details.confusion.classes == ["dog", "rain"]  # ESC-10 rows only, classes renumbered


def test_logistic_regression_matches_scikit_learn() -> None:
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 5))
    y = rng.integers(0, 3, 60)
    x[np.arange(60), y] += 1.5
    ref = LogisticRegression(C=0.5, max_iter=5000, tol=1e-10).fit(x, y)
    with torch.inference_mode():  # as under evaluation
        weight, bias = fit_logistic_regression(torch.tensor(x), torch.tensor(y), 3, l2=1 / (0.5 * 60))
    probs = torch.softmax(torch.tensor(x) @ weight.T + bias, dim=1).numpy()
    np.testing.assert_allclose(probs, ref.predict_proba(x), atol=1e-4)


# ------------------------------------------------------------------------------------------ AudioCaps, Clotho


def _clotho(root: Path) -> Path:
    for i in range(4):
        _tone(root / "evaluation" / f"clip {i}.wav", 300.0 + 200 * i)
    rows = [
        [f"clip {i}.wav", *(f"a {c} sound number {i}" for c in ("red", "blue", "green", "red", "blue"))]
        for i in range(4)
    ]
    write_csv(root / "clotho_captions_evaluation.csv", ["file_name", *(f"caption_{i}" for i in range(1, 6))], rows)
    return root


@pytest.mark.parametrize("name", ["audiocaps", "clotho"])
def test_audio_caption_sets_report_recall_and_map_at_10(tmp_path: Path, audio_models: dict, name: str) -> None:
    from polymodal.data.readers import read_audiocaps, read_clotho

    if name == "audiocaps":
        csv_file = audiocaps_tree(tmp_path)
        # Evaluation reads strictly: a clip without its file stops it, naming the row ...
        with pytest.raises(ValueError, match="row 7.*youtube_id is empty"):
            run_eval(str(audio_models["clap"]), name, data=tmp_path, n_resamples=20)
        lines = csv_file.read_text().splitlines()  # ... so keep the rows whose clips exist
        csv_file.write_text("\n".join(line for line in lines if not line.startswith(("104,", "105,"))) + "\n")
        samples = list(read_audiocaps(csv_file))
        assert len(samples) == 3
    else:
        csv_file = _clotho(tmp_path) / "clotho_captions_evaluation.csv"
        samples = list(read_clotho(csv_file))
    doc = run_eval(str(audio_models["clap"]), name, data=tmp_path, n_resamples=20)
    (result,) = doc.results
    assert result.split == ("test" if name == "audiocaps" else "evaluation") and result.headline == "t2a_R@1"
    saved = SavedModel.load(audio_models["clap"])
    clips = embed_each(saved, "audio", [s.audio for s in samples])
    texts = [t for s in samples for t in s.text]
    owner = [i for i, s in enumerate(samples) for _ in s.text]
    text_emb = embed_each(saved, "text", texts)
    sims = text_emb @ clips.T  # (N_text, N_clip)
    ranks = [1 + int((row > row[owner[j]]).sum()) for j, row in enumerate(sims)]
    assert result.metrics["t2a_R@1"] == pytest.approx(np.mean(np.equal(ranks, 1)))
    assert result.metrics["t2a_mAP@10"] == pytest.approx(np.mean([1 / r if r <= 10 else 0 for r in ranks]))
    assert {"a2t_R@1", "a2t_R@5", "a2t_R@10", "t2a_R@10", "a2t_mAP@10"} <= set(result.metrics)


def test_eval_says_in_the_terminal_that_image_corruptions_skip_sounds(
    sounds_dir: Path, audio_models: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rich.console import Console
    from typer.testing import CliRunner

    from polymodal.cli.main import app

    monkeypatch.setattr("polymodal.cli.eval.console", Console(width=80))
    args = ["eval", str(audio_models["clap"]), "-b", "shapes-audio-retrieval", "--data", str(sounds_dir)]
    result = CliRunner().invoke(app, [*args, "--split", "test", "--robustness", "--resamples", "20"])
    assert result.exit_code == 0, result.output
    said = " ".join(result.stdout.split())
    assert (
        "robustness to corruptions not run for shapes-audio-retrieval (test): image corruptions; this benchmark" in said
    )
