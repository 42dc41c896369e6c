"""Sound for the Python API: files, encoded bytes or decoded :class:`~polymodal.data.audio.Waveform` s, and a long
recording cut into timed segments (an audio tower reads a fixed window from a clip's start, so a sound later in a
long file is found only in its own segment)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from polymodal.data.audio import Waveform, decode_audio
from polymodal.data.video import MAX_SECONDS

__all__ = ["AudioSegment", "Waveform", "segment_sound"]


@dataclass
class AudioSegment:
    """``start`` to ``end`` seconds of a recording, with its samples at the model's rate."""

    start: float
    end: float
    sound: Waveform

    @property
    def media(self) -> Waveform:
        """What to embed: the segment's sound."""
        return self.sound


def segment_sound(ref: object, seconds: float, sample_rate: int) -> list[AudioSegment]:
    """``ref`` decoded once at ``sample_rate`` (up to an hour, as a video) and cut into consecutive ``seconds``-long
    segments (the last one may be shorter); a bad file raises BadSampleError."""
    if not seconds > 0 or not math.isfinite(seconds):
        raise ValueError(f"segment seconds must be a finite number > 0, got {seconds}")
    samples = decode_audio(ref, sample_rate, max_seconds=MAX_SECONDS).numpy()  # type: ignore[arg-type]
    step = max(1, round(seconds * sample_rate))
    return [
        AudioSegment(
            start / sample_rate,
            min(start + step, len(samples)) / sample_rate,
            Waveform(samples[start : start + step], sample_rate),
        )
        for start in range(0, len(samples), step)
    ]
