"""One sample schema for every modality.

A reader turns a row of any dataset format into a :class:`Sample`. Media fields hold a
reference (an absolute path, the raw bytes of a tar shard's member, or a :class:`ShardMember` saying where in its
shard they are), not decoded pixels: decoding happens later, in the data pipeline, where bad files are counted.
A modality that a sample lacks is ``None`` (or an empty list), never an error.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from enum import Enum
from pathlib import PurePosixPath
from typing import Any


class ShardChanged(OSError):
    """A shard is not the file its members were listed from (rewritten, replaced, touched): list it again."""


@dataclass(frozen=True, slots=True)
class ShardMember:
    """Where a tar shard holds one member's bytes (``offset`` from the file's start, ``size`` bytes), read when
    needed: a training set of shards keeps these in memory instead of every image, sound and clip. ``shard_bytes``,
    ``shard_mtime_ns`` and ``shard_inode`` are the shard's size, time and file when it was listed: a shard
    rewritten or replaced since is refused (:class:`ShardChanged`) rather than read at offsets that may now hold
    something else."""

    shard: str  # absolute
    offset: int
    size: int
    name: str  # the member's name in the shard: its extension says the format
    shard_bytes: int
    shard_mtime_ns: int
    shard_inode: int

    @property
    def suffix(self) -> str:
        """The member name's last extension, lower case and without its dot (``0001.seg.png`` -> ``png``)."""
        return PurePosixPath(self.name).suffix.lower().lstrip(".")

    def read(self) -> bytes:
        """The member's bytes; OSError when the shard no longer holds them (FileNotFoundError when it is gone)."""
        with open(self.shard, "rb") as f:
            now = os.fstat(f.fileno())
            if (now.st_size, now.st_mtime_ns, now.st_ino) != (self.shard_bytes, self.shard_mtime_ns, self.shard_inode):
                raise ShardChanged(f"{self.shard} changed since it was listed: member {self.name} may have moved")
            f.seek(self.offset)
            data = f.read(self.size)
        if len(data) != self.size:
            raise OSError(f"{self.shard} ends {self.size - len(data):,} bytes into member {self.name}")
        return data

    def __str__(self) -> str:
        return f"{self.shard}:{self.name}"


# A reference to encoded media: a filesystem path (absolute, already resolved against the
# dataset root), the encoded bytes themselves, or where a tar shard holds them.
MediaRef = str | bytes | ShardMember
Label = int | float | str


class Modality(str, Enum):
    IMAGE = "image"
    TEXT = "text"
    AUDIO = "audio"
    VIDEO = "video"


@dataclass(slots=True)
class QA:
    """A question about the sample with one or more reference answers.

    VQAv2 has ten human answers per question; ShapesWorld has one. ``type`` groups questions
    for per-type accuracy (``color``, ``count``, ``yes/no`` ...).
    """

    question: str
    answers: list[str]
    type: str | None = None
    question_id: str | int | None = None

    @property
    def answer(self) -> str:
        """The most frequent reference answer (ties: first seen)."""
        return max(self.answers, key=self.answers.count)


@dataclass(slots=True)
class Statement:
    """A claim about the sample and whether it is true; for fusion classifiers.

    ``type`` groups claims for per-type accuracy (ShapesWorld: ``exists`` (colour or shape edited),
    ``position``, ``count``, ``relation``: what the false claim of each pair got wrong).
    """

    text: str
    label: bool
    type: str | None = None


@dataclass(slots=True)
class Sample:
    id: str
    image: MediaRef | None = None
    text: list[str] = field(default_factory=list)  # captions or other texts; many per sample
    audio: MediaRef | None = None
    video: MediaRef | None = None
    label: Label | list[Label] | None = None
    qa: list[QA] = field(default_factory=list)
    statements: list[Statement] = field(default_factory=list)
    # References of modalities beyond the fields above (any modality with a registered processor), by name.
    media: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    # Where the sample came from, so that every later error can name the file and row.
    source: str | None = None
    row: int | None = None

    def reference(self, modality: str) -> Any:
        """What the sample holds for ``modality`` (its texts for ``text``), or None."""
        if modality == Modality.TEXT:
            return self.text or None
        if modality in (Modality.IMAGE, Modality.AUDIO, Modality.VIDEO):
            return getattr(self, Modality(modality).value)
        return self.media.get(modality)

    def modalities(self) -> set[str]:
        """Names of the modalities the sample has."""
        builtin = [m.value for m in Modality if self.reference(m.value) is not None]
        return set(builtin) | {name for name, ref in self.media.items() if ref is not None}

    def where(self) -> str:
        """``file:row`` (or just the id) for error messages."""
        if self.source is None:
            return f"sample {self.id!r}"
        return f"{self.source}:{self.row}" if self.row is not None else self.source
