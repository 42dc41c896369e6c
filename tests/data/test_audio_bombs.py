"""Adversarial sound files: a small file that decodes to gigabytes (a high rate, many channels) is decoded as a stream
in bounded memory, absurd headers are refused, a header declaring far more sound than the file holds is
``truncated``, and a path that is not a regular file says so."""

from __future__ import annotations

import io
import os
import struct
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

from polymodal.data import audio
from polymodal.data.audio import decode_audio, resample
from polymodal.data.errors import BadSampleError
from polymodal.data.image import decode_image

sf = pytest.importorskip("soundfile")


def silence_flac(path: Path, seconds: float, rate: int, channels: int) -> None:
    """Silence compresses to almost nothing: a few hundred KB that decode to (seconds * rate, channels) float32."""
    block = np.zeros((rate, channels), dtype="float32")
    with sf.SoundFile(path, "w", rate, channels, format="FLAC") as f:
        for _ in range(int(seconds)):
            f.write(block)


def wav_bytes(seconds: float, rate: int = 16000) -> bytearray:
    t = np.arange(int(seconds * rate)) / rate
    buffer = io.BytesIO()
    sf.write(buffer, (0.5 * np.sin(2 * np.pi * 440 * t)).astype("float32"), rate, format="WAV", subtype="PCM_16")
    return bytearray(buffer.getvalue())


def test_a_high_rate_many_channel_bomb_decodes_in_memory_bounded_by_the_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "bomb.flac"
    silence_flac(path, 8, 384_000, 8)  # 8 s at 384 kHz x 8 channels: ~100 MB of float32 in a file of ~30 KB
    seen: list[int] = []

    def spy(wave: torch.Tensor, rate: int, target: int) -> torch.Tensor:
        seen.append(wave.shape[-1])
        return resample(wave, rate, target)

    monkeypatch.setattr(audio, "resample", spy)
    tracemalloc.start()
    try:
        wave = decode_audio(path, 16000)
        _, peak = tracemalloc.get_traced_memory()  # numpy's buffers (the decoded blocks) are traced
    finally:
        tracemalloc.stop()
    assert wave.shape == (8 * 16000,) and not wave.any()
    assert peak < 40e6, f"decoding held {peak / 1e6:.0f} MB"  # all channels at once: ~110 MB
    assert max(seen) <= (2**20 + 2 * 2**16) * 1.01  # the resampler sees one block of source at a time


def test_keep_seconds_stops_decoding_at_the_window_the_caller_uses(tmp_path: Path) -> None:
    path = tmp_path / "long.flac"
    rate = 44100
    t = np.arange(20 * rate) / rate
    sf.write(path, (0.5 * np.sin(2 * np.pi * 440 * t)).astype("float32"), rate, format="FLAC")
    whole = decode_audio(path, 16000)
    head = decode_audio(path, 16000, keep_seconds=5.0)
    assert head.shape == (5 * 16000,)
    # the first samples differ a little: resampling a whole clip wraps its end onto its start
    torch.testing.assert_close(head[100:-1000], whole[100 : 5 * 16000 - 1000], atol=1e-4, rtol=0)


def test_block_resampling_agrees_with_resampling_the_whole_clip(monkeypatch: pytest.MonkeyPatch) -> None:
    rate = 44100
    t = np.arange(3 * rate) / rate
    wave = (0.4 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 3000 * t)).astype("float32")
    stereo = np.stack([wave, wave], axis=1)
    buffer = io.BytesIO()
    sf.write(buffer, stereo, rate, format="WAV", subtype="FLOAT")
    reference = resample(torch.from_numpy(wave), rate, 16000)
    monkeypatch.setattr(audio, "WHOLE_SAMPLES", 2**12)
    monkeypatch.setattr(audio, "STREAM_BLOCK", 2**13)
    monkeypatch.setattr(audio, "STREAM_MARGIN", 2**11)
    monkeypatch.setattr(audio, "BLOCK_FRAMES", 1000)
    blocks = decode_audio(buffer.getvalue(), 16000)  # 16 blocks
    assert blocks.shape == reference.shape
    edge = 500  # the whole-clip FFT wraps the clip's end onto its start; blocks do not
    torch.testing.assert_close(blocks[edge:-edge], reference[edge:-edge], atol=2e-3, rtol=0)


