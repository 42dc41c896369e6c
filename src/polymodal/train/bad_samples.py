"""A run's record of bad samples: each one once, however many epochs and evaluations meet it, a resume included."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from polymodal.data.errors import BadSampleError, BadSampleLog, BadSampleSummary
from polymodal.fsutil import json_line, read_json_lines, write_atomic

BAD_SAMPLES_FILE = "bad_samples.jsonl"


def sample_identity(record: Mapping[str, Any]) -> tuple[Any, ...]:
    """Which bad sample a record (``BadSampleError.to_dict()``) is about: its source, row and field (its id too when
    it has no row). The reason may differ from one epoch to the next (a random frame of a broken clip)."""
    row = record.get("row")
    return record.get("source"), row, record.get("field"), record.get("id") if row is None else None


def read_bad_samples(path: Path) -> list[dict[str, Any]]:
    """The records of a bad-samples file; a line cut short by a kill is left out."""
    return read_json_lines(path)


class RunBadSampleLog(BadSampleLog):
    """A :class:`BadSampleLog` that records each bad sample once (by :func:`sample_identity`), knowing those the
    run's file already holds: a resumed run does not record them again, a fresh one (``fresh``) starts the file."""

    def __init__(self, path: Path, strict: bool = False, fresh: bool = True) -> None:
        super().__init__(path, strict)
        if fresh:
            path.unlink(missing_ok=True)
        self.seen = {sample_identity(r) for r in read_bad_samples(path)}

    def record(self, error: BadSampleError) -> None:
        if not self.strict:
            key = sample_identity(error.to_dict())
            with self._lock:
                if key in self.seen:
                    return
                self.seen.add(key)
        super().record(error)

    def finish(self) -> BadSampleSummary:
        """The run's bad samples counted from its file, which DataLoader workers (each with a copy of this log) append
        to as well; duplicates from two workers meeting one sample are removed from the file."""
        assert self.path is not None  # given to __init__
        unique: dict[tuple[Any, ...], dict[str, Any]] = {}
        records = read_bad_samples(self.path)
        for record in records:
            unique.setdefault(sample_identity(record), record)
        if len(unique) < len(records):
            write_atomic(self.path, "".join(json_line(r) for r in unique.values()))
        kinds = Counter(str(r.get("kind", "invalid")) for r in unique.values())
        return BadSampleSummary(len(unique), dict(kinds), str(self.path) if unique else None)


def bad_samples_note(summary: BadSampleSummary | None) -> str | None:
    """'skipped 3 bad samples (decode 2, truncated 1): see RUN/bad_samples.jsonl', or None when there were none."""
    if summary is None or not summary.total:
        return None
    kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(summary.by_kind.items(), key=lambda kv: (-kv[1], kv[0])))
    plural = "s" if summary.total != 1 else ""
    return f"skipped {summary.total} bad sample{plural} ({kinds}): see {summary.path}"
