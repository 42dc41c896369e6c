"""Re-tune the search setting of an existing index on its stored vectors: on request (``polymodal index tune``), or
once ``index add`` has grown it by more than a fifth of the size it was measured at (see
:func:`polymodal.index.tuning.retune`). Only the search-time knobs (nprobe, rerank, efSearch) change; another type
needs a rebuild."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from polymodal.index.kinds import stored_ids
from polymodal.index.tuning import ReportFn, needs_remeasure, recorded_options, retune
from polymodal.index.vector_index import VectorIndex


def tune_index(
    path: str | os.PathLike,
    *,
    recall_target: float | None = None,
    max_latency_ms: float | None = None,
    report: ReportFn | None = None,
) -> dict[str, Any]:
    """Measure and re-tune the index at ``path`` to the goal given (what is not given: the goal of its tuning
    record, else the defaults), write the new record into its ``index.json`` and return it. Indexes without a
    record (built before tuning, or with ``--no-tune``) are tuned too."""
    with VectorIndex.open(path) as idx:
        given = {"recall_target": recall_target, "max_latency_ms": max_latency_ms}
        options = dataclasses.replace(
            recorded_options(idx.meta.tuning), **{k: v for k, v in given.items() if v is not None}
        )
        ids = stored_ids(idx.faiss_index, idx.meta.type)
        tuned = retune(idx.faiss_index, idx.meta.type, idx.params, ids, options, report)
        idx.set_search_params(tuned.params, tuned.record)
        idx.save_settings()
        return tuned.record


def remeasure_if_grown(idx: VectorIndex, report: ReportFn | None = None) -> dict[str, Any] | None:
    """After vectors were added to ``idx`` in memory: when it has outgrown its tuning record, measure the setting
    again (re-tuning the knob only if the recall fell below the target) and keep the new record in memory for the
    commit that follows. Returns the new record, or None when nothing was measured."""
    record = idx.meta.tuning
    if not needs_remeasure(record, int(idx.faiss_index.ntotal)):
        return None
    ids = stored_ids(idx.faiss_index, idx.meta.type)
    tuned = retune(
        idx.faiss_index, idx.meta.type, idx.params, ids, recorded_options(record), report, by="add", sweep=False
    )
    tuned.record["grown_from"] = (record or {}).get("vectors", 0)
    idx.set_search_params(tuned.params, tuned.record)
    return tuned.record
