"""JSONL and CSV manifests: one sample per row, media paths relative to the manifest file.

JSONL is read line by line in binary so that one line of invalid UTF-8 or broken JSON costs that row only; a
malformed CSV row (a stray quote, a missing cell) costs its own line only. CSV cells are strings: cells that start
with ``[`` or ``{`` are parsed as JSON (lists of captions, qa, statements, label dicts) and ``label`` cells that look
like numbers become numbers (``"nan"`` is a NaN label, which is rejected).
"""

from __future__ import annotations

import csv
import json
import os
from collections import deque
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any, TextIO

from polymodal.data.errors import BadSampleError, BadSampleLog
from polymodal.data.readers.base import PathResolver, Where, record_to_sample, require_file, resolve_log
from polymodal.data.schema import Sample

MANIFEST_SUFFIXES = (".jsonl", ".csv")


def read_manifest(
    path: str | os.PathLike,
    strict: bool = False,
    bad_log: BadSampleLog | None = None,
    *,
    root: str | os.PathLike | None = None,
    label_key: str | None = None,
    check_files: bool = True,
    checked_fields: Collection[str] | None = None,
) -> Iterator[Sample]:
    """Samples of a ``.jsonl`` or ``.csv`` manifest.

    Media paths are relative to the manifest's directory; ``root`` is the directory no media
    path may escape (default: the manifest's directory).
    A row without ``id`` gets ``<manifest stem>-<row>``. ``label_key`` picks the entry of a
    dict label that becomes ``Sample.label`` (the whole dict is always in
    ``metadata['label']``). ``check_files=False`` skips the per-row existence check; ``checked_fields`` limits it to
    those media fields (the modalities a model reads: a missing file in another column loses no row).
    A missing or empty manifest raises at once, in both modes.
    """
    manifest = require_file(path)
    suffix = manifest.suffix.lower()
    if suffix not in MANIFEST_SUFFIXES:
        raise ValueError(f"{manifest}: not a manifest (expected one of {', '.join(MANIFEST_SUFFIXES)})")
    rows = jsonl_records(manifest) if suffix == ".jsonl" else csv_records(manifest)
    resolver = PathResolver(
        root if root is not None else manifest.parent,
        str(manifest),
        base=manifest.parent,
        check_exists=check_files,
        checked_fields=checked_fields,
    )
    return _samples(rows, manifest, resolver, resolve_log(strict, bad_log), label_key)


def _samples(
    rows: Iterator[tuple[int, dict[str, Any] | BadSampleError]],
    manifest: Path,
    resolver: PathResolver,
    log: BadSampleLog,
    label_key: str | None,
) -> Iterator[Sample]:
    for row, record in rows:
        try:
            if isinstance(record, BadSampleError):
                raise record
            yield record_to_sample(
                record,
                source=str(manifest),
                row=row,
                default_id=f"{manifest.stem}-{row}",
                media=resolver.media(row),
                label_key=label_key,
            )
        except BadSampleError as e:
            log.record(e)


def jsonl_records(path: Path) -> Iterator[tuple[int, dict[str, Any] | BadSampleError]]:
    """(row, record or the error that row raised), 1-based line numbers; blank lines skipped."""
    src = str(path)
    with open(path, "rb") as f:
        for row, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                # Without its newline, so that a JSON error's column is on this line, not at the start of the next.
                line = raw.rstrip(b"\r\n").decode("utf-8")
            except UnicodeDecodeError as e:
                yield row, Where(src, row).error(None, f"invalid UTF-8 at byte {e.start}", "bad_encoding")
                continue
            if row == 1:
                line = line.lstrip("\ufeff")  # a BOM from Windows editors is not an error
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                yield row, Where(src, row).error(None, f"invalid JSON: {e.msg} at column {e.colno}", "bad_json")
                continue
            if not isinstance(record, dict):
                yield row, Where(src, row).error(None, f"expected a JSON object per line, got {type(record).__name__}")
                continue
            yield row, record


