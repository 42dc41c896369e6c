"""Tuning an index to a recall target on held-out vectors: reaching it where the default knob does not, recording
it, opening with it, saying so when it cannot be met, changing type only for ``auto``, and old metadata."""

from __future__ import annotations

import json
from pathlib import Path

import faiss
import numpy as np
import pytest

from polymodal.index import IndexParams, TuningOptions, VectorIndex
from polymodal.index import tuning as tuning_mod
from polymodal.index.tuning import Trial, build_tuned, summary
from tests.index.fixtures import NO_BOUND, brute_recall, spread_vectors, write_pre_tuning_index, write_vectors


def test_the_tuner_raises_nprobe_until_the_target_is_met_and_records_it() -> None:
    vectors = spread_vectors()
    default = build_tuned(vectors, IndexParams(type="ivf"), None)
    held = np.arange(0, 4000, 10)
    assert default.params.nprobe == 16
    assert brute_recall(default.index, vectors, vectors[held], held) < 0.9, "the default knob must miss the target"

    built = build_tuned(vectors, IndexParams(type="ivf"), TuningOptions(max_latency_ms=NO_BOUND))
    record = built.tuning
    assert record is not None and record["met"] and record["measured"]
    assert built.type == "ivf" and built.params.nprobe > 16 and built.index.ntotal == 4000
    assert faiss.extract_index_ivf(built.index).nprobe == built.params.nprobe
    assert record["chosen"]["params"] == {"nlist": built.params.nlist, "nprobe": built.params.nprobe}
    assert record["chosen"]["recall"] >= 0.95 and record["queries"] == 400
    tried = [t["params"]["nprobe"] for t in record["tried"]]
    assert 16 in tried and built.params.nprobe in tried
    below = [t for t in record["tried"] if t["params"]["nprobe"] < built.params.nprobe]
    assert below and all(t["recall"] < 0.95 for t in below), "the smallest setting meeting the target wins"
    # Measured independently, on other queries (in the index, their own id dropped): the setting carries over.
    assert brute_recall(built.index, vectors, vectors[held], held) >= 0.9


def test_the_tuned_setting_is_what_an_opened_index_searches_with(tmp_path: Path) -> None:
    vectors = spread_vectors(2000)
    built = build_tuned(vectors, IndexParams(type="hnsw", ef_search=16), TuningOptions(max_latency_ms=NO_BOUND))
    out = write_vectors(tmp_path / "idx", vectors, built)
    with VectorIndex.open(out) as idx:
        assert faiss.downcast_index(idx.faiss_index.index).hnsw.efSearch == built.params.ef_search
        assert idx.meta.tuning == json.loads(json.dumps(built.tuning))
        hits = idx.search(vectors[:3], k=5)
    _, expected = built.index.search(vectors[:3], 5)
    assert [[h.id for h in row] for row in hits] == expected.tolist()


def test_a_missed_target_is_reported_with_the_best_trade_off() -> None:
    vectors = spread_vectors(2000)
    built = build_tuned(vectors, IndexParams(type="ivf"), TuningOptions(max_latency_ms=1e-6))
    record = built.tuning
    assert record is not None and not record["met"] and built.type == "ivf"
    fastest = min(record["tried"], key=lambda t: t["p50_ms"])
    assert record["chosen"] == fastest and built.params.nprobe == fastest["params"]["nprobe"]
    line = summary(record)
    assert line.startswith("warning:") and "not met" in line and "best trade-off" in line
    assert f"recall@10 {fastest['recall']:.3f}" in line


def test_auto_changes_type_when_no_setting_meets_the_target(monkeypatch: pytest.MonkeyPatch) -> None:
    vectors = spread_vectors(2000)
    # ivfpq with 2-byte codes caps recall far below 0.95 at any nprobe: the tuner must move on to exact search.
    monkeypatch.setattr(tuning_mod, "resolve_type", lambda kind, n: "ivfpq" if kind == "auto" else kind)
    params = IndexParams(type="auto", pq_m=2, nbits=8)
    built = build_tuned(vectors, params, TuningOptions(max_latency_ms=NO_BOUND))
    record = built.tuning
    assert record is not None and record["met"] and built.type == "flat" and built.index.ntotal == 2000
    assert {t["type"] for t in record["tried"]} >= {"ivfpq", "flat"}
    assert all(t["recall"] < 0.95 for t in record["tried"] if t["type"] == "ivfpq")
    # A type the user named is kept, and the miss reported.
    named = build_tuned(vectors, IndexParams(type="ivfpq", pq_m=2), TuningOptions(max_latency_ms=NO_BOUND))
    assert named.type == "ivfpq" and named.tuning is not None and not named.tuning["met"]
    assert {t["type"] for t in named.tuning["tried"]} == {"ivfpq"}


def test_recall_counts_ties_with_the_kth_neighbour_as_hits() -> None:
    vectors = spread_vectors(300, dim=8)
    vectors[100:200] = vectors[0]  # 101 copies: any 10 of them are an exact answer
    bench = tuning_mod._held_out_bench(vectors, np.array([0]), np.arange(1, 300), TuningOptions())
    assert bench.recall(np.array([[150 + i for i in range(10)]])) == 1.0
    assert bench.recall(np.array([[150, 151, 250, -1, -1, -1, -1, -1, -1, -1]])) == pytest.approx(0.2)


