"""WebDataset tar shards (uncompressed ``.tar``), read and written with the stdlib ``tarfile`` only.

A sample is the run of consecutive members sharing a key (the member path up to the first
dot of its basename): ``0001.jpg`` + ``0001.txt`` + ``0001.json`` -> one Sample. Members are
read into memory (or, with ``media_in_shard``, media members are left where they are and named by
:class:`~polymodal.data.schema.ShardMember`), never extracted to disk; members named with ``..`` or an absolute
path, and links or devices, are rejected. ``json`` members are records in the manifest sense (``id``,
``label``, ``text``, ``qa``, ``statements``, ``metadata``, other keys -> metadata); ``txt``
is one caption (used when the json has no text) and ``cls`` the label.
"""

from __future__ import annotations

import io
import json
import os
import re
import tarfile
import tempfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict
from pathlib import Path, PurePosixPath
from typing import Any

from polymodal.data.errors import BadSampleError, BadSampleLog
from polymodal.data.readers.base import (
    AUDIO_EXTENSIONS,
    IMAGE_EXTENSIONS,
    MEDIA_EXTENSIONS,
    TEXT_FIELDS,
    VIDEO_EXTENSIONS,
    record_to_sample,
    resolve_log,
)
from polymodal.data.schema import MediaRef, Sample, ShardMember

# A member larger than this is refused rather than read into memory.
DEFAULT_MAX_MEMBER_BYTES = 256 * 1024 * 1024

_BRACE = re.compile(r"\{([^{}]*)\}")

# (reason, kind, field) -> an error naming the shard and the sample being read.
_ErrorFactory = Callable[[str, str, "str | None"], BadSampleError]


def expand_shards(pattern: str | os.PathLike | Iterable[str | os.PathLike]) -> list[str]:
    """Shard paths from a path, a directory (its ``*.tar``), a list, or a brace pattern:
    ``shard-{000000..000009}.tar`` (zero padding kept) or ``{train,val}.tar``."""
    if not isinstance(pattern, (str, os.PathLike)):
        return [p for item in pattern for p in expand_shards(item)]
    text = str(pattern)
    if Path(text).is_dir():
        return sorted(str(p) for p in Path(text).glob("*.tar"))
    match = _BRACE.search(text)
    if match is None:
        return [text]
    head, body, tail = text[: match.start()], match.group(1), text[match.end() :]
    return [p for choice in _brace_choices(body, text) for p in expand_shards(head + choice + tail)]


def _brace_choices(body: str, pattern: str) -> list[str]:
    if ".." in body:
        lo, _, hi = body.partition("..")
        if not (lo.isdigit() and hi.isdigit()) or int(lo) > int(hi):
            raise ValueError(f"bad brace range {{{body}}} in {pattern!r}")
        width = len(lo) if lo.startswith("0") else 0
        return [str(i).zfill(width) for i in range(int(lo), int(hi) + 1)]
    return body.split(",")


def is_shard_pattern(path: str | os.PathLike) -> bool:
    """True for ``*.tar`` paths and brace patterns of them."""
    text = str(path)
    return text.endswith(".tar") and (Path(text).is_file() or _BRACE.search(text) is not None)


def read_shards(
    shards: str | os.PathLike | Iterable[str | os.PathLike],
    strict: bool = False,
    bad_log: BadSampleLog | None = None,
    *,
    max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES,
    media_in_shard: bool = False,
) -> Iterator[Sample]:
    """Samples of every shard in order; media fields hold the members' bytes, or with ``media_in_shard`` where the
    shard holds them (a :class:`ShardMember`, read when decoded: a training set's rows stay small).

    ``Sample.source`` is the shard and ``row`` the 1-based sample index within it. A missing,
    empty or truncated shard is one bad entry (kind ``missing_file``/``truncated``/``corrupt``);
    the samples read before the damage are kept, the one being read is dropped.
    """
    paths = expand_shards(shards)
    return _read_all(paths, resolve_log(strict, bad_log), max_member_bytes, media_in_shard)


