"""A long clip or recording described a segment at a time: each segment's caption with its start and end, and the
timeline they make, where consecutive segments captioned alike are one span (what happens, and when)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["TimedCaption", "clock", "merge_repeats"]


@dataclass(frozen=True)
class TimedCaption:
    """``caption`` of the ``start`` to ``end`` seconds of a clip or recording."""

    start: float
    end: float
    caption: str

    def as_dict(self) -> dict[str, float | str]:
        return {"start": round(self.start, 3), "end": round(self.end, 3), "caption": self.caption}


def merge_repeats(captions: Iterable[TimedCaption]) -> list[TimedCaption]:
    """Consecutive captions with the same words (case and spacing aside) as one span from the first's start to the
    last's end; the span keeps the first one's text."""
    out: list[TimedCaption] = []
    for item in captions:
        if out and _words(out[-1].caption) == _words(item.caption) and out[-1].end >= item.start - 1e-6:
            out[-1] = TimedCaption(out[-1].start, item.end, out[-1].caption)
        else:
            out.append(item)
    return out


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.lower().split())


def clock(seconds: float) -> str:
    """``m:ss`` (``h:mm:ss`` from an hour), to the tenth of a second when it is not whole."""
    tenths = round(seconds * 10)
    whole, tenth = divmod(tenths, 10)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
    return f"{text}.{tenth}" if tenth else text
