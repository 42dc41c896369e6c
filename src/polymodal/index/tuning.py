"""Tune an index on the user's own vectors until it meets a recall target within a latency bound.

Queries are a seeded sample of the vectors being indexed, held out while the index is measured: they are not in
the k-means training, the cells or the HNSW graph, and are added only once the settings are chosen. So a query
never finds itself, and the measured index is the built one minus those few vectors. Recall@k counts a found item
as a hit when its exact score reaches the k-th exact score of that query (brute force over the same vectors), so a
tie with the k-th neighbour is not a miss. Latency is the p50/p99 of one query at a time on one thread, as the
index searches a single query; the best of three rounds counts, against a shared machine's hiccups.

The search knob (nprobe for the IVF types, efSearch for hnsw) doubles until the target is met or the latency bound is
passed, then is bisected towards the smallest setting that meets it, which is chosen (a larger knob only costs more
time). When no setting does and the type was ``auto``, other types are built and measured in turn
(:func:`alternatives`) until one meets the target; when none does, the best trade-off found is kept and the record
says so.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from polymodal.index.kinds import (
    AUTO_APPROXIMATE_THRESHOLD,
    KNOBS,
    SEARCH_TIME_KNOBS,
    WIDENING_KNOBS,
    IndexParams,
    _faiss,
    apply_search_params,
    default_nlist,
    is_ivf,
    new_index,
    resolve_type,
    search_knob,
    threads,
)

DEFAULT_RECALL_TARGET = 0.95
DEFAULT_MAX_LATENCY_MS = 5.0
RECALL_K = 10
MAX_QUERIES = 1000
LATENCY_QUERIES = 200
LATENCY_ROUNDS = 3
MIN_QUERIES = 20  # fewer cannot tell 0.95 from 0.90
HELD_OUT_SHARE = 10  # hold out at most one vector in this many
BISECT_STEPS = 3
MAX_EF_SEARCH = 4096
ADD_CHUNK = 65_536
# An ivf whose default cells (4 * sqrt(N)) miss the target is rebuilt with 16 * sqrt(N), the top of faiss's
# guideline range; trained on fewer vectors per cell so that k-means stays minutes, not hours, at a million.
MORE_CELLS = 16
MORE_CELLS_TRAIN_PER_CELL = 10
# `index add` measures again once the index has grown by more than this share of its size when last measured.
REMEASURE_GROWTH = 0.2
METHODS = {
    "held-out": f"held-out sample of the indexed vectors; recall@{RECALL_K} against exact inner-product search over "
    "the other vectors, ties with the k-th score counting; p50/p99 of single queries on one thread",
    "stored": f"sample of the stored vectors as queries, each one's own id left out of both result lists; "
    f"recall@{RECALL_K} against exact inner-product search over the stored vectors (decoded codes for ivfpq), ties "
    "with the k-th score counting; p50/p99 of single queries on one thread",
    "rebuilt graph": "held-out sample of the stored vectors; an HNSW graph of the index's shape built over the "
    f"other stored vectors to measure on; recall@{RECALL_K} against exact inner-product search over those, ties "
    "with the k-th score counting; p50/p99 of single queries on one thread",
}
ReportFn = Callable[[str], None]


@dataclass(frozen=True)
class TuningOptions:
    """What the tuner aims for and how it measures; ``change_type`` lets it try other index types when the type
    was ``auto``."""

    recall_target: float = DEFAULT_RECALL_TARGET
    max_latency_ms: float = DEFAULT_MAX_LATENCY_MS
    queries: int = MAX_QUERIES
    latency_queries: int = LATENCY_QUERIES
    seed: int = 0
    change_type: bool = True

    def __post_init__(self) -> None:
        if not 0 < self.recall_target <= 1:
            raise ValueError(f"recall target must be in (0, 1], got {self.recall_target}")
        if not self.max_latency_ms > 0:
            raise ValueError(f"max latency must be > 0 ms, got {self.max_latency_ms}")
        if self.queries < 1 or self.latency_queries < 1:
            raise ValueError(f"queries must be >= 1, got {self.queries} and {self.latency_queries}")


DEFAULT_TUNING = TuningOptions()


@dataclass
class Trial:
    """One measured setting: the type, its build and search parameters, recall@k and single-query latency."""

    type: str
    params: dict[str, Any]
    recall: float
    p50_ms: float
    p99_ms: float

    def meets(self, options: TuningOptions) -> bool:
        return self.recall >= options.recall_target and self.p50_ms <= options.max_latency_ms

    def describe(self) -> str:
        knobs = " ".join(f"{k}={v}" for k, v in self.params.items())
        return (
            f"{self.type}{' ' + knobs if knobs else ''}: recall@{RECALL_K} {self.recall:.3f}, p50 {self.p50_ms:.2f} ms"
        )


@dataclass
class Built:
    """A filled FAISS index, its concrete type and parameters, and the tuning record (None when not tuned)."""

    index: Any
    type: str
    params: IndexParams
    tuning: dict[str, Any] | None = None


@dataclass
class HeldOut:
    """Query vectors and what exact search finds for them: held-out ones (not in the index) while building, or
    stored ones (in the index, their own id left out of both exact and approximate results) when re-tuning."""

    queries: np.ndarray  # (Q, D)
    kth_scores: np.ndarray  # (Q,) exact score of each query's k-th neighbour (itself left out)
    vectors: np.ndarray  # (N, D) the vectors exact search ran over
    latency_queries: int
    ids: np.ndarray | None = None  # (N,) sorted ids of the rows of ``vectors``; None: ids are row positions
    own_ids: np.ndarray | None = None  # (Q,) each query's own id when the queries are in the index

    def recall(self, found: np.ndarray) -> float:
        """Recall@k of ``found`` ((Q, k) ids, -1 for none): hits are items scoring at least the k-th exact score."""
        valid = found >= 0
        rows = np.where(valid, found, 0)
        if self.ids is not None:
            rows = np.minimum(np.searchsorted(self.ids, rows), len(self.ids) - 1)
        scores = np.einsum("qd,qkd->qk", self.queries, self.vectors[rows])  # (Q, k)
        hits = (scores >= self.kth_scores[:, None] - 1e-5) & valid
        return float(np.minimum(hits.sum(axis=1), RECALL_K).sum() / (RECALL_K * len(self.queries)))

    def measure(self, index: Any, kind: str, params: IndexParams) -> Trial:
        apply_search_params(index, kind, params)
        extra = 0 if self.own_ids is None else 1
        _, found = index.search(self.queries, RECALL_K + extra)  # all threads: the results equal single queries'
        if self.own_ids is not None:
            found = _without_own(found, self.own_ids)  # (Q, k)
        p50, p99 = self.latency(index)
        return Trial(kind, _knobs(kind, params), round(self.recall(found), 4), round(p50, 3), round(p99, 3))

    def latency(self, index: Any, count: int | None = None) -> tuple[float, float]:
        """p50 and p99 milliseconds of searching one query at a time on one thread, of the round (of
        ``LATENCY_ROUNDS``) with the lowest p50: on a shared machine a descheduled round measures the scheduler."""
        sample = self.queries[: count or self.latency_queries]
        rounds = []
        with threads(1):
            index.search(sample[:1], RECALL_K)  # warm the caches
            for _ in range(LATENCY_ROUNDS):
                times = []
                for q in sample:
                    start = time.perf_counter()
                    index.search(q[None, :], RECALL_K)
                    times.append((time.perf_counter() - start) * 1000)
                rounds.append((float(np.percentile(times, 50)), float(np.percentile(times, 99))))
        return min(rounds)


@dataclass
class _Candidate:
    type: str
    params: IndexParams
    index: Any = None
    trials: list[Trial] = field(default_factory=list)


def build_tuned(
    vectors: np.ndarray, params: IndexParams, options: TuningOptions | None, report: ReportFn | None = None
) -> Built:
    """A FAISS index over ``vectors`` ((N, D) float32 unit rows; ids are row positions) of ``params.type``,
    tuned to ``options`` (or with the given knobs when ``options`` is None)."""
    say = report or (lambda line: None)
    n = len(vectors)
    kind = resolve_type(params.type, n)
    params = dataclasses.replace(params)
    if options is None:
        return Built(_filled(kind, params, vectors, np.arange(n), say), kind, params)
    held = _hold_out(n, options)
    if len(held) < MIN_QUERIES:
        index = _filled(kind, params, vectors, np.arange(n), say)
        return Built(index, kind, params, _unmeasured(n, options, "build"))
    start = time.perf_counter()
    keep = np.setdiff1d(np.arange(n), held)
    say(
        f"tuning on {len(held):,} held-out vectors: recall@{RECALL_K} >= {options.recall_target} at p50 <= "
        f"{options.max_latency_ms:g} ms"
    )
    bench = _held_out_bench(vectors, held, keep, options)
    first = _Candidate(kind, params)
    may_change = options.change_type and params.type == "auto"  # a type the user named is kept
    ladder = [first] + (alternatives(kind, len(keep), params) if may_change else [])
    best: _Candidate | None = None
    for rung, candidate in enumerate(ladder):
        if rung:
            say(f"no {ladder[rung - 1].type} setting met it: trying {_shape(candidate)}")
        if not _measure_candidate(candidate, vectors, keep, bench, options, say, required=not rung):
            continue  # exact search too slow: not built
        if best is None or _better(_pick(candidate.trials, options), _pick(best.trials, options), options):
            if best is not None:
                best.index = None  # a million vectors each: keep only the best index in memory
            best = candidate
        else:
            candidate.index = None
        if _pick(candidate.trials, options).meets(options):
            break
    assert best is not None and best.index is not None
    chosen = _pick(best.trials, options)
    _set_knob(best, chosen)
    best.index.add_with_ids(vectors[held], held.astype(np.int64))  # the held-out queries join the index
    apply_search_params(best.index, best.type, best.params)
    tried = [t for c in ladder for t in c.trials]
    record = _record(options, chosen, tried, len(held), n, start, by="build", sample="held-out")
    return Built(best.index, best.type, best.params, record)


@dataclass
class Retuned:
    """The search parameters chosen for an existing index (only its knob differs) and the new tuning record."""

    params: IndexParams
    record: dict[str, Any]


def retune(
    index: Any,
    kind: str,
    params: IndexParams,
    ids: np.ndarray,
    options: TuningOptions,
    report: ReportFn | None = None,
    *,
    by: str = "tune",
    sweep: bool = True,
) -> Retuned:
    """Measure the search setting of a built ``index`` of concrete type ``kind`` holding ``ids`` ((N,) sorted) on a
    sample of its own vectors, and choose the knob as a build does: with ``sweep``, or when the recall misses the
    target, the knob is swept; otherwise the measured setting is kept. Changing the type needs a rebuild.

    Queries are a sample of the stored vectors. In flat and IVF indexes each one's own id is left out of the exact
    and the approximate results (for ivfpq, exact search runs over the decoded codes: the recall counts what nprobe
    loses, not what the codes do). An HNSW graph cannot leave a vector out, and a query inside it reaches its
    neighbours through its own links, so the knob is measured, as in a build, on a graph of the same shape built
    over the other stored vectors (the slow part), and the choice applied to the index.
    """
    say = report or (lambda line: None)
    n = len(ids)
    rows = _hold_out(n, options)
    if len(rows) < MIN_QUERIES:
        return Retuned(params, _unmeasured(n, options, by))
    start = time.perf_counter()
    say(
        f"measuring on {len(rows):,} of {n:,} stored vectors as queries: recall@{RECALL_K} >= "
        f"{options.recall_target} at p50 <= {options.max_latency_ms:g} ms"
    )
    vectors = index.reconstruct_batch(ids)  # (N, D)
    if kind == "hnsw":
        keep = np.setdiff1d(np.arange(n), rows)
        say(
            f"  building an hnsw graph of the other {len(keep):,} vectors to measure on (the index's own graph "
            "cannot leave the queries out)"
        )
        measured, sample, method = _filled(kind, params, vectors, keep, say), "held-out", "rebuilt graph"
        bench = _held_out_bench(vectors, rows, keep, options)
    else:
        measured, sample, method = index, "stored", "stored"
        bench = _stored_bench(vectors, ids, rows, options)
    candidate = _Candidate(kind, dataclasses.replace(params), measured)
    before = _announce(bench.measure(measured, kind, params), say)
    candidate.trials = [before]
    knob = search_knob(kind)
    if knob is not None and (sweep or before.recall < options.recall_target):
        known = {before.params[knob]: before}
        widening = WIDENING_KNOBS.get(kind)
        if widening and getattr(params, widening[0]) > getattr(IndexParams, widening[0]):
            # The sweep may find less enough: it starts again from the default.
            candidate.params = dataclasses.replace(params, **{widening[0]: getattr(IndexParams, widening[0])})
            known = {}
        swept = _sweep(candidate, bench, options, say, known=known)
        # From the default the sweep may come back up to the setting in use, and measure it again.
        candidate.trials = swept if known else [before, *(t for t in swept if t.params != before.params)]
    chosen = _pick(candidate.trials, options)
    _set_knob(candidate, chosen)
    apply_search_params(index, kind, candidate.params)
    record = _record(
        options,
        chosen,
        candidate.trials,
        len(rows),
        n,
        start,
        by=by,
        sample=sample,
        method=method,
        before=dataclasses.asdict(before),
    )
    return Retuned(candidate.params, record)


def needs_remeasure(record: dict[str, Any] | None, vectors: int) -> bool:
    """Whether an index now holding ``vectors`` has grown by more than ``REMEASURE_GROWTH`` of its size when its
    tuning ``record`` was made (an index without a record keeps the settings it was given)."""
    return record is not None and vectors > (1 + REMEASURE_GROWTH) * record.get("vectors", 0)


def recorded_options(record: dict[str, Any] | None) -> TuningOptions:
    """The goal a tuning record was made for (the defaults without a record)."""
    if record is None:
        return DEFAULT_TUNING
    return TuningOptions(
        recall_target=record["recall_target"], max_latency_ms=record["max_latency_ms"], seed=record.get("seed", 0)
    )


def alternatives(kind: str, n: int, params: IndexParams) -> list[_Candidate]:
    """What to build when no setting of ``kind`` meets the target, cheapest build first: exact search (kept only if
    fast enough), then from 50,000 vectors ivfpq-rerank (a query can scan most of its cells' 4-bit codes within the
    bound: on the hard synthetic million it reached recall 1.0 scanning them all in ~2.5 ms) and IVF with more
    cells, then an HNSW graph (the slowest to build: tens of minutes at a million vectors on 2 cores)."""
    out = [] if kind == "flat" else [_Candidate("flat", dataclasses.replace(params, type="flat"))]
    if kind != "ivfpq-rerank" and n >= AUTO_APPROXIMATE_THRESHOLD:
        shape = dataclasses.replace(params, type="ivfpq-rerank", nlist=None, pq_m=None)  # its own defaults
        out.append(_Candidate("ivfpq-rerank", shape))
    more = min(int(MORE_CELLS * math.sqrt(n)), n // MORE_CELLS_TRAIN_PER_CELL)
    if more > (params.nlist or default_nlist("ivf", n)) and n >= AUTO_APPROXIMATE_THRESHOLD:
        cells = dataclasses.replace(params, type="ivf", nlist=more, train_per_cell=MORE_CELLS_TRAIN_PER_CELL)
        out.append(_Candidate("ivf", cells))
    if kind != "hnsw":
        out.append(_Candidate("hnsw", dataclasses.replace(params, type="hnsw")))
    return out


def _measure_candidate(
    candidate: _Candidate,
    vectors: np.ndarray,
    keep: np.ndarray,
    bench: HeldOut,
    options: TuningOptions,
    say: ReportFn,
    *,
    required: bool,
) -> bool:
    """Build ``candidate`` on the kept vectors and sweep its knob; exact search is only timed (its recall is 1 by
    construction) and, unless ``required``, dropped when a few queries already show it is too slow."""
    if candidate.type == "flat":
        flat = _faiss().IndexIDMap2(_faiss().IndexFlatIP(vectors.shape[1]))
        _add(flat, "flat", vectors, keep, say)
        p50, p99 = bench.latency(flat, count=min(bench.latency_queries, 20))
        candidate.trials.append(Trial("flat", {}, 1.0, round(p50, 3), round(p99, 3)))
        say(f"  {candidate.trials[-1].describe()} (exact)")
        if p50 > options.max_latency_ms and not required:
            return False
        candidate.index = flat
        return True
    started = time.perf_counter()
    candidate.index = _filled(candidate.type, candidate.params, vectors, keep, say)
    if len(keep) >= ADD_CHUNK:
        say(f"  built {_shape(candidate)} in {time.perf_counter() - started:.1f} s")
    candidate.trials += _sweep(candidate, bench, options, say)
    return True


def _sweep(
    candidate: _Candidate,
    bench: HeldOut,
    options: TuningOptions,
    say: ReportFn,
    known: dict[int, Trial] | None = None,
) -> list[Trial]:
    """Sweep the search knob (:func:`_sweep_knob`); for a type with a widening knob (``WIDENING_KNOBS``: rerank),
    when no value of the search knob reaches the recall target within the latency bound, double the widening knob and
    sweep again, while that raises the best recall within the bound, up to its cap. The candidate keeps the last
    value tried; the chosen trial names its own."""
    trials = _sweep_knob(candidate, bench, options, say, known)
    best = _best_recall_within(trials, options)
    widening, cap = WIDENING_KNOBS.get(candidate.type, (None, 0))
    while widening is not None and getattr(candidate.params, widening) < cap:
        if best is None or best >= options.recall_target:
            break
        value = getattr(candidate.params, widening)
        wider = min(2 * value, cap)
        say(f"  no {search_knob(candidate.type)} reached it with {widening}={value}: {widening}={wider}")
        candidate.params = dataclasses.replace(candidate.params, **{widening: wider})
        more = _sweep_knob(candidate, bench, options, say)
        trials += more
        better = _best_recall_within(more, options)
        if better is None or better <= best:
            break  # the latency bound, not the re-scoring, holds the recall back
        best = better
    return trials


def _best_recall_within(trials: list[Trial], options: TuningOptions) -> float | None:
    """The highest recall among ``trials`` within the latency bound (None: none is)."""
    return max((t.recall for t in trials if t.p50_ms <= options.max_latency_ms), default=None)


def _sweep_knob(
    candidate: _Candidate,
    bench: HeldOut,
    options: TuningOptions,
    say: ReportFn,
    known: dict[int, Trial] | None = None,
) -> list[Trial]:
    """Double the knob until the target is met or the latency bound passed, then bisect below the first setting
    that meets the recall target; settings in ``known`` (knob value -> trial) are not measured again."""
    knob = search_knob(candidate.type)
    if knob is None:
        return [_announce(bench.measure(candidate.index, candidate.type, candidate.params), say)]
    top = _faiss().extract_index_ivf(candidate.index).nlist if knob == "nprobe" else MAX_EF_SEARCH
    values = [v for v in (2**i for i in range(14)) if v <= top and (knob == "nprobe" or v >= 16)]
    if values[-1] != top and knob == "nprobe":
        values.append(top)
    tried: dict[int, Trial] = dict(known or {})

    def at(value: int) -> Trial:
        if value in tried:
            return tried[value]
        setting = dataclasses.replace(candidate.params, **{knob: value})
        tried[value] = _announce(bench.measure(candidate.index, candidate.type, setting), say)
        return tried[value]

    low = None
    for value in values:
        trial = at(value)
        if trial.recall >= options.recall_target or trial.p50_ms > options.max_latency_ms:
            break
        low = value
    passing = [v for v, t in tried.items() if t.recall >= options.recall_target]
    if passing and low is not None:
        high = min(passing)
        for _ in range(BISECT_STEPS):
            if high - low <= max(1, low // 8):
                break
            middle = (low + high) // 2
            if at(middle).recall >= options.recall_target:
                high = middle
            else:
                low = middle
    return [tried[v] for v in sorted(tried)]


def _pick(trials: list[Trial], options: TuningOptions) -> Trial:
    """Of one type's trials: the smallest knob meeting the target (a larger knob only costs more; two close
    settings' measured p50s differ by noise), else the best trade-off."""
    meeting = [t for t in trials if t.meets(options)]
    if meeting:
        return min(meeting, key=lambda t: (t.params.get(search_knob(t.type) or "", 0), t.p50_ms))
    return _trade_off(trials, options)


