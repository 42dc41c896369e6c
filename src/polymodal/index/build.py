"""Build or extend an index from a source, resumably.

Embedding is the slow part, so it is done in chunks of ``chunk_size`` items that are saved as they finish:
``INDEX/.work/chunk-000007.npy`` (the vectors) and then ``chunk-000007.json`` (the items and the skipped
inputs), each written to a temporary name and renamed, the JSON last, so a chunk exists whole or not at all.
A build killed at any point (Ctrl-C, SIGKILL, power loss) and rerun with the same arguments skips the chunks that
exist and embeds the rest; the FAISS index is built from all chunks at the end and the finished directory
replaces the work directory atomically. ``work.json`` records what the chunks are of (source, model identity,
chunk size, item count): if any of it changed, the old chunks are discarded rather than mixed in.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from polymodal.api import Model, load
from polymodal.backends import DEFAULT_MODEL
from polymodal.chunking import batched
from polymodal.data.errors import BadSampleError, BadSampleLog
from polymodal.data.readers.base import embedded_kind
from polymodal.fsutil import read_json_lines, write_atomic
from polymodal.index import store
from polymodal.index.kinds import IndexParams
from polymodal.index.retune import remeasure_if_grown
from polymodal.index.sources import SourceItem, iter_items
from polymodal.index.store import Item
from polymodal.index.tuning import DEFAULT_TUNING, ReportFn, TuningOptions, build_tuned
from polymodal.index.vector_index import META_FILE, WORK_DIR, IndexMeta, VectorIndex, write_index

T = TypeVar("T")
SEGMENTED = ("video", "audio")  # what --segment-seconds cuts into timed segments
DEFAULT_CHUNK_SIZE = 1024
ProgressFn = Callable[[int, int], None]  # (items finished so far, total items)
ChunkHook = Callable[[int], None]  # called with the chunk number after each chunk is saved


@dataclass
class BuildResult:
    path: Path
    added: int  # items embedded into the index by this call
    skipped: int  # inputs that could not be embedded (see INDEX/skipped.jsonl)
    skipped_by_kind: dict[str, int]
    already_indexed: int  # items `add` left out because the index holds them
    chunks: int
    resumed_chunks: int  # chunks found finished from an interrupted earlier run
    seconds: float
    type: str
    items: int  # items in the index now
    skipped_examples: list[dict[str, Any]] = field(default_factory=list)
    tuning: dict[str, Any] | None = None  # what build measured and chose (see polymodal.index.tuning)
    not_embedded: dict[str, int] = field(default_factory=dict)  # files of kinds the model has no tower for, by kind

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["path"] = str(self.path)
        return out


@dataclass
class _Embedded:
    vectors: np.ndarray  # (N, D)
    items: list[Item]
    skipped: list[dict[str, Any]]
    chunks: int
    resumed: int
    excluded: int
    not_embedded: dict[str, int] = field(default_factory=dict)


def model_reference(model: str | os.PathLike | None) -> str:
    """What index.json records to load ``model`` again for queries: an absolute path for a local directory (so
    search works from any working directory), else the name or hub id as given."""
    if model is None:
        return DEFAULT_MODEL
    return str(Path(model).resolve()) if Path(model).exists() else str(model)


def _resolve_model(model: str | os.PathLike | Model | None, model_ref: str | None) -> tuple[Model, str]:
    """The loaded model and the reference recorded in index.json to load it again for queries."""
    if isinstance(model, Model):
        return model, model_ref or model.source
    return load(model), model_ref or model_reference(model)


def check_out(out: Path, overwrite: bool) -> None:
    """FileExistsError unless ``out`` can take a new index: absent, empty, an unfinished build (resumed), or a
    finished index and ``overwrite``."""
    if (out / META_FILE).is_file() and not overwrite:
        raise FileExistsError(f"{out}: already holds an index; use `polymodal index add` to extend it, or --overwrite")
    if out.exists() and not (out / META_FILE).is_file() and not (out / WORK_DIR).is_dir() and any(out.iterdir()):
        raise FileExistsError(f"{out}: exists and is not an index; choose another --out")


def build_index(
    source: str | os.PathLike,
    out: str | os.PathLike,
    model: str | os.PathLike | Model | None = None,
    *,
    params: IndexParams | None = None,
    tuning: TuningOptions | None = DEFAULT_TUNING,
    texts: bool = False,
    segment_seconds: float | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    overwrite: bool = False,
    model_ref: str | None = None,
    progress: ProgressFn | None = None,
    on_chunk: ChunkHook | None = None,
    report: ReportFn | None = None,
) -> BuildResult:
    """Embed every item of ``source`` with ``model`` and write an index directory at ``out``.

    The items are the source's files of every modality the model embeds (images, sounds, clips: each item records
    its kind), and with ``texts`` the captions of a dataset. With ``segment_seconds`` a clip gives one item per
    segment of that length, its ``start`` and ``end`` seconds in the metadata. Rerunning after an interruption
    resumes from the finished chunks. ``out`` must not already hold a finished index unless ``overwrite``.
    The index is then tuned to ``tuning`` on held-out items (None: the knobs of ``params`` as given), each step
    told to ``report``, and the record kept in ``index.json``.
    """
    start = time.perf_counter()
    out = Path(out)
    params = params or IndexParams()
    if segment_seconds is not None and not segment_seconds > 0:
        raise ValueError(f"segment seconds must be > 0, got {segment_seconds}")
    check_out(out, overwrite)
    loaded, ref = _resolve_model(model, model_ref)
    dim = _embed_dim(loaded)
    done = _embed(
        source,
        loaded,
        out / WORK_DIR,
        texts=texts,
        segment_seconds=segment_seconds,
        chunk_size=chunk_size,
        progress=progress,
        on_chunk=on_chunk,
    )
    if not done.items:
        raise ValueError(_nothing_message(source, loaded, texts, done))
    built = build_tuned(done.vectors, params, tuning, report)
    ids = np.arange(len(done.items), dtype=np.int64)
    meta = IndexMeta(
        model=ref,
        model_name=loaded.name,
        identity=loaded.identity,
        embed_dim=dim,
        type=built.type,
        params=built.params.to_dict(),
        segment_seconds=segment_seconds,
        next_id=len(ids),
        tuning=built.tuning,
    )
    write_index(out, meta, built.index, lambda conn: store.insert(conn, ids.tolist(), done.items), skipped=done.skipped)
    return _result(out, done, start, built.type, sum(meta.counts.values()), built.tuning)


def add_to_index(
    index_path: str | os.PathLike,
    source: str | os.PathLike,
    model: str | os.PathLike | Model | None = None,
    *,
    texts: bool = False,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: ProgressFn | None = None,
    on_chunk: ChunkHook | None = None,
    tune: bool = True,
    report: ReportFn | None = None,
) -> BuildResult:
    """Embed the items of ``source`` that the index does not hold yet (by path, and text) and add them.

    The model defaults to the one recorded in the index; another model must have the same identity. Clips are cut
    into the segments the index was built with. With ``tune``, an index that has grown by more than a fifth since
    its tuning record was made is measured again, and re-tuned if its recall fell below the target (steps told to
    ``report``); the result's ``tuning`` is then the new record.
    """
    start = time.perf_counter()
    index = VectorIndex.open(index_path)
    try:
        loaded = load(index.meta.model) if model is None else _resolve_model(model, None)[0]
        index.check_model(loaded.identity, loaded.name)
        known = _known_keys(index)
        done = _embed(
            source,
            loaded,
            index.path / WORK_DIR,
            texts=texts,
            segment_seconds=index.meta.segment_seconds,
            chunk_size=chunk_size,
            progress=progress,
            on_chunk=on_chunk,
            exclude=known,
        )
        first = index.meta.next_id
        ids = np.arange(first, first + len(done.items), dtype=np.int64)
        if len(ids):
            index.faiss_index.add_with_ids(done.vectors, ids)
        index.meta.next_id = first + len(ids)
        tuning = remeasure_if_grown(index, report) if tune and len(ids) else None
        index.commit(lambda conn: store.insert(conn, ids.tolist(), done.items), skipped=done.skipped)
        return _result(index.path, done, start, index.meta.type, len(index), tuning)
    finally:
        index.close()


# -- embedding in resumable chunks ---------------------------------------------------------------------------------
def _embed(
    source: str | os.PathLike,
    model: Model,
    work: Path,
    *,
    texts: bool,
    segment_seconds: float | None,
    chunk_size: int,
    progress: ProgressFn | None,
    on_chunk: ChunkHook | None,
    exclude: set[tuple[str, str | None, str | None]] | None = None,
) -> _Embedded:
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    media = _media(model)

    def items(log: BadSampleLog) -> Iterator[SourceItem]:
        for s in iter_items(source, texts=texts, media=media, bad_log=log):
            if exclude is None or _key(s.item) not in exclude:
                yield s

    # A first pass without decoding anything counts the items: the progress bar gets a total, and work.json a
    # fingerprint that notices a source that changed between the interrupted run and this one.
    total = excluded = 0
    for s in iter_items(source, texts=texts, media=media, bad_log=BadSampleLog()):
        total += 1
        excluded += exclude is not None and _key(s.item) in exclude
    fingerprint = {
        "source": str(Path(source).resolve()),
        "identity": model.identity,
        "texts": texts,
        "media": sorted(media),
        "segment_seconds": segment_seconds,
        "chunk_size": chunk_size,
        "items": total - excluded,
    }
    _prepare_work(work, fingerprint)
    reader_log = BadSampleLog(work / "reader_skipped.jsonl")
    reader_log.path.unlink(missing_ok=True)  # type: ignore[union-attr]  # every run re-reads the whole source
    finished = resumed = chunks = 0
    for number, group in enumerate(batched(items(reader_log), chunk_size)):
        chunks += 1
        if (work / f"chunk-{number:06d}.json").is_file():
            resumed += 1
        else:

            def tick(n: int, base: int = finished) -> None:
                if progress is not None:
                    progress(base + n, total - excluded)

            vectors, embedded, skipped = _embed_chunk(group, model, tick, segment_seconds)
            _save_chunk(work, number, vectors, embedded, skipped)
            if on_chunk is not None:
                on_chunk(number)
        finished += len(group)
        if progress is not None:
            progress(finished, total - excluded)
    done = _load_chunks(work, chunks, resumed, excluded, _embed_dim(model), reader_log)
    # Files the model cannot embed are left out, and counted (clips are not, where their sound tracks are embedded).
    others = frozenset(k for k in store.MEDIA_KINDS if embedded_kind(k, media) not in media)
    if others:
        left = iter_items(source, media=others, bad_log=BadSampleLog())
        done.not_embedded = dict(sorted(Counter(s.item.kind for s in left).items()))
    return done


def _embed_chunk(
    group: list[SourceItem], model: Model, tick: Callable[[int], None], segment_seconds: float | None = None
) -> tuple[np.ndarray, list[Item], list[dict[str, Any]]]:
    """Embed the items of each kind (skipping files that cannot be decoded) and return them in item order; with
    ``segment_seconds`` a clip becomes one item per segment.

    Works in batches of the model's batch size and calls ``tick(items done in this chunk)`` after each, so a
    progress bar moves within a chunk; media are decoded one batch at a time to bound memory.
    """
    rows: dict[int, tuple[list[Item], np.ndarray]] = {}  # position in the group -> its items and (n, D) vectors
    skipped: list[dict[str, Any]] = []
    step = model.batch_size
    for start in range(0, len(group), step):
        by_kind: dict[str, list[int]] = {}
        for pos in range(start, min(start + step, len(group))):
            by_kind.setdefault(group[pos].item.kind, []).append(pos)
        for kind, positions in by_kind.items():
            if kind in SEGMENTED and segment_seconds is not None:
                done, bad = _embed_segments(model, kind, [group[p] for p in positions], segment_seconds)
            else:
                refs = [group[p].item.text if kind == "text" else group[p].ref for p in positions]
                embedded, bad = _embed_refs(model, kind, refs)
                good = [i for i in range(len(positions)) if i not in bad]
                done = {i: ([group[positions[i]].item], embedded[j : j + 1]) for j, i in enumerate(good)}
            rows.update({positions[i]: row for i, row in done.items()})
            skipped += [_skip_record(group[positions[i]].item, e) for i, e in bad.items()]
        tick(min(start + step, len(group)))
    order = sorted(rows)
    if not order:
        return np.zeros((0, _embed_dim(model)), np.float32), [], skipped
    return np.concatenate([rows[p][1] for p in order]), [it for p in order for it in rows[p][0]], skipped


def _embed_segments(
    model: Model, kind: str, clips: list[SourceItem], seconds: float
) -> tuple[dict[int, tuple[list[Item], np.ndarray]], dict[int, BadSampleError]]:
    """({position: (one item per segment with its start and end, their vectors)}, {position: error}) of ``clips``
    (videos or sounds), each decoded once and cut into ``seconds``-long segments, embedded a batch of segments at a
    time as they are decoded (a long clip's frames are never all in memory)."""
    cut = model.video_segments if kind == "video" else model.audio_segments
    done, bad = {}, {}
    for i, clip in enumerate(clips):
        items: list[Item] = []
        vectors: list[np.ndarray] = []
        try:
            with cut(clip.ref, seconds) as segments:  # type: ignore[arg-type]  # its file let go of when done or failed
                # Segments per model call: a clip's up to a bound of frame bytes (full size until the model resizes
                # them), a sound's a batch.
                per_call = (
                    segments.per_call(model.video_sampling().frames, model.batch_size)  # type: ignore[union-attr]
                    if kind == "video"
                    else model.batch_size
                )
                for batch in batched(segments, per_call):
                    items += [
                        dataclasses.replace(
                            clip.item,
                            metadata={**clip.item.metadata, "start": round(s.start, 3), "end": round(s.end, 3)},
                        )
                        for s in batch
                    ]
                    vectors.append(model.embed(kind, [s.media for s in batch]))
        except BadSampleError as e:  # a clip that breaks off part-way is left out whole, as one that cannot open
            bad[i] = e
            continue
        done[i] = (items, np.concatenate(vectors))
    return done, bad


def _embed_refs(model: Model, kind: str, refs: list[Any]) -> tuple[np.ndarray, dict[int, BadSampleError]]:
    """(embeddings of the good refs, {position: error} of the bad ones). A batch holding a bad file is embedded
    again one ref at a time, so only the bad file is left out (bad files are rare; the common case is one call)."""
    try:
        return model.embed(kind, refs), {}
    except BadSampleError:
        pass
    rows, bad = [], {}
    for i, ref in enumerate(refs):
        try:
            rows.append(model.embed(kind, [ref]))
        except BadSampleError as e:
            bad[i] = e
    return (np.concatenate(rows) if rows else np.zeros((0, _embed_dim(model)), np.float32)), bad


def _naming(path: str | None, reason: str) -> str:
    """``reason`` with the skipped item's ``path`` in front, unless it starts with it already (a decoder's message
    may quote the path further on)."""
    return reason if not path or reason.startswith(path) else f"{path}: {reason}"


def _skip_record(item: Item, error: BadSampleError) -> dict[str, Any]:
    path = item.path or f"{item.source}#{item.metadata.get('id')}"
    return {
        "path": path,
        "reason": _naming(path, error.reason),
        "kind": error.kind,
        "source": item.source,
        "row": item.row,
    }


def _prepare_work(work: Path, fingerprint: dict[str, Any]) -> None:
    marker = work / "work.json"
    if marker.is_file():
        try:
            same = json.loads(marker.read_text()) == fingerprint
        except json.JSONDecodeError:
            same = False
        if same:
            return
        shutil.rmtree(work)  # chunks of another source, model or chunking: never mix them in
    work.mkdir(parents=True, exist_ok=True)
    write_atomic(marker, json.dumps(fingerprint, indent=2).encode())


def _save_chunk(work: Path, number: int, vectors: np.ndarray, items: list[Item], skipped: list[dict[str, Any]]) -> None:
    tmp = work / f".chunk-{number:06d}.npy.tmp"
    with open(tmp, "wb") as f:
        np.save(f, vectors)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, work / f"chunk-{number:06d}.npy")
    # The JSON is the chunk's commit record: written last, so its presence means the vectors are complete.
    record = {"items": [it.to_dict() for it in items], "skipped": skipped}
    write_atomic(work / f"chunk-{number:06d}.json", json.dumps(record, ensure_ascii=False, default=str).encode())


