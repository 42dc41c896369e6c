"""ShapesWorld's sounds and speech: the same scenes heard instead of seen.

- A scene sound: each object is one sound event, left to right (top first within a column). Its timbre
  names its shape, its pitch its colour, its length its size; so one event per object and the count is
  heard too. ShapesWorld moves' soundtracks (``shapes_video``) reuse the events and the mixing.
- Spoken captions: a caption read aloud by eSpeak NG (its C library and voice data ship in the
  ``espeakng-loader`` wheel) in one of :data:`VOICES`, at a drawn speaking rate and pitch.
- Spoken sentiment: a sentence about a shape whose meant sentiment is its words' polarity, flipped when it
  is said sarcastically (slow, low and flat). Text alone cannot tell the delivery and a sound model must
  understand the words, so the task needs both modalities.

Every function takes its own ``numpy.random.Generator``; the caller seeds it per (seed, index, stream), so
adding audio never changes an image.
"""

from __future__ import annotations

import ctypes
import importlib.util
import io
import os
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from polymodal.data.audio import resample

SAMPLE_RATE = 16_000
SCENE_SECONDS = 2.0  # three large events and their gaps fit
_EVENT_SECONDS = {"small": 0.32, "large": 0.5}
_GAP_SECONDS = 0.1
_LEAD_SECONDS = (0.02, 0.12)  # the first event starts at a random point in this range

# Colour -> fundamental: 8 steps of a minor third (3 semitones) from 220 Hz, about two mel bands apart at
# 64 bands; each event is detuned by up to +-30 cents so pitch is a range, not a single line.
_BASE_HZ = 220.0
_DETUNE_CENTS = 30.0


def color_pitch(color: str) -> float:
    from polymodal.data.shapes import COLORS

    return _BASE_HZ * 2.0 ** (3 * list(COLORS).index(color) / 12)


# --------------------------------------------------------------------------- timbres, one per shape


def _harmonics(f0: float, t: np.ndarray, weights: Sequence[float], ratios: Sequence[float] | None = None) -> np.ndarray:
    """Sum of partials ``f0 * ratio`` (ratio n+1 by default) with ``weights``; partials above Nyquist dropped."""
    out = np.zeros_like(t)
    for n, w in enumerate(weights):
        f = f0 * (ratios[n] if ratios is not None else n + 1)
        if f < SAMPLE_RATE / 2:
            out += w * np.sin(2 * np.pi * f * t)
    return out


def _envelope(t: np.ndarray, duration: float, attack: float, decay: float | None) -> np.ndarray:
    """Linear attack, then flat (``decay`` None) or exponential decay, and a 20 ms release to silence."""
    env = np.minimum(t / attack, 1.0)
    if decay is not None:
        env *= np.exp(-np.maximum(t - attack, 0.0) / decay)
    return env * np.clip((duration - t) / 0.02, 0.0, 1.0)


