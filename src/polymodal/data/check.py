"""Validate a whole dataset before training on it: read every sample, decode every image.

:func:`check_dataset` shares one :class:`BadSampleLog` between the reader (structure: JSON,
fields, paths) and the decoder (content: truncated, bombs, not an image), so the report
counts both. Audio and video decode too (video: the frames a default processor samples).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from polymodal.data.audio import CHECK_RATE, decode_audio
from polymodal.data.errors import BadSampleError, BadSampleLog
from polymodal.data.image import DEFAULT_MAX_PIXELS, decode_image
from polymodal.data.readers import open_dataset_with_format
from polymodal.data.schema import Sample
from polymodal.data.video import decode_video
from polymodal.progress import ProgressReporter

MAX_EXAMPLES = 20  # bad samples listed in the report; all of them go to the log file
REPORTED = ("image", "text", "audio", "video", "label", "qa", "statements")  # counted per good sample


@dataclass
class CheckReport:
    path: str
    format: str
    samples: int = 0  # samples that passed every check
    bad: int = 0  # rows/members/files skipped, reader and decoder together
    modalities: dict[str, int] = field(default_factory=dict)  # image/text/audio/video/label/qa/statements
    bad_by_kind: dict[str, int] = field(default_factory=dict)
    bad_examples: list[dict[str, Any]] = field(default_factory=list)
    duplicate_ids: int = 0
    bad_samples_path: str | None = None

    @property
    def total(self) -> int:
        return self.samples + self.bad

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "total": self.total}


def check_dataset(
    path: str | os.PathLike,
    strict: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    progress: bool = True,
    bad_samples: str | os.PathLike | None = None,
    **reader_kw: Any,
) -> CheckReport:
    """Read and decode every sample of ``path`` (any format :func:`~polymodal.data.readers.open_dataset` knows).

    Strict: raise the first :class:`BadSampleError`. Lenient: count, and append every bad
    sample to ``bad_samples`` (a fresh file each run) when given. A whole-file error (missing
    or unparsable manifest) raises in both modes. ``progress`` shows a bar on stderr.
    """
    if bad_samples is not None:
        Path(bad_samples).unlink(missing_ok=True)  # the file describes this run only
    log = BadSampleLog(bad_samples, strict=strict)
    fmt, samples = open_dataset_with_format(path, strict, log, **reader_kw)
    report = CheckReport(path=str(path), format=fmt)
    counts: Counter[str] = Counter()
    ids: set[str] = set()
    for sample in _with_progress(samples, progress):
        try:
            _check_media(sample, max_pixels)
        except BadSampleError as e:
            log.record(e)
            continue
        report.samples += 1
        counts.update(_present(sample))
        if sample.id in ids:
            report.duplicate_ids += 1
        ids.add(sample.id)
    summary = log.summary()
    report.bad, report.bad_by_kind, report.bad_samples_path = summary.total, summary.by_kind, summary.path
    report.modalities = {k: counts.get(k, 0) for k in REPORTED}
    report.bad_examples = [e.to_dict() for e in log.examples[:MAX_EXAMPLES]]
    return report


def _present(sample: Sample) -> list[str]:
    names = sorted(sample.modalities())
    return names + [k for k in ("label", "qa", "statements") if getattr(sample, k) not in (None, [])]


def _check_media(sample: Sample, max_pixels: int) -> None:
    if sample.image is not None:
        decode_image(sample.image, max_pixels=max_pixels, source=sample.source, row=sample.row)
    if sample.audio is not None:
        decode_audio(sample.audio, CHECK_RATE, source=sample.source, row=sample.row)
    if sample.video is not None:
        decode_video(sample.video, source=sample.source, row=sample.row)


def _with_progress(samples: Iterator[Sample], enabled: bool) -> Iterator[Sample]:
    """``samples``, counted on stderr as they go: readers stream, so the total is known only at the end."""
    if not enabled:
        yield from samples
        return
    with ProgressReporter("checked samples:", None) as progress:
        for done, sample in enumerate(samples, 1):
            yield sample
            progress.update(done)
