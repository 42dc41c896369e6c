"""The SQLite side of an index: integer id -> what was embedded (a media file or a text), plus tombstones.

FAISS stores only vectors and 64-bit ids; everything a search result shows comes from here. Tombstones are ids
removed from an index type that cannot delete vectors (HNSW): search drops them from its results.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# An item's kind is its modality. Media kinds are embedded from a file (or shard bytes); text from its string.
MEDIA_KINDS = ("image", "audio", "video")
ITEM_KINDS = ("image", "text", "audio", "video")
# Every index reports these counts, even at zero; other kinds appear once an index holds them.
ALWAYS_COUNTED = ("image", "text")
_ALLOWED = ", ".join(f"'{k}'" for k in ITEM_KINDS)

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ({_ALLOWED})),
    path TEXT,          -- media file (absolute), or the file a text describes; NULL for shard bytes
    text TEXT,          -- the text, for kind = 'text'
    metadata TEXT NOT NULL,
    source TEXT,        -- the manifest / folder / shard the item came from
    row INTEGER         -- its row there
);
CREATE INDEX IF NOT EXISTS items_path ON items (path);
CREATE TABLE IF NOT EXISTS tombstones (id INTEGER PRIMARY KEY);
"""


@dataclass
class Item:
    """One embedded thing: a media file of its ``kind`` (``path``) or a text (``text``; ``path`` is the file it
    describes, if any). A segment of a video carries its ``start`` and ``end`` seconds in ``metadata``."""

    kind: str
    path: str | None = None
    text: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    source: str | None = None
    row: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Item:
        return cls(**data)


@dataclass
class Hit:
    """A search result: the item's id and fields, and its score (cosine similarity, higher is closer)."""

    id: int
    score: float
    kind: str
    path: str | None
    text: str | None
    metadata: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def connect(path: str | Path) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path))
    conn.executescript(_SCHEMA)
    return conn


def allow_all_kinds(conn: sqlite3.Connection) -> None:
    """Rebuild an items table whose CHECK predates a kind (an image index gaining sounds); SQLite cannot alter a
    constraint in place, so the rows are copied into a table made from the current schema."""
    (sql,) = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'items'").fetchone()
    if _ALLOWED in sql:
        return
    conn.execute("ALTER TABLE items RENAME TO items_old")
    conn.executescript(_SCHEMA)
    conn.execute("INSERT INTO items SELECT id, kind, path, text, metadata, source, row FROM items_old")
    conn.execute("DROP TABLE items_old")  # drops its path index too; the schema creates it again
    conn.executescript(_SCHEMA)


def insert(conn: sqlite3.Connection, ids: Sequence[int], items: Sequence[Item]) -> None:
    conn.executemany(
        "INSERT INTO items (id, kind, path, text, metadata, source, row) VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            (
                int(i),
                it.kind,
                it.path,
                it.text,
                json.dumps(it.metadata, ensure_ascii=False, default=str),
                it.source,
                it.row,
            )
            for i, it in zip(ids, items)
        ],
    )


def _chunks(values: Sequence[Any], size: int = 900) -> Iterable[Sequence[Any]]:
    # SQLite limits bound parameters per statement (999 in old builds).
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _select_in(conn: sqlite3.Connection, columns: str, key: str, values: Sequence[Any]) -> Iterable[tuple[Any, ...]]:
    """Rows of ``SELECT columns FROM items WHERE key IN values``, a chunk of values per statement."""
    for part in _chunks(list(values)):
        yield from conn.execute(f"SELECT {columns} FROM items WHERE {key} IN ({','.join('?' * len(part))})", part)


def get(conn: sqlite3.Connection, ids: Sequence[int]) -> dict[int, Item]:
    rows = _select_in(conn, "id, kind, path, text, metadata, source, row", "id", [int(i) for i in ids])
    return {row[0]: Item(row[1], row[2], row[3], json.loads(row[4]), row[5], row[6]) for row in rows}


def kinds(conn: sqlite3.Connection, ids: Sequence[int]) -> dict[int, str]:
    """id -> kind of those ``ids`` that are items (without reading their other columns)."""
    return dict(_select_in(conn, "id, kind", "id", [int(i) for i in ids]))


def existing_ids(conn: sqlite3.Connection, ids: Sequence[int]) -> list[int]:
    return sorted(get(conn, ids))


def ids_for_paths(conn: sqlite3.Connection, paths: Sequence[str]) -> list[int]:
    """Ids of every item at these paths (a media file and the texts that describe it)."""
    return sorted(row[0] for row in _select_in(conn, "id", "path", paths))


def delete(conn: sqlite3.Connection, ids: Sequence[int], *, tombstone: bool) -> None:
    """Drop the items; with ``tombstone`` also remember the ids, because their vectors stay in the index."""
    for part in _chunks([int(i) for i in ids]):
        marks = ",".join("?" * len(part))
        conn.execute(f"DELETE FROM items WHERE id IN ({marks})", part)
        if tombstone:
            conn.executemany("INSERT OR IGNORE INTO tombstones (id) VALUES (?)", [(i,) for i in part])


def tombstones(conn: sqlite3.Connection) -> set[int]:
    return {r[0] for r in conn.execute("SELECT id FROM tombstones")}


def counts(conn: sqlite3.Connection) -> dict[str, int]:
    found = Counter(dict(conn.execute("SELECT kind, COUNT(*) FROM items GROUP BY kind")))
    return {kind: found.get(kind, 0) for kind in ITEM_KINDS if kind in ALWAYS_COUNTED or found.get(kind)}


def all_ids(conn: sqlite3.Connection) -> list[int]:
    return [r[0] for r in conn.execute("SELECT id FROM items ORDER BY id")]