def _read_all(paths: list[str], log: BadSampleLog, max_member_bytes: int, media_in_shard: bool) -> Iterator[Sample]:
    for path in paths:
        yield from _ShardReader(path, log, max_member_bytes, media_in_shard).samples()


def split_key(name: str) -> tuple[str, str]:
    """``dir/0001.seg.png`` -> (``dir/0001``, ``seg.png``)."""
    path = PurePosixPath(name)
    stem, _, ext = path.name.partition(".")
    parent = path.parent.as_posix()
    return (stem if parent == "." else f"{parent}/{stem}"), ext.lower()


def _ends_cleanly(f: io.BufferedReader, offset: int) -> bool:
    f.seek(offset)
    block = f.read(tarfile.BLOCKSIZE)
    return len(block) == tarfile.BLOCKSIZE and not block.strip(b"\0")


def _unsafe(name: str) -> bool:
    path = PurePosixPath(name)
    return path.is_absolute() or ".." in path.parts or "\\" in name or "\x00" in name


class _ShardReader:
    def __init__(self, path: str, log: BadSampleLog, max_member_bytes: int, media_in_shard: bool = False) -> None:
        self.path, self.log, self.max_member_bytes = path, log, max_member_bytes
        self.media_in_shard = media_in_shard
        self.stamp = (0, 0, 0)  # the shard's size, time and inode when opened: its ShardMembers check them when read
        self.row = 0

    def _bad(self, reason: str, kind: str, field: str | None = None) -> BadSampleError:
        return BadSampleError(reason, source=self.path, row=self.row or None, field=field, kind=kind)

    def samples(self) -> Iterator[Sample]:
        key: str | None = None
        group: dict[str, bytes | ShardMember] = {}
        try:
            with open(self.path, "rb") as f:
                listed = os.fstat(f.fileno())
                if listed.st_size == 0:
                    raise self._bad("shard is empty (0 bytes)", "empty_file")
                self.stamp = (listed.st_size, listed.st_mtime_ns, listed.st_ino)
                # Members are read lazily, in order, into memory (media left in the shard when asked); nothing is
                # extracted.
                with tarfile.open(fileobj=f, mode="r:") as tar:
                    for info in tar:
                        member = self._member(tar, info)
                        if member is None:
                            continue
                        mkey, ext, data = member
                        if mkey != key:
                            if group:
                                yield from self._flush(key, group)
                            key, group = mkey, {}
                            self.row += 1
                        group[ext] = data
                    # tarfile stops silently at a cut or garbled header after the first
                    # member; only the end-of-archive block proves the last sample complete.
                    if not _ends_cleanly(f, tar.offset):
                        reason = "no end-of-archive block after this sample: shard truncated or corrupt"
                        raise self._bad(reason, "truncated")
            if group:
                yield from self._flush(key, group)
        except FileNotFoundError:
            self.log.record(self._bad("shard not found", "missing_file"))
        except BadSampleError as e:
            self.log.record(e)
        except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
            # The group being read may be missing members: drop it with the shard's tail.
            kind = "truncated" if any(w in str(e) for w in ("unexpected end", "truncated")) else "corrupt"
            self.log.record(self._bad(f"cannot read tar: {e}", kind))

    def _member(self, tar: tarfile.TarFile, info: tarfile.TarInfo) -> tuple[str, str, bytes | ShardMember] | None:
        """(key, extension, bytes or where they are) of a usable member; None for directories and rejects."""
        if info.isdir():
            return None
        name = info.name[2:] if info.name.startswith("./") else info.name
        problem = None
        if _unsafe(name):
            problem = ("member name escapes the shard (absolute or '..')", "unsafe_path")
        elif not info.isfile():
            problem = ("member is a link or device, not a regular file", "unsafe_path")
        elif info.size > self.max_member_bytes:
            problem = (f"member is {info.size:,} bytes, over {self.max_member_bytes:,}", "too_large")
        if problem is not None:
            self.log.record(self._bad(problem[0], problem[1], field=name))
            return None
        key, ext = split_key(name)
        if not ext:
            return None  # no extension: not part of any sample (e.g. a README)
        if self.media_in_shard and _media_kind(ext) is not None and not info.issparse():  # sparse: not stored whole
            return key, ext, ShardMember(os.path.abspath(self.path), info.offset_data, info.size, name, *self.stamp)
        handle = tar.extractfile(info)
        assert handle is not None  # regular files always have a handle
        return key, ext, handle.read()

    def _flush(self, key: str | None, group: dict[str, bytes | ShardMember]) -> Iterator[Sample]:
        try:
            record = _group_record(group, self._bad)
            yield record_to_sample(record, source=self.path, row=self.row, default_id=str(key), media=self._media)
        except BadSampleError as e:
            self.log.record(e)

    def _media(self, value: Any, field: str) -> MediaRef:
        if not isinstance(value, (bytes, ShardMember)):
            raise self._bad(f"media in a shard must be a member, got {type(value).__name__}", "invalid", field)
        return value


