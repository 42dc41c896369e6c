"""The Python API with sounds: embed_audio from paths and bytes, zero-shot classification of a clip, clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import polymodal
from polymodal.backends import TaskNotSupported
from polymodal.data.errors import BadSampleError
from tests.api.audio_model import CAPTIONS, PITCHES, audio_model_dir, write_sounds  # noqa: F401


@pytest.fixture(scope="module")
def model(audio_model_dir: Path):  # type: ignore[no-untyped-def]  # noqa: F811
    return polymodal.load(audio_model_dir, precision="fp32")


@pytest.fixture(scope="module")
def sounds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    return write_sounds(tmp_path_factory.mktemp("sounds"))


def test_embed_audio_takes_paths_and_bytes_and_matches_the_generic_embed(model, sounds) -> None:  # noqa: ANN001
    paths = sounds["low"] + sounds["high"]
    vectors = model.embed_audio(paths)
    assert vectors.shape == (6, model.embed_dim) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(model.embed_audio([p.read_bytes() for p in paths]), vectors, atol=1e-5)
    np.testing.assert_allclose(model.embed("audio", str(paths[0])), vectors[:1], atol=1e-5)
    assert model.media() == {"audio", "image", "text"}
    # Trained on two pitches: every tone is nearer its own caption, whatever its format, length or detuning.
    captions = model.embed_text([CAPTIONS[name] for name in PITCHES])
    assert ((vectors @ captions.T).argmax(1) == [0, 0, 0, 1, 1, 1]).all()


def test_classify_a_sound_zero_shot(model, sounds) -> None:  # noqa: ANN001
    clips = [sounds["low"][1], sounds["high"][2]]
    ranked = model.classify(clips, ["high", "low"], modality="audio", templates=["a {} tone"])
    assert [r[0][0] for r in ranked] == ["low", "high"]
    assert all(abs(sum(p for _, p in r) - 1) < 1e-5 for r in ranked)
    with pytest.raises(ValueError, match="expected a file path, encoded bytes, a Waveform"):
        model.classify([np.zeros(100)], ["high", "low"], modality="audio")


def test_bad_sounds_and_models_without_audio_are_clear_errors(model, tmp_path: Path, tiny_dual_encoder_dir) -> None:  # noqa: ANN001
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt ")
    with pytest.raises(BadSampleError, match="broken.wav.*cannot decode audio|cannot decode audio"):
        model.embed_audio(broken)
    with pytest.raises(BadSampleError, match="empty"):
        model.embed_audio(b"")
    clip = polymodal.load(tiny_dual_encoder_dir)
    with pytest.raises(TaskNotSupported, match="cannot embed audio: it takes image, text, video$"):
        clip.embed_audio(broken)
    with pytest.raises(TaskNotSupported, match="cannot classify audio: it takes image, text, video$"):
        clip.classify(broken, ["a", "b"], modality="audio")


def test_decoded_samples_embed_as_their_file_does(model, sounds, tmp_path: Path) -> None:  # noqa: ANN001
    """A Waveform or a (samples, rate) pair, at any rate and channel count, embeds as the file holding it; wrong
    arrays are errors naming the input."""
    import soundfile as sf

    from polymodal.api import Waveform

    path = sounds["high"][0]
    samples, rate = sf.read(path, dtype="float32")
    from_file = model.embed_audio(path)
    np.testing.assert_allclose(model.embed_audio((samples, rate)), from_file, atol=1e-5)
    stereo_48k = np.stack([samples, samples], axis=1).repeat(6, axis=0).astype(np.float64)  # 8 kHz -> 48 kHz
    both = model.embed_audio([Waveform(stereo_48k, rate * 6), (samples, rate)])
    assert float(both[0] @ from_file[0]) > 0.99 and np.allclose(both[1], from_file[0], atol=1e-5)
    with pytest.raises(ValueError, match=r"input #0: a waveform is float samples"):
        model.embed_audio([(np.zeros((10, 2, 2), np.float32), rate)])
    with pytest.raises(ValueError, match=r"input #1: expected a file path, encoded bytes, a Waveform"):
        model.embed_audio([path, samples])  # samples without their rate
    with pytest.raises(BadSampleError, match="not finite"):
        model.embed_audio((np.full(800, np.nan, np.float32), rate))


def test_a_long_recording_is_cut_into_timed_segments(model, tmp_path: Path) -> None:  # noqa: ANN001
    """A tone two seconds into a recording is in its own segment, which embeds as that tone alone does, while the
    whole recording (read from its start for the model's 0.5 s) does not find it."""
    from tests.api.audio_model import RATE, tone

    silence = np.zeros(int(2.0 * RATE), np.float32) + np.random.default_rng(1).normal(0, 0.01, int(2.0 * RATE))
    recording = np.concatenate([silence, tone(PITCHES["high"], 0.5), silence[: RATE // 4]]).astype(np.float32)
    cut = model.audio_segments(write_wav(tmp_path / "long.wav", recording), 0.5)
    segments = list(cut)  # yielded as the recording is decoded
    assert cut.count == len(segments) == 6
    assert [(s.start, s.end) for s in segments] == [(0.5 * i, 0.5 * (i + 1)) for i in range(5)] + [(2.5, 2.75)]
    vectors = model.embed_audio([s.sound for s in segments])
    captions = model.embed_text([CAPTIONS["low"], CAPTIONS["high"]])
    assert int((vectors @ captions[1]).argmax()) == 4  # the segment from 2.0 s
    np.testing.assert_allclose(
        vectors[4], model.embed_audio((recording[2 * RATE : 2 * RATE + RATE // 2], RATE))[0], atol=1e-5
    )
    with pytest.raises(ValueError, match="segment seconds must be a finite number > 0"):
        model.audio_segments(tmp_path / "long.wav", 0)


def write_wav(path: Path, samples: np.ndarray) -> Path:
    import soundfile as sf

    from tests.api.audio_model import RATE

    sf.write(path, samples, RATE)
    return path


def test_classify_tells_sounds_clips_and_images_apart_by_extension(
    model,
    sounds,
    audio_model_dir: Path,
    tmp_path: Path,  # noqa: ANN001, F811
) -> None:
    """The API and `polymodal classify` take sounds and clips as they take images: by the file's extension (a clip's
    sound track to a model of sounds only); a file the model cannot read is named with the reason, the rest
    answered."""
    import json

    from typer.testing import CliRunner

    from polymodal.cli.main import app
    from tests.api.audio_model import save_audio_model, tone
    from tests.data.test_audio_tracks import write_clip
    from tests.index.fixtures import write_images

    low, high = sounds["low"][0], sounds["high"][0]
    by_default = model.classify([low, high], ["low", "high"], templates=["a {} tone"])
    explicit = model.classify([low, high], ["low", "high"], modality="audio", templates=["a {} tone"])
    assert [[label for label, _ in r] for r in by_default] == [[label for label, _ in r] for r in explicit]
    np.testing.assert_allclose(
        [[p for _, p in r] for r in by_default], [[p for _, p in r] for r in explicit], atol=1e-5
    )
    clip = tmp_path / "high.mp4"
    write_clip(clip, tone(PITCHES["high"], 1.0, 16000), rate=16000)
    (picture,) = write_images(tmp_path / "pics", 1)
    garbage = tmp_path / "noise.mp3"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    sounds_only = save_audio_model(tmp_path / "sounds-only")
    args = ["classify", str(high), str(clip), str(picture), str(garbage), "-l", "a low tone,a high tone", "--json"]
    result = CliRunner().invoke(app, [*args, "-m", str(sounds_only)])
    rows = json.loads(result.stdout)
    assert result.exit_code == 1
    assert [next(iter(r)) for r in rows] == ["audio", "audio", "image", "audio"]  # each row keyed by its kind
    assert [r["predictions"][0]["label"] for r in rows[:2]] == ["a high tone", "a high tone"]
    assert (
        "does not embed images" in rows[2]["error"]
        and rows[3]["error"] == "cannot decode audio (format not recognised)"
    )
    # A model that embeds images as well takes the picture, and the clip as a clip (its frames).
    both = CliRunner().invoke(app, [*args[:4], "-l", "a low tone,a high tone", "--json", "-m", str(audio_model_dir)])
    assert [next(iter(r)) for r in json.loads(both.stdout)] == ["audio", "video", "image"] and both.exit_code == 0


def test_decoded_sound_edge_cases_are_clear(model) -> None:  # noqa: ANN001
    """A numpy rate (np.int64, 16000.0) makes a pair; channels-first arrays and empty ones are named errors."""
    from polymodal.api import Waveform

    wave = np.sin(np.arange(4000) / 5).astype(np.float32)
    np.testing.assert_allclose(model.embed_audio((wave, np.int64(8000))), model.embed_audio((wave, 8000.0)), atol=1e-6)
    with pytest.raises(ValueError, match=r"looks like \(channels, samples\): pass its .T"):
        model.embed_audio((np.stack([wave, wave]), 8000))
    with pytest.raises(BadSampleError, match="no audio samples"):
        model.embed_audio(Waveform(np.zeros(0, np.float32), 8000))