def test_too_few_vectors_are_not_measured() -> None:
    built = build_tuned(spread_vectors(50), IndexParams(), TuningOptions())
    assert built.type == "flat" and built.tuning is not None and not built.tuning["measured"]
    assert "too few" in summary(built.tuning) and built.index.ntotal == 50


def test_metadata_without_a_tuning_record_still_opens(tmp_path: Path) -> None:
    vectors = spread_vectors(100)
    out = write_pre_tuning_index(tmp_path / "old", vectors, IndexParams(type="ivf", nprobe=3))
    with VectorIndex.open(out) as idx:
        assert idx.meta.tuning is None and faiss.extract_index_ivf(idx.faiss_index).nprobe == 3
        assert idx.search(vectors[7], k=1)[0][0].id == 7


def test_trial_lines_name_type_settings_recall_and_latency() -> None:
    line = Trial("ivf", {"nlist": 200, "nprobe": 32}, 0.9512, 1.234, 2.0).describe()
    assert line == "ivf nlist=200 nprobe=32: recall@10 0.951, p50 1.23 ms"


def test_the_ladder_of_other_types_goes_from_cheap_to_slow_builds() -> None:
    def shapes(kind: str, n: int) -> list[tuple[str, int | None]]:
        return [(c.type, c.params.nlist) for c in tuning_mod.alternatives(kind, n, IndexParams())]

    assert shapes("ivf", 1_000_000) == [("flat", None), ("ivfpq-rerank", None), ("ivf", 16_000), ("hnsw", None)]
    assert shapes("hnsw", 100_000) == [("flat", None), ("ivfpq-rerank", None), ("ivf", 5_059)]
    assert shapes("ivfpq-rerank", 1_000_000) == [("flat", None), ("ivf", 16_000), ("hnsw", None)]
    assert shapes("ivfpq-rerank", 100_000) == [("flat", None), ("ivf", 5_059), ("hnsw", None)]
    assert shapes("flat", 10_000) == [("hnsw", None)], "too few vectors for finer cells"
    finer = tuning_mod.alternatives("ivf", 1_000_000, IndexParams())[2].params
    assert finer.train_per_cell == tuning_mod.MORE_CELLS_TRAIN_PER_CELL


def test_ivfpq_rerank_scores_candidates_exactly_and_tombstones_removals(tmp_path: Path) -> None:
    vectors = spread_vectors(4000)  # 32-d noise: 4 sub-quantisers of 16 codes rank the true neighbours poorly
    lines: list[str] = []
    options = TuningOptions(max_latency_ms=NO_BOUND)
    built = build_tuned(vectors, IndexParams(type="ivfpq-rerank", rerank=8), options, lines.append)
    record = built.tuning
    assert built.type == "ivfpq-rerank" and record is not None and record["met"] and built.index.ntotal == 4000
    assert built.params.nlist == int(np.sqrt(3600)) and built.params.pq_m == 4  # sqrt(N) cells, dim / 8 codes
    # No nprobe reached the target re-scoring 8 x k candidates, so the tuner re-scored more.
    assert all(t["recall"] < 0.95 for t in record["tried"] if t["params"]["rerank"] == 8)
    chosen = record["chosen"]["params"]
    assert chosen["rerank"] > 8 and built.params.rerank == chosen["rerank"] and built.params.nprobe == chosen["nprobe"]
    assert any("rerank=16" in line for line in lines)
    out = write_vectors(tmp_path / "idx", vectors, built)
    with VectorIndex.open(out) as idx:
        refine = faiss.downcast_index(idx.faiss_index.index)
        assert (
            refine.k_factor == chosen["rerank"] and faiss.extract_index_ivf(idx.faiss_index).nprobe == chosen["nprobe"]
        )
        hits = idx.search(vectors[7], k=3)[0]
        # Re-scored on the full vectors: the exact inner products, not the 4-bit codes' estimates.
        np.testing.assert_allclose([h.score for h in hits], vectors[[h.id for h in hits]] @ vectors[7], atol=1e-5)
        assert hits[0].id == 7 and hits[0].score == pytest.approx(1.0, abs=1e-5)
        removed, _ = idx.remove([7])
        assert removed == [7] and idx.search(vectors[7], k=3)[0][0].id != 7
        np.testing.assert_array_equal(idx.vectors([8]), vectors[[8]])  # stored exactly
    with VectorIndex.open(out) as idx:
        assert (idx.info()["vectors"], idx.info()["tombstones"]) == (4000, 1)  # like HNSW, kept as a tombstone


def test_ivfpq_rerank_needs_enough_vectors_for_its_codebooks() -> None:
    with pytest.raises(ValueError, match="ivfpq-rerank with 4-bit codes needs at least 16 vectors.*--type flat"):
        build_tuned(spread_vectors(12), IndexParams(type="ivfpq-rerank"), None)


