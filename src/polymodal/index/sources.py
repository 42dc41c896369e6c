"""What an index is built from: a folder of images, or any dataset the readers know (manifest, ImageFolder,
WebDataset shards, COCO/Karpathy), turned into a deterministic stream of items to embed.

The order is deterministic (sorted folder walk, manifest row order) because a resumed build matches embedded
chunks to items by position.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from polymodal.data.errors import BadSampleLog
from polymodal.data.readers import open_dataset
from polymodal.data.readers.base import IMAGE_EXTENSIONS
from polymodal.data.schema import MediaRef, Sample
from polymodal.index.store import Item


@dataclass
class SourceItem:
    item: Item
    ref: MediaRef | None = None  # what to decode, for images (a path, or bytes from a tar shard)


def _is_image(name: str) -> bool:
    return not name.startswith(".") and name.rpartition(".")[2].lower() in IMAGE_EXTENSIONS


def _has_loose_images(path: Path) -> bool:
    return path.is_dir() and any(p.is_file() and _is_image(p.name) for p in path.iterdir())


def _walk_images(root: Path) -> Iterator[SourceItem]:
    """Every image file under ``root`` (recursively, sorted, hidden entries skipped)."""
    row = 0
    for dirpath, dirnames, files in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filter(_is_image, files)):
            row += 1
            path = str((Path(dirpath) / name).resolve())
            rel = (Path(dirpath) / name).relative_to(root).as_posix()
            yield SourceItem(Item("image", path=path, metadata={"id": rel}, source=str(root), row=row), path)


def _sample_items(sample: Sample, texts: bool) -> Iterator[SourceItem]:
    path = sample.image if isinstance(sample.image, str) else None
    meta = {"id": sample.id, **sample.metadata}
    if sample.label is not None:
        meta["label"] = sample.label
    if sample.image is not None:
        yield SourceItem(Item("image", path=path, metadata=meta, source=sample.source, row=sample.row), sample.image)
    if texts:
        for caption in sample.text:
            yield SourceItem(
                Item("text", path=path, text=caption, metadata={"id": sample.id}, source=sample.source, row=sample.row)
            )


def iter_items(
    source: str | os.PathLike, *, texts: bool = False, bad_log: BadSampleLog | None = None
) -> Iterator[SourceItem]:
    """Items of ``source``: its images, and with ``texts`` its captions too (kind ``text``, path = their image).

    A directory with image files in it is walked recursively; anything else goes to
    :func:`polymodal.data.readers.open_dataset` (bad rows go to ``bad_log``; a missing source raises).
    """
    path = Path(source)
    if not path.exists() and "{" not in str(source):
        raise FileNotFoundError(f"{source}: no such file or directory")
    if _has_loose_images(path):
        yield from _walk_images(path.resolve())
        return
    for sample in open_dataset(path, bad_log=bad_log or BadSampleLog()):
        yield from _sample_items(sample, texts)
