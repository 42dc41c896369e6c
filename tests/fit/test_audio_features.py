"""fit's audio features: the same voice recorded quieter or through a telephone's band gives the same vector."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from polymodal.fit.features import AudioFeaturizer, _speech_band, featurizer_from_state

RATE = 16_000


def _voice(
    pitch_hz: float = 125, formants_hz: tuple[float, ...] = (700, 1200, 2600), seconds: float = 2.0
) -> np.ndarray:
    """A vowel-like buzz: a gliding harmonic source through three formants, in syllables, over a little noise."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * RATE)) / RATE
    pitch = pitch_hz + 15 * np.sin(2 * np.pi * 1.5 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / RATE
    source = sum(np.sin(k * phase) / k for k in range(1, 60))
    spectrum = np.fft.rfft(source)
    hz = np.fft.rfftfreq(len(t), 1 / RATE)
    formants = sum(np.exp(-(((hz - f) / 120) ** 2)) for f in formants_hz) + 0.05
    wave = np.fft.irfft(spectrum * formants, len(t))
    wave *= 0.6 + 0.4 * np.sin(2 * np.pi * 4 * t) ** 2  # syllables
    wave += 0.01 * rng.standard_normal(len(t))
    return (0.3 * wave / np.abs(wave).max()).astype(np.float32)


def _telephone(wave: np.ndarray) -> np.ndarray:
    spectrum = np.fft.rfft(wave)
    hz = np.fft.rfftfreq(len(wave), 1 / RATE)
    spectrum[(hz < 300) | (hz > 3400)] = 0
    return np.fft.irfft(spectrum, len(wave)).astype(np.float32)


def _features(featurizer: AudioFeaturizer, waves: list[np.ndarray], folder: Path) -> torch.Tensor:
    """The featurizer's vectors of ``waves``, each read back from a float WAV file as fit reads a table's cells."""
    import soundfile

    prepared = []
    for i, wave in enumerate(waves):
        path = folder / f"{i}.wav"
        soundfile.write(path, wave, RATE, subtype="FLOAT")
        prepared.append(featurizer.prepare(path, "<test>", i + 1))
    with torch.inference_mode():
        return featurizer.forward(featurizer.packaged_tower().eval(), featurizer.collate(prepared)).float()


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a, b, dim=0))


def test_level_and_telephone_band_do_not_change_the_features(tmp_path: Path) -> None:
    voice = _voice()
    conditions = [voice, voice * 10 ** (-20 / 20), _telephone(voice)]
    current = _features(AudioFeaturizer(["audio"]), conditions, tmp_path)
    legacy = _features(AudioFeaturizer(["audio"], version=1), conditions, tmp_path)
    assert current.shape == (3, AudioFeaturizer(["audio"]).dim) and legacy.shape == (3, 337)
    quieter, phone = _cosine(current[0], current[1]), _cosine(current[0], current[2])
    assert quieter > 0.9999, quieter
    assert phone > 0.999, phone
    # version 1 read the level and the whole band: the same changes moved its vector much further
    legacy_quieter, legacy_phone = _cosine(legacy[0], legacy[1]), _cosine(legacy[0], legacy[2])
    assert 1 - legacy_quieter > 100 * (1 - quieter), (legacy_quieter, quieter)
    assert 1 - legacy_phone > 5 * (1 - phone), (legacy_phone, phone)
    # and a different voice is still far from this one
    other = _features(AudioFeaturizer(["audio"]), [_voice(pitch_hz=210, formants_hz=(400, 2000, 2900))], tmp_path)
    assert _cosine(current[0], other[0]) < phone - 0.01, (_cosine(current[0], other[0]), phone)


def test_speech_band_statistics_are_the_bands_between_300_and_3400_hz() -> None:
    band = _speech_band()
    assert band.shape == (40,) and 20 <= int(band.sum()) < 40
    assert not band[0] and not band[-1]  # the lowest and highest bands lie outside
    assert AudioFeaturizer(["audio"]).dim == 256 + 2 * int(band.sum()) + 1


def test_saved_predictors_keep_the_features_they_were_fitted_on() -> None:
    saved_before_versions = {"kind": "audio", "columns": ["voice"]}
    legacy = featurizer_from_state(saved_before_versions)
    assert isinstance(legacy, AudioFeaturizer) and legacy.version == 1 and legacy.dim == 337
    current = featurizer_from_state(AudioFeaturizer(["voice"]).state())
    assert current.version == 2 and current.dim == AudioFeaturizer(["voice"]).dim
    assert legacy.store_id != current.store_id  # stored vectors of one are never read as the other's
    with pytest.raises(ValueError, match="version 3 .* upgrade"):
        featurizer_from_state({"kind": "audio", "columns": ["voice"], "version": 3})


def test_silence_stays_silence(tmp_path: Path) -> None:
    """A silent clip is not amplified to the level (nothing to level), and its features are finite."""
    features = _features(AudioFeaturizer(["audio"]), [np.zeros(RATE, dtype=np.float32), _voice()], tmp_path)
    assert torch.isfinite(features).all()


def test_a_clips_features_do_not_depend_on_its_batch_mates(tmp_path: Path) -> None:
    """A short clip featurized alone or beside a longer one (its frames then padded) gives the same vector: stored
    vectors do not depend on which files were featurized together."""
    short, long = _voice(seconds=1.0), _voice(pitch_hz=180, seconds=4.0)
    alone = _features(AudioFeaturizer(["audio"]), [short], tmp_path)[0]
    together = _features(AudioFeaturizer(["audio"]), [short, long], tmp_path)[0]
    assert (alone - together).abs().max() < 1e-4, (alone - together).abs().max()
