"""Video for the Python API: clips as files, bytes or decoded :class:`Clip` frames, cut into timed segments; an
image-text model embeds them zero-shot by its image tower per frame (see :mod:`polymodal.backends.video`)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Union

from polymodal.backends.video import IMAGE_FRAMES, VIDEO_TOWER, decoded
from polymodal.data.video import Clip, VideoSampling, decode_video

__all__ = [
    "IMAGE_FRAMES",
    "MAX_DECODED_FRAMES",
    "VIDEO_TOWER",
    "VideoInput",
    "VideoSegment",
    "decoded",
    "segment_clip",
    "to_clips",
]

VideoInput = Union[str, "os.PathLike[str]", bytes, bytearray, Clip]  # a file, its bytes, or frames already decoded
# VideoSampling caps frames per decode at 1024: a segmented clip takes fewer frames per segment beyond that.
MAX_DECODED_FRAMES = 1024


@dataclass
class VideoSegment:
    """``start`` to ``end`` seconds of a clip, with the frames sampled from it."""

    start: float
    end: float
    clip: Clip


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


def segment_clip(ref: str | bytes, seconds: float, sampling: VideoSampling) -> list[VideoSegment]:
    """``ref`` cut into consecutive ``seconds``-long segments (the last one may be shorter), each with up to
    ``sampling.frames`` frames taken at a fixed rate from its start. The clip is decoded once, at that rate."""
    if not seconds > 0:
        raise ValueError(f"segment seconds must be > 0, got {seconds}")
    duration = decode_video(ref, sampling.model_copy(update={"frames": 1})).duration
    rate = sampling.frames / seconds
    if duration * rate > MAX_DECODED_FRAMES:
        rate = MAX_DECODED_FRAMES / duration  # fewer frames per segment rather than an unbounded decode
    total = min(MAX_DECODED_FRAMES, max(1, math.ceil(duration * rate - 1e-9)))
    clip = decode_video(ref, sampling.model_copy(update={"frames": total, "sampling": "fps", "fps": rate}))
    count = max(1, math.ceil(duration / seconds - 1e-6))
    groups: list[list[int]] = [[] for _ in range(count)]
    for i, t in enumerate(clip.times):
        groups[min(count - 1, int(t / seconds + 1e-6))].append(i)
    return [
        VideoSegment(
            start=j * seconds,
            end=min((j + 1) * seconds, duration),
            clip=Clip([clip.frames[i] for i in ids], [clip.times[i] for i in ids], clip.duration, clip.rate),
        )
        for j, ids in enumerate(groups)
        if ids
    ]
