"""Audio decoding that cannot end a run: any file libsndfile reads (WAV, FLAC, OGG, MP3), as mono float32 at
the model's sample rate.

A missing, empty, truncated or undecodable file, an absurd sample rate or a clip longer than ``max_seconds``
raises :class:`BadSampleError` naming the file (and the manifest row, when given), which a dataset counts and
skips. Resampling is band-limited (FFT), so a tone keeps its pitch exactly and nothing above the new Nyquist
frequency folds back.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from pydantic import Field

from polymodal.config import Config
from polymodal.data.errors import BadSampleError, media_errors, open_media
from polymodal.data.schema import MediaRef

MAX_SECONDS = 600.0  # a longer clip is a mistake (a whole album, a stream), not a sample
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
    source: str | None = None,
    row: int | None = None,
    field: str = "audio",
) -> torch.Tensor:
    """``ref`` (a path or encoded bytes) -> (samples,) float32 mono at ``sample_rate`` (None: the file's own), or
    BadSampleError."""
    bad = media_errors(ref, source, row, field)
    handle = open_media(ref, bad)
    sf = _soundfile()
    try:
        with sf.SoundFile(handle) as f:
            rate, frames = int(f.samplerate), int(f.frames)
            if not SAMPLE_RATES[0] <= rate <= SAMPLE_RATES[1]:
                raise bad(f"sample rate {rate} Hz is outside {SAMPLE_RATES[0]}-{SAMPLE_RATES[1]} Hz", "bad_audio")
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
    if len(data) == 0:
        raise bad("no audio samples", "empty_file")
    if not np.isfinite(data).all():
        raise bad("samples are not finite numbers", "decode")
    mono = torch.from_numpy(np.ascontiguousarray(data[:, 0] if data.shape[1] == 1 else data.mean(axis=1)))
    return mono if sample_rate is None else resample(mono, rate, sample_rate)


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
