"""Video for the Python API: clips as files, bytes or decoded :class:`Clip` frames, cut into timed segments; an
image-text model embeds them zero-shot by its image tower per frame (see :mod:`polymodal.backends.video`)."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Union

from PIL import Image

from polymodal.backends.video import IMAGE_FRAMES, VIDEO_TOWER, decoded
from polymodal.data.errors import BadSampleError
from polymodal.data.video import Clip, VideoSampling, decode_video

__all__ = [
    "IMAGE_FRAMES",
    "VIDEO_TOWER",
    "VideoInput",
    "VideoSegment",
    "VideoSegments",
    "decoded",
    "middle_frame",
    "segment_clip",
    "to_clips",
]

VideoInput = Union[str, "os.PathLike[str]", bytes, bytearray, Clip]  # a file, its bytes, or frames already decoded
# Frames decoded at a time when a clip is cut into segments (32 frames of 4K take 0.8 GB).
WINDOW_FRAMES = 32


@dataclass
class VideoSegment:
    """``start`` to ``end`` seconds of a clip, with the frames sampled from it."""

    start: float
    end: float
    clip: Clip

    @property
    def media(self) -> Clip:
        """What to embed: the segment's frames."""
        return self.clip


class VideoSegments(Iterator[VideoSegment]):
    """The segments of one clip as they are decoded, with how many there are and the clip's length in seconds."""

    def __init__(self, segments: Iterator[VideoSegment], count: int, duration: float) -> None:
        self._segments, self.count, self.duration = segments, count, duration

    def __next__(self) -> VideoSegment:
        return next(self._segments)


def to_clips(values: VideoInput | Sequence[VideoInput]) -> list[str | bytes | Clip]:
    """A list of paths (as strings), encoded bytes and decoded clips from one input or a sequence of them."""
    if isinstance(values, (str, os.PathLike, bytes, bytearray, Clip)):
        values = [values]
    out: list[str | bytes | Clip] = []
    for i, value in enumerate(values):
        if isinstance(value, (str, os.PathLike)):
            out.append(os.fspath(value))
        elif isinstance(value, (bytes, bytearray)):
            out.append(bytes(value))
        elif isinstance(value, Clip):
            out.append(value)
        else:
            raise ValueError(f"input #{i}: expected a video path, encoded bytes or a Clip, got {type(value).__name__}")
    return out


def middle_frame(clip: Clip) -> Image.Image:
    """The middle one of the clip's sampled frames (of frames sampled from a segment's start: the one at its middle)."""
    return clip.frames[len(clip.frames) // 2]


def segment_clip(ref: str | bytes, seconds: float, sampling: VideoSampling) -> VideoSegments:
    """``ref`` cut into consecutive ``seconds``-long segments (the last one may be shorter), each with up to
    ``sampling.frames`` frames taken at a fixed rate from its start. The segments come as they are decoded, a
    window of about WINDOW_FRAMES frames at a time, so a long clip never holds all its frames at once."""
    if not seconds > 0:
        raise ValueError(f"segment seconds must be > 0, got {seconds}")
    probe = decode_video(ref, sampling.model_copy(update={"frames": 1}))
    # A tail shorter than half a frame (3.003 s of 29.97 fps in 1 s segments) is no segment of its own.
    count = max(1, math.ceil((probe.duration - 0.5 / probe.rate) / seconds - 1e-6))
    return VideoSegments(_segments(ref, seconds, sampling, probe.duration, count), count, probe.duration)


def _segments(
    ref: str | bytes, seconds: float, sampling: VideoSampling, duration: float, count: int
) -> Iterator[VideoSegment]:
    rate = sampling.frames / seconds
    per_window = max(1, WINDOW_FRAMES // sampling.frames)  # segments decoded together
    for first in range(0, count, per_window):
        last = min(count, first + per_window)
        begin, end = first * seconds, min(last * seconds, duration)
        frames = min((last - first) * sampling.frames, max(1, math.ceil((end - begin) * rate - 1e-9)))
        window = sampling.model_copy(update={"frames": frames, "sampling": "fps", "fps": rate})
        try:
            clip = decode_video(ref, window, start=begin)
        except BadSampleError:
            if first and begin >= duration - max(0.5, 0.1 * duration):
                return  # the header promised a little more than the stream holds: the clip ends here, as whole ones do
            raise
        # The k-th frame decoded is the k-th sampling time from `begin`: segment first + k // T (a frame's own time
        # may fall a little before its segment's start, half a frame early, at rates such as 29.97 fps).
        groups: dict[int, list[int]] = {}
        for i, t in enumerate(clip.times):
            group = groups.setdefault(min(last - 1, first + i // sampling.frames), [])
            if group and clip.times[group[-1]] == t:
                continue  # the same frame again (a variable-rate clip's gap, or the end standing in for missing ones)
            group.append(i)
        for j in sorted(groups):
            ids = groups[j]
            yield VideoSegment(
                start=j * seconds,
                end=min((j + 1) * seconds, duration),
                clip=Clip([clip.frames[i] for i in ids], [clip.times[i] for i in ids], clip.duration, clip.rate),
            )
