"""A sound decoded as a stream (``stream_audio``) and a long recording cut into segments as it is read: the same
samples as decoding it whole, never held whole."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from polymodal.api.audio import segment_sound
from polymodal.data.audio import WHOLE_SAMPLES, Waveform, decode_audio, stream_audio
from polymodal.data.errors import BadSampleError

from .test_audio_tracks import burst_wave, write_clip


def noise(seconds: float, rate: int, seed: int = 0) -> np.ndarray:
    return (0.2 * np.random.default_rng(seed).standard_normal(int(seconds * rate))).astype(np.float32)


@pytest.mark.parametrize(
    ("rate", "target", "seconds"),
    [
        (16_000, 16_000, 9.0),  # the model's rate: passed through block by block
        (44_100, 16_000, 3.0),  # short: resampled whole, as decode_audio does
        (44_100, 16_000, 1.2 * WHOLE_SAMPLES / 44_100),  # past WHOLE_SAMPLES: resampled block by block
    ],
)
def test_a_stream_gives_the_samples_a_whole_decode_does(tmp_path: Path, rate: int, target: int, seconds: float) -> None:
    path = tmp_path / "noise.flac"
    sf.write(path, noise(seconds, rate), rate)
    stream = stream_audio(str(path), target)
    blocks = list(stream)
    assert stream.seconds == pytest.approx(seconds, abs=1 / rate)
    assert torch.equal(torch.cat(blocks), decode_audio(str(path), target))
    if rate == target:
        assert len(blocks) > 1  # given as it is read


def test_a_video_containers_track_streams_too(tmp_path: Path) -> None:
    wave = burst_wave(2.0, 44_100, onset=1.0)
    path = tmp_path / "clip.mp4"
    write_clip(path, wave)
    stream = stream_audio(str(path), 16_000)
    assert stream.seconds == pytest.approx(2.0, abs=0.05)
    assert torch.equal(torch.cat(list(stream)), decode_audio(str(path), 16_000))


def test_segments_come_as_the_recording_is_read(tmp_path: Path) -> None:
    """The first segments are cut before the end of the file is read: a file cut short after they came gives the
    segments up to where it now ends, where one read whole would give them all (or none)."""
    rate = 16_000
    path = tmp_path / "long.wav"
    sf.write(path, noise(60.0, rate), rate, subtype="PCM_16")
    cut = segment_sound(str(path), 5.0, rate)
    assert cut.count == 12
    first = next(cut)
    assert (first.start, first.end) == (0.0, 5.0)
    with open(path, "r+b") as f:  # the rest of the recording is gone before it is read
        f.truncate(44 + 2 * 20 * rate)
    rest = list(cut)
    assert 3 <= len(rest) < 11 and rest[-1].end <= 21.0


def test_segments_match_cutting_the_whole_decode_and_bad_files_fail_at_the_call(tmp_path: Path) -> None:
    rate = 22_050
    path = tmp_path / "speech.wav"
    sf.write(path, noise(7.3, rate, seed=3), rate)
    whole = decode_audio(str(path), 16_000).numpy()
    segments = list(segment_sound(str(path), 2.0, 16_000))
    assert [(s.start, s.end) for s in segments] == [(0, 2), (2, 4), (4, 6), (6, len(whole) / 16_000)]
    np.testing.assert_array_equal(np.concatenate([s.sound.samples[:, 0] for s in segments]), whole)
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(BadSampleError):
        segment_sound(str(tmp_path / "empty.wav"), 2.0, 16_000)
    decoded = segment_sound(Waveform(noise(3.0, 8_000), 8_000), 1.0, 16_000)
    assert decoded.count == 3 and len(list(decoded)) == 3
