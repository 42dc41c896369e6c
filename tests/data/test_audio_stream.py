"""A sound decoded as a stream (``stream_audio``) and a long recording cut into segments as it is read: the same
samples as decoding it whole, never held whole."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from polymodal.api.audio import segment_sound
from polymodal.api.video import segment_clip
from polymodal.data.audio import WHOLE_SAMPLES, Waveform, decode_audio, stream_audio
from polymodal.data.errors import BadSampleError
from polymodal.data.video import VideoSampling

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
    if rate == target or seconds * rate > WHOLE_SAMPLES:
        assert len(blocks) > 1  # given as it is read (resampled: once it is past WHOLE_SAMPLES)


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
    with pytest.warns(UserWarning, match="declares 60.00 s, holds 20.00 s"):  # and says so
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


def is_open(path: Path) -> bool:
    """True when this process holds ``path`` open (by /proc/self/fd)."""
    target = str(path.resolve())
    for fd in Path("/proc/self/fd").iterdir():
        try:
            if str(fd.resolve()) == target:
                return True
        except OSError:  # the listing's own descriptor, gone by now
            continue
    return False


def test_a_caller_that_stops_early_lets_go_of_the_file(tmp_path: Path) -> None:
    rate = 16_000
    path = tmp_path / "long.wav"
    sf.write(path, noise(30.0, rate), rate)
    clip = tmp_path / "clip.mp4"
    write_clip(clip, burst_wave(2.0, rate, onset=1.0), rate=rate)  # at the model's rate: given frame by frame
    for source in (path, clip):
        segments = segment_sound(str(source), 0.5, rate)
        next(segments)
        assert is_open(source)  # being read
        segments.close()
        assert not is_open(source)
        with segment_sound(str(source), 0.5, rate) as again:
            next(again)
            assert is_open(source)
        assert not is_open(source)
    frames = segment_clip(str(clip), 0.5, VideoSampling(frames=2))  # a clip's segments alike
    next(frames)
    assert is_open(clip)
    frames.close()
    assert not is_open(clip)


def test_a_recording_that_ends_before_its_header_says_gives_the_segments_it_has(tmp_path: Path) -> None:
    whole = write_clip(
        None, burst_wave(8.0, 48_000, onset=0.5), rate=48_000, fmt="matroska", codec="libopus", seconds=8
    )
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(whole[: len(whole) // 3])
    with pytest.raises(BadSampleError, match="sound ends at"):
        decode_audio(str(cut), 16_000)  # read whole, it is a bad sample
    with pytest.warns(UserWarning, match=r"cut.mkv: sound ends at .* the segments after .* s are not there"):
        segments = list(segment_sound(str(cut), 1.0, 16_000))
    assert 1 <= len(segments) < 8 and segments[-1].end < 8.0
    wav = tmp_path / "cut.wav"
    sf.write(wav, noise(10.0, 16_000), 16_000, subtype="PCM_16")
    with open(wav, "r+b") as f:  # the header still says 10 s
        f.truncate(44 + 2 * 4 * 16_000)
    with pytest.raises(BadSampleError, match="declares 10.00 s, holds 4.00 s"):
        decode_audio(str(wav), 16_000)
    with pytest.warns(UserWarning, match=r"cut.wav: declares 10.00 s, holds 4.00 s; the segments after 4.0 s"):
        held = list(segment_sound(str(wav), 1.0, 16_000))
    assert [(s.start, s.end) for s in held] == [(float(i), float(i + 1)) for i in range(4)]


def test_the_timeout_of_a_stream_bounds_each_block_not_the_callers_time(tmp_path: Path) -> None:
    clip = tmp_path / "clip.mp4"
    write_clip(clip, burst_wave(0.3, 16_000, onset=0.1), rate=16_000, seconds=0.5)
    blocks = 0
    for _ in stream_audio(str(clip), 16_000, timeout_seconds=0.05):
        time.sleep(0.08)  # longer than the timeout, between blocks: the caller's time
        blocks += 1
    assert blocks > 1
    with pytest.raises(BadSampleError, match="longer than 0 s for one block"):
        list(stream_audio(str(clip), 16_000, timeout_seconds=1e-9))