def _load_chunks(work: Path, chunks: int, resumed: int, excluded: int, dim: int, reader_log: BadSampleLog) -> _Embedded:
    vectors, items, skipped = [], [], []
    for s in _reader_skips(reader_log):
        skipped.append(s)
    for number in range(chunks):
        record = json.loads((work / f"chunk-{number:06d}.json").read_text())
        vectors.append(np.load(work / f"chunk-{number:06d}.npy"))
        items += [Item.from_dict(d) for d in record["items"]]
        skipped += record["skipped"]
    stacked = np.concatenate(vectors) if vectors else np.zeros((0, dim), dtype=np.float32)  # (N, D)
    return _Embedded(np.ascontiguousarray(stacked, dtype=np.float32), items, skipped, chunks, resumed, excluded)


def _reader_skips(log: BadSampleLog) -> Iterable[dict[str, Any]]:
    """Rows the reader rejected (bad JSON, missing files ...), in the same shape as decode failures."""
    if log.path is None or not log.path.is_file():
        return []
    out = []
    for e in read_json_lines(log.path):
        path = e.get("id") or e.get("source")
        out.append(
            {
                "path": path,
                "reason": _naming(path, e["reason"]),
                "kind": e["kind"],
                "source": e.get("source"),
                "row": e.get("row"),
            }
        )
    return out


