"""An index directory: FAISS vectors + SQLite items + ``index.json``, replaced as a whole on every change.

Layout::

    INDEX/
      index.json      model (name, identity, embed_dim), metric, type and parameters, counts, format version
      index.faiss     faiss.write_index of the vectors, keyed by the item ids
      items.sqlite    id -> item (kind = modality, path or text, metadata, source row); tombstones
      skipped.jsonl   inputs that could not be embedded (path + reason), one JSON object a line
      .work/          only while a build or add is unfinished: embedded chunks to resume from

Every change (build, add, remove) writes a complete new directory beside the old one and renames it into place
(:func:`polymodal.fsutil.atomic_directory`), so a reader, or a crash, only ever sees a whole index.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import os
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from polymodal.fsutil import atomic_directory, json_line, write_atomic
from polymodal.index import store
from polymodal.index.kinds import (
    IndexParams,
    _faiss,
    apply_search_params,
    can_remove,
    is_ivf,
    rescore_for_fetch,
    threads,
)
from polymodal.index.store import Hit

META_FILE = "index.json"
FAISS_FILE = "index.faiss"
ITEMS_FILE = "items.sqlite"
SKIPPED_FILE = "skipped.jsonl"
WORK_DIR = ".work"
FORMAT_VERSION = 1
METRIC = "inner_product"  # on unit vectors: cosine similarity
SMALL_BATCH = 20  # below this many queries faiss searches them one thread each (its BLAS threshold)


class IndexFormatError(ValueError):
    """The directory is not a (complete, readable) index."""


class ModelMismatchError(ValueError):
    """The index was built with one model and is being queried or extended with another."""


@dataclass
class IndexMeta:
    model: str  # what polymodal.load() takes to embed queries the same way
    model_name: str
    identity: str  # the model's content hash: vectors of another model are not comparable
    embed_dim: int
    type: str  # concrete FAISS type: flat | hnsw | ivf | ivfpq | ivfpq-rerank
    params: dict[str, Any]
    segment_seconds: float | None = None  # videos indexed as segments of this length (None: one item per clip)
    metric: str = METRIC
    counts: dict[str, int] = field(default_factory=dict)
    vectors: int = 0  # in FAISS, including tombstoned ones
    tombstones: int = 0
    next_id: int = 0
    updated: str = ""
    version: int = FORMAT_VERSION
    tuning: dict[str, Any] | None = None  # what the build measured and chose; None in indexes built before tuning

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_model(meta: IndexMeta, identity: str, name: str, where: str | os.PathLike) -> None:
    """Refuse a model other than the one the index was built with (its vectors live in another space)."""
    if identity != meta.identity:
        raise ModelMismatchError(
            f"{where}: the index was built with model {meta.model_name} (identity {meta.identity[:12]}), "
            f"not {name} (identity {identity[:12]}); rebuild the index or use the index's model"
        )


def check_model_files(meta: IndexMeta, model: str | os.PathLike, where: str | os.PathLike) -> None:
    """:func:`check_model` before ``model`` loads, where its files already tell its identity (a model directory):
    another model is refused at once rather than after a long load. Where they do not, loading it checks."""
    from polymodal.backends import model_identity

    try:
        identity = model_identity(model)
    except (OSError, ValueError):  # no model there: loading it says what is wrong
        return
    if identity is not None:
        check_model(meta, identity, str(model), where)


def _hit(item_id: int, score: float, found: dict[int, store.Item]) -> Hit:
    item = found[item_id]
    return Hit(item_id, float(score), item.kind, item.path, item.text, item.metadata)


class VectorIndex:
    """An open index: search, remove, info. Build or extend one with :mod:`polymodal.index.build`."""

    def __init__(
        self,
        path: Path,
        meta: IndexMeta,
        index: Any,
        conn: sqlite3.Connection,
        meta_stamp: tuple[int, int, int] | None = None,
    ) -> None:
        self.path = path
        self.meta = meta
        self.meta_stamp = meta_stamp  # which index.json was opened: a settings-only save checks it is still there
        self.faiss_index = index
        self.conn = conn
        self.params = IndexParams.from_dict(meta.params)
        self.tombstones = store.tombstones(conn)

    # -- opening ------------------------------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | os.PathLike) -> VectorIndex:
        path = Path(path)
        meta_path = path / META_FILE
        if not meta_path.is_file():
            if (path / WORK_DIR).is_dir():
                raise IndexFormatError(
                    f"{path}: the build of this index did not finish; rerun the same `polymodal index build` "
                    "to resume it"
                )
            raise IndexFormatError(f"{path}: not an index directory (no {META_FILE})")
        try:
            meta_stamp = _stamp(meta_path)
            data = json.loads(meta_path.read_text())
            known = {f.name for f in dataclasses.fields(IndexMeta)}
            meta = IndexMeta(**{k: v for k, v in data.items() if k in known})  # fields added later are optional
        except (json.JSONDecodeError, TypeError, AttributeError) as e:
            raise IndexFormatError(f"{meta_path}: unreadable index metadata ({e})") from None
        if meta.version > FORMAT_VERSION:
            raise IndexFormatError(
                f"{path}: index format {meta.version} is newer than this polymodal ({FORMAT_VERSION})"
            )
        index = _faiss().read_index(str(path / FAISS_FILE))
        conn = store.connect(path / ITEMS_FILE)
        opened = cls(path, meta, index, conn, meta_stamp)
        apply_search_params(index, meta.type, opened.params)
        return opened

    def check_model(self, identity: str, name: str) -> None:
        check_model(self.meta, identity, name, self.path)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> VectorIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading ------------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return sum(self.meta.counts.values())

    def items(self, ids: Sequence[int]) -> dict[int, store.Item]:
        return store.get(self.conn, ids)

    def vectors(self, ids: Sequence[int]) -> np.ndarray:
        """(N, D) stored vectors (exact for all types but ivfpq, whose are decoded approximations)."""
        return (
            np.stack([self.faiss_index.reconstruct(int(i)) for i in ids])
            if ids
            else np.zeros((0, self.meta.embed_dim), np.float32)
        )

    def search(
        self,
        queries: np.ndarray,
        k: int = 10,
        *,
        kind: str | None = None,
        ef_search: int | None = None,
        nprobe: int | None = None,
    ) -> list[list[Hit]]:
        """Per query row of ``queries`` (Q, D), the ``k`` best live items (of ``kind``, if given), best first.

        Removed items (hnsw, ivfpq-rerank) and items of another kind are still in FAISS, so the search over-fetches
        (k + tombstones first, then doubling) and filters until every query has k hits or the index is exhausted;
        an IVF type whose visited cells ran out visits twice as many.
        """
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)  # (Q, D)
        if queries.shape[1] != self.meta.embed_dim:
            raise ValueError(f"query vectors have dimension {queries.shape[1]}, the index holds {self.meta.embed_dim}")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if kind is not None and kind not in store.ITEM_KINDS:
            raise ValueError(f"kind must be one of {', '.join(store.ITEM_KINDS)}, got {kind!r}")
        probe = nprobe or self.params.nprobe
        cells = int(_faiss().extract_index_ivf(self.faiss_index).nlist) if is_ivf(self.meta.type) else 0
        total = int(self.faiss_index.ntotal)
        live = self.meta.counts.get(kind, 0) if kind else len(self)
        want = min(k, live)
        fetch = min(total, k + len(self.tombstones))
        gone: set[int] = set()  # ids whose items are not in SQLite, found on the way
        while True:
            # With a kind filter the extra rows are mostly other kinds, not tombstones: every fetched row is re-scored.
            self._set_knobs(ef_search, probe, k if kind is None else fetch, fetch)
            with _threads_for(len(queries)):
                scores, ids = self.faiss_index.search(queries, max(fetch, 1))  # (Q, fetch) each
            picked, found = self._hits(ids, kind, k, gone)
            short = [row for row, columns in enumerate(picked) if len(columns) < want]
            if not short:
                break
            if probe < cells and bool((ids[short] < 0).any()):  # a short row's visited cells held fewer than asked
                probe = cells if fetch >= total else min(cells, 2 * probe)
                continue
            if fetch >= total:
                break
            fetch = min(total, fetch * 2)
        return [
            [_hit(int(ids[row, col]), scores[row, col], found) for col in columns] for row, columns in enumerate(picked)
        ]

    def _hits(
        self, ids: np.ndarray, kind: str | None, k: int, gone: set[int]
    ) -> tuple[list[list[int]], dict[int, store.Item]]:
        """Per row of ``ids`` ((Q, fetch), -1 for none), the columns of its first ``k`` live items (of ``kind``), and
        those items. Only they are read from SQLite, so a fetch padded by tombstones reads no more rows; an id
        without an item joins ``gone``."""
        while True:
            picked = self._live_columns(ids, kind, k, gone)
            wanted = {int(ids[row, col]) for row, columns in enumerate(picked) for col in columns}
            found = self.items(sorted(wanted))
            if len(found) == len(wanted):
                return picked, found
            gone |= wanted - found.keys()

    def _live_columns(self, ids: np.ndarray, kind: str | None, k: int, gone: set[int]) -> list[list[int]]:
        """Per row of ``ids``, the columns of its first ``k`` ids neither tombstoned nor ``gone`` (and of ``kind``,
        if given)."""
        candidates = {int(i) for i in ids.ravel() if i >= 0} - self.tombstones - gone
        kinds = store.kinds(self.conn, sorted(candidates)) if kind is not None else None
        picked = []
        for row in ids.tolist():
            columns: list[int] = []
            for col, i in enumerate(row):
                if i in candidates and (kinds is None or kinds.get(i) == kind):
                    columns.append(col)
                    if len(columns) == k:
                        break
            picked.append(columns)
        return picked

    def _set_knobs(self, ef_search: int | None, nprobe: int, k: int, fetch: int) -> None:
        """This search's knobs, for ``fetch`` results of which ``k`` are wanted."""
        params = IndexParams.from_dict(self.params.to_dict())
        params.ef_search = ef_search or params.ef_search
        params.nprobe = nprobe
        apply_search_params(self.faiss_index, self.meta.type, params)
        rescore_for_fetch(self.faiss_index, self.meta.type, params.rerank, min(k, fetch), fetch)

    def info(self) -> dict[str, Any]:
        info = self.meta.to_dict()
        info["path"] = str(self.path)
        info["items"] = len(self)
        skipped = self.path / SKIPPED_FILE
        info["skipped"] = sum(1 for _ in skipped.open()) if skipped.is_file() else 0
        return info

    # -- changing -----------------------------------------------------------------------------------------------
    def remove(self, targets: Sequence[int | str]) -> tuple[list[int], list[int | str]]:
        """Remove items by id (int) or by path (str: every item at that path). Returns (removed ids, not found)."""
        ids = [int(t) for t in targets if isinstance(t, int)]
        existing = set(store.existing_ids(self.conn, ids))
        missing: list[int | str] = [i for i in ids if i not in existing]
        by_path: set[int] = set()
        for raw in [t for t in targets if isinstance(t, str)]:
            # The path as named (a link is an item of its own), else where it leads (indexes that stored that).
            named = os.path.abspath(os.path.expanduser(raw))
            matched = store.ids_for_paths(self.conn, [named]) or store.ids_for_paths(
                self.conn, [str(Path(named).resolve())]
            )
            if not matched:
                missing.append(raw)
            by_path.update(matched)
        doomed = sorted(existing | by_path)
        if not doomed:
            return [], missing
        removable = can_remove(self.meta.type)
        if removable:
            self.faiss_index.remove_ids(np.asarray(doomed, dtype=np.int64))
        else:
            self.tombstones.update(doomed)
        self.commit(lambda conn: store.delete(conn, doomed, tombstone=not removable))
        return doomed, missing

    def set_search_params(self, params: IndexParams, tuning: dict[str, Any] | None) -> None:
        """Search with ``params`` (only the knob may differ from the built index's) and keep ``tuning`` as the
        record, in memory; :meth:`save_settings` or :meth:`commit` writes them."""
        self.params = params
        self.meta.params = params.to_dict()
        self.meta.tuning = tuning
        apply_search_params(self.faiss_index, self.meta.type, params)

    def save_settings(self) -> None:
        """Write ``index.json`` alone (the vectors and items are unchanged), atomically; refused when another
        process changed the index since it was opened, rather than pairing this metadata with its vectors."""
        meta_path = self.path / META_FILE
        if _stamp(meta_path) != self.meta_stamp:
            raise IndexFormatError(f"{self.path}: the index was changed by another process meanwhile; run again")
        self.meta.updated = _now()
        write_atomic(meta_path, json.dumps(self.meta.to_dict(), indent=2))
        self.meta_stamp = _stamp(meta_path)

    def commit(self, edit: Callable[[sqlite3.Connection], None], skipped: Sequence[dict[str, Any]] = ()) -> None:
        """Write the in-memory FAISS index and a copy of the items with ``edit`` applied as the new directory."""
        write_index(self.path, self.meta, self.faiss_index, edit, base=self.conn, skipped=skipped)
        self.conn.close()
        self.conn = store.connect(self.path / ITEMS_FILE)
        self.tombstones = store.tombstones(self.conn)
        self.meta_stamp = _stamp(self.path / META_FILE)