def test_removed_items_filling_the_visited_cells_still_leave_k_live_hits(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    centres = rng.standard_normal((40, 32)).astype(np.float32)
    vectors = np.repeat(centres, 50, axis=0) + 0.05 * rng.standard_normal((2000, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)  # 40 tight clusters of 50
    out = write_vectors(
        tmp_path / "idx", vectors, build_tuned(vectors, IndexParams(type="ivfpq-rerank", nprobe=1), None)
    )
    with VectorIndex.open(out) as idx:
        idx.remove(list(range(1000, 1050)))  # the whole cluster the query's one visited cell holds
        hits = idx.search(vectors[1000], k=10)[0]  # its cell held only tombstones: more cells are visited
        assert len(hits) == 10 and not any(1000 <= h.id < 1050 for h in hits)
        np.testing.assert_allclose([h.score for h in hits], vectors[[h.id for h in hits]] @ vectors[1000], atol=1e-5)
        # Every vector fetched: the candidates re-scored stay within the index, the results are exact.
        everything = idx.search(vectors[3], k=2000)[0]
        assert len(everything) == 1950 and [h.id for h in everything[:5]] == [
            int(i) for i in np.argsort(-(vectors @ vectors[3]))[:5]
        ]
        live = np.setdiff1d(np.arange(2000), np.arange(1000, 1050))
        exact = np.sort(vectors[live] @ vectors[3])[::-1][:1400]
        # 1,450 fetched: more than half the index, still every vector re-scored (a whole factor would give 1).
        np.testing.assert_allclose([h.score for h in idx.search(vectors[3], k=1400)[0]], exact, atol=1e-5)
        idx.search(vectors[3], k=10)
        # The 50 tombstones are fetched on top of k: re-scored once each, not rerank times.
        refine = faiss.downcast_index(idx.faiss_index.index)
        assert int(refine.k_factor * (10 + 50)) == idx.params.rerank * 10 + 50  # faiss truncates the product


def test_the_default_pq_size_divides_the_dimension() -> None:
    from polymodal.index.kinds import default_pq_m

    assert [default_pq_m(d) for d in (512, 384, 100, 300, 7, 1)] == [64, 48, 10, 30, 1, 1]
    built = build_tuned(spread_vectors(400, dim=100), IndexParams(type="ivfpq-rerank"), None)
    assert built.params.pq_m == 10


def test_a_search_reads_only_its_hits_from_sqlite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from polymodal.index import store

    vectors = spread_vectors(1000)
    out = write_vectors(tmp_path / "idx", vectors, build_tuned(vectors, IndexParams(type="hnsw"), None))
    with VectorIndex.open(out) as idx:
        order = np.argsort(-(vectors @ vectors[0]))
        idx.remove([int(i) for i in order[:300]])  # the query's 300 nearest: fetched, then skipped
        read: list[int] = []
        real = store.get
        monkeypatch.setattr(store, "get", lambda conn, ids: read.extend(ids) or real(conn, ids))
        hits = idx.search(vectors[0], k=5)[0]
        assert len(hits) == 5 and not {h.id for h in hits} & {int(i) for i in order[:300]}
        assert sorted(read) == sorted(h.id for h in hits)
        assert [h.id for h in idx.search(vectors[0], k=5, kind="text")[0]] == [h.id for h in hits]  # all are texts
        assert idx.search(vectors[0], k=5, kind="image") == [[]]


def test_a_kind_filter_keeps_ivfpq_rerank_exact_and_items_missing_from_sqlite_are_skipped(tmp_path: Path) -> None:
    from polymodal.index import store
    from polymodal.index.vector_index import IndexMeta, write_index

    rng = np.random.default_rng(1)
    centres = rng.standard_normal((20, 64)).astype(np.float32)
    vectors = centres[rng.integers(0, 20, 8000)] + 0.35 * rng.standard_normal((8000, 64)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    built = build_tuned(vectors, IndexParams(type="ivfpq-rerank", nlist=16, pq_m=8, nprobe=16), None)
    images = np.flatnonzero(rng.random(8000) < 0.02)  # 2% images: the filter fetches mostly texts
    meta = IndexMeta(
        model="m",
        model_name="m",
        identity="x",
        embed_dim=64,
        type=built.type,
        params=built.params.to_dict(),
        next_id=8000,
    )
    items = [store.Item("image" if i in set(images) else "text", text=f"t{i}") for i in range(8000)]
    out = tmp_path / "idx"
    write_index(out, meta, built.index, lambda conn: store.insert(conn, list(range(8000)), items))
    queries = vectors[:20]
    truth = images[np.argsort(-(queries @ vectors[images].T), axis=1)[:, :10]]  # (20, 10) exact among images
    with VectorIndex.open(out) as idx:
        hits = idx.search(queries, k=10, kind="image")
        assert [{h.id for h in row} for row in hits] == [set(row) for row in truth.tolist()]  # all re-scored
        gone = [h.id for h in idx.search(vectors[0], k=3)[0]]
        idx.conn.execute(f"DELETE FROM items WHERE id IN ({','.join(map(str, gone))})")  # vectors without items
        again = idx.search(vectors[0], k=3)[0]
        assert len(again) == 3 and not {h.id for h in again} & set(gone)
