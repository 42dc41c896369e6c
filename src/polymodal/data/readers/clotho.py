"""Clotho: ``clotho_captions_{split}.csv`` (file_name, caption_1 .. caption_5) naming clips in ``{split}/``
(``development``, ``validation``, ``evaluation``) beside it. Each row becomes one audio Sample holding its
captions."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

from polymodal.data.errors import BadSampleError, BadSampleLog
from polymodal.data.readers.base import PathResolver, require_file, resolve_log
from polymodal.data.readers.caption_csv import csv_header, csv_rows, first_folder
from polymodal.data.schema import Sample

CAPTIONS = tuple(f"caption_{i}" for i in range(1, 6))
COLUMNS = ("file_name", *CAPTIONS)
_NAME = re.compile(r"clotho_captions_(\w+)\.csv")


def is_clotho(path: str | os.PathLike) -> bool:
    """True for a CSV file with Clotho's columns."""
    return Path(path).suffix.lower() == ".csv" and set(COLUMNS) <= set(csv_header(path))


def default_audio_dir(csv_file: str | os.PathLike) -> Path:
    """``{split}/`` beside ``clotho_captions_{split}.csv`` (else the CSV's own folder)."""
    path = Path(csv_file)
    match = _NAME.fullmatch(path.name)
    return first_folder(*([path.parent / match.group(1)] if match else []), path.parent)


def read_clotho(
    csv_file: str | os.PathLike,
    audio_dir: str | os.PathLike | None = None,
    strict: bool = False,
    bad_log: BadSampleLog | None = None,
) -> Iterator[Sample]:
    """One Sample per row (id: the file name), its non-empty captions in ``text``; a row whose audio file is
    missing, or with no caption, is a bad sample naming file, row and field."""
    require_file(csv_file)  # a missing CSV fails here, not at the first sample
    audio = Path(audio_dir) if audio_dir is not None else default_audio_dir(csv_file)
    return _samples(Path(csv_file), audio, resolve_log(strict, bad_log))


def _samples(path: Path, audio: Path, log: BadSampleLog) -> Iterator[Sample]:
    resolver = PathResolver(audio, str(path))
    for row, record in csv_rows(path, COLUMNS):
        name = record["file_name"]
        captions = [record[c] for c in CAPTIONS if record[c]]
        try:
            if not captions:
                raise BadSampleError("no caption", source=str(path), row=row, field="caption_1", sample_id=name)
            ref = resolver.resolve(name, "file_name", row, sample_id=name)
        except BadSampleError as e:
            log.record(e)
            continue
        yield Sample(id=name, audio=ref, text=captions, source=str(path), row=row)
