"""What an index is built from: a folder of media files (images, sounds, videos), or any dataset the readers know
(manifest, class folders, WebDataset shards, COCO/Karpathy, ESC-50 ...), turned into a deterministic stream of items
to embed.

The order is deterministic (sorted folder walk, manifest row order) because a resumed build matches embedded
chunks to items by position.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

from polymodal.data.errors import BadSampleLog
from polymodal.data.readers import open_dataset
from polymodal.data.readers.base import embedded_kind, media_kind
from polymodal.data.schema import MediaRef, Sample
from polymodal.index.store import MEDIA_KINDS, Item


@dataclass
class SourceItem:
    item: Item
    ref: MediaRef | None = None  # what to embed, for media items (a path, or bytes from a tar shard)


def file_kind(name: str | os.PathLike | None) -> str | None:
    """The media kind of a file by its extension (``image``, ``audio``, ``video``), or None (hidden files, anything
    else)."""
    return None if name is None else media_kind(name)


def media_file(kind: str, path: str | None) -> str | None:
    """The media kind of an item's file: its own kind for a media item, the file's for a text that describes one."""
    if path is None:
        return None
    return kind if kind in MEDIA_KINDS else file_kind(path)


def _sample_items(sample: Sample, texts: bool, media: Collection[str]) -> Iterator[SourceItem]:
    refs = {kind: sample.reference(kind) for kind in MEDIA_KINDS}
    # Texts point at the file they describe (the image first, as image indexes always did).
    described = next((ref for ref in refs.values() if isinstance(ref, str)), None)
    meta = {"id": sample.id, **sample.metadata}
    if sample.label is not None:
        meta["label"] = sample.label
    if refs["audio"] is None and refs["video"] is not None and embedded_kind("video", media) == "audio":
        refs["audio"], refs["video"] = refs["video"], None  # the clip's sound track
    for kind, ref in refs.items():
        if ref is not None and kind in media:
            path = ref if isinstance(ref, str) else None
            yield SourceItem(Item(kind, path=path, metadata=meta, source=sample.source, row=sample.row), ref)
    if texts:
        for caption in sample.text:
            own = {"id": sample.id}
            yield SourceItem(Item("text", described, caption, own, source=sample.source, row=sample.row))


def iter_items(
    source: str | os.PathLike,
    *,
    texts: bool = False,
    media: Collection[str] = MEDIA_KINDS,
    bad_log: BadSampleLog | None = None,
) -> Iterator[SourceItem]:
    """Items of ``source``: its files of the ``media`` kinds (each item's kind is its modality), and with ``texts``
    its captions too (kind ``text``, path = the file they describe).

    Read by :func:`polymodal.data.readers.open_dataset`: a directory with media files in it is walked recursively
    (a media folder); bad rows go to ``bad_log``; a missing source raises.
    """
    path = Path(source)
    if not path.exists() and "{" not in str(source):
        raise FileNotFoundError(f"{source}: no such file or directory")
    for sample in open_dataset(path, bad_log=bad_log or BadSampleLog()):
        yield from _sample_items(sample, texts, media)
