"""Bad input: one error type that names the file, the row and the field, and a log of
skipped samples for lenient runs.

Strict mode raises :class:`BadSampleError` at the first problem. Lenient mode (the default
for training) hands the same error to a :class:`BadSampleLog`, which counts it, appends it
to ``bad_samples.jsonl`` and lets the run go on.
"""

from __future__ import annotations

import io
import os
import stat
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from polymodal.data.schema import ShardChanged, ShardMember
from polymodal.fsutil import json_line


class BadSampleError(ValueError):
    """A sample (or one field of it) cannot be used.

    ``source`` is the file the sample came from (manifest, annotation JSON, tar shard or the
    media file itself), ``row`` its 1-based line or index there, ``field`` the offending field.
    """

    def __init__(
        self,
        reason: str,
        *,
        source: str | os.PathLike | None = None,
        row: int | None = None,
        field: str | None = None,
        sample_id: str | None = None,
        kind: str = "invalid",
    ) -> None:
        self.reason = reason
        self.source = str(source) if source is not None else None
        self.row = row
        self.field = field
        self.sample_id = sample_id
        self.kind = kind  # short category for summaries: missing_file, bad_json, decode ...
        super().__init__(self._format())

    def _format(self) -> str:
        where = self.source or "<input>"
        if self.row is not None:
            where += f", row {self.row}"
        if self.field is not None:
            where += f", field {self.field!r}"
        return f"{where}: {self.reason}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "row": self.row,
            "field": self.field,
            "id": self.sample_id,
            "kind": self.kind,
            "reason": self.reason,
        }


@dataclass
class BadSampleSummary:
    total: int
    by_kind: dict[str, int]
    path: str | None


class BadSampleLog:
    """Counts skipped samples and appends each to a JSONL file (when given a path).

    Thread-safe, because DataLoader-free decoding may happen in a thread pool. The file is
    opened in append mode per record so that a killed run keeps every line written so far.
    """

    def __init__(self, path: str | os.PathLike | None = None, strict: bool = False) -> None:
        self.path = Path(path) if path is not None else None
        self.strict = strict
        self.counts: Counter[str] = Counter()
        self.by_field: Counter[str] = Counter()  # the column (image, audio ...) of each bad sample that names one
        self.examples: list[BadSampleError] = []
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        # Spawned DataLoader workers get a pickled copy: everything but the lock (which cannot be pickled).
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def record(self, error: BadSampleError) -> None:
        """Strict: raise. Lenient: count, keep for the summary, append to the file."""
        if self.strict:
            raise error
        with self._lock:
            self.counts[error.kind] += 1
            if error.field is not None:
                self.by_field[error.field] += 1
            if len(self.examples) < 1000:
                self.examples.append(error)
            if self.path is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with open(self.path, "a", encoding="utf-8") as f:
                    f.write(json_line(error.to_dict()))

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> BadSampleSummary:
        return BadSampleSummary(
            total=self.total,
            by_kind=dict(self.counts),
            path=str(self.path) if self.path is not None and self.total else None,
        )


def describe_ref(ref: object) -> str:
    """A media reference as an error names it: the path, or what was given instead of one."""
    if isinstance(ref, (str, os.PathLike)):
        return os.fspath(ref)
    if isinstance(ref, (bytes, bytearray, memoryview)):
        return f"<{len(ref)} bytes>"
    if isinstance(ref, ShardMember):
        return str(ref)
    return f"<{type(ref).__name__}>"


def media_errors(ref: object, source: str | None, row: int | None, field: str) -> Callable[[str, str], BadSampleError]:
    """``bad(reason, kind)``: a BadSampleError about ``ref`` (a path, a shard's member or encoded bytes) naming the
    manifest ``source`` and ``row`` when given (and the reason the file or member), else the file itself."""
    named = isinstance(ref, (str, os.PathLike, ShardMember))
    where = source if source is not None else describe_ref(ref)

    def bad(reason: str, kind: str) -> BadSampleError:
        if source is not None and named:
            reason = f"{ref}: {reason}"
        return BadSampleError(reason, source=where, row=row, field=field, kind=kind)

    return bad


def path_problem(path: Path) -> tuple[str, str] | None:
    """Why ``path`` is no file to read, as (reason, kind), found with one ``stat`` and without opening it (a FIFO
    or a device would block or never end), or None for a regular non-empty file."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return "no such file", "missing_file"
    except OSError as e:  # permissions, a symlink loop, a name too long
        return f"cannot read file ({e.strerror})", "unreadable"
    if stat.S_ISDIR(info.st_mode):
        return "a directory, not a file", "unreadable"
    if not stat.S_ISREG(info.st_mode):  # a FIFO or a device (/dev/zero) exists but is no file to decode
        return "not a regular file", "unreadable"
    if info.st_size == 0:
        return "file is empty (0 bytes)", "empty_file"
    return None


def open_media(ref: object, bad: Callable[[str, str], BadSampleError], expected: str = "a path or bytes") -> Any:
    """A decoder's handle on ``ref``: the file's path, or the bytes (given, or read from their shard) as a file
    object; missing, empty, unreadable or other references raise ``bad``."""
    if isinstance(ref, (str, os.PathLike)):
        path = Path(ref)
        if (problem := path_problem(path)) is not None:
            raise bad(*problem)
        return path
    if isinstance(ref, ShardMember):
        try:
            ref = ref.read()
        except FileNotFoundError:
            raise bad("the shard is gone", "missing_file") from None
        except PermissionError as e:
            raise bad(f"cannot read the shard ({e.strerror})", "unreadable") from None
        except ShardChanged as e:
            raise bad(f"{e}; start the run again to list it anew", "changed") from None
        except OSError as e:  # cut short
            raise bad(f"cannot read the member from its shard: {e}", "truncated") from None
    if isinstance(ref, (bytes, bytearray, memoryview)):
        if len(ref) == 0:
            raise bad("empty bytes", "empty_file")
        return io.BytesIO(bytes(ref))
    raise bad(f"expected {expected}, got {type(ref).__name__}", "invalid")
