"""Sound for the Python API: files, encoded bytes or decoded :class:`~polymodal.data.audio.Waveform` s, and a long
recording cut into timed segments (an audio tower reads a fixed window from a clip's start, so a sound later in a
long file is found only in its own segment)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from polymodal.api.video import SEGMENTED_MAX_SECONDS
from polymodal.data.audio import Waveform, stream_audio

__all__ = ["AudioSegment", "AudioSegments", "Waveform", "segment_sound"]


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


@dataclass
class AudioSegments:
    """A recording's segments, cut as it is decoded: iterate for :class:`AudioSegment` s (once); ``count`` is how
    many its header's length makes (None where the header gives none)."""

    segments: Iterator[AudioSegment]
    count: int | None

    def __iter__(self) -> Iterator[AudioSegment]:
        return self.segments

    def __next__(self) -> AudioSegment:
        return next(self.segments)


def segment_sound(ref: object, seconds: float, sample_rate: int) -> AudioSegments:
    """``ref`` decoded once at ``sample_rate`` and cut into consecutive ``seconds``-long segments (the last one may
    be shorter), yielded as it is decoded: a long recording (up to 24 hours) never held whole. A bad file raises
    BadSampleError, at the call for a bad header, where it breaks off for one that does."""
    if not seconds > 0 or not math.isfinite(seconds):
        raise ValueError(f"segment seconds must be a finite number > 0, got {seconds}")
    stream = stream_audio(ref, sample_rate, max_seconds=SEGMENTED_MAX_SECONDS)  # type: ignore[arg-type]
    step = max(1, round(seconds * sample_rate))
    count = None if stream.seconds is None else max(1, math.ceil(round(stream.seconds * sample_rate) / step))
    return AudioSegments(_cut(stream, step, sample_rate), count)


def _cut(blocks: Iterable[torch.Tensor], step: int, rate: int) -> Iterator[AudioSegment]:
    """Blocks of samples -> segments of ``step`` samples each (the last one what is left)."""
    held, start = np.zeros(0, np.float32), 0
    for block in blocks:
        held = np.concatenate([held, block.numpy()])
        while len(held) >= step:
            yield AudioSegment(start / rate, (start + step) / rate, Waveform(held[:step].copy(), rate))
            held, start = held[step:], start + step
    if len(held):
        yield AudioSegment(start / rate, (start + len(held)) / rate, Waveform(held, rate))