@contextlib.contextmanager
def _threads_for(n_queries: int) -> Iterator[None]:
    """One OpenMP thread for a handful of queries: faiss parallelises over queries, so a single query gains
    nothing from more threads, and on a busy machine waiting for a descheduled one cost 16 ms instead of 0.3
    (benchmarks/index_search.py). The setting is per calling thread in OpenMP, so concurrent servers are safe."""
    if n_queries >= SMALL_BATCH:
        yield
        return
    with threads(1):
        yield


def write_index(
    path: Path,
    meta: IndexMeta,
    index: Any,
    edit: Callable[[sqlite3.Connection], None],
    *,
    base: sqlite3.Connection | None = None,
    skipped: Sequence[dict[str, Any]] = (),
) -> None:
    """Atomically (re)write the index directory at ``path``: the items of ``base`` with ``edit`` applied, the
    FAISS index, the skipped log (old lines + ``skipped``) and ``index.json`` with fresh counts.

    The previous directory (with any ``.work/`` inside) is replaced as a whole.
    """
    old_skipped = (path / SKIPPED_FILE).read_text(encoding="utf-8") if (path / SKIPPED_FILE).is_file() else ""
    with atomic_directory(path) as tmp:
        conn = store.connect(tmp / ITEMS_FILE)
        if base is not None:
            base.backup(conn)
            store.allow_all_kinds(conn)
        edit(conn)
        conn.commit()
        meta.counts = store.counts(conn)
        meta.tombstones = len(store.tombstones(conn))
        conn.close()
        meta.vectors = int(index.ntotal)
        meta.updated = _now()
        _faiss().write_index(index, str(tmp / FAISS_FILE))
        lines = "".join(json_line(s) for s in skipped)
        if old_skipped or lines:
            (tmp / SKIPPED_FILE).write_text(old_skipped + lines, encoding="utf-8")
        (tmp / META_FILE).write_text(json.dumps(meta.to_dict(), indent=2))


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _stamp(path: Path) -> tuple[int, int, int]:
    """Which file ``path`` is: every change writes a new one (a new inode and modification time)."""
    stat = path.stat()
    return stat.st_ino, stat.st_mtime_ns, stat.st_size
