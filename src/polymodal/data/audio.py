"""Audio decoding that cannot end a run: any file libsndfile reads (WAV, FLAC, OGG, MP3), or the sound track of
a video container (MP4, MKV, WebM, AVI, MOV: decoded by PyAV), as mono float32 at the model's sample rate.

A missing, empty, truncated or undecodable file, an absurd sample rate or channel count, a clip longer than
``max_seconds``, a decode slower than ``timeout_seconds`` or a video without a sound track (``no_audio``) raises
:class:`BadSampleError` naming the file (and the manifest row, when given), which a dataset counts and skips.
Resampling is band-limited (FFT), so a tone keeps its pitch exactly and nothing above the new Nyquist frequency
folds back.

Decoding is a stream: each block is mixed down to mono as it is read, and a long clip is resampled block by block,
so a small file that declares a high rate and many channels (a decompression bomb) costs about what its output at
the model's rate does, not what its source would decode to.
"""

from __future__ import annotations

import collections
import io
import math
import os
import struct
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field

from polymodal.config import Config
from polymodal.data.errors import BadSampleError, media_errors, open_media
from polymodal.data.schema import MediaRef
from polymodal.data.video import open_av, require_av

MAX_SECONDS = 600.0  # a longer clip is a mistake (a whole album, a stream), not a sample
TIMEOUT_SECONDS = 60.0  # a video container's track, checked between frames: a broken file fails instead of hanging
# Sound in these is decoded by PyAV.
AV_CONTAINERS = frozenset({"mp4", "m4v", "m4a", "mka", "mkv", "webm", "avi", "mov"})
SAMPLE_RATES = (1_000, 384_000)  # outside this range a header is broken or the file is not audio
# What a check that a file decodes whole resamples to: its memory is then this rate's, whatever the file's (a
# 384 kHz file at its own rate costs 24x as much), and a decode error shows the same at any rate.
CHECK_RATE = 16_000
MAX_CHANNELS = 32  # more is a broken header or a bomb: 22.2 surround has 24
BLOCK_FRAMES = 2**16  # frames read from a sound file at a time (8 MB at 32 channels)
# Up to this many (mono, source-rate) samples a clip is resampled whole, as `resample` does; a longer one (over
# 47 s at 44.1 kHz) block by block with overlapping margins, which agrees with the whole-clip result to ~1e-4 of
# full scale (its edges differ more: there the whole-clip FFT wraps the clip's end onto its start).
WHOLE_SAMPLES = 2**21
STREAM_BLOCK = 2**20  # source samples per block when resampling block by block
STREAM_MARGIN = 2**16  # source samples each block sees on each side: the band-limited kernel's tail beyond is tiny
# Features are computed over at most this many samples at once: a whole batch's spectrum (100 MB for 64
# clips of 10 s) costs more to allocate and walk than to compute.
CHUNK_SAMPLES = 2**19


def _soundfile():  # type: ignore[no-untyped-def]
    try:
        import soundfile
    except ImportError:
        raise ImportError("reading audio needs soundfile: pip install 'polymodal[audio]'") from None
    return soundfile


@dataclass(frozen=True)
class Waveform:
    """Sound already decoded: ``samples`` (samples,) or (samples, channels), float, at ``rate`` Hz (a microphone's
    buffer, a segment of a longer file). :func:`decode_audio` mixes, checks and resamples it as it does a file."""

    samples: np.ndarray
    rate: int

    def __post_init__(self) -> None:
        samples = np.asarray(self.samples)
        if samples.ndim not in (1, 2) or not np.issubdtype(samples.dtype, np.floating):
            raise ValueError(
                f"a waveform is float samples of shape (samples,) or (samples, channels), got "
                f"{samples.dtype} {samples.shape}"
            )
        if samples.ndim == 2 and samples.shape[0] <= MAX_CHANNELS < samples.shape[1]:
            raise ValueError(f"a waveform of shape {samples.shape} looks like (channels, samples): pass its .T")
        object.__setattr__(self, "samples", samples.reshape(len(samples), -1 if samples.size else 1))
        object.__setattr__(self, "rate", int(self.rate))

    @property
    def seconds(self) -> float:
        return len(self.samples) / self.rate