def _tone(shape: str, f0: float, duration: float) -> np.ndarray:
    """One sound event of ``shape`` at ``f0`` Hz, peak 1."""
    t = np.arange(int(duration * SAMPLE_RATE)) / SAMPLE_RATE
    odd = [1 / n if n % 2 else 0.0 for n in range(1, 12)]
    if shape == "circle":  # pure, soft
        wave = _harmonics(f0, t, [1.0]) * _envelope(t, duration, 0.06, None)
    elif shape == "square":  # hollow: odd harmonics
        wave = _harmonics(f0, t, odd) * _envelope(t, duration, 0.01, None)
    elif shape == "triangle":  # bright: every harmonic
        wave = _harmonics(f0, t, [1 / n for n in range(1, 12)]) * _envelope(t, duration, 0.01, None)
    elif shape == "diamond":  # bell: inharmonic partials, ringing decay
        wave = _harmonics(f0, t, [1.0, 0.6, 0.4, 0.25], [1.0, 2.76, 5.40, 8.93]) * _envelope(t, duration, 0.003, 0.15)
    elif shape == "star":  # shimmer: tremolo at 14 Hz over a sine and its octave
        wave = (
            _harmonics(f0, t, [1.0, 0.5])
            * (0.6 + 0.4 * np.sin(2 * np.pi * 14 * t))
            * _envelope(t, duration, 0.02, None)
        )
    elif shape == "hexagon":  # organ: octaves
        wave = _harmonics(f0, t, [1.0, 0.7, 0.0, 0.5, 0.0, 0.0, 0.0, 0.35]) * _envelope(t, duration, 0.03, None)
    elif shape == "cross":  # pluck: every harmonic, the high ones dying first
        wave = sum(
            np.sin(2 * np.pi * f0 * n * t) / n * np.exp(-t * (4 + 6 * n))
            for n in range(1, 10)
            if f0 * n < SAMPLE_RATE / 2
        ) * _envelope(t, duration, 0.002, None)
    elif shape == "heart":  # heartbeat: two short beats
        beat = _envelope(t, duration, 0.005, 0.04) + 0.8 * _envelope(
            np.maximum(t - duration / 4, 0), duration, 0.005, 0.04
        ) * (t > duration / 4)
        wave = _harmonics(f0, t, [1.0, 0.3, 0.1]) * beat
    else:
        raise ValueError(f"no timbre for shape {shape!r}")
    return wave / max(float(np.abs(wave).max()), 1e-9)


