"""Sound for the Python API: files, encoded bytes or decoded :class:`~polymodal.data.audio.Waveform` s, and a long
recording cut into timed segments (an audio tower reads a fixed window from a clip's start, so a sound later in a
long file is found only in its own segment)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Generator, Iterator
from dataclasses import dataclass

import numpy as np

from polymodal.api.video import SEGMENTED_MAX_SECONDS
from polymodal.data.audio import AudioStream, Waveform, stream_audio
from polymodal.data.errors import BadSampleError
from polymodal.data.video import MAX_SECONDS

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
    many its length makes (None where nothing gives its length). ``close()`` (or ``with``) lets go of the file when
    a caller stops early."""

    segments: Generator[AudioSegment, None, None]
    count: int | None

    def __iter__(self) -> Iterator[AudioSegment]:
        return self.segments

    def __next__(self) -> AudioSegment:
        return next(self.segments)

    def close(self) -> None:
        self.segments.close()

    def __enter__(self) -> AudioSegments:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def segment_sound(ref: object, seconds: float, sample_rate: int) -> AudioSegments:
    """``ref`` decoded once at ``sample_rate`` and cut into consecutive ``seconds``-long segments (the last one may
    be shorter), yielded as it is decoded: a recording of up to 24 hours is never held whole (one whose length
    nothing gives, such as a live-recorded WebM, is read up to an hour, as a whole decode is). A bad file raises
    BadSampleError at the call; a recording that ends well before its header says gives the segments it has and a
    warning; one that breaks off in another way raises BadSampleError where it does."""
    if not seconds > 0 or not math.isfinite(seconds):
        raise ValueError(f"segment seconds must be a finite number > 0, got {seconds}")
    stream = stream_audio(ref, sample_rate, max_seconds=SEGMENTED_MAX_SECONDS)  # type: ignore[arg-type]
    if stream.seconds is None:  # no length to bound it by: a whole decode's bound
        stream.close()
        stream = stream_audio(ref, sample_rate, max_seconds=MAX_SECONDS)  # type: ignore[arg-type]
    step = max(1, round(seconds * sample_rate))
    count = None if stream.seconds is None else max(1, math.ceil(round(stream.seconds * sample_rate) / step))
    return AudioSegments(_cut(stream, step, sample_rate, ref), count)


def _cut(stream: AudioStream, step: int, rate: int, ref: object) -> Generator[AudioSegment, None, None]:
    """A stream's blocks -> segments of ``step`` samples each (the last one what is left), each block joined to
    what is held once per segment."""
    held: list[np.ndarray] = []
    have, start = 0, 0
    try:
        for block in stream:
            held.append(block.numpy())
            have += len(block)
            while have >= step:
                joined = np.concatenate(held) if len(held) > 1 else held[0]
                yield AudioSegment(start / rate, (start + step) / rate, Waveform(joined[:step].copy(), rate))
                held, have, start = ([joined[step:]] if have > step else []), have - step, start + step
    except BadSampleError as e:
        if e.kind != "truncated" or start == 0 and have == 0:
            raise
        where = ref if isinstance(ref, str) else "the recording"
        warnings.warn(
            f"{where}: {e.reason}; the segments after {(start + have) / rate:.1f} s are not there", stacklevel=2
        )
    finally:
        stream.close()
    if have:
        yield AudioSegment(start / rate, (start + have) / rate, Waveform(np.concatenate(held), rate))