def decode_audio(
    ref: MediaRef | Waveform,
    sample_rate: int | None,
    *,
    max_seconds: float = MAX_SECONDS,
    timeout_seconds: float = TIMEOUT_SECONDS,
    source: str | None = None,
    row: int | None = None,
    field: str = "audio",
    keep_seconds: float | None = None,
) -> torch.Tensor:
    """``ref`` (a path or encoded bytes of a sound file or a video container, or a :class:`Waveform`) -> (samples,)
    float32 mono at ``sample_rate`` (None: the file's own), or BadSampleError.

    ``keep_seconds``: return only the clip's first seconds and stop decoding there (a caller that crops to a
    window needs no more); the header's length is still checked against ``max_seconds``."""
    bad = media_errors(ref, source, row, field)
    # Run to its end: the sink it yields (one object, after each block) then holds the whole clip.
    sink = collections.deque(_sink_stream(ref, sample_rate, max_seconds, keep_seconds, timeout_seconds, bad), 1)[0]
    return sink.result()


@dataclass
class AudioStream:
    """A sound decoded as it is read (:func:`stream_audio`): ``seconds`` is its length, from the frames libsndfile
    reads or the container's header (None where neither gives one); iterating gives its mono float32 samples at the
    rate asked, a block at a time."""

    seconds: float | None
    blocks: Generator[torch.Tensor, None, None]

    def __iter__(self) -> Iterator[torch.Tensor]:
        return self.blocks

    def close(self) -> None:
        """Let go of the file (a caller that stops early): closing the stream closes its decoder."""
        self.blocks.close()


def stream_audio(
    ref: MediaRef | Waveform,
    sample_rate: int,
    *,
    max_seconds: float = MAX_SECONDS,
    timeout_seconds: float = TIMEOUT_SECONDS,
) -> AudioStream:
    """``ref`` decoded as :func:`decode_audio` decodes it (the same samples, concatenated), but given a block at a
    time as it is read, so a long recording is never held whole. Its header is read and checked here (a bad file
    raises BadSampleError now); a file that breaks off raises it where it does (one that ends before its header
    says, ``truncated``, after giving the samples it holds). ``timeout_seconds`` bounds each
    block's decoding (a stalled decoder), not the whole recording's, nor the caller's time between blocks."""
    bad = media_errors(ref, None, None, "audio")
    sinks = _sink_stream(ref, sample_rate, max_seconds, None, timeout_seconds, bad, per_block=True)
    first = next(sinks)
    return AudioStream(first.length_seconds, _drained(first, sinks))


def _drained(sink: _MonoSink, sinks: Generator[_MonoSink, None, None]) -> Generator[torch.Tensor, None, None]:
    """The output of ``sink`` as each block of ``sinks`` (the same sink, after each block) makes some ready; a
    sound that ends before its header says gives what it holds, then raises its ``truncated`` error."""
    ended_early = None
    try:
        try:
            for sink in sinks:
                ready = sink.drain(final=False)
                if len(ready):
                    yield ready
        except BadSampleError as e:
            if e.kind != "truncated":
                raise
            ended_early = e
        if sink.kept == 0:
            raise ended_early or sink.bad("no audio samples", "empty_file")
        ready = sink.drain(final=True)
        if len(ready):
            yield ready
        if ended_early is not None:
            raise ended_early
    finally:
        sinks.close()  # a caller that stopped early: the file or container is closed now, not when collected


def _sink_stream(
    ref: MediaRef | Waveform,
    target: int | None,
    max_seconds: float,
    keep_seconds: float | None,
    timeout_seconds: float,
    bad: Any,
    per_block: bool = False,
) -> Generator[_MonoSink, None, None]:
    """The sink ``ref`` decodes into, yielded once its header is checked and again after each block added;
    ``timeout_seconds`` bounds the whole decode, or (``per_block``) each block's."""
    if isinstance(ref, Waveform):
        return _waveform_stream(ref, target, max_seconds, keep_seconds, bad)
    handle = open_media(ref, bad)
    if is_av_container(ref if isinstance(handle, Path) else _head(handle)):
        return _track_stream(handle, target, max_seconds, keep_seconds, timeout_seconds, bad, per_block)
    return _sound_file_stream(handle, target, max_seconds, keep_seconds, bad, cut_at_end=per_block)