# -- helpers ---------------------------------------------------------------------------------------------------------


def _key(item: Item) -> tuple[str, str | None, str | None]:
    return (item.kind, item.path, item.text)


def _known_keys(index: VectorIndex) -> set[tuple[str, str | None, str | None]]:
    return {(kind, path, text) for kind, path, text in index.conn.execute("SELECT kind, path, text FROM items")}


def _media(model: Model) -> frozenset[str]:
    """The media kinds of a source this model indexes: those it embeds (clips too, by frames), of the kinds an
    index holds."""
    return model.accepts() & frozenset(store.MEDIA_KINDS)


def _embed_dim(model: Model) -> int:
    from polymodal.backends import EMBED, TaskNotSupported

    if EMBED not in model.capabilities or model.embed_dim is None:
        raise TaskNotSupported(model.backend, "embed items for an index")
    return int(model.embed_dim)


def _nothing_message(source: str | os.PathLike, model: Model, texts: bool, done: _Embedded) -> str:
    if done.skipped:
        first = done.skipped[0]
        return f"{source}: nothing to index: all {len(done.skipped)} inputs were skipped (first: {first['reason']})"
    media = _media(model)
    found = Counter(s.item.kind for s in iter_items(source, bad_log=BadSampleLog()))
    other = ", ".join(f"{n} {kind}" for kind, n in sorted(found.items()) if kind not in media)
    message = f"{source}: nothing to index: no {' or '.join(sorted(media))} files found"
    if other:
        return f"{message}; it holds {other} files, which {model.name} does not embed"
    return message + ("" if texts else " (pass --texts to index its captions)")


def _result(
    path: Path, done: _Embedded, start: float, kind: str, items: int, tuning: dict[str, Any] | None = None
) -> BuildResult:
    by_kind: dict[str, int] = {}
    for s in done.skipped:
        by_kind[s["kind"]] = by_kind.get(s["kind"], 0) + 1
    return BuildResult(
        path=path,
        added=len(done.items),
        skipped=len(done.skipped),
        skipped_by_kind=by_kind,
        already_indexed=done.excluded,
        chunks=done.chunks,
        resumed_chunks=done.resumed,
        seconds=time.perf_counter() - start,
        type=kind,
        items=items,
        skipped_examples=done.skipped[:5],
        tuning=tuning,
        not_embedded=done.not_embedded,
    )
