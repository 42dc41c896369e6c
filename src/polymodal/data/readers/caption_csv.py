"""What the caption and clip readers (AudioCaps, Clotho, Kinetics, MSR-VTT) share: CSV rows with a checked header,
and the media files of a folder by name without extension (downloads name a clip by its id, in any format)."""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from polymodal.data.errors import BadSampleError
from polymodal.data.readers.base import AUDIO_EXTENSIONS, file_error, require_file


def csv_header(path: str | os.PathLike) -> list[str]:
    """The column names of a CSV file ([] when it has none or is not UTF-8 text)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            return next(csv.reader(f), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return []


def csv_rows(path: str | os.PathLike, columns: Sequence[str]) -> Iterator[tuple[int, dict[str, str]]]:
    """(line, record) of each row of a CSV file whose header holds ``columns``; a wrong header or a file that is not
    UTF-8 raises naming the file."""
    p = require_file(path)
    try:
        with open(p, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            missing = [c for c in columns if c not in (reader.fieldnames or [])]
            if missing:
                raise BadSampleError(f"header lacks {missing}", source=str(p), row=1, kind="bad_header")
            for record in reader:
                yield reader.line_num, {k: (v or "").strip() for k, v in record.items() if k is not None}
    except UnicodeDecodeError as e:
        raise file_error(f"not valid UTF-8 ({e.reason} at byte {e.start})", p, "bad_encoding") from None


def audio_files(folder: str | os.PathLike) -> dict[str, str]:
    """File name without extension -> file name, for the audio files directly in ``folder``."""
    return files_by_stem(folder, AUDIO_EXTENSIONS)


def files_by_stem(folder: str | os.PathLike, extensions: frozenset[str], recursive: bool = False) -> dict[str, str]:
    """File name without extension -> path relative to ``folder``, for the files with one of ``extensions`` directly
    in it (or anywhere below, sorted, with ``recursive``)."""
    base = Path(folder)
    if not base.is_dir():
        return {}
    out: dict[str, str] = {}
    for dirpath, dirnames, files in os.walk(base):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")) if recursive else []
        for name in sorted(files):
            if Path(name).suffix.lower().lstrip(".") in extensions:
                out.setdefault(Path(name).stem, (Path(dirpath) / name).relative_to(base).as_posix())
    return out


def first_folder(*candidates: Path) -> Path:
    """The first of ``candidates`` that is a directory, else the last one."""
    return next((c for c in candidates if c.is_dir()), candidates[-1])