def _waveform_stream(
    sound: Waveform, target: int | None, max_seconds: float, keep_seconds: float | None, bad: Any
) -> Generator[_MonoSink, None, None]:
    """A decoded sound through the same checks, mixing and resampling as a file's blocks."""
    _check_rate(sound.rate, bad)
    _check_channels(sound.samples.shape[1], bad)
    if sound.seconds > max_seconds:
        raise bad(f"{sound.seconds:.0f} s long, more than the {max_seconds:.0f} s allowed", "too_long")
    sink = _MonoSink(sound.rate, target, _cap(keep_seconds, sound.rate), keep_seconds, bad, sound.seconds)
    yield sink
    for start in range(0, len(sound.samples), BLOCK_FRAMES):
        sink.add(sound.samples[start : start + BLOCK_FRAMES])
        yield sink
        if sink.full:
            break


def _head(handle: io.BytesIO) -> bytes:
    """The first bytes of an in-memory file (its format's magic), the file left at its start."""
    head = handle.read(12)
    handle.seek(0)
    return head


def is_av_container(ref: object) -> bool:
    """True for what PyAV decodes rather than libsndfile: a path with a container's extension (MP4 and M4A, MOV,
    Matroska/WebM, AVI), or bytes that start like one."""
    if isinstance(ref, (str, os.PathLike)):
        return Path(ref).suffix.lower().lstrip(".") in AV_CONTAINERS
    if isinstance(ref, (bytes, bytearray, memoryview)):
        head = bytes(ref[:12])
        return head[4:8] == b"ftyp" or head[:4] == b"\x1a\x45\xdf\xa3" or (head[:4], head[8:12]) == (b"RIFF", b"AVI ")
    return False


def _check_rate(rate: int, bad: Any) -> None:
    if not SAMPLE_RATES[0] <= rate <= SAMPLE_RATES[1]:
        raise bad(f"sample rate {rate} Hz is outside {SAMPLE_RATES[0]}-{SAMPLE_RATES[1]} Hz", "bad_audio")


def _check_channels(channels: int, bad: Any) -> None:
    if channels > MAX_CHANNELS:
        raise bad(f"{channels} channels, more than the {MAX_CHANNELS} allowed", "bad_audio")


def _check_length(declared: float, held: float, bad: Any) -> None:
    """A file holding clearly less sound than its header declares is truncated (a few frames of encoder padding or
    rounding are not)."""
    if declared - held > max(0.5, 0.1 * declared):
        raise bad(f"declares {declared:.2f} s, holds {held:.2f} s", "truncated")


def _cap(keep_seconds: float | None, rate: int) -> int | None:
    """Source samples to decode for the first ``keep_seconds``, with the resampler's margin past them."""
    return None if keep_seconds is None else math.ceil(keep_seconds * rate) + STREAM_MARGIN


def _sound_file_stream(
    handle: Any,
    target: int | None,
    max_seconds: float,
    keep_seconds: float | None,
    bad: Any,
    cut_at_end: bool = False,
) -> Generator[_MonoSink, None, None]:
    """The mono clip at ``target`` Hz of a file libsndfile reads, read block by block. A WAV holding less than its
    header says is ``truncated`` when opened, or (``cut_at_end``, a stream) once the samples it holds are read."""
    sf = _soundfile()
    declared = _wav_seconds(handle)  # libsndfile cuts a WAV's length to the bytes present: ask the header
    try:
        with sf.SoundFile(handle) as f:
            rate, frames, kind = int(f.samplerate), int(f.frames), f.format
            _check_rate(rate, bad)
            _check_channels(int(f.channels), bad)
            wav_declared = declared if kind in ("WAV", "WAVEX") else None
            if wav_declared is not None and not cut_at_end:
                _check_length(wav_declared, frames / rate, bad)
            limit = int(max_seconds * rate)
            if frames > limit:
                raise bad(f"{frames / rate:.0f} s long, more than the {max_seconds:.0f} s allowed", "too_long")
            length = frames / rate if frames > 0 else declared  # what libsndfile will read, else the header's
            sink = _MonoSink(rate, target, _cap(keep_seconds, rate), keep_seconds, bad, length)
            yield sink
            wanted = min(frames, limit) if frames > 0 else limit + 1  # a stream that does not say its length
            while sink.seen < wanted and not sink.full:
                block = f.read(min(BLOCK_FRAMES, wanted - sink.seen), dtype="float32", always_2d=True)
                if len(block) == 0:
                    break
                sink.add(block)
                yield sink
    except BadSampleError:
        raise
    except Exception as e:  # libsndfile's errors (truncated, not audio, unsupported) come in several types
        detail = getattr(e, "error_string", None) or f"{type(e).__name__}: {e}"  # libsndfile's own words
        if "does not exist" in detail:  # what it says of a file it found but could not parse as any format
            detail = "format not recognised"
        raise bad(f"cannot decode audio ({detail.rstrip('.')})", "decode") from None
    if sink.seen > limit:
        raise bad(f"longer than the {max_seconds:.0f} s allowed", "too_long")
    if kind == "FLAC" and frames > 0 and not sink.full:  # STREAMINFO's count is a declaration, not a guess
        _check_length(frames / rate, sink.seen / rate, bad)
    if wav_declared is not None and cut_at_end:
        _check_length(wav_declared, sink.seen / rate, bad)
    yield sink


