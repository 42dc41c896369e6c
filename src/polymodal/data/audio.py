"""Audio decoding that cannot end a run: any file libsndfile reads (WAV, FLAC, OGG, MP3), or the sound track of
a video container (MP4, MKV, WebM, AVI, MOV: decoded by PyAV), as mono float32 at the model's sample rate.

A missing, empty, truncated or undecodable file, an absurd sample rate, a clip longer than ``max_seconds``, a
decode slower than ``timeout_seconds`` or a video without a sound track (``no_audio``) raises
:class:`BadSampleError` naming the file (and the manifest row, when given), which a dataset counts and skips.
Resampling is band-limited (FFT), so a tone keeps its pitch exactly and nothing above the new Nyquist frequency
folds back.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field

from polymodal.config import Config
from polymodal.data.errors import BadSampleError, media_errors, open_media
from polymodal.data.schema import MediaRef
from polymodal.data.video import require_av

MAX_SECONDS = 600.0  # a longer clip is a mistake (a whole album, a stream), not a sample
TIMEOUT_SECONDS = 60.0  # a video container's track, checked between frames: a broken file fails instead of hanging
VIDEO_CONTAINERS = frozenset({"mp4", "m4v", "mkv", "webm", "avi", "mov"})  # their sound track is decoded by PyAV
SAMPLE_RATES = (1_000, 384_000)  # outside this range a header is broken or the file is not audio
# Features are computed over at most this many samples at once: a whole batch's spectrum (100 MB for 64
# clips of 10 s) costs more to allocate and walk than to compute.
CHUNK_SAMPLES = 2**19


def _soundfile():  # type: ignore[no-untyped-def]
    try:
        import soundfile
    except ImportError:
        raise ImportError("reading audio needs soundfile: pip install 'polymodal[audio]'") from None
    return soundfile


def decode_audio(
    ref: MediaRef,
    sample_rate: int | None,
    *,
    max_seconds: float = MAX_SECONDS,
    timeout_seconds: float = TIMEOUT_SECONDS,
    source: str | None = None,
    row: int | None = None,
    field: str = "audio",
) -> torch.Tensor:
    """``ref`` (a path or encoded bytes of a sound file or a video container) -> (samples,) float32 mono at
    ``sample_rate`` (None: the file's own), or BadSampleError."""
    bad = media_errors(ref, source, row, field)
    handle = open_media(ref, bad)
    if is_video_container(ref):
        data, rate = _decode_track(handle, max_seconds, timeout_seconds, bad)
    else:
        data, rate = _decode_sound_file(handle, max_seconds, bad)
    if len(data) == 0:
        raise bad("no audio samples", "empty_file")
    if not np.isfinite(data).all():
        raise bad("samples are not finite numbers", "decode")
    mono = torch.from_numpy(np.ascontiguousarray(data[:, 0] if data.shape[1] == 1 else data.mean(axis=1)))
    return mono if sample_rate is None else resample(mono, rate, sample_rate)


def is_video_container(ref: object) -> bool:
    """True for a path with a video container's extension, or bytes that start like MP4/MOV, Matroska/WebM or AVI."""
    if isinstance(ref, (str, os.PathLike)):
        return Path(ref).suffix.lower().lstrip(".") in VIDEO_CONTAINERS
    if isinstance(ref, (bytes, bytearray, memoryview)):
        head = bytes(ref[:12])
        return head[4:8] == b"ftyp" or head[:4] == b"\x1a\x45\xdf\xa3" or (head[:4], head[8:12]) == (b"RIFF", b"AVI ")
    return False


def _check_rate(rate: int, bad: Any) -> None:
    if not SAMPLE_RATES[0] <= rate <= SAMPLE_RATES[1]:
        raise bad(f"sample rate {rate} Hz is outside {SAMPLE_RATES[0]}-{SAMPLE_RATES[1]} Hz", "bad_audio")


def _decode_sound_file(handle: Any, max_seconds: float, bad: Any) -> tuple[np.ndarray, int]:
    """(samples, channels) float32 and the rate of a file libsndfile reads."""
    sf = _soundfile()
    try:
        with sf.SoundFile(handle) as f:
            rate, frames = int(f.samplerate), int(f.frames)
            _check_rate(rate, bad)
            limit = int(max_seconds * rate)
            if frames > limit:
                raise bad(f"{frames / rate:.0f} s long, more than the {max_seconds:.0f} s allowed", "too_long")
            data = f.read(min(frames, limit) if frames > 0 else limit + 1, dtype="float32", always_2d=True)
    except BadSampleError:
        raise
    except Exception as e:  # libsndfile's errors (truncated, not audio, unsupported) come in several types
        raise bad(f"cannot decode audio ({type(e).__name__}: {e})", "decode") from None
    if len(data) > limit:  # a stream that does not say its length
        raise bad(f"longer than the {max_seconds:.0f} s allowed", "too_long")
    return data, rate


def _decode_track(handle: Any, max_seconds: float, timeout_seconds: float, bad: Any) -> tuple[np.ndarray, int]:
    """(samples, channels) float32 and the rate of a video container's first sound track, through PyAV."""
    av = require_av()
    deadline = time.monotonic() + timeout_seconds
    try:
        container = av.open(os.fspath(handle) if isinstance(handle, Path) else handle, metadata_errors="ignore")
    except Exception as e:  # FFmpeg's errors (not a container, truncated header) come in several types
        raise bad(f"cannot open as a video container ({type(e).__name__}: {e})", "decode") from None
    try:
        with container:
            return _read_track(av, container, max_seconds, deadline, timeout_seconds, bad)
    except BadSampleError:
        raise
    except Exception as e:
        raise bad(f"cannot decode the sound track ({type(e).__name__}: {e})", "decode") from None


def _read_track(av, container, max_seconds, deadline, timeout_seconds, bad) -> tuple[np.ndarray, int]:  # type: ignore[no-untyped-def]
    if not container.streams.audio:
        kinds = sorted({s.type for s in container.streams}) or ["nothing"]
        raise bad(f"no audio stream ({container.format.name} holding {', '.join(kinds)})", "no_audio")
    stream = container.streams.audio[0]
    rate = int(stream.rate or stream.codec_context.sample_rate or 0)
    _check_rate(rate, bad)
    if stream.duration:
        declared = float(stream.duration * stream.time_base)
    else:
        declared = container.duration / 1_000_000 if container.duration else None  # AV_TIME_BASE
    if declared is not None and declared > max_seconds:
        raise bad(f"{declared:.0f} s long, more than the {max_seconds:.0f} s allowed", "too_long")
    limit = int(max_seconds * rate)
    to_float = av.AudioResampler(format="fltp")  # planar float32 at the track's own rate and channels
    chunks, total = [], 0
    for frame in container.decode(stream):
        for converted in to_float.resample(frame):
            chunks.append(converted.to_ndarray())  # (channels, samples)
            total += chunks[-1].shape[1]
        if total > limit:  # a stream that does not say its length
            raise bad(f"longer than the {max_seconds:.0f} s allowed", "too_long")
        if time.monotonic() > deadline:
            raise bad(f"decoding took longer than {timeout_seconds:.0f} s", "timeout")
    chunks += [f.to_ndarray() for f in to_float.resample(None)]
    data = np.concatenate(chunks, axis=1).T if chunks else np.zeros((0, 1), dtype=np.float32)
    if declared is not None:
        if declared - len(data) / rate > max(0.5, 0.1 * declared):
            raise bad(
                f"sound ends at {len(data) / rate:.2f} s of the {declared:.2f} s the header declares", "truncated"
            )
        data = data[: round(declared * rate)]  # the encoder's padding of the last frame
    return np.asarray(data, dtype=np.float32), rate


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
