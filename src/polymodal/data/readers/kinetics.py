"""Kinetics-style CSVs: ``label,youtube_id,time_start,time_end,split`` (the test CSV may lack ``label``), one row per
clip cut from a YouTube video. Downloads name a clip ``{youtube_id}_{start:06d}_{end:06d}`` or by its id alone, in
any video format, in the video folder or a sub-folder of it (per class or split).

The video folder defaults to the first of ``{csv stem}/``, ``videos/`` beside the CSV, else the CSV's folder."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from polymodal.data.errors import BadSampleError, BadSampleLog
from polymodal.data.readers.base import VIDEO_EXTENSIONS, PathResolver, require_file, resolve_log
from polymodal.data.readers.caption_csv import csv_header, csv_rows, files_by_stem, first_folder
from polymodal.data.schema import Sample

COLUMNS = ("youtube_id", "time_start", "time_end")


def is_kinetics(path: str | os.PathLike) -> bool:
    """True for a CSV file with Kinetics' columns."""
    return Path(path).suffix.lower() == ".csv" and set(COLUMNS) <= set(csv_header(path))


def default_video_dir(csv_file: str | os.PathLike) -> Path:
    base = Path(csv_file).parent
    return first_folder(base / Path(csv_file).stem, base / "videos", base)


def read_kinetics(
    csv_file: str | os.PathLike,
    video_dir: str | os.PathLike | None = None,
    strict: bool = False,
    bad_log: BadSampleLog | None = None,
) -> Iterator[Sample]:
    """One video Sample per row (id ``{youtube_id}_{start:06d}_{end:06d}``) labelled with its class, the id, times
    and split in ``metadata``. A row whose clip is missing or whose times are not numbers is a bad sample."""
    require_file(csv_file)
    videos = Path(video_dir) if video_dir is not None else default_video_dir(csv_file)
    return _samples(Path(csv_file), videos, resolve_log(strict, bad_log))


def _samples(path: Path, videos: Path, log: BadSampleLog) -> Iterator[Sample]:
    files = files_by_stem(videos, VIDEO_EXTENSIONS, recursive=True)
    resolver = PathResolver(videos, str(path))
    for row, record in csv_rows(path, COLUMNS):
        youtube_id = record["youtube_id"]
        try:
            try:
                start, end = float(record["time_start"]), float(record["time_end"])
            except ValueError:
                raise BadSampleError(
                    f"time_start {record['time_start']!r} / time_end {record['time_end']!r} are not numbers",
                    source=str(path),
                    row=row,
                    field="time_start",
                    sample_id=youtube_id,
                ) from None
            clip_id = f"{youtube_id}_{int(start):06d}_{int(end):06d}"
            name = files.get(clip_id) or files.get(youtube_id) if youtube_id else None
            if name is None:
                raise BadSampleError(
                    f"no video named {clip_id} or {youtube_id!r} in {videos}",
                    source=str(path),
                    row=row,
                    field="youtube_id",
                    sample_id=clip_id,
                    kind="missing_file",
                )
            ref = resolver.resolve(name, "video", row, sample_id=clip_id)
        except BadSampleError as e:
            log.record(e)
            continue
        yield Sample(
            id=clip_id,
            video=ref,
            label=record.get("label") or None,
            metadata={"youtube_id": youtube_id, "time_start": start, "time_end": end, "split": record.get("split")},
            source=str(path),
            row=row,
        )