def _wav_seconds(handle: Any) -> float | None:
    """The seconds a RIFF/RIFX WAVE's data chunk declares, or None where it declares none: 0 or 0xFFFFFFFF, which
    a writer that cannot seek back (a pipe, a stream) leaves, or RF64, which keeps the length elsewhere."""
    if isinstance(handle, (str, os.PathLike)):
        with open(handle, "rb") as f:
            return _riff_data_seconds(f)
    try:
        return _riff_data_seconds(handle)
    finally:
        handle.seek(0)


def _riff_data_seconds(f: Any) -> float | None:
    size = f.seek(0, os.SEEK_END)
    f.seek(0)
    head = f.read(12)
    if len(head) < 12 or head[:4] not in (b"RIFF", b"RIFX") or head[8:12] != b"WAVE":
        return None
    order = "<" if head[:4] == b"RIFF" else ">"
    byte_rate, pos = 0, 12
    while pos + 8 <= size:  # chunks: (id, length, body), bodies padded to even lengths
        f.seek(pos)
        chunk, length = struct.unpack(order + "4sI", f.read(8))
        if chunk == b"fmt ":
            body = f.read(12)
            if len(body) < 12:  # a broken header: libsndfile says what is wrong with it
                return None
            byte_rate = struct.unpack(order + "I", body[8:12])[0]  # average bytes per second
        elif chunk == b"data":
            return length / byte_rate if byte_rate and length not in (0, 0xFFFFFFFF) else None
        pos += 8 + length + (length & 1)
    return None


def _track_stream(
    handle: Any,
    target: int | None,
    max_seconds: float,
    keep_seconds: float | None,
    timeout_seconds: float,
    bad: Any,
    per_block: bool = False,
) -> Generator[_MonoSink, None, None]:
    """The mono clip at ``target`` Hz of a video container's first sound track, through PyAV, frame by frame."""
    av = require_av()
    clock = _Deadline(timeout_seconds, per_block)
    container = open_av(handle, bad, "a video container")
    try:
        with container:
            yield from _read_track(av, container, target, max_seconds, keep_seconds, clock, bad)
    except BadSampleError:
        raise
    except Exception as e:
        raise bad(f"cannot decode the sound track ({type(e).__name__}: {e})", "decode") from None


class _Deadline:
    """When decoding has taken too long: ``seconds`` for the whole clip, or (``per_block``) for any one block of a
    stream (a stalled decoder, in a recording of hours; the caller's time between blocks is not counted)."""

    def __init__(self, seconds: float, per_block: bool) -> None:
        self.seconds, self.per_block = seconds, per_block
        self.at = time.monotonic() + seconds

    @property
    def passed(self) -> bool:
        return time.monotonic() > self.at

    def next_block(self) -> None:
        """The caller is done with the block: a stream's next one has its own ``seconds``."""
        if self.per_block:
            self.at = time.monotonic() + self.seconds