def _trade_off(trials: list[Trial], options: TuningOptions) -> Trial:
    """When none meets the target: the best recall within the latency bound, else the fastest."""
    within = [t for t in trials if t.p50_ms <= options.max_latency_ms]
    if within:
        return max(within, key=lambda t: (t.recall, -t.p50_ms))
    return min(trials, key=lambda t: t.p50_ms)


def _better(a: Trial, b: Trial, options: TuningOptions) -> bool:
    """Whether type ``a``'s choice beats type ``b``'s: meeting the target first, then the lower p50."""
    if a.meets(options) != b.meets(options):
        return a.meets(options)
    if a.meets(options):
        return a.p50_ms < b.p50_ms
    return _trade_off([b, a], options) is a


def _set_knob(candidate: _Candidate, chosen: Trial) -> None:
    """Give the candidate the chosen trial's search-time settings."""
    chosen_knobs = {k: v for k, v in chosen.params.items() if k in SEARCH_TIME_KNOBS}
    candidate.params = dataclasses.replace(candidate.params, **chosen_knobs)


def _hold_out(n: int, options: TuningOptions) -> np.ndarray:
    count = min(options.queries, n // HELD_OUT_SHARE)
    rng = np.random.default_rng(options.seed)
    return np.sort(rng.choice(n, size=count, replace=False)) if count else np.zeros(0, np.int64)


def _held_out_bench(vectors: np.ndarray, held: np.ndarray, keep: np.ndarray, options: TuningOptions) -> HeldOut:
    queries = np.ascontiguousarray(vectors[held])  # (Q, D)
    kth = _kth_exact_scores(queries, vectors, keep)
    return HeldOut(queries, kth, vectors, min(options.latency_queries, len(held)))


def _stored_bench(vectors: np.ndarray, ids: np.ndarray, rows: np.ndarray, options: TuningOptions) -> HeldOut:
    """Queries ``vectors[rows]`` that are in the index: exact search runs over all ``vectors`` (under ``ids``) and
    each query's own row is left out."""
    queries = np.ascontiguousarray(vectors[rows])  # (Q, D)
    kth = _kth_exact_scores(queries, vectors, np.arange(len(vectors)), own=rows)
    return HeldOut(queries, kth, vectors, min(options.latency_queries, len(rows)), ids=ids, own_ids=ids[rows])


def _kth_exact_scores(
    queries: np.ndarray, vectors: np.ndarray, rows: np.ndarray, own: np.ndarray | None = None
) -> np.ndarray:
    """(Q,) each query's k-th best exact inner-product score among ``vectors[rows]``, searched a block at a time;
    with ``own`` ((Q,) row positions) each query's own row does not count."""
    k = RECALL_K + (own is not None)
    top = np.full((len(queries), k), -np.inf, dtype=np.float32)  # (Q, k) best exact scores so far
    top_rows = np.full((len(queries), k), -1, dtype=np.int64)  # (Q, k) their rows
    for start in range(0, len(rows), 4 * ADD_CHUNK):
        block = rows[start : start + 4 * ADD_CHUNK]
        scores, found = _faiss().knn(queries, vectors[block], min(k, len(block)), metric=_faiss().METRIC_INNER_PRODUCT)
        scores, found = np.concatenate([top, scores], axis=1), np.concatenate([top_rows, block[found]], axis=1)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        top, top_rows = np.take_along_axis(scores, order, axis=1), np.take_along_axis(found, order, axis=1)
    if own is not None:
        top = np.take_along_axis(top, _others_first(top_rows, own), axis=1)
    return top[:, RECALL_K - 1]


def _others_first(found: np.ndarray, own: np.ndarray) -> np.ndarray:
    """Column order putting each row's ``own`` entry last, the others in their order."""
    return np.argsort(found == own[:, None], axis=1, kind="stable")


def _without_own(found: np.ndarray, own: np.ndarray) -> np.ndarray:
    """(Q, k) of ``found`` ((Q, k + 1) ids) without each query's own id (else without the last)."""
    return np.take_along_axis(found, _others_first(found, own), axis=1)[:, :RECALL_K]


def _filled(kind: str, params: IndexParams, vectors: np.ndarray, rows: np.ndarray, say: ReportFn) -> Any:
    """A new index of ``kind`` trained (the IVF types) on and filled with ``vectors[rows]`` under ids ``rows``."""
    train = vectors[rows] if is_ivf(kind) else None
    if is_ivf(kind) and len(rows) >= ADD_CHUNK:
        say(f"  training {kind} cells (k-means)")
    index = new_index(kind, vectors.shape[1], params, train=train)
    del train
    if is_ivf(kind):
        ivf = _faiss().downcast_index(_faiss().extract_index_ivf(index))
        params.nlist = int(ivf.nlist)
        if kind != "ivf":
            params.pq_m = int(ivf.pq.M)
    _add(index, kind, vectors, rows, say)
    apply_search_params(index, kind, params)
    return index


def _add(index: Any, kind: str, vectors: np.ndarray, rows: np.ndarray, say: ReportFn) -> None:
    """Add ``vectors[rows]`` under ids ``rows`` a chunk at a time, saying how far a long add has got."""
    step = max(ADD_CHUNK, len(rows) // 10)
    for start in range(0, len(rows), step):
        part = rows[start : start + step]
        index.add_with_ids(np.ascontiguousarray(vectors[part]), part.astype(np.int64))
        if len(rows) > step:
            say(f"  adding to {kind}: {min(start + step, len(rows)):,}/{len(rows):,}")


def _announce(trial: Trial, say: ReportFn) -> Trial:
    say(f"  {trial.describe()}")
    return trial


def _knobs(kind: str, params: IndexParams) -> dict[str, Any]:
    return {k: getattr(params, k) for k in KNOBS[kind]}


def _shape(candidate: _Candidate) -> str:
    build = [k for k in KNOBS[candidate.type] if k not in SEARCH_TIME_KNOBS]
    shape = " ".join(f"{k}={getattr(candidate.params, k)}" for k in build if getattr(candidate.params, k) is not None)
    return f"{candidate.type}{' ' + shape if shape else ''}"


def _record(
    options: TuningOptions,
    chosen: Trial,
    tried: list[Trial],
    queries: int,
    vectors: int,
    start: float,
    *,
    by: str,
    sample: str,
    method: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The tuning record kept in index.json: the goal, the choice, every measured setting and how it was measured
    (``by`` build, tune or add; queries ``held-out`` or ``stored``; ``method`` a key of METHODS, else ``sample``)."""
    return {
        "measured": True,
        **_targets(options),
        "met": chosen.meets(options),
        "chosen": dataclasses.asdict(chosen),
        "tried": [dataclasses.asdict(t) for t in tried],
        "queries": queries,
        "latency_queries": min(options.latency_queries, queries),
        "seed": options.seed,
        "vectors": vectors,
        "seconds": round(time.perf_counter() - start, 1),
        "by": by,
        "sample": sample,
        "method": METHODS[method or sample],
        **extra,
    }


def _unmeasured(n: int, options: TuningOptions, by: str) -> dict[str, Any]:
    reason = f"{n} vectors: too few to hold out {MIN_QUERIES} queries (one in {HELD_OUT_SHARE} at most)"
    return {"measured": False, "reason": reason, **_targets(options), "vectors": n, "by": by}


def _targets(options: TuningOptions) -> dict[str, Any]:
    return {"recall_target": options.recall_target, "max_latency_ms": options.max_latency_ms, "k": RECALL_K}


def summary(record: dict[str, Any]) -> str:
    """One line for a tuning record: what was chosen (and, after a re-tune, what was in use before), or a warning
    with the best trade-off when the target was not met within the bound."""
    goal = f"recall@{record['k']} >= {record['recall_target']:g} at p50 <= {record['max_latency_ms']:g} ms"
    if not record.get("measured"):
        return f"tuning not measured ({record['reason']}): search settings as given"
    chosen = Trial(**record["chosen"])
    tried = [Trial(**t) for t in record["tried"]]
    by = record.get("by", "build")
    basis = (
        f"{record['queries']:,} {record.get('sample', 'held-out')} queries, "
        f"{len(tried)} setting{'s' if len(tried) > 1 else ''} tried"
    )
    measured_only = by == "add" and len(tried) == 1
    if measured_only:
        grown = f" (last measured at {record['grown_from']:,})" if "grown_from" in record else ""
        done = f"re-measured at {record['vectors']:,} vectors{grown}: {chosen.describe()}"
    else:
        done = f"{'tuned' if by == 'build' else 're-tuned'} to {chosen.describe()}"
    before = record.get("before")
    was = f"; before: {Trial(**before).describe()}" if before is not None and not measured_only else ""
    if record["met"]:
        return f"{done} ({goal}; {basis}){was}"
    line = f"warning: {goal} not met; {done if measured_only else 'best trade-off ' + chosen.describe()} ({basis}){was}"
    reaching = [t for t in tried if t.recall >= record["recall_target"]]
    if reaching:
        fastest = min(reaching, key=lambda t: t.p50_ms)
        line += f"; the recall target needs {fastest.describe()}"
    line += ": raise --max-latency-ms or lower --recall-target to trade one for the other"
    if by != "build":
        line += "; changing the index type needs a rebuild (index build --type auto --overwrite tries other types)"
    return line
