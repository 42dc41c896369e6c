"""Example clips as frame strips: :data:`STRIP_FRAMES` frames sampled uniformly over the clip by
:func:`polymodal.data.video.decode_video` (only those frames are decoded), each a PNG thumbnail of at most
:data:`STRIP_PX` a side with its time, decoded once per file.

Size budget, as for sound clips: the report embeds at most :data:`MAX_REPORT_STRIP_BYTES` of strips in all, counted
per use, since HTML repeats a strip at every place it is shown (docs/reports.md has the sizes of typical strips).
Past it a clip is named with a note that says why. Decoding is bounded like any sample's
(:class:`~polymodal.data.video.VideoSampling`), with a shorter timeout: a report does not wait a minute for one clip.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from polymodal.data.errors import BadSampleError
from polymodal.data.video import VideoSampling, decode_video
from polymodal.report.blocks import FrameStrip
from polymodal.report.budget import Budget
from polymodal.report.thumbnails import path_slug, thumbnail

STRIP_FRAMES = 8
STRIP_PX = 64
MAX_REPORT_STRIP_BYTES = 4 * 1024 * 1024
TIMEOUT_SECONDS = 20.0


class FrameStrips:
    """Path -> :class:`FrameStrip` cache (a clip shown in many rows is decoded once) that also keeps the report's
    running total of embedded strip bytes."""

    def __init__(
        self, frames: int = STRIP_FRAMES, size: int = STRIP_PX, max_total: int = MAX_REPORT_STRIP_BYTES
    ) -> None:
        self.sampling = VideoSampling(frames=frames, sampling="uniform", timeout_seconds=TIMEOUT_SECONDS)
        self.size = size
        self.budget = Budget(max_total)  # strip bytes handed out, counted per use
        self._cache: dict[str, tuple[FrameStrip | None, str | None]] = {}

    def get(self, path: str) -> tuple[FrameStrip | None, str | None]:
        """(strip, None), or (None, reason naming the file) when it is missing or not a decodable video. The strip
        carries its frames while the budget lasts, and says why not otherwise."""
        if path not in self._cache:
            self._cache[path] = self._make(path)
        strip, note = self._cache[path]
        if strip is None or self.budget.take(sum(len(frame.png) for frame in strip.frames)):
            return strip, note
        return replace(strip, frames=[], times=[], note=self.budget.spent_note("frames", "frame strips")), None

    def _make(self, path: str) -> tuple[FrameStrip | None, str | None]:
        try:
            clip = decode_video(path, self.sampling)
        except BadSampleError as e:
            return None, f"{path}: {e.reason}"
        except ImportError as e:  # PyAV is an extra; the report still renders without it
            return None, f"{path}: {e}"
        name, slug = Path(path).name, path_slug("vid", path)
        frames = [
            thumbnail(frame, self.size, f"{slug}-{i}", f"{name} at {t:.2f} s")
            for i, (frame, t) in enumerate(zip(clip.frames, clip.times))
        ]
        return FrameStrip(slug, name, path, clip.duration, frames, clip.times), None