def _read_track(av, container, target, max_seconds, keep_seconds, clock, bad) -> Generator[_MonoSink, None, None]:  # type: ignore[no-untyped-def]
    if not container.streams.audio:
        kinds = sorted({s.type for s in container.streams}) or ["nothing"]
        raise bad(f"no audio stream ({container.format.name} holding {', '.join(kinds)})", "no_audio")
    stream = container.streams.audio[0]
    rate = int(stream.rate or stream.codec_context.sample_rate or 0)
    _check_rate(rate, bad)
    _check_channels(int(stream.codec_context.channels or 0), bad)
    if stream.duration:
        declared = float(stream.duration * stream.time_base)
    else:
        declared = container.duration / 1_000_000 if container.duration else None  # AV_TIME_BASE
    if declared is not None and declared > max_seconds:
        raise bad(f"{declared:.0f} s long, more than the {max_seconds:.0f} s allowed", "too_long")
    limit = int(max_seconds * rate)
    cap = _cap(keep_seconds, rate)
    if declared is not None:  # the encoder's padding of the last frame is not sound
        cap = min(round(declared * rate), cap if cap is not None else limit + 1)
    sink = _MonoSink(rate, target, cap, keep_seconds, bad, declared)
    yield sink
    clock.next_block()
    to_float = av.AudioResampler(format="fltp")  # planar float32 at the track's own rate and channels
    for frame in container.decode(stream):
        for converted in to_float.resample(frame):
            sink.add(converted.to_ndarray().T)  # (samples, channels)
        if sink.seen > limit:  # a stream that does not say its length
            raise bad(f"longer than the {max_seconds:.0f} s allowed", "too_long")
        if clock.passed:
            per = " for one block" if clock.per_block else ""
            raise bad(f"decoding took longer than {clock.seconds:.0f} s{per}", "timeout")
        if keep_seconds is not None and sink.full:
            return
        yield sink
        clock.next_block()
    for converted in to_float.resample(None):
        sink.add(converted.to_ndarray().T)
    if declared is not None and declared - sink.seen / rate > max(0.5, 0.1 * declared):
        raise bad(f"sound ends at {sink.seen / rate:.2f} s of the {declared:.2f} s the header declares", "truncated")
    yield sink


