"""Reports of audio benchmarks: a real ``shapes-audio-retrieval`` evaluation of a tiny untrained audio-text model on
a tiny ShapesWorld with sounds, reported to HTML (spectrograms, players over FLAC data URIs, size caps) and
Markdown; plus a missing and an undecodable clip, and the spectrogram drawn from a known tone."""

from __future__ import annotations

import base64
import functools
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from polymodal.data.audio import AudioFeatures, decode_audio
from polymodal.data.processors import AudioProcessor, TextProcessor
from polymodal.data.shapes import generate_shapesworld
from polymodal.data.text import train_tokenizer
from polymodal.evaluate.results import ResultFile, dump_results
from polymodal.evaluate.runner import run_eval
from polymodal.models import build_model, parse_model_config, save_model
from polymodal.report import build, load_runs, write_report
from polymodal.report.blocks import Paragraph
from polymodal.report.build import _direction
from polymodal.report.sounds import (
    FEATURES,
    MAX_CLIP_BYTES,
    MAX_REPORT_CLIP_BYTES,
    SAMPLE_RATE,
    Sounds,
    spectrogram_png,
)
from tests.report.conftest import write_result

PLAYER = re.compile(r'<audio controls[^>]*src="data:audio/flac;base64,([^"]*)" title="([^"]*)"')
SPECTROGRAM = re.compile(r'<div class="sound"><img src="data:image/png;base64,([^"]*)"')


@dataclass
class AudioRun:
    shapes: Path
    run: Path
    missing: Path  # an example's clip that does not exist
    garbage: Path  # a retrieved clip that is not audio


def _audio_text_model(directory: Path, captions: list[str]) -> Path:
    """An untrained audio + text embedding model (a small CNN over log-mel, a one-layer text transformer)."""
    torch.manual_seed(0)
    tokenizer = train_tokenizer(captions, vocab_size=128, kind="wordlevel")
    text = {"vocab_size": tokenizer.vocab_size, "width": 16, "depth": 1, "heads": 2, "max_length": 24}
    config = {
        "kind": "embedding",
        "encoders": {
            "audio": {"name": "audio_cnn", "params": {"channels": 32, "widths": [8, 16], "width": 32}},
            "text": {"name": "transformer_text", "params": text},
        },
        "embed_dim": 8,
    }
    features = AudioFeatures(sample_rate=SAMPLE_RATE, clip_seconds=2.0, n_mels=32)
    processors = {"audio": AudioProcessor(features), "text": TextProcessor(tokenizer, 24)}
    return save_model(directory, build_model(parse_model_config(config)), processors)


@pytest.fixture(scope="module")
def audio_run(tmp_path_factory: pytest.TempPathFactory) -> AudioRun:
    """``polymodal eval -b shapes-audio-retrieval --robustness`` into a run directory, whose result gains an
    example with a missing clip and one retrieving a clip and a file that is not audio."""
    root = tmp_path_factory.mktemp("audio_report")
    shapes = root / "shapes"
    generate_shapesworld(shapes, 40, sound=True, progress=False)
    rows = [json.loads(line) for line in (shapes / "train.jsonl").read_text().splitlines()]
    model = _audio_text_model(root / "model", [c for r in rows for c in r["captions"]])
    doc = run_eval(str(model), "shapes-audio-retrieval", data=shapes, splits=["test"], with_robustness=True)
    missing, garbage = root / "gone" / "000999.flac", root / "notes.flac"
    garbage.write_text("not a sound")
    result = doc.results[0]
    extra = [
        {"audio": str(missing), "prediction": "a red circle", "reference": "a blue square", "correct": False},
        {
            "text": "a red circle",
            "retrieved": [
                {"audio": result.examples[0].audio, "score": 0.9},
                {"audio": str(garbage), "score": 0.5},
            ],
        },
    ]
    data = doc.model_dump(mode="json", exclude_none=True)
    data["results"][0]["examples"].extend(extra)
    run = root / "run"
    dump_results(ResultFile.model_validate(data), run / "eval.json")
    return AudioRun(shapes, run, missing, garbage)


