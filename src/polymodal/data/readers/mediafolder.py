"""A folder of media files (photos, recordings, clips; sub-folders too) with no labels or captions: one Sample per
image, sound or clip, its kind by extension, its id the path under the folder. A folder with such files at its top
level is read this way (class folders keep their files one level down). A link keeps its own path."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from polymodal.data.errors import BadSampleError
from polymodal.data.readers.base import media_kind
from polymodal.data.schema import Sample


def is_media_folder(root: str | os.PathLike) -> bool:
    """True if ``root`` is a directory with an image, sound or clip file directly in it."""
    base = Path(root)
    return base.is_dir() and any(p.is_file() and media_kind(p.name) for p in base.iterdir())


def read_media_folder(root: str | os.PathLike) -> Iterator[Sample]:
    """Every media file under ``root`` (recursively, sorted, hidden entries skipped), as the index and ``data
    check`` take a folder; its source is the folder, its row its position."""
    base = Path(root)
    if not base.is_dir():
        raise BadSampleError("not a directory", source=str(base), kind="missing_file")
    base = base.resolve()
    row = 0
    for dirpath, dirnames, files in os.walk(base):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(files):
            kind = media_kind(name)
            if kind is None:
                continue
            row += 1
            path = os.path.join(dirpath, name)
            rel = Path(path).relative_to(base).as_posix()
            yield Sample(id=rel, **{kind: path}, source=str(base), row=row)
