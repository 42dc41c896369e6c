"""Video for the Python API: clips as files, bytes or decoded :class:`Clip` frames, cut into timed segments; an
image-text model embeds them zero-shot by its image tower per frame (see :mod:`polymodal.backends.video`)."""

from __future__ import annotations

import collections
import math
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Union

from PIL import Image

from polymodal.backends.video import IMAGE_FRAMES, VIDEO_TOWER, decoded
from polymodal.data.errors import BadSampleError
from polymodal.data.video import Clip, VideoSampling, decode_video, frames_at

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
SEGMENT_FRAME_BYTES = 256 * 2**20  # the RGB frames of the segments a call holds (a 1080p frame is 6 MB)
SEGMENTED_MAX_SECONDS = 24 * 3600.0  # the longest clip cut into segments (a whole clip: VideoSampling.max_seconds)


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
    """The segments of one clip as they are decoded, with how many there are, the clip's length in seconds and the
    size of its frames (width, height)."""

    def __init__(
        self, segments: Iterator[VideoSegment], count: int, duration: float, frame_size: tuple[int, int]
    ) -> None:
        self._segments, self.count, self.duration, self.frame_size = segments, count, duration, frame_size

    def per_call(self, frames_per_segment: int, most: int) -> int:
        """How many segments (at most ``most``) a call may take with their frames under SEGMENT_FRAME_BYTES."""
        width, height = self.frame_size
        return max(1, min(most, SEGMENT_FRAME_BYTES // max(1, 3 * width * height * frames_per_segment)))

    def __next__(self) -> VideoSegment:
        return next(self._segments)

    def close(self) -> None:
        """Let go of the clip's file (a caller that stops early; ``with`` does it too)."""
        close = getattr(self._segments, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> VideoSegments:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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
    """The middle one of the clip's sampled frames (of a segment sampled for one frame: that one, at its middle)."""
    return clip.frames[len(clip.frames) // 2]


def segment_clip(ref: str | bytes, seconds: float, sampling: VideoSampling) -> VideoSegments:
    """``ref`` cut into consecutive ``seconds``-long segments (the last one may be shorter), each with up to
    ``sampling.frames`` frames, the ones on screen at the middles of its equal parts (one frame: its middle). The
    clip is decoded once, from its start, and the segments come as they are: a long clip never holds more than one
    segment's frames. A stream that ends more than a segment before its header says warns, and its segments stop."""
    if not seconds > 0 or not math.isfinite(seconds):
        raise ValueError(f"segment seconds must be a finite number > 0, got {seconds}")
    # Decoded as a stream, a segment at a time: a clip may be longer than one read whole.
    sampling = sampling.model_copy(update={"max_seconds": max(sampling.max_seconds, SEGMENTED_MAX_SECONDS)})
    probe = decode_video(ref, sampling.model_copy(update={"frames": 1}))
    # A tail shorter than half a frame (3.003 s of 29.97 fps in 1 s segments) is no segment of its own; a
    # variable-rate clip's average rate can be a frame in seconds, so never more than a tenth of a segment.
    count = max(1, math.ceil((probe.duration - min(0.5 / probe.rate, 0.1 * seconds)) / seconds - 1e-6))
    segments = VideoSegments(iter(()), count, probe.duration, probe.frames[0].size)
    segments._segments = _segments(ref, seconds, sampling, probe, count)
    return segments


def _segments(
    ref: str | bytes, seconds: float, sampling: VideoSampling, probe: Clip, count: int
) -> Iterator[VideoSegment]:
    owners: collections.deque[int] = collections.deque()  # the segment of each time asked, in the order asked

    def times() -> Iterator[float]:
        for j in range(count):
            begin, end = j * seconds, min((j + 1) * seconds, probe.duration)
            step = (end - begin) / sampling.frames
            for k in range(sampling.frames):
                owners.append(j)
                yield begin + (k + 0.5) * step

    def segment(j: int, frames: list[Image.Image], at: list[float], end: float) -> VideoSegment:
        return VideoSegment(j * seconds, min((j + 1) * seconds, end), Clip(frames, at, probe.duration, probe.rate))

    current, frames, at, last = -1, [], [], 0.0
    for _, shown_at, image in frames_at(ref, times(), sampling):
        j = owners.popleft()
        if j != current and frames:
            yield segment(current, frames, at, probe.duration)
            frames, at = [], []
        current, last = j, shown_at
        if at and at[-1] == shown_at:
            continue  # the same frame again (a still stretch of a variable-rate clip)
        frames.append(image)
        at.append(shown_at)
    if not frames:
        raise BadSampleError("no decodable frames", source=ref if isinstance(ref, str) else None, kind="decode")
    # Times left unserved: the stream ended before them. By more than a little (a header a few frames long is
    # common), the file is truncated, and its last segment ends where its frames do.
    end = last + 1 / probe.rate
    truncated = bool(owners) and probe.duration - end > max(0.5, 0.02 * probe.duration)
    yield segment(current, frames, at, end if truncated else probe.duration)
    if truncated:
        where = ref if isinstance(ref, str) else "the clip"
        warnings.warn(
            f"{where}: frames end at {end:.1f} s of the {probe.duration:.1f} s its header declares (truncated?); "
            f"the segments after {end:.1f} s are not there",
            stacklevel=3,
        )