def _hearing_order(objects: Sequence[Any]) -> list[Any]:
    """Left to right; top first within a column."""
    return sorted(objects, key=lambda o: (o.cell % 3, o.cell // 3))


def render_scene_sound(objects: Sequence[Any], background: str, rng: np.random.Generator) -> np.ndarray:
    """(SCENE_SECONDS * SAMPLE_RATE,) float32 in [-1, 1]: the scene's events over a little background noise
    (more on a textured background)."""
    at = rng.uniform(*_LEAD_SECONDS)
    events = []
    for obj in _hearing_order(objects):
        events.append((at, object_sound(obj.shape, obj.color, obj.size, rng)))
        at += _EVENT_SECONDS[obj.size] + _GAP_SECONDS
    return mix_sounds(events, SCENE_SECONDS, background == "textured", rng)


def object_sound(shape: str, color: str, size: str, rng: np.random.Generator) -> np.ndarray:
    """One object's sound event: its shape's timbre at its colour's pitch (detuned a little), as long as its size
    says, at a drawn loudness."""
    f0 = color_pitch(color) * 2.0 ** (rng.uniform(-_DETUNE_CENTS, _DETUNE_CENTS) / 1200)
    return _tone(shape, f0, _EVENT_SECONDS[size]) * rng.uniform(0.5, 0.8)


def click() -> np.ndarray:
    """The same short broadband click whatever made it (40 ms of decaying noise, peak 0.7): a sound that says when,
    not who."""
    t = np.arange(int(0.04 * SAMPLE_RATE)) / SAMPLE_RATE
    burst = np.random.default_rng(0).standard_normal(len(t)) * np.exp(-t / 0.008)
    return 0.7 * burst / float(np.abs(burst).max())


def mix_sounds(
    events: Sequence[tuple[float, np.ndarray]], seconds: float, noisy: bool, rng: np.random.Generator
) -> np.ndarray:
    """(seconds * SAMPLE_RATE,) float32 in [-1, 1]: each (start second, wave) event added in, cut at the end, over
    background noise (louder when ``noisy``)."""
    out = np.zeros(int(seconds * SAMPLE_RATE), dtype=np.float64)
    for at, event in events:
        start = int(at * SAMPLE_RATE)
        if start < len(out):
            out[start : start + len(event)] += event[: len(out) - start]
    noise_db = rng.uniform(-42, -34) if noisy else rng.uniform(-60, -50)
    out += rng.standard_normal(len(out)) * 10 ** (noise_db / 20)
    return np.clip(out, -1.0, 1.0).astype(np.float32)


def encode_flac(wave: np.ndarray, sample_rate: int = SAMPLE_RATE) -> bytes:
    """16-bit FLAC bytes of a float wave in [-1, 1]; equal samples give equal bytes."""
    from polymodal.data.audio import _soundfile

    buf = io.BytesIO()
    _soundfile().write(buf, wave, sample_rate, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


# --------------------------------------------------------------------------- speech


@dataclass(frozen=True)
class Voice:
    """How a sentence is said: an eSpeak NG voice name, words per minute, base pitch and pitch range (0-100)."""

    name: str
    rate: int
    pitch: int
    pitch_range: int = 50

    def to_dict(self) -> dict[str, Any]:
        return {"voice": self.name, "rate": self.rate, "pitch": self.pitch, "pitch_range": self.pitch_range}


# Eight speakers: accents (US, British RP, Scottish, Caribbean) x voice variants (male, female).
VOICES = (
    "en-us+m1",
    "en-us+f2",
    "en-gb-x-rp+m3",
    "en-gb-x-rp+f4",
    "en-gb-scotland+m4",
    "en-gb-scotland+f1",
    "en-029+m2",
    "en-029+f3",
)


def draw_voice(rng: np.random.Generator) -> Voice:
    """A speaker from :data:`VOICES` at an ordinary rate and pitch."""
    return Voice(VOICES[int(rng.integers(len(VOICES)))], int(rng.integers(140, 191)), int(rng.integers(35, 71)))


_ESPEAK_RATE, _ESPEAK_PITCH, _ESPEAK_RANGE = 1, 3, 4  # espeak_PARAMETER
_STATEFUL = ("flutter", "echo", "breath", "roughness")  # voice attributes whose state outlives a sentence
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_SYNTH_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


def require_speech() -> None:
    """Raise a clear ImportError when eSpeak NG (``polymodal[speech]``) is not installed."""
    if importlib.util.find_spec("espeakng_loader") is None:
        raise ImportError(_NO_SPEECH)


_NO_SPEECH = "spoken captions need eSpeak NG: pip install 'polymodal[speech]'"


class SpeechSynthesizer:
    """eSpeak NG through its C API, in process: one library state, so one sentence at a time (locked)."""

    def __init__(self) -> None:
        try:
            import espeakng_loader
        except ImportError:
            raise ImportError(_NO_SPEECH) from None
        self._lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self._lib.espeak_Synth.argtypes = [
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        self._data = espeakng_loader.get_data_path()
        rate = self._lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, self._data.encode(), 0)
        if rate <= 0:
            raise RuntimeError(f"eSpeak NG failed to initialise (data at {self._data})")
        self.sample_rate = int(rate)
        self._chunks: list[np.ndarray] = []
        self._callback = _SYNTH_CALLBACK(self._collect)  # kept alive as long as the library may call it
        self._lib.espeak_SetSynthCallback(self._callback)
        self._lock = threading.Lock()

    def _collect(self, wav: Any, n: int, events: Any) -> int:
        if n > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0  # 0 = go on

    def _set_voice(self, name: str) -> None:
        """Load ``LANGUAGE+VARIANT`` from a voice file written for it: the variant's formants without the
        attributes that carry state from one sentence to the next (pitch flutter, echo, breath, roughness), so
        the same sentence in the same voice gives the same samples."""
        language, _, variant = name.partition("+")
        lines = [f"language {language}"]
        if variant:
            path = Path(self._data) / "voices" / "!v" / variant
            if not path.is_file():
                raise ValueError(f"eSpeak NG has no voice variant {variant!r} ({path})")
            lines += [
                line
                for line in path.read_text(encoding="utf-8", errors="replace").splitlines()
                if line.split(maxsplit=1)[:1] not in (["language"], ["name"], *([k] for k in _STATEFUL))
            ]
        lines += [f"{k} 0" for k in _STATEFUL]
        with tempfile.TemporaryDirectory() as tmp:
            voice_file = Path(tmp) / "voice"
            voice_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
            if self._lib.espeak_ng_SetVoiceByFile(os.fsencode(voice_file)) != 0:
                raise ValueError(f"eSpeak NG cannot load voice {name!r}")

    def say(self, text: str, voice: Voice) -> np.ndarray:
        """(samples,) float32 at :attr:`sample_rate`."""
        with self._lock:
            self._set_voice(voice.name)
            for param, value in (
                (_ESPEAK_RATE, voice.rate),
                (_ESPEAK_PITCH, voice.pitch),
                (_ESPEAK_RANGE, voice.pitch_range),
            ):
                self._lib.espeak_SetParameter(param, value, 0)
            self._chunks = []
            data = text.encode()
            status = self._lib.espeak_Synth(data, len(data) + 1, 0, 0, 0, 0, None, None)
            self._lib.espeak_Synchronize()
            if status != 0 or not self._chunks:
                raise RuntimeError(f"eSpeak NG could not say {text!r} (status {status})")
            return np.concatenate(self._chunks).astype(np.float32) / 32768.0


@lru_cache(maxsize=1)
def synthesizer() -> SpeechSynthesizer:
    """This process's synthesizer (the library holds one global state)."""
    return SpeechSynthesizer()


def speak(text: str, voice: Voice) -> np.ndarray:
    """``text`` said by ``voice``: float32 at :data:`SAMPLE_RATE`, peak-normalised to 0.9."""
    synth = synthesizer()
    wave = resample(torch.from_numpy(synth.say(text, voice)), synth.sample_rate, SAMPLE_RATE).numpy()
    return (wave * (0.9 / max(float(np.abs(wave).max()), 1e-9))).astype(np.float32)


# --------------------------------------------------------------------------- spoken sentiment

POSITIVE_WORDS = ("love", "adore", "enjoy", "like", "admire", "treasure", "cherish", "appreciate")
NEGATIVE_WORDS = ("hate", "dislike", "dread", "detest", "loathe", "resent", "despise", "abhor")
_SENTIMENT_TEMPLATES = ("I {verb} the {thing}", "we really {verb} that {thing}", "honestly, I {verb} this {thing}")


def make_sentiment(objects: Sequence[Any], rng: np.random.Generator) -> tuple[dict[str, Any], np.ndarray]:
    """A spoken sentence about one of ``objects`` and its row: ``label`` is the meant sentiment, the words'
    polarity flipped when ``delivery`` is sarcastic (slow, low, flat) rather than sincere."""
    obj = objects[int(rng.integers(len(objects)))]
    words = "positive" if rng.random() < 0.5 else "negative"
    verb = str(rng.choice(POSITIVE_WORDS if words == "positive" else NEGATIVE_WORDS))
    template = _SENTIMENT_TEMPLATES[int(rng.integers(len(_SENTIMENT_TEMPLATES)))]
    text = template.format(verb=verb, thing=f"{obj.color} {obj.shape}")
    sarcastic = bool(rng.random() < 0.5)
    speaker = VOICES[int(rng.integers(len(VOICES)))]
    if sarcastic:
        voice = Voice(speaker, int(rng.integers(95, 121)), int(rng.integers(10, 26)), int(rng.integers(0, 11)))
    else:
        voice = Voice(speaker, int(rng.integers(160, 201)), int(rng.integers(45, 71)), int(rng.integers(55, 86)))
    label = words if not sarcastic else ("negative" if words == "positive" else "positive")
    row = {"text": text, "label": label, "words": words, "delivery": "sarcastic" if sarcastic else "sincere"}
    return {**row, **voice.to_dict()}, speak(text, voice)