def csv_header(path: Path) -> list[str]:
    """A CSV file's column names, as written (its records, as read, leave out empty cells)."""
    with open(path, encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
        return next(csv.reader(f), [])


def csv_records(path: Path) -> Iterator[tuple[int, dict[str, Any] | BadSampleError]]:
    """(row, record or error) with the 1-based line where each CSV row starts.

    A malformed row (a stray quote, a cell count unlike the header's) is a bad row at its first line, and the lines
    after its first are read again: a stray quote must not join the rest of the file into one cell. One that closes
    cleanly on a later line into a row of the header's width cannot be told from a multi-line cell. Memory stays
    bounded by csv's field size limit (131,072 characters), where an open quote is given up on.
    """
    src = str(path)
    # surrogateescape keeps invalid bytes as lone surrogates so that the bad row, not the
    # whole file, is rejected.
    with open(path, encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
        lines = _RereadableLines(f)
        reader = csv.reader(lines, strict=True)
        try:
            header = next(reader)
        except (StopIteration, csv.Error):
            yield 1, Where(src, 1).error(None, "missing or unreadable CSV header")
            return
        bad_header = next((h for h in header if _has_surrogates(h)), None)
        if bad_header is not None or len(set(header)) != len(header):
            yield 1, Where(src, 1).error(None, "header has invalid UTF-8 or repeated columns")
            return
        while True:
            lines.start_row()
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as e:
                problem = _CSV_ERRORS.get(str(e), f"malformed CSV: {e}")
            else:
                if not any(c.strip() for c in cells):
                    continue
                # A one-line row short of cells leaves its last ones empty (as a spreadsheet may write it); a
                # longer one, or a short one over several lines (a stray quote), is a bad row.
                if len(cells) == len(header) or (len(cells) < len(header) and lines.last == lines.first):
                    yield lines.first, _csv_record(header, cells, src, lines.first)
                    continue
                problem = f"{len(cells)} cells, the header has {len(header)}"
            row, last = lines.first, lines.last
            if last > row:
                problem += (
                    f"; the row runs on to line {last} (a stray quote?), so the lines after this one are read again"
                )
                lines.reread_after_first()
                reader = csv.reader(lines, strict=True)  # a fresh parser, in no quoted field
            yield row, Where(src, row).error(None, problem, "bad_csv")


# csv's messages for the malformed rows a user writes, in the user's words.
_CSV_ERRORS = {"unexpected end of data": "unterminated quote: a quoted field never closes"}


class _RereadableLines:
    """The physical lines of a text file for ``csv.reader``, numbered from 1, keeping those of the row being
    read so that a malformed row's lines after its first can be read again."""

    def __init__(self, file: TextIO) -> None:
        self._file = file
        self._next_number = 1
        self._pending: deque[tuple[int, str]] = deque()  # lines to read again, before the file's next
        self._row: list[tuple[int, str]] = []  # (number, text) of the current row's lines

    def __iter__(self) -> _RereadableLines:
        return self

    def __next__(self) -> str:
        if self._pending:
            line = self._pending.popleft()
        else:
            line = (self._next_number, next(self._file))  # StopIteration at the end of the file
            self._next_number += 1
        self._row.append(line)
        return line[1]

    def start_row(self) -> None:
        self._row.clear()

    @property
    def first(self) -> int:
        """The line the current row starts on."""
        return self._row[0][0]

    @property
    def last(self) -> int:
        """The line the current row ends on."""
        return self._row[-1][0]

    def reread_after_first(self) -> None:
        """Hand out the current row's lines after its first again, then carry on with the file."""
        self._pending.extendleft(reversed(self._row[1:]))
        self._row.clear()


def _csv_record(header: list[str], cells: list[str], src: str, row: int) -> dict[str, Any] | BadSampleError:
    at = Where(src, row)
    record: dict[str, Any] = {}
    for name, cell in zip(header, cells):
        if _has_surrogates(cell):
            return at.error(name, "invalid UTF-8", "bad_encoding")
        if cell == "":
            continue  # an empty cell is a missing field
        if cell[:1] in "[{":
            try:
                record[name] = json.loads(cell)
            except json.JSONDecodeError as e:
                return at.error(name, f"invalid JSON in cell: {e.msg}", "bad_json")
        elif name == "label":
            record[name] = _number_or_text(cell)
        else:
            record[name] = cell
    return record


def _number_or_text(cell: str) -> int | float | str:
    for convert in (int, float):
        try:
            return convert(cell)
        except ValueError:
            pass
    return cell


def _has_surrogates(text: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in text)
