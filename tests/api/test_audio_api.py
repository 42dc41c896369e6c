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
    with pytest.raises(ValueError, match="expected a file path or encoded bytes"):
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
