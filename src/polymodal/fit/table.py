"""A user's table for ``polymodal fit`` / ``predict``: CSV, JSONL or Parquet rows, or a folder of class folders.

Rows stay as read (a missing cell is a missing key); media paths stay as written and resolve against the table's
folder when they are featurized, where a missing or unsafe file becomes a counted bad sample. A row that cannot be
read at all (broken JSON, a malformed CSV line) is kept out and reported with its line.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from polymodal.data.errors import BadSampleError
from polymodal.data.readers.base import PathResolver, media_kind, require_file
from polymodal.data.readers.classfolders import class_folders
from polymodal.data.readers.manifest import csv_header, csv_records, jsonl_records

TABLE_SUFFIXES = (".csv", ".jsonl", ".parquet")
FOLDER_PATH_COLUMN = "path"
FOLDER_LABEL_COLUMN = "label"


@dataclass
class Table:
    """Rows of one table; ``root`` is the folder media paths may not escape, ``base`` (default: the root) the one
    relative paths start from."""

    source: str
    root: Path
    rows: list[dict[str, Any]]
    row_numbers: list[int]  # the 1-based line (CSV/JSONL) or index (Parquet, folders) of each row
    bad: list[BadSampleError] = field(default_factory=list)  # rows that could not be read
    base: Path | None = None
    # The columns a file has, even one empty in every row (a CSV header, a Parquet schema, a JSONL file's keys);
    # None for rows given as dicts, where a key left out is only a missing cell.
    header: list[str] | None = None

    def resolver(self) -> PathResolver:
        return PathResolver(self.root, self.source, base=self.base)

    @property
    def columns(self) -> list[str]:
        """Column names: the header's, then any other in first-seen order."""
        seen = dict.fromkeys(self.header or [])
        for row in self.rows:
            seen.update(dict.fromkeys(row))
        return list(seen)

    def values(self, column: str) -> list[Any]:
        """The column's cell per row, None where missing."""
        return [row.get(column) for row in self.rows]

    def __len__(self) -> int:
        return len(self.rows)

    def subset(self, indices: Iterable[int]) -> Table:
        chosen = list(indices)
        rows, numbers = [self.rows[i] for i in chosen], [self.row_numbers[i] for i in chosen]
        return Table(self.source, self.root, rows, numbers, [], self.base, self.header)


def read_table(path: str | os.PathLike[str]) -> Table:
    """The rows of a ``.csv``, ``.jsonl`` or ``.parquet`` file, or of a folder of class folders (columns
    ``path`` and ``label``). An empty or unreadable file raises :class:`BadSampleError` naming it."""
    location = Path(path)
    if location.is_dir():
        return _class_folder_table(location)
    file = require_file(location)
    suffix = file.suffix.lower()
    if suffix == ".parquet":
        return _parquet_table(file)
    if suffix not in (".csv", ".jsonl"):
        raise BadSampleError(
            f"not a table: expected a folder of class folders or one of {', '.join(TABLE_SUFFIXES)}",
            source=str(file),
            kind="invalid",
        )
    rows, numbers, bad = [], [], []
    for row, record in jsonl_records(file) if suffix == ".jsonl" else csv_records(file):
        if isinstance(record, BadSampleError):
            bad.append(record)
        else:
            rows.append(record)
            numbers.append(row)
    if not rows:
        raise BadSampleError("no readable rows", source=str(file), kind="invalid")
    table = Table(str(file), file.parent, rows, numbers, bad)
    # A JSONL row leaves out a key to say it is missing: only a CSV header says which columns the file has.
    table.header = csv_header(file) if suffix == ".csv" else None
    return table


def rows_table(
    rows: Iterable[Mapping[str, Any]],
    root: str | os.PathLike[str],
    source: str = "<rows>",
    base: str | os.PathLike[str] | None = None,
) -> Table:
    """A table of in-memory rows (the Python API, the server): media paths may not escape ``root`` and relative ones
    start from ``base`` (default: the root)."""
    records = [dict(r) for r in rows]
    numbers = list(range(1, len(records) + 1))
    return Table(source, Path(root), records, numbers, [], None if base is None else Path(base))


def _parquet_table(file: Path) -> Table:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError(f"{file}: reading Parquet needs pyarrow: pip install 'polymodal[fit]'") from None
    try:
        data = pq.read_table(file)
    except Exception as e:  # pyarrow raises its own error types for a truncated or foreign file
        raise BadSampleError(f"unreadable Parquet file: {e}", source=str(file), kind="decode") from None
    rows = [{k: v for k, v in r.items() if v is not None} for r in data.to_pylist()]
    if not rows:
        raise BadSampleError("no rows", source=str(file), kind="invalid")
    return Table(str(file), file.parent, rows, list(range(1, len(rows) + 1)), header=data.column_names)


def _class_folder_table(root: Path) -> Table:
    rows = []
    for name in class_folders(root):
        for folder, _, files in sorted(os.walk(root / name)):
            for file in sorted(files):
                if media_kind(file) is not None:
                    rel = (Path(folder) / file).relative_to(root).as_posix()
                    rows.append({FOLDER_PATH_COLUMN: rel, FOLDER_LABEL_COLUMN: name})
    if not rows:
        raise BadSampleError("no class folder holds an image, audio or video file", source=str(root), kind="invalid")
    header = [FOLDER_PATH_COLUMN, FOLDER_LABEL_COLUMN]
    return Table(str(root), root, rows, list(range(1, len(rows) + 1)), header=header)
