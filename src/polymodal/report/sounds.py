"""Example sounds as a log-mel spectrogram thumbnail and a FLAC clip to play, decoded once per file.

Size budget, so that a report with sounds stays one file that mails and opens quickly:

- a spectrogram is a 192 x 64 palette PNG (about 10 KB; 64 mel bands, 80 dB of range, in magma);
- a clip is embedded as 16 kHz mono 16-bit FLAC (lossless after resampling, and byte-identical from one run to the
  next, unlike Ogg whose stream serial number is random), at most :data:`MAX_CLIP_BYTES` each (~8 s of a noisy
  sound, more of a quiet one) and :data:`MAX_REPORT_CLIP_BYTES` in all, counted per use, since HTML repeats a clip
  at every place it is shown. A clip over either cap shows its spectrogram alone with a note that says why.
"""

from __future__ import annotations

import io
import math
from dataclasses import replace
from pathlib import Path

import numpy as np

from polymodal.data.audio import AudioFeatures, decode_audio
from polymodal.data.errors import BadSampleError
from polymodal.report.blocks import Asset, Sound
from polymodal.report.budget import Budget, kib
from polymodal.report.thumbnails import path_slug

SAMPLE_RATE = 16_000
MAX_SECONDS = 120.0  # longer recordings are named, not drawn: a report is no place for a whole album
MAX_CLIP_BYTES = 256 * 1024
MAX_REPORT_CLIP_BYTES = 4 * 1024 * 1024
SPECTROGRAM_PX = (192, 64)  # width, height: one pixel row per mel band
DB_RANGE = 80.0
FEATURES = AudioFeatures(sample_rate=SAMPLE_RATE, n_fft=400, hop_length=160, n_mels=SPECTROGRAM_PX[1])
_LOG_FLOOR = math.log(1e-10)  # AudioFeatures clamps power here: pure silence
_NATS = DB_RANGE / 10 * math.log(10)  # the dB range on AudioFeatures' natural-log scale


def spectrogram_png(wave: np.ndarray) -> bytes:
    """(samples,) float32 at :data:`SAMPLE_RATE` -> a palette PNG, low frequencies at the bottom, the loudest band
    bright and anything :data:`DB_RANGE` below it black (silence stays black)."""
    import torch
    from matplotlib import colormaps
    from PIL import Image

    width, height = SPECTROGRAM_PX
    log_mel = FEATURES(torch.from_numpy(wave)[None])  # (1, n_mels, frames)
    # Area averaging shrinks long clips; a clip shorter than the width repeats frames.
    log_mel = torch.nn.functional.interpolate(log_mel[None], size=(height, width), mode="area")[0, 0]
    top = max(float(log_mel.max()), _LOG_FLOOR + _NATS)
    levels = ((log_mel - (top - _NATS)) / _NATS).clamp(0, 1).flip(0)  # (n_mels, width), row 0 = highest band
    image = Image.fromarray((levels.numpy() * 255).round().astype(np.uint8), mode="L").convert("P")
    palette = (colormaps["magma"](np.linspace(0, 1, 256))[:, :3] * 255).round().astype(np.uint8)
    image.putpalette(palette.flatten().tolist())
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def flac_bytes(wave: np.ndarray) -> bytes:
    import soundfile

    buffer = io.BytesIO()
    soundfile.write(buffer, np.clip(wave, -1.0, 1.0), SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    return buffer.getvalue()


class Sounds:
    """Path -> :class:`Sound` cache (a gallery clip shown in many retrieval rows is decoded once) that also keeps
    the report's running total of embedded clip bytes."""

    def __init__(self, max_clip: int = MAX_CLIP_BYTES, max_total: int = MAX_REPORT_CLIP_BYTES) -> None:
        self.max_clip = max_clip
        self.budget = Budget(max_total)  # clip bytes handed out, counted per use
        self._cache: dict[str, tuple[Sound | None, str | None]] = {}

    def get(self, path: str) -> tuple[Sound | None, str | None]:
        """(sound, None), or (None, reason naming the file) when it is missing or not audio. The sound carries its
        clip while the budget lasts, and says why not otherwise."""
        if path not in self._cache:
            self._cache[path] = self._make(path)
        sound, note = self._cache[path]
        if sound is None or sound.clip is None:
            return sound, note
        if not self.budget.take(len(sound.clip)):
            return replace(sound, clip=None, note=self.budget.spent_note("clip", "clips")), None
        return sound, None

    def _make(self, path: str) -> tuple[Sound | None, str | None]:
        try:
            wave = decode_audio(path, SAMPLE_RATE, max_seconds=MAX_SECONDS).numpy()
        except BadSampleError as e:
            return None, f"{path}: {e.reason}"
        except ImportError as e:  # soundfile is an extra; the report still renders without it
            return None, f"{path}: {e}"
        name = Path(path).name
        seconds = len(wave) / SAMPLE_RATE
        slug = path_slug("snd", path)
        width, height = SPECTROGRAM_PX
        spectrogram = Asset(
            slug=slug,
            png=spectrogram_png(wave),
            alt=f"log-mel spectrogram of {name} ({seconds:.1f} s)",
            width=width,
            height=height,
        )
        clip: bytes | None = flac_bytes(wave)
        note = None
        if len(clip) > self.max_clip:
            note = f"clip not embedded: {kib(len(clip))} of FLAC is over the {kib(self.max_clip)} a clip may take"
            clip = None
        return Sound(
            slug=slug, name=name, path=path, seconds=seconds, spectrogram=spectrogram, clip=clip, note=note
        ), None
