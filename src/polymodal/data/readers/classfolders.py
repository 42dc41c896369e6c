"""Class folders: ``root/<class name>/**/*.{jpg,...,wav,...,mp4,avi,...}`` -> Sample(image=, audio= or video=,
label=class name). UCF101/HMDB-style clip folders read the same way, or through a split list (``split_list``:
UCF101's ``trainlist01.txt``/``testlist01.txt``, lines ``<class>/<clip> [class number]``).

``metadata['class_index']`` numbers the classes by sorted folder name, as torchvision does;
pass ``classes`` to pin the mapping (a validation split that lacks a class must not shift the
indices of the others).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from polymodal.data.errors import BadSampleError, BadSampleLog
from polymodal.data.readers.base import PathResolver, media_kind, require_file, resolve_log
from polymodal.data.schema import Sample


def class_folders(root: str | os.PathLike) -> list[str]:
    """Sorted names of the visible sub-directories of ``root``: the classes."""
    return sorted(p.name for p in Path(root).iterdir() if p.is_dir() and not p.name.startswith("."))


def is_class_folders(root: str | os.PathLike) -> bool:
    """True if ``root`` has at least one class folder holding an image, audio or video file."""
    base = Path(root)
    if not base.is_dir():
        return False
    for name in class_folders(base):
        for _, _, files in os.walk(base / name):
            if any(media_kind(f) for f in files):
                return True
    return False


def read_class_folders(
    root: str | os.PathLike,
    strict: bool = False,
    bad_log: BadSampleLog | None = None,
    *,
    classes: Sequence[str] | None = None,
    split_list: str | os.PathLike | None = None,
) -> Iterator[Sample]:
    """One Sample per image, audio or video file under a class folder (its extension says which); ids are
    ``<class>/<relative path>``. With ``split_list`` only the files it names, in its order (a missing one is a
    bad sample naming the list's line); its classes come from ``classInd.txt`` beside it when there is one.

    Files that are neither by extension (README.txt, .DS_Store) are ignored, not bad.
    Symlinks that lead outside ``root`` are bad samples (kind ``unsafe_path``).
    """
    base = Path(root)
    if not base.is_dir():
        raise BadSampleError("not a directory", source=str(base), kind="missing_file")
    if split_list is not None:
        listed = require_file(split_list)
        index_file = listed.parent / "classInd.txt"
        if classes is None and index_file.is_file():
            classes = [line.split()[1] for line in index_file.read_text().splitlines() if len(line.split()) == 2]
        names = list(classes) if classes is not None else class_folders(base)
        return _listed(base, listed, names, resolve_log(strict, bad_log))
    names = list(classes) if classes is not None else class_folders(base)
    return _samples(base, names, resolve_log(strict, bad_log))


def _listed(base: Path, listed: Path, names: list[str], log: BadSampleLog) -> Iterator[Sample]:
    index = {name: i for i, name in enumerate(names)}
    resolver = PathResolver(base, str(listed))
    for row, line in enumerate(listed.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        rel = line.split()[0]
        name = rel.split("/")[0]
        try:
            if media_kind(rel) is None or name not in index or "/" not in rel:
                why = "not a media file" if media_kind(rel) is None else f"class {name!r} is not one of {len(index)}"
                raise BadSampleError(f"{rel}: {why}", source=str(listed), row=row, field="path", sample_id=rel)
            yield _sample(resolver, rel, name, index[name], row, str(listed))
        except BadSampleError as e:
            log.record(e)


def _samples(base: Path, names: list[str], log: BadSampleLog) -> Iterator[Sample]:
    index = {name: i for i, name in enumerate(names)}
    resolver = PathResolver(base, str(base))
    row = 0
    for name in names:
        folder = base / name
        # os.walk does not descend into symlinked directories; a linked *file* is still
        # resolved and checked against the root below.
        for dirpath, dirnames, files in os.walk(folder):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for filename in sorted(f for f in files if media_kind(f)):
                row += 1
                rel = (Path(dirpath) / filename).relative_to(base).as_posix()
                try:
                    yield _sample(resolver, rel, name, index[name], row, None)
                except BadSampleError as e:
                    log.record(e)


def _sample(resolver: PathResolver, rel: str, label: str, class_index: int, row: int, listed: str | None) -> Sample:
    """The Sample of the media file ``rel`` (its kind by extension); its source is the split list that names it (with
    the line), else the file itself."""
    field = media_kind(rel)
    assert field is not None  # callers pass media files only
    path = resolver.resolve(rel, field, row, sample_id=rel)
    return Sample(
        id=rel,
        **{field: path},
        label=label,
        metadata={"class_index": class_index},
        source=listed or path,
        row=row if listed else None,
    )