@pytest.fixture(scope="module")
def report(audio_run: AudioRun, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    out = tmp_path_factory.mktemp("audio_report_out")
    written = write_report([audio_run.run], out)
    return out, written.html.read_text(), written.markdown.read_text()


def test_players_hold_the_clips_at_16_khz(report: tuple[Path, str, str], audio_run: AudioRun) -> None:
    _, html, _ = report
    examples = json.loads((audio_run.run / "eval.json").read_text())["results"][0]["examples"]
    sources = {Path(e["audio"]).name: e["audio"] for e in examples if "audio" in e and "000999" not in e["audio"]}
    players = PLAYER.findall(html)
    # Every real example clip, plus the one retrieved by the text query.
    assert len(players) == len(sources) + 1
    assert {name for _, name in players} == set(sources)
    for data, name in players:
        wave, rate = sf.read(io.BytesIO(base64.b64decode(data)), dtype="float32")
        assert rate == SAMPLE_RATE
        reference = decode_audio(sources[name], SAMPLE_RATE).numpy()
        assert wave.shape == reference.shape and len(wave) == 2 * SAMPLE_RATE  # ShapesWorld clips: 2 s
        np.testing.assert_allclose(wave, np.clip(reference, -1, 1), atol=1.5 / 32768)  # 16-bit rounding only
    assert "media-src data:" in html  # the page's CSP lets the players read their data URIs, and nothing else


def test_spectrograms_are_embedded_beside_each_player(report: tuple[Path, str, str]) -> None:
    _, html, _ = report
    images = SPECTROGRAM.findall(html)
    assert len(images) == len(PLAYER.findall(html))  # the missing and the undecodable file have neither
    for data in images:
        with Image.open(io.BytesIO(base64.b64decode(data))) as im:
            assert im.format == "PNG" and im.mode == "P" and im.size == (192, 64)
            levels = np.asarray(im)
            assert levels.max() > 200 and levels.min() < 100  # sound events stand out over the background
    assert 'alt="log-mel spectrogram of 000' in html


def test_bad_clips_are_named_and_the_report_renders(report: tuple[Path, str, str], audio_run: AudioRun) -> None:
    _, html, md = report
    assert f"{audio_run.missing}: no such file" in html
    assert f"{audio_run.garbage}: cannot decode audio" in html
    assert str(audio_run.missing) in md and str(audio_run.garbage) in md
    assert html.rstrip().endswith("</html>")


def test_skipped_robustness_curves_say_why(report: tuple[Path, str, str]) -> None:
    _, html, md = report
    line = "Robustness to corruptions: not run (image corruptions; this benchmark scores audio)."
    assert line in html and line in md
    assert "corruptions.png" not in md


def test_markdown_links_spectrograms_and_clip_copies(report: tuple[Path, str, str]) -> None:
    out, _, md = report
    pngs = re.findall(r"\]\((report_assets/snd-[0-9a-f]+\.png)\)", md)
    clips = re.findall(r"\[▶ [^]]+\]\((report_assets/snd-[0-9a-f]+\.flac)\)", md)
    assert pngs and clips and len(set(clips)) == len(set(pngs))
    for ref in clips:
        wave, rate = sf.read(out / ref)
        assert rate == SAMPLE_RATE and len(wave) == 2 * SAMPLE_RATE
    assert all((out / ref).is_file() for ref in pngs)
    assert "| sound | text | prediction | reference |" in md


def test_default_caps_bound_the_page(report: tuple[Path, str, str]) -> None:
    _, html, _ = report
    sizes = [len(base64.b64decode(data)) for data, _ in PLAYER.findall(html)]
    assert max(sizes) <= MAX_CLIP_BYTES and sum(sizes) <= MAX_REPORT_CLIP_BYTES
    # A ShapesWorld clip is about 45 KB of FLAC; a spectrogram about 10 KB of PNG.
    assert len(html) < 4 / 3 * sum(sizes) + 200_000


def test_clips_over_a_cap_show_the_spectrogram_and_say_why(
    audio_run: AudioRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    examples = json.loads((audio_run.run / "eval.json").read_text())["results"][0]["examples"]
    first = examples[0]["audio"]
    decodable = sum(1 for e in examples if "audio" in e and "000999" not in e["audio"]) + 1  # + the retrieved one
    clip_size = len(Sounds().get(first)[0].clip)  # type: ignore[union-attr, arg-type]
    # Room for two clips in the report, and the per-clip cap just above this clip's size.
    monkeypatch.setattr(build, "Sounds", functools.partial(Sounds, max_clip=clip_size, max_total=2 * clip_size + 10))
    html = write_report([audio_run.run], tmp_path).html.read_text()
    sizes = [len(base64.b64decode(data)) for data, _ in PLAYER.findall(html)]
    assert 1 <= len(sizes) <= 2 and sum(sizes) <= 2 * clip_size + 10
    assert "for clips is spent" in html or "a clip may take" in html
    assert len(SPECTROGRAM.findall(html)) == decodable  # every decodable clip keeps its spectrogram

    small = Sounds(max_clip=1000)
    sound, note = small.get(first)
    assert note is None and sound is not None and sound.clip is None
    assert re.fullmatch(r"clip not embedded: \d+ KB of FLAC is over the 1 KB a clip may take", sound.note or "")


def test_spectrogram_of_a_tone_lights_its_mel_band() -> None:
    """The slow reference: the brightest row of the picture is the mel band whose filter peaks nearest 1 kHz."""
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    tone = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    with Image.open(io.BytesIO(spectrogram_png(tone))) as im:
        rows = np.asarray(im).astype(float).mean(axis=1)  # (64,), row 0 = highest band
    bank = FEATURES.mel_filters().numpy()  # (n_fft // 2 + 1, n_mels)
    band = int(bank[round(1000 * FEATURES.n_fft / SAMPLE_RATE)].argmax())
    assert len(rows) - 1 - int(rows.argmax()) == band
    with Image.open(io.BytesIO(spectrogram_png(np.zeros(SAMPLE_RATE, dtype=np.float32)))) as im:
        assert np.asarray(im).max() == 0  # silence is black, not stretched to full brightness


@pytest.mark.parametrize(("name", "shown"), [("a2t", "audio → text"), ("i2a", "image → audio"), ("x2y", "x2y")])
def test_recall_directions_name_their_modalities(name: str, shown: str) -> None:
    assert _direction(name) == shown


def test_skipped_curves_name_their_runs_when_several_share_a_section(audio_run: AudioRun, tmp_path: Path) -> None:
    data = json.loads((audio_run.run / "eval.json").read_text())
    for name in ("clap-a", "clap-b"):
        write_result(tmp_path / name, data)
    blocks = build.build_document(load_runs([tmp_path / "clap-a", tmp_path / "clap-b"]), max_examples=0).blocks
    notes = [b.text for b in blocks if isinstance(b, Paragraph) and b.text.startswith("Robustness")]
    assert notes == [
        "Robustness to corruptions: not run for clap-a, clap-b (image corruptions; this benchmark scores audio)."
    ]