def test_absurd_channel_counts_are_refused_from_the_header(tmp_path: Path) -> None:
    path = tmp_path / "many.wav"
    sf.write(path, np.zeros((100, 33), dtype="float32"), 8000)
    with pytest.raises(BadSampleError, match="33 channels, more than the 32 allowed") as err:
        decode_audio(path, 16000)
    assert err.value.kind == "bad_audio"


@pytest.mark.parametrize(
    "declared_bytes,present_seconds,message",
    [
        (0x7FFFFF00, 2000 / 32000, "declares 67108.86 s, holds 0.06 s"),  # 2 GB declared, 2 KB present
        (7200 * 32000, 1.0, "declares 7200.00 s, holds 1.00 s"),
    ],
)
def test_a_wav_declaring_far_more_than_it_holds_is_truncated(
    tmp_path: Path, declared_bytes: int, present_seconds: float, message: str
) -> None:
    raw = wav_bytes(present_seconds)
    struct.pack_into("<I", raw, 40, declared_bytes)  # the data chunk's length
    struct.pack_into("<I", raw, 4, 36 + declared_bytes)  # the RIFF length
    path = tmp_path / "liar.wav"
    path.write_bytes(raw)
    for ref in (path, bytes(raw)):
        with pytest.raises(BadSampleError, match=message) as err:
            decode_audio(ref, 16000)
        assert err.value.kind == "truncated"


def test_only_a_declared_length_clearly_beyond_the_data_is_truncated() -> None:
    liar = wav_bytes(1.0)
    struct.pack_into("<I", liar, 40, 2 * 32000)  # declares 2 s, holds 1 s
    with pytest.raises(BadSampleError, match="declares 2.00 s, holds 1.00 s"):
        decode_audio(bytes(liar), 16000)
    stream = wav_bytes(1.0)
    struct.pack_into("<I", stream, 4, 0xFFFFFFFF)  # a writer that could not seek back: lengths left unknown
    struct.pack_into("<I", stream, 40, 0xFFFFFFFF)
    assert decode_audio(bytes(stream), 16000).shape == (16000,)
    short = wav_bytes(1.0)[: 44 + 2 * 15800]  # the last 12 ms missing: rounding, not truncation
    assert decode_audio(bytes(short), 16000).shape == (15800,)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_path_that_is_no_regular_file_says_so(tmp_path: Path) -> None:
    from polymodal.data.video import decode_video

    fifo = tmp_path / "fifo.wav"
    os.mkfifo(fifo)
    zero = tmp_path / "zero.flac"
    zero.symlink_to("/dev/zero")
    folder = tmp_path / "folder.wav"
    folder.mkdir()
    for path, reason in ((fifo, "not a regular file"), (zero, "not a regular file"), (folder, "a directory")):
        with pytest.raises(BadSampleError, match=reason) as err:
            decode_audio(path, 16000)
        assert err.value.kind == "unreadable", path
        with pytest.raises(BadSampleError, match=reason) as err:  # images are checked by the same rule
            decode_image(path)
        assert err.value.kind == "unreadable", path
    for path in (tmp_path / "fifo.mp4", tmp_path / "zero.mp4"):
        path.symlink_to(fifo if "fifo" in path.name else "/dev/zero")
        with pytest.raises(BadSampleError, match="not a regular file") as err:
            decode_video(path)
        assert err.value.kind == "unreadable", path
    for decode in (lambda path: decode_audio(path, 16000), decode_image):
        with pytest.raises(BadSampleError, match="no such file") as err:
            decode(tmp_path / "missing.wav")
        assert err.value.kind == "missing_file"