def _media_kind(ext: str) -> str | None:
    """image, audio or video for a member's extension (``seg.png`` is still an image); None for other members."""
    last = ext.rpartition(".")[2]
    return next((kind for kind, known in MEDIA_EXTENSIONS.items() if last in known), None)


def _group_record(group: dict[str, bytes | ShardMember], bad: _ErrorFactory) -> dict[str, Any]:
    """Members of one sample -> a record for :func:`record_to_sample`; only media members may be ShardMembers."""
    record: dict[str, Any] = {}
    text = {ext: data for ext, data in group.items() if isinstance(data, bytes)}
    if "json" in text:
        try:
            parsed = json.loads(text["json"].decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise bad(f"invalid JSON member: {e}", "bad_json", "json") from None
        if not isinstance(parsed, dict):
            raise bad(f"JSON member must be an object, got {type(parsed).__name__}", "invalid", "json")
        record.update(parsed)
    # Media come from members only (a path inside the json would point outside the shard);
    # the first member of each kind wins.
    media: dict[str, bytes | ShardMember] = {}
    for ext, data in group.items():
        if (kind := _media_kind(ext)) is not None:
            media.setdefault(kind, data)
    record.update(media)
    if "txt" in text and not any(field in record for field in TEXT_FIELDS):
        record["text"] = _utf8(text["txt"], "txt", bad)
    if "cls" in text:
        label = _utf8(text["cls"], "cls", bad).strip()
        record["label"] = int(label) if re.fullmatch(r"-?\d+", label) else label
    return record


def _utf8(data: bytes, field: str, bad: _ErrorFactory) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise bad(f"invalid UTF-8 at byte {e.start}", "bad_encoding", field) from None


# --- writing --------------------------------------------------------------------------------

_MAGIC = (
    (b"\x89PNG", "png"),
    (b"\xff\xd8", "jpg"),
    (b"GIF8", "gif"),
    (b"BM", "bmp"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
    (b"fLaC", "flac"),
    (b"OggS", "ogg"),
    (b"ID3", "mp3"),
    (b"\xff\xfb", "mp3"),  # MPEG audio frames without an ID3 tag
    (b"\xff\xf3", "mp3"),
    (b"\xff\xf2", "mp3"),
    (b"\x1a\x45\xdf\xa3", "mka"),  # Matroska and WebM: audio-only as mka, a clip as mkv
    (b"\x1a\x45\xdf\xa3", "mkv"),
)
# Formats told by bytes past the start: (offset, bytes, extension); the first whose extension the field knows wins.
_MAGIC_AT = ((8, b"WEBP", "webp"), (8, b"WAVE", "wav"), (8, b"AVI ", "avi"), (4, b"ftyp", "m4a"), (4, b"ftyp", "mp4"))


def _media_member(ref: MediaRef, known: frozenset[str], default: str) -> tuple[str, bytes]:
    """(extension, bytes) of a media reference: a path's or shard member's suffix when the field knows it, else the
    bytes' magic (an MP4 sound track is ``m4a`` and a clip ``mp4``), else ``default``."""
    if isinstance(ref, (str, ShardMember)):
        ext = ref.suffix if isinstance(ref, ShardMember) else Path(ref).suffix.lower().lstrip(".")
        data = ref.read() if isinstance(ref, ShardMember) else Path(ref).read_bytes()
        if ext in known:
            return "jpg" if ext == "jpeg" else ext, data
        ref = data
    found = [ext for magic, ext in _MAGIC if ref.startswith(magic)]
    found += [ext for at, magic, ext in _MAGIC_AT if ref[at : at + len(magic)] == magic]
    return next((ext for ext in found if ext in known), default), ref


def sample_members(sample: Sample) -> dict[str, bytes]:
    """The tar members (extension -> bytes) that :func:`read_shards` turns back into ``sample``."""
    members: dict[str, bytes] = {}
    for ref, known, default in (
        (sample.image, IMAGE_EXTENSIONS, "jpg"),
        (sample.audio, AUDIO_EXTENSIONS, "wav"),
        (sample.video, VIDEO_EXTENSIONS, "mp4"),
    ):
        if ref is not None:
            ext, data = _media_member(ref, known, default)
            members[ext] = data
    meta: dict[str, Any] = {"id": sample.id}
    if len(sample.text) == 1:
        members["txt"] = sample.text[0].encode("utf-8")
    elif sample.text:
        meta["text"] = sample.text
    # Integer labels go to .cls, the WebDataset convention; anything else would not survive
    # the round trip through text ("3" would come back as 3), so it goes into the json.
    if isinstance(sample.label, int) and not isinstance(sample.label, bool):
        members["cls"] = str(sample.label).encode()
    elif sample.label is not None:
        meta["label"] = sample.label
    if sample.qa:
        meta["qa"] = [asdict(q) for q in sample.qa]
    if sample.statements:
        meta["statements"] = [asdict(s) for s in sample.statements]
    if sample.metadata:
        meta["metadata"] = sample.metadata
    try:
        members["json"] = json.dumps(meta, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as e:
        raise ValueError(f"sample {sample.id!r}: cannot be written as JSON: {e}") from None
    return members


def _key(sample_id: str, used: set[str]) -> str:
    # Dots and slashes would change how the key is split back out; the real id is in the json.
    key = re.sub(r"[^A-Za-z0-9_-]", "_", sample_id) or "sample"
    unique, n = key, 1
    while unique in used:
        unique, n = f"{key}_{n}", n + 1
    used.add(unique)
    return unique


def write_shards(samples: Iterable[Sample], out_pattern: str | os.PathLike, max_count: int = 10_000) -> list[str]:
    """Write samples to ``out_pattern % shard_index`` (e.g. ``out/shard-%06d.tar``), at most
    ``max_count`` per shard. Returns the shard paths written.

    Each shard is written to a temporary file in the same directory and renamed into place
    when complete, so a reader never sees a half-written shard and a crash leaves none.
    """
    pattern = str(out_pattern)
    try:
        if pattern % 0 == pattern % 1:
            raise TypeError
    except TypeError:
        raise ValueError(f"out_pattern needs one %d-style field, e.g. shard-%06d.tar; got {pattern!r}") from None
    if max_count < 1:
        raise ValueError(f"max_count must be >= 1, got {max_count}")
    written: list[str] = []
    batch: list[Sample] = []
    for sample in samples:
        batch.append(sample)
        if len(batch) == max_count:
            written.append(_write_one(batch, pattern % len(written)))
            batch = []
    if batch:
        written.append(_write_one(batch, pattern % len(written)))
    return written


def _write_one(samples: list[Sample], path: str) -> str:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f, tarfile.open(fileobj=f, mode="w", format=tarfile.PAX_FORMAT) as tar:
            used: set[str] = set()
            for sample in samples:
                key = _key(sample.id, used)
                for ext, data in sample_members(sample).items():
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size, info.mode, info.mtime = len(data), 0o644, 0  # mtime 0: reproducible shards
                    tar.addfile(info, io.BytesIO(data))
        os.replace(tmp, target)
    except BaseException:
        os.unlink(tmp)
        raise
    return str(target)