class _MonoSink:
    """Decoded blocks of (samples, channels) -> one mono float32 clip at ``target`` Hz (None: the source's rate).

    Each block is mixed down as it arrives, so the channel count costs nothing beyond one block. A clip of up to
    WHOLE_SAMPLES source samples is resampled whole (exactly as :func:`resample`); past that the source is
    resampled in blocks of STREAM_BLOCK samples, each seeing STREAM_MARGIN samples either side, and let go, so
    what is held is the output at ``target`` Hz plus one block of source, whatever the source's rate.
    Samples past ``cap`` (source samples) are counted in ``seen`` but not kept.
    """

    def __init__(
        self,
        rate: int,
        target: int | None,
        cap: int | None,
        keep_seconds: float | None,
        bad: Any,
        length_seconds: float | None = None,
    ) -> None:
        self.rate, self.target, self.cap, self.bad = rate, target or rate, cap, bad
        self.length_seconds = length_seconds  # the source's length as its header or reader gives it (None: unknown)
        self.out_samples = None if keep_seconds is None else round(keep_seconds * self.target)
        self.seen = 0  # source samples decoded
        self.kept = 0  # source samples kept (at most cap)
        self.pending: list[np.ndarray] = []  # mono source samples [base, kept)
        self.base = 0
        self.done = 0  # source samples already resampled into `out` (block by block)
        self.out: list[torch.Tensor] = []
        step = rate // math.gcd(rate, self.target)  # block edges on whole output samples
        self.block = step * -(-STREAM_BLOCK // step)
        self.margin = step * -(-STREAM_MARGIN // step)

    @property
    def full(self) -> bool:
        return self.cap is not None and self.kept >= self.cap

    def add(self, block: np.ndarray) -> None:
        self.seen += len(block)
        if self.cap is not None:
            block = block[: max(0, self.cap - self.kept)]
        if len(block) == 0:
            return
        mono = block[:, 0] if block.shape[1] == 1 else block.mean(axis=1)
        if not np.isfinite(mono).all():
            raise self.bad("samples are not finite numbers", "decode")
        self.pending.append(np.ascontiguousarray(mono, dtype=np.float32))
        self.kept += len(mono)
        if self.target != self.rate and self.kept > WHOLE_SAMPLES and self.kept >= self.done + self.block + self.margin:
            self._resample_blocks(final=False)  # a whole block and its right margin have arrived

    def _resample_blocks(self, final: bool) -> None:
        """Resample every block whose right margin has arrived (``final``: everything left)."""
        source = np.concatenate(self.pending) if len(self.pending) > 1 else self.pending[0]
        ratio = self.target / self.rate
        while self.done < self.kept:
            end = self.done + self.block
            if end + self.margin > self.kept and not final:
                break
            segment = torch.from_numpy(source[: min(end + self.margin, self.kept) - self.base])  # from done - margin
            wave = resample(segment, self.rate, self.target)
            first = round((self.done - self.base) * ratio)  # whole numbers: block edges are multiples of `step`
            last = len(wave) if end >= self.kept else round((end - self.base) * ratio)
            self.out.append(wave[first:last].clone())
            self.done = min(end, self.kept)
            cut = max(0, self.done - self.margin) - self.base
            source, self.base = source[cut:], self.base + cut
        self.pending = [source.copy()]  # not a view that keeps the blocks already resampled alive

    def result(self) -> torch.Tensor:
        if self.kept == 0:
            raise self.bad("no audio samples", "empty_file")
        wave = self.drain(final=True)
        return wave if self.out_samples is None else wave[: self.out_samples]

    def drain(self, final: bool) -> torch.Tensor:
        """The output at ``target`` Hz not taken yet that is ready (all of it, ``final``), taken out of the sink: a
        stream's samples so far, so that a long one is never held whole (:func:`stream_audio`)."""
        if self.target == self.rate:
            ready = np.concatenate(self.pending) if self.pending else np.zeros(0, np.float32)
            self.pending = []
            return torch.from_numpy(ready)
        if final and self.done < self.kept:
            if self.done > 0 or self.kept > WHOLE_SAMPLES:  # resampled block by block since it grew past whole
                self._resample_blocks(final=True)
            else:  # a short clip: resampled whole, as `resample` does
                mono = np.concatenate(self.pending) if len(self.pending) > 1 else self.pending[0]
                self.out.append(resample(torch.from_numpy(mono), self.rate, self.target))
                self.pending, self.done = [], self.kept
        ready = torch.cat(self.out) if self.out else torch.zeros(0)
        self.out = []
        return ready


def resample(wave: torch.Tensor, rate: int, target: int) -> torch.Tensor:
    """Band-limited resampling of (..., samples) from ``rate`` to ``target`` Hz through the spectrum."""
    if rate == target:
        return wave
    n = wave.shape[-1]
    m = max(1, round(n * target / rate))
    # Zero-pad to a length whose FFT is fast (a 5-smooth multiple of rate / gcd) and whose resampled length is
    # whole, then trim: an FFT of a length with a large prime factor is orders of magnitude slower.
    step = rate // math.gcd(rate, target)
    padded = step * _smooth_at_least(-(-n // step))
    out_len = padded * target // rate
    spectrum = torch.fft.rfft(torch.nn.functional.pad(wave.double(), (0, padded - n)), dim=-1)
    bins = out_len // 2 + 1
    if bins <= spectrum.shape[-1]:
        spectrum = spectrum[..., :bins]
    else:
        spectrum = torch.nn.functional.pad(spectrum, (0, bins - spectrum.shape[-1]))
    return (torch.fft.irfft(spectrum, n=out_len, dim=-1)[..., :m] * (out_len / padded)).to(wave.dtype)


def _smooth_at_least(k: int) -> int:
    """The smallest integer >= ``k`` with no prime factor above 5."""
    while True:
        r = k
        for p in (2, 3, 5):
            while r % p == 0:
                r //= p
        if r == 1:
            return k
        k += 1


class AudioFeatures(Config):
    """What a clip becomes for an audio tower: log-mel frames, MFCCs or the waveform itself, over a fixed-length
    window at one rate.

    ``kind: waveform`` (for towers that read raw audio, such as Wav2Vec2 and HuBERT) gives (B, 1, samples): one
    channel, one frame per sample, masked per sample; the spectrogram settings are then unused. Saved with the
    model (``processors.json``), so inference computes exactly what training did; settings saved before a field
    existed load with its default.
    """

    sample_rate: int = Field(16_000, ge=SAMPLE_RATES[0], le=SAMPLE_RATES[1])
    clip_seconds: float = Field(5.0, gt=0, le=MAX_SECONDS, description="clips are cropped or padded to this length")
    kind: Literal["log_mel", "mfcc", "waveform"] = "log_mel"
    n_fft: int = Field(400, ge=16)
    hop_length: int = Field(160, ge=1)
    n_mels: int = Field(64, ge=4)
    f_min: float = Field(0.0, ge=0)
    f_max: float | None = Field(None, gt=0, description="default: half the sample rate")
    n_mfcc: int = Field(20, ge=2)
    mel_scale: Literal["htk", "slaney"] = Field(
        "htk", description="slaney: Slaney's scale with area-normalised filters (librosa's default)"
    )
    pad_mode: Literal["reflect", "constant"] = Field(
        "reflect", description="how centred frames extend the clip's ends (constant: zeros, as librosa >= 0.10)"
    )
    level_dbfs: float | None = Field(
        None,
        le=0,
        description="scale each clip to this RMS level (dBFS) before its features, so the recording level does not "
        "count (resemblyzer's voices: -30); silence stays as it is",
    )

    def leveled(self, wave: torch.Tensor) -> torch.Tensor:
        """``wave`` scaled to ``level_dbfs`` (its RMS in dB of full scale), at most 40 dB up; as it is without a
        level, or when it is silent."""
        if self.level_dbfs is None or wave.numel() == 0:
            return wave
        rms = wave.float().square().mean().sqrt()
        if rms < 1e-5:  # silence (or a -100 dBFS hum): nothing to bring to a level
            return wave
        gain_db = min(40.0, self.level_dbfs - 20 * math.log10(float(rms)))
        return wave * 10 ** (gain_db / 20)

    @property
    def clip_samples(self) -> int:
        return round(self.clip_seconds * self.sample_rate)

    def frames(self, samples: int) -> int:
        """STFT frames of ``samples`` samples (centred frames, as torch.stft with center=True); for a waveform, the
        samples themselves."""
        return samples if self.kind == "waveform" else samples // self.hop_length + 1

    def frame_mask(self, lengths: torch.Tensor, frames: int) -> torch.Tensor:
        """(B,) clip lengths in samples -> (B, frames) bool, True where a frame starts inside the clip."""
        step = 1 if self.kind == "waveform" else self.hop_length
        return (torch.arange(frames, device=lengths.device) * step)[None, :] < lengths[:, None]

    def mel_filters(self) -> torch.Tensor:
        """(n_fft // 2 + 1, n_mels) mel filter bank on the HTK or Slaney scale."""
        from transformers.audio_utils import mel_filter_bank

        bank = mel_filter_bank(
            self.n_fft // 2 + 1,
            self.n_mels,
            self.f_min,
            self.f_max or self.sample_rate / 2,
            self.sample_rate,
            norm="slaney" if self.mel_scale == "slaney" else None,
            mel_scale=self.mel_scale,
        )
        return torch.from_numpy(bank).float()

    def __call__(self, waves: torch.Tensor) -> torch.Tensor:
        """(B, samples) -> (B, n_mels or n_mfcc, frames): log power mel spectrogram, or its MFCCs; or (B, 1, samples),
        the waveform."""
        if self.kind == "waveform":
            return waves.float().unsqueeze(1)
        rows = max(1, CHUNK_SAMPLES // max(1, waves.shape[-1]))
        if waves.shape[0] > rows:  # a few clips at a time (benchmarks/audio_features.py)
            return torch.cat([self(chunk) for chunk in waves.split(rows)])
        window = torch.hann_window(self.n_fft, periodic=True, device=waves.device)
        spec = torch.stft(
            waves.float(),
            self.n_fft,
            self.hop_length,
            window=window,
            center=True,
            pad_mode=self.pad_mode,
            return_complex=True,
        )
        power = spec.real.square() + spec.imag.square()  # |X|^2 without abs's square root
        log_mel = (self.mel_filters().to(waves.device).T @ power).clamp_min_(1e-10).log_()  # (B, n_mels, frames)
        if self.kind == "log_mel":
            return log_mel
        return _dct_matrix(self.n_mels, self.n_mfcc).to(waves.device) @ log_mel  # (B, n_mfcc, frames)

    @property
    def channels(self) -> int:
        return {"log_mel": self.n_mels, "mfcc": self.n_mfcc, "waveform": 1}[self.kind]


def _dct_matrix(n: int, k: int) -> torch.Tensor:
    """(k, n) orthonormal DCT-II: the cosine transform that turns log-mel bands into cepstral coefficients."""
    i = torch.arange(n, dtype=torch.float64)
    rows = torch.cos(torch.pi / n * (i + 0.5) * torch.arange(k, dtype=torch.float64)[:, None])
    rows[0] *= 1 / np.sqrt(2)
    return (rows * np.sqrt(2 / n)).float()
