"""Re-tuning an existing index on its stored vectors: ``tune_index`` raising a too-small knob, the record kept
across reopening, old indexes without a record, and ``index add`` measuring again once the index has grown."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np
import pytest

from polymodal.index import IndexParams, TuningOptions, VectorIndex, tune_index
from polymodal.index import tuning as tuning_mod
from polymodal.index.kinds import stored_ids
from polymodal.index.retune import remeasure_if_grown
from polymodal.index.tuning import build_tuned, summary
from tests.index.fixtures import NO_BOUND, brute_recall, spread_vectors, write_pre_tuning_index, write_vectors


def test_tune_raises_a_too_small_nprobe_and_the_record_survives_reopening(tmp_path: Path) -> None:
    vectors = spread_vectors(4000)
    out = write_vectors(tmp_path / "idx", vectors, build_tuned(vectors, IndexParams(type="ivf", nprobe=1), None))
    lines: list[str] = []
    record = tune_index(out, max_latency_ms=NO_BOUND, report=lines.append)

    assert record["measured"] and record["met"] and record["by"] == "tune" and record["sample"] == "stored"
    before, chosen = record["before"], record["chosen"]
    assert before["params"]["nprobe"] == 1 and chosen["params"]["nprobe"] > 1
    assert before["recall"] < 0.5 and chosen["recall"] >= 0.95 > before["recall"]
    assert record["vectors"] == 4000 and record["queries"] == 400 and record["recall_target"] == 0.95
    assert lines[0].startswith("measuring on 400 of 4,000 stored vectors") and "nprobe=1:" in lines[1]
    line = summary(record)
    assert line.startswith("re-tuned to ivf") and "400 stored queries" in line and "before: ivf" in line

    with VectorIndex.open(out) as idx:
        assert idx.meta.tuning == record and idx.params.nprobe == chosen["params"]["nprobe"]
        assert faiss.extract_index_ivf(idx.faiss_index).nprobe == chosen["params"]["nprobe"]
        held = np.arange(0, 4000, 10)  # other queries, measured independently with their own id dropped
        assert brute_recall(idx.faiss_index, vectors, vectors[held], held) >= 0.9
        assert idx.search(vectors[5], k=1)[0][0].id == 5


def test_an_index_without_a_tuning_record_is_tuned(tmp_path: Path) -> None:
    vectors = spread_vectors(2000)
    out = write_pre_tuning_index(tmp_path / "old", vectors, IndexParams(type="hnsw", ef_search=16))

    lines: list[str] = []
    record = tune_index(out, recall_target=0.99, max_latency_ms=NO_BOUND, report=lines.append)
    assert record["recall_target"] == 0.99 and record["max_latency_ms"] == NO_BOUND
    # A query inside the graph would reach its neighbours through its own links: measured on a graph without them.
    assert record["sample"] == "held-out" and "graph" in record["method"] and "building an hnsw graph" in lines[1]
    assert record["chosen"]["params"]["ef_search"] > 16 and record["chosen"]["recall"] >= 0.99
    with VectorIndex.open(out) as idx:
        assert idx.meta.tuning == record and idx.params.ef_search == record["chosen"]["params"]["ef_search"]
        assert faiss.downcast_index(idx.faiss_index.index).hnsw.efSearch == idx.params.ef_search
        assert idx.faiss_index.ntotal == 2000 and idx.search(vectors[9], k=1)[0][0].id == 9
    # Tuning again without a goal keeps the recorded one.
    assert tune_index(out)["recall_target"] == 0.99


def test_stored_queries_leave_only_their_own_id_out() -> None:
    vectors = spread_vectors(500, dim=8)
    vectors[1] = vectors[0]  # a duplicate is a true neighbour of its twin, only the query's own id is left out
    ids = np.arange(0, 1000, 2)  # ids with gaps: rows are not ids
    rows = np.arange(0, 500, 5)
    bench = tuning_mod._stored_bench(vectors, ids, rows, TuningOptions())
    scores = vectors[rows] @ vectors.T  # (Q, N): the slow reference
    scores[np.arange(len(rows)), rows] = -np.inf
    np.testing.assert_allclose(bench.kth_scores, np.sort(scores, axis=1)[:, -10], atol=1e-6)

    exact = faiss.IndexIDMap2(faiss.IndexFlatIP(8))
    exact.add_with_ids(vectors, ids)
    trial = bench.measure(exact, "flat", IndexParams(type="flat"))
    assert trial.recall == 1.0, "exact search with the own id dropped finds every neighbour"
    assert bench.recall(np.full((len(rows), 10), -1)) == 0.0


def test_a_flat_index_is_measured_and_a_missed_bound_suggests_a_rebuild(tmp_path: Path) -> None:
    vectors = spread_vectors(1000)
    out = write_vectors(tmp_path / "flat", vectors, build_tuned(vectors, IndexParams(type="flat"), None))
    record = tune_index(out, max_latency_ms=1e-6)
    assert not record["met"] and len(record["tried"]) == 1 and record["chosen"]["recall"] == 1.0
    assert "changing the index type needs a rebuild" in summary(record)


def add_vectors(idx: VectorIndex, extra: np.ndarray) -> None:
    first = idx.meta.next_id
    idx.faiss_index.add_with_ids(extra, np.arange(first, first + len(extra), dtype=np.int64))
    idx.meta.next_id = first + len(extra)


@pytest.fixture
def tuned_ivf(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """An ivf index of 2,000 spread vectors tuned to recall 0.9, and 600 more vectors of the same kind."""
    vectors = spread_vectors(2600)
    built = build_tuned(vectors[:2000], IndexParams(type="ivf"), TuningOptions(0.9, NO_BOUND))
    return write_vectors(tmp_path / "ivf", vectors[:2000], built), vectors[2000:]


def test_growth_past_a_fifth_is_measured_again_and_kept_by_the_commit(tuned_ivf: tuple[Path, np.ndarray]) -> None:
    out, extra = tuned_ivf
    with VectorIndex.open(out) as idx:
        nprobe = idx.params.nprobe
        add_vectors(idx, extra[:300])  # 15%: a small add measures nothing
        assert remeasure_if_grown(idx) is None and idx.meta.tuning["vectors"] == 2000
        add_vectors(idx, extra[300:])  # 30% in all
        idx.meta.tuning["recall_target"] = 0.5  # a goal the setting surely still meets: measured, not swept
        record = remeasure_if_grown(idx)
        assert record is not None and record["by"] == "add" and record["vectors"] == 2600
        assert record["grown_from"] == 2000 and len(record["tried"]) == 1 and record["met"]
        assert record["chosen"]["params"]["nprobe"] == nprobe and record["before"] == record["chosen"]
        assert summary(record).startswith("re-measured at 2,600 vectors (last measured at 2,000): ivf")
        idx.commit(lambda conn: None)
    with VectorIndex.open(out) as idx:
        assert idx.meta.tuning == record and idx.meta.vectors == 2600


def test_growth_with_recall_below_the_target_re_tunes(tuned_ivf: tuple[Path, np.ndarray]) -> None:
    out, extra = tuned_ivf
    with VectorIndex.open(out) as idx:
        nprobe = idx.params.nprobe
        add_vectors(idx, extra)
        idx.meta.tuning["recall_target"] = 0.99  # above what the recorded setting reaches
        record = remeasure_if_grown(idx)
        assert record is not None and record["before"]["recall"] < 0.99 <= record["chosen"]["recall"]
        assert len(record["tried"]) > 1 and idx.params.nprobe > nprobe
        assert faiss.extract_index_ivf(idx.faiss_index).nprobe == idx.params.nprobe
        assert len(stored_ids(idx.faiss_index, "ivf")) == 2600


def test_saving_settings_refuses_an_index_replaced_meanwhile(tmp_path: Path) -> None:
    vectors = spread_vectors(300)
    out = write_vectors(tmp_path / "idx", vectors, build_tuned(vectors, IndexParams(type="flat"), None))
    with VectorIndex.open(out) as idx, VectorIndex.open(out) as other:
        other.commit(lambda conn: None)
        with pytest.raises(ValueError, match="changed by another process"):
            idx.save_settings()


def test_an_ivfpq_rerank_index_is_re_tuned_on_its_stored_vectors(tmp_path: Path) -> None:
    vectors = spread_vectors(4000)
    built = build_tuned(vectors, IndexParams(type="ivfpq-rerank", pq_m=16, nprobe=1), None)
    out = write_vectors(tmp_path / "idx", vectors, built)
    record = tune_index(out, max_latency_ms=NO_BOUND)
    assert record["sample"] == "stored" and record["met"] and record["before"]["recall"] < 0.5
    with VectorIndex.open(out) as idx:
        assert idx.params.nprobe == record["chosen"]["params"]["nprobe"] > 1
        assert faiss.downcast_index(idx.faiss_index.index).k_factor == record["chosen"]["params"]["rerank"]
        held = np.arange(0, 4000, 10)
        assert brute_recall(idx.faiss_index, vectors, vectors[held], held) >= 0.9


def test_re_tuning_may_lower_an_ivfpq_rerank_that_is_higher_than_needed(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    centres = rng.standard_normal((40, 32)).astype(np.float32)
    vectors = np.repeat(centres, 100, axis=0) + 0.3 * rng.standard_normal((4000, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    built = build_tuned(vectors, IndexParams(type="ivfpq-rerank", pq_m=16, rerank=128, nprobe=64), None)
    out = write_vectors(tmp_path / "idx", vectors, built)
    record = tune_index(out, max_latency_ms=NO_BOUND)
    assert record["before"]["params"]["rerank"] == 128 and record["met"]
    assert record["chosen"]["params"]["rerank"] == IndexParams.rerank  # the default re-scores enough here
    settings = [tuple(sorted(t["params"].items())) for t in record["tried"]]
    assert len(settings) == len(set(settings)) and settings[0] == tuple(sorted(record["before"]["params"].items()))
    with VectorIndex.open(out) as idx:
        assert idx.params.rerank == IndexParams.rerank
