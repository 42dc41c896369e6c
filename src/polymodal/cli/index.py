"""``polymodal index build|add|tune|remove|info`` and ``polymodal search``: a vector index over a model's embeddings.

An index holds every modality the model embeds: the images, sounds and clips of a folder or manifest (and with
--texts its captions), each item of its own kind; with --segment-seconds S a clip is one item per S-second segment.
Builds show a progress bar (items/s), skip unreadable files (counted, and logged to INDEX/skipped.jsonl) and resume
after an interruption: rerun the same command and finished chunks are not embedded again. ``index tune`` measures
an existing index on its stored vectors and re-tunes its search setting.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import typer
from rich.markup import escape
from rich.table import Table

from polymodal.cli.output import JsonOption, console, emit_json, err_console, fail, with_progress
from polymodal.cli.tasks import BatchOption, ExportOption, ModelOption, PrecisionOption, check_files, load_model_or_fail

if TYPE_CHECKING:
    from polymodal.index import BuildResult

T = TypeVar("T")
app = typer.Typer(
    help="Build, extend and inspect vector indexes (search them with `polymodal search`).", no_args_is_help=True
)

TextsOption = typer.Option(
    False, "--texts", help="Also index the captions of a manifest (kind text), for image->text search."
)
ChunkOption = typer.Option(1024, "--chunk-size", min=1, help="Items per saved chunk: the unit of resume.")


def _index_errors() -> tuple[type[BaseException], ...]:
    return (OSError, ValueError, ImportError)


def _run(what: str, index_dir: Path, as_json: bool, fn: Callable[[], T], *, resumable: bool = True) -> T:
    """Turn every expected failure into one line; an interruption says how to resume (or, for work that writes
    only at the end, that the index is unchanged)."""
    try:
        return fn()
    except KeyboardInterrupt:
        if not resumable:
            fail(f"{what} interrupted: {index_dir} is unchanged", as_json=as_json, code=130)
        fail(
            f"{what} interrupted: finished chunks are kept in {index_dir}/.work; rerun the same command to resume",
            as_json=as_json,
            code=130,
        )
    except _index_errors() as e:
        from polymodal.backends import TaskNotSupported

        fail(str(e), as_json=as_json, code=2 if isinstance(e, TaskNotSupported) else 1)


def _report(result: BuildResult, verb: str, as_json: bool) -> None:
    if as_json:
        emit_json(result.to_dict())
        return
    rate = result.added / result.seconds if result.seconds else 0.0
    line = (
        f"[bold green]{verb}[/] {result.added:,} items into {escape(str(result.path))} {escape(f'[{result.type}]')} "
        f"in {result.seconds:.1f} s ({rate:,.1f} items/s)"
    )
    line += f"; the index holds {result.items:,}"
    if result.resumed_chunks:
        line += f"; resumed {result.resumed_chunks} of {result.chunks} chunks"
    if result.already_indexed:
        line += f"; {result.already_indexed:,} already indexed"
    console.print(line, highlight=False, soft_wrap=True)
    if result.tuning is not None:
        _report_tuning(result.tuning)
    if result.not_embedded:
        files = ", ".join(f"{n:,} {kind}" for kind, n in result.not_embedded.items())
        kinds = " or ".join(result.not_embedded)
        console.print(f"[yellow]left out {files} files[/]: the model does not embed {kinds}", highlight=False)
    if result.skipped:
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(result.skipped_by_kind.items()))
        console.print(
            f"[yellow]skipped {result.skipped:,}[/] ({kinds}): see {escape(str(result.path / 'skipped.jsonl'))}",
            highlight=False,
            soft_wrap=True,
        )
        shown = result.skipped_examples[:3]
        for s in shown:  # each reason starts with its file
            console.print(f"  {escape(s['reason'])}", highlight=False, soft_wrap=True)
        if result.skipped > len(shown):
            console.print(f"  ... and {result.skipped - len(shown):,} more", highlight=False)


def _report_tuning(record: dict[str, Any]) -> None:
    """One line for what the tuning chose, a warning when it missed the target."""
    from polymodal.index.tuning import summary

    met = record.get("met", True)
    style = "green" if met else "yellow"
    console.print(f"[{style}]{escape(summary(record))}[/]", highlight=False, soft_wrap=True)


@app.command("build")
def build(
    source: Path = typer.Argument(
        ..., help="A folder of images, sounds and/or videos, class folders, a manifest (.jsonl/.csv) or shards."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Index directory to write."),
    model: str = ModelOption,
    type_: str = typer.Option(
        "auto",
        "--type",
        help="auto (flat below 50k items, ivfpq-rerank below 500k, else ivf; the tuning may switch it to meet "
        "--recall-target), flat, hnsw, ivf, ivfpq or ivfpq-rerank.",
    ),
    texts: bool = TextsOption,
    segment_seconds: float = typer.Option(
        None,
        "--segment-seconds",
        min=0.001,
        help="Index each video and sound as segments of this many seconds (one item each, with its start and end "
        "time); by default one item per clip, read from its start (a sound for the model's clip length).",
    ),
    batch_size: int = BatchOption,
    chunk_size: int = ChunkOption,
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing index at --out."),
    hnsw_m: int = typer.Option(32, "--hnsw-m", min=2, help="hnsw: graph degree M."),
    ef_construction: int = typer.Option(80, "--ef-construction", min=1, help="hnsw: build-time candidate list."),
    ef_search: int = typer.Option(
        None, "--ef-search", min=1, help="hnsw: search-time candidate list, with --no-tune (default 64)."
    ),
    nlist: int = typer.Option(
        None, "--nlist", min=1, help="ivf types: k-means cells (default 4*sqrt(N); ivfpq-rerank sqrt(N))."
    ),
    pq_m: int = typer.Option(
        None, "--pq-m", min=1, help="ivfpq types: sub-quantisers, must divide the dimension (default dim/8)."
    ),
    nbits: int = typer.Option(8, "--nbits", min=1, max=16, help="ivfpq: bits per code (ivfpq-rerank's are 4)."),
    rerank: int = typer.Option(
        None,
        "--rerank",
        min=1,
        help="ivfpq-rerank: candidates re-scored exactly on the full vectors, per result wanted (default 16).",
    ),
    nprobe: int = typer.Option(
        None, "--nprobe", min=1, help="ivf types: cells searched per query, with --no-tune (default 16)."
    ),
    recall_target: float = typer.Option(
        None,
        "--recall-target",
        help="Tune the search setting (with --type auto also the type) until recall@10 on held-out items reaches "
        "this (default 0.95).",
    ),
    max_latency_ms: float = typer.Option(
        None, "--max-latency-ms", help="The tuning's latency bound: p50 of one query in ms (default 5)."
    ),
    tune: bool = typer.Option(True, "--tune/--no-tune", help="Measure and tune recall after building."),
    precision: str = PrecisionOption,
    export: Path = ExportOption,
    json: bool = JsonOption,
) -> None:
    """Embed SOURCE with the model, write a searchable index tuned to a recall target on held-out items; rerun
    after an interruption to resume."""
    from polymodal.index import IndexParams, TuningOptions, build_index
    from polymodal.index.build import check_out, model_reference

    if tune and (nprobe is not None or ef_search is not None):
        fail(
            "--nprobe and --ef-search fix the search setting: add --no-tune, or leave them out to let the build "
            "tune it to --recall-target",
            as_json=json,
            code=2,
        )
    try:
        params = IndexParams(
            type=type_,
            hnsw_m=hnsw_m,
            ef_construction=ef_construction,
            ef_search=ef_search or IndexParams.ef_search,
            nlist=nlist,
            pq_m=pq_m,
            nbits=nbits,
            rerank=rerank or IndexParams.rerank,
            nprobe=nprobe or IndexParams.nprobe,
        )
        given = {"recall_target": recall_target, "max_latency_ms": max_latency_ms}
        tuning = TuningOptions(**{k: v for k, v in given.items() if v is not None}) if tune else None
    except ValueError as e:
        fail(str(e), as_json=json, code=2)
    if not source.exists():
        fail(f"{source}: no such file or directory", as_json=json)
    try:
        check_out(out, overwrite)  # before the model loads
    except FileExistsError as e:
        fail(str(e), as_json=json)
    budget = _threads_for_work()
    loaded = load_model_or_fail(model, batch_size=batch_size, precision=precision, as_json=json, export=export)
    _say_precision_and_threads(loaded, budget, json)
    result = _run(
        "build",
        out,
        json,
        lambda: with_progress(
            not json,
            "embedding",
            lambda progress: build_index(
                source,
                out,
                loaded,
                params=params,
                texts=texts,
                segment_seconds=segment_seconds,
                chunk_size=chunk_size,
                overwrite=overwrite,
                model_ref=model_reference(model),
                progress=progress,
                tuning=tuning,
                report=None if json else _say,
            ),
        ),
    )
    _report(result, "indexed", json)


def _say(line: str) -> None:
    err_console.print(f"[dim]{escape(line)}[/]", highlight=False, soft_wrap=True)


@app.command("add")
def add(
    index: Path = typer.Argument(..., help="An index directory."),
    source: Path = typer.Argument(
        ...,
        help="Images, sounds, videos or a manifest to add; items already in the index are left out (clips are cut "
        "into the index's segments).",
    ),
    model: str = typer.Option(None, "--model", "-m", help="Override the index's recorded model (same identity only)."),
    texts: bool = TextsOption,
    batch_size: int = BatchOption,
    chunk_size: int = ChunkOption,
    tune: bool = typer.Option(
        True,
        "--tune/--no-tune",
        help="Once the index has grown by more than 20% since it was tuned, measure its recall again (and re-tune "
        "nprobe/efSearch if it fell below the target).",
    ),
    precision: str = PrecisionOption,
    export: Path = ExportOption,
    json: bool = JsonOption,
) -> None:
    """Add the new items of SOURCE to an index (resumable like build); a tuned index that grew by more than 20% is
    measured again."""
    from polymodal.index import VectorIndex, add_to_index
    from polymodal.index.vector_index import check_model_files

    if not source.exists():
        fail(f"{source}: no such file or directory", as_json=json)
    meta = _run("add", index, json, lambda: _meta(VectorIndex, index))
    if model is not None:
        _run("add", index, json, lambda: check_model_files(meta, model, index))  # before a long load
    budget = _threads_for_work()
    loaded = load_model_or_fail(
        model or meta.model, batch_size=batch_size, precision=precision, as_json=json, export=export
    )
    _say_precision_and_threads(loaded, budget, json)
    result = _run(
        "add",
        index,
        json,
        lambda: with_progress(
            not json,
            "embedding",
            lambda progress: add_to_index(
                index,
                source,
                loaded,
                texts=texts,
                chunk_size=chunk_size,
                progress=progress,
                tune=tune,
                report=None if json else _say,
            ),
        ),
    )
    _report(result, "added", json)


@app.command("tune")
def tune(
    index: Path = typer.Argument(..., help="An index directory."),
    recall_target: float = typer.Option(
        None,
        "--recall-target",
        help="recall@10 to reach on a sample of the stored vectors (default: the index's recorded target, else 0.95).",
    ),
    max_latency_ms: float = typer.Option(
        None,
        "--max-latency-ms",
        help="Latency bound: p50 of one query in ms (default: the index's recorded bound, else 5).",
    ),
    json: bool = JsonOption,
) -> None:
    """Measure recall@10 and latency of an existing index on a sample of its stored vectors (each query's own id
    left out) and re-tune its search setting, nprobe (the IVF types; with rerank for ivfpq-rerank) or efSearch
    (hnsw), to the goal. The index type
    is kept: changing it needs a rebuild (index build --type auto --overwrite)."""
    from polymodal.index import TuningOptions, tune_index

    given = {"recall_target": recall_target, "max_latency_ms": max_latency_ms}
    try:
        TuningOptions(**{k: v for k, v in given.items() if v is not None})
    except ValueError as e:
        fail(str(e), as_json=json, code=2)
    record = _run(
        "tune", index, json, lambda: tune_index(index, **given, report=None if json else _say), resumable=False
    )
    if json:
        emit_json(record)
    else:
        _report_tuning(record)


def _threads_for_work() -> Any:
    """Threads for the embedding work from the cores other processes leave free, chosen before the model loads (an
    export's onnxruntime sessions take the count they are made with)."""
    from polymodal.hardware import ThreadBudget

    return ThreadBudget()


def _say_precision_and_threads(loaded: Any, budget: Any, as_json: bool) -> None:
    if not as_json:
        from polymodal.hardware import threads_phrase

        choice = loaded.precision_choice
        err_console.print(
            f"[dim]{choice.precision} ({choice.reason}); {threads_phrase(budget.threads)} ({budget.choice.reason})[/]",
            highlight=False,
        )


def _meta(cls: Any, path: Path) -> Any:
    with cls.open(path) as idx:
        return idx.meta


def _targets(raw: list[str]) -> Iterator[int | str]:
    """Integer arguments are ids, anything else a path."""
    for t in raw:
        yield int(t) if t.isdigit() else t


@app.command("remove")
def remove(
    index: Path = typer.Argument(..., help="An index directory."),
    targets: list[str] = typer.Argument(..., help="Item ids, or paths (removes the file and its texts)."),
    json: bool = JsonOption,
) -> None:
    """Remove items by id or path. Exits 1 if any target was not in the index (the others are removed)."""
    from polymodal.index import VectorIndex

    def go() -> tuple[list[int], list[int | str]]:
        with VectorIndex.open(index) as idx:
            return idx.remove(list(_targets(targets)))

    removed, missing = _run("remove", index, json, go)
    if json:
        emit_json({"removed": removed, "not_found": missing})
    else:
        console.print(
            f"removed {len(removed)} items" + (f" (ids {', '.join(map(str, removed[:20]))})" if removed else "")
        )
    if missing:
        if json:
            raise typer.Exit(1)  # the JSON above already lists them under not_found
        fail(f"not in the index: {', '.join(map(str, missing))}")


@app.command("info")
def info(index: Path = typer.Argument(..., help="An index directory."), json: bool = JsonOption) -> None:
    """Model, type, parameters and counts of an index."""
    from polymodal.index import VectorIndex

    def go() -> dict[str, Any]:
        with VectorIndex.open(index) as idx:
            return idx.info()

    data = _run("info", index, json, go)
    if json:
        emit_json(data)
        return
    table = Table(show_header=False, box=None)
    for key in (
        "path",
        "model",
        "model_name",
        "identity",
        "embed_dim",
        "metric",
        "type",
        "items",
        "counts",
        "segment_seconds",
        "vectors",
        "tombstones",
        "skipped",
        "updated",
        "version",
    ):
        table.add_row(key, escape(str(data[key])))
    from polymodal.index.kinds import KNOBS
    from polymodal.index.tuning import summary

    params = data["params"]
    table.add_row("params", ", ".join(f"{k}={params[k]}" for k in KNOBS[data["type"]]) or "-")
    table.add_row("tuning", escape(summary(data["tuning"])) if data.get("tuning") else "- (built before tuning)")
    console.print(table)


def search(
    index: Path = typer.Argument(..., help="An index directory."),
    query: str = typer.Argument(None, help="Query text (or use --image, --audio or --video)."),
    image: Path = typer.Option(None, "--image", "-i", help="Query with an image file instead of text."),
    audio: Path = typer.Option(None, "--audio", "-a", help="Query with a sound file (WAV, FLAC, OGG, MP3)."),
    video: Path = typer.Option(None, "--video", "-v", help="Query with a video file (MP4, WebM, MKV, AVI ...)."),
    k: int = typer.Option(10, "-k", "--top-k", min=1, help="Number of results."),
    kind: str = typer.Option(None, "--kind", help="Only results of this kind: image, audio, video or text."),
    model: str = typer.Option(None, "--model", "-m", help="Override the index's recorded model (same identity only)."),
    ef_search: int = typer.Option(None, "--ef-search", min=1, help="hnsw: candidate list for this search."),
    nprobe: int = typer.Option(None, "--nprobe", min=1, help="ivf types: cells to visit for this search."),
    json: bool = JsonOption,
) -> None:
    """Search an index with a text, an image, a sound or a clip; prints rank, score and path/text (with the
    segment's start and end for a video or sound segment)."""
    from polymodal.index import open_for_search
    from polymodal.index.store import ITEM_KINDS

    queries = (("text", query), ("image", image), ("audio", audio), ("video", video))
    given = {m: q for m, q in queries if q is not None}
    if len(given) != 1:
        fail("give one query: a text, --image FILE, --audio FILE or --video FILE", as_json=json, code=2)
    if kind is not None and kind not in ITEM_KINDS:
        fail(f"--kind must be one of {', '.join(ITEM_KINDS)}, got {kind!r}", as_json=json, code=2)
    ((modality, value),) = given.items()
    if modality != "text":
        check_files([value], json)

    def go() -> list[Any]:
        idx, loaded = open_for_search(index, model)
        with idx:
            vectors = loaded.embed(modality, str(value))
            return idx.search(vectors, k, kind=kind, ef_search=ef_search, nprobe=nprobe)[0]

    hits = _run("search", index, json, go)
    if json:
        emit_json([{"rank": r, **h.to_dict()} for r, h in enumerate(hits, 1)])
        return
    segmented = any("start" in h.metadata for h in hits)
    table = Table("rank", "score", "kind", "id", box=None)
    if segmented:  # a video segment's span in its own column, so that a folded path never splits it
        table.add_column("segment", no_wrap=True)
    table.add_column("path / text", overflow="fold")  # last and folded: a long path wraps instead of being cut
    for r, h in enumerate(hits, 1):
        cells = [str(r), f"{h.score:.4f}", h.kind, str(h.id)]
        if segmented:
            cells.append(f"{h.metadata['start']:g}-{h.metadata['end']:g} s" if "start" in h.metadata else "")
        table.add_row(*cells, escape(str(h.text if h.kind == "text" else h.path or h.metadata.get("id"))))
    console.print(table)
