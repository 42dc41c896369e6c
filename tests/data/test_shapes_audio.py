"""ShapesWorld's sounds, spoken captions and spoken-sentiment task."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from polymodal.data import shapes_audio
from polymodal.data.shapes import (
    COLORS,
    HELD_OUT,
    SHAPES,
    ShapeObject,
    generate_shapesworld,
    is_complete,
    load_split,
    objects_of,
)
from polymodal.data.shapes_audio import SAMPLE_RATE, color_pitch, render_scene_sound

needs_speech = pytest.mark.skipif(
    not shapes_audio.importlib.util.find_spec("espeakng_loader"), reason="needs polymodal[speech]"
)


def _peak_hz(wave: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
    return float(np.fft.rfftfreq(len(wave), 1 / SAMPLE_RATE)[spectrum.argmax()])


def _events(wave: np.ndarray) -> list[tuple[int, int]]:
    """(start, end) samples of the stretches louder than the background (10 ms frames; a dip shorter than the
    100 ms gap between events, such as between a heartbeat's two beats, stays inside its event)."""
    hop = SAMPLE_RATE // 100
    loud = np.sqrt((wave[: len(wave) // hop * hop].reshape(-1, hop) ** 2).mean(axis=1)) > 0.04
    edges = np.flatnonzero(np.diff(np.concatenate([[0], loud.astype(int), [0]])))
    events: list[tuple[int, int]] = []
    for a, b in zip(edges[::2], edges[1::2]):
        if events and a - events[-1][1] < 8:
            events[-1] = (events[-1][0], int(b))
        else:
            events.append((int(a), int(b)))
    return [(a * hop, b * hop) for a, b in events]


@pytest.mark.parametrize("shape", SHAPES)
def test_each_shape_sounds_at_its_colours_pitch(shape: str) -> None:
    for color in ("red", "cyan", "pink"):
        wave = render_scene_sound([ShapeObject(shape, color, "large", 4)], "plain", np.random.default_rng(0))
        (start, end), *_ = _events(wave)
        cents = 1200 * np.log2(_peak_hz(wave[start:end]) / color_pitch(color))
        assert abs(cents) < 45, (shape, color, cents)  # detune is +-30 cents, plus FFT bin width


def test_a_scene_is_heard_left_to_right_one_event_per_object() -> None:
    objects = [
        ShapeObject("circle", "pink", "large", 5),  # middle right: heard last
        ShapeObject("square", "red", "large", 0),  # top left: first
        ShapeObject("hexagon", "blue", "large", 7),  # bottom middle: second
    ]
    wave = render_scene_sound(objects, "plain", np.random.default_rng(1))
    events = _events(wave)
    assert len(events) == 3
    heard = [_peak_hz(wave[a:b]) for a, b in events]
    expected = [color_pitch(c) for c in ("red", "blue", "pink")]
    assert all(abs(1200 * np.log2(h / e)) < 45 for h, e in zip(heard, expected)), heard
    # Size is length: a small object's event is shorter than a large one's.
    small = render_scene_sound([ShapeObject("square", "red", "small", 0)], "plain", np.random.default_rng(1))
    (a, b), *_ = _events(small)
    assert b - a < events[0][1] - events[0][0]


def test_timbre_tells_shapes_apart_at_equal_pitch() -> None:
    spectra = []
    for shape in SHAPES:
        wave = render_scene_sound([ShapeObject(shape, "green", "large", 4)], "plain", np.random.default_rng(2))
        spectrum = np.abs(np.fft.rfft(wave))
        spectra.append(spectrum / np.linalg.norm(spectrum))
    similarity = np.array(spectra) @ np.array(spectra).T
    assert similarity[~np.eye(len(SHAPES), dtype=bool)].max() < 0.95


def _dataset(tmp: Path, **options: bool) -> Path:
    generate_shapesworld(tmp, 30, seed=3, image_size=32, progress=False, **options)
    return tmp


def test_sounds_leave_images_and_rows_unchanged(tmp_path: Path) -> None:
    plain = _dataset(tmp_path / "plain")
    heard = _dataset(tmp_path / "heard", sound=True)
    for split in ("train", "test_novel"):
        rows, rows_heard = load_split(plain, split), load_split(heard, split)
        assert [{k: v for k, v in r.items() if k != "audio"} for r in rows_heard] == rows
        for row in rows_heard:
            assert (heard / row["image"]).read_bytes() == (plain / row["image"]).read_bytes()
            wave, rate = sf.read(heard / row["audio"])
            assert rate == SAMPLE_RATE and len(_events(wave.astype(np.float32))) == len(row["objects"])
    assert is_complete(heard, 30, 3, 32, sound=True) and not is_complete(heard, 30, 3, 32)
    assert is_complete(plain, 30, 3, 32) and not is_complete(plain, 30, 3, 32, sound=True)
    # Regenerating without sound removes the sounds, so the folder matches its manifests.
    _dataset(tmp_path / "heard")
    assert not any((tmp_path / "heard" / "sounds").iterdir())


def test_objects_of_a_row_are_its_scene(tmp_path: Path) -> None:
    row = load_split(_dataset(tmp_path), "train")[0]
    assert [o.to_dict() for o in objects_of(row)] == row["objects"]


@needs_speech
def test_speech_is_deterministic_and_keeps_the_held_out_pairs(tmp_path: Path) -> None:
    one = _dataset(tmp_path / "one", speech=True)
    generate_shapesworld(tmp_path / "two", 30, seed=3, image_size=32, progress=False, speech=True, workers=2)
    for view in ("speech_", "sentiment_"):
        for split in ("train", "test_novel"):
            rows = load_split(one, split, view)
            assert rows == load_split(tmp_path / "two", split, view)
            for row in rows:
                assert (one / row["audio"]).read_bytes() == (tmp_path / "two" / row["audio"]).read_bytes()
    captions = {r["id"]: r["captions"] for r in load_split(one, "train")}
    for row in load_split(one, "train", "speech_"):
        image_id, which = row["id"].split("-")
        assert row["text"] == captions[image_id][int(which)]
        assert not any(f"{c} {s}" in row["text"] for c, s in HELD_OUT)
        wave, rate = sf.read(one / row["audio"])
        assert rate == SAMPLE_RATE and 0.3 < len(wave) / rate < 10 and np.abs(wave).max() > 0.5
    novel = load_split(one, "test_novel", "speech_")
    assert any(any(f"{c} {s}" in r["text"] for c, s in HELD_OUT) for r in novel)


@needs_speech
def test_sentiment_label_is_the_words_flipped_by_sarcasm(tmp_path: Path) -> None:
    rows = [r for s in ("train", "val", "test") for r in load_split(_dataset(tmp_path, speech=True), s, "sentiment_")]
    for row in rows:
        flipped = row["delivery"] == "sarcastic"
        assert (row["label"] == row["words"]) != flipped
        verbs = shapes_audio.POSITIVE_WORDS if row["words"] == "positive" else shapes_audio.NEGATIVE_WORDS
        assert any(f" {v} " in f" {row['text']} " for v in verbs)
        assert (row["rate"] <= 120) == flipped
    assert {r["label"] for r in rows} == {"positive", "negative"}
    assert any(c in rows[0]["text"] for c in COLORS)


@needs_speech
def test_voices_differ_and_repeat_exactly() -> None:
    text = "a small red circle"
    waves = {v: shapes_audio.speak(text, shapes_audio.Voice(v, 160, 50)) for v in shapes_audio.VOICES}
    assert len({w.tobytes() for w in waves.values()}) == len(shapes_audio.VOICES)
    again = shapes_audio.speak(text, shapes_audio.Voice(shapes_audio.VOICES[0], 160, 50))
    assert np.array_equal(again, waves[shapes_audio.VOICES[0]])
    slow = shapes_audio.speak(text, shapes_audio.Voice(shapes_audio.VOICES[0], 100, 50))
    assert len(slow) > 1.3 * len(again)
    with pytest.raises(ValueError, match="no voice variant"):
        shapes_audio.speak(text, shapes_audio.Voice("en-us+nobody", 160, 50))


def test_speech_without_espeak_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shapes_audio.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ImportError, match=r"polymodal\[speech\]"):
        generate_shapesworld(tmp_path, 10, progress=False, speech=True)
    assert not (tmp_path / "train.jsonl").exists()


def test_datasheet_describes_the_sounds(tmp_path: Path) -> None:
    sheet = (_dataset(tmp_path, sound=True) / "datasheet.md").read_text()
    assert "## Sound and speech" in sheet and f"red {color_pitch('red'):.0f} Hz" in sheet
    assert "speech_" not in sheet
    manifest = json.loads((tmp_path / "shapesworld.json").read_text())
    assert manifest["params"] == {"n": 30, "seed": 3, "image_size": 32, "sound": True}
