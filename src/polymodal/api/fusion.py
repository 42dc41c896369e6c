"""``Model.predict`` of a polymodal fusion classifier (towers -> fusion -> head): table rows whose columns are named
after the model's modalities, with the contract of a fitted predictor's ``predict`` (``polymodal fit``).

Rows are read as ``fit`` reads them (:func:`~polymodal.fit.predictor.as_table`); a missing cell or a bad file leaves
that input absent for that row (the model's ``present`` masks), the bad file counted in ``.bad`` with its table, row
and column; the result is fit's :class:`~polymodal.fit.Predictions`, its problem read from what the saved model
records its outputs to be (softmax classes, multi-label or regression).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from polymodal.backends import PREDICT, Backend, TaskNotSupported
from polymodal.backends.polymodal_dir import PolymodalBackend
from polymodal.data.errors import BadSampleError, BadSampleLog
from polymodal.fit import ColumnMismatchError, Predictions, Problem, Table
from polymodal.fit.columns import is_missing
from polymodal.fit.predictor import as_table, id_columns, score_rows
from polymodal.fit.search import predictions
from polymodal.models.saved import MULTILABEL, REGRESSION

LABEL = "label"  # what a fusion classifier's predictions are named (it keeps no label column)


def fusion_problem(backend: PolymodalBackend) -> Problem:
    """What the classifier predicts, by the outputs its saved model records: classes (``binary``/``multiclass``,
    softmax), ``multilabel`` (a sigmoid per class) or ``regression`` (its raw value)."""
    outputs, classes = backend.saved.outputs, tuple(backend.classes)
    reason = f"the saved model's outputs: {outputs}"
    if outputs == REGRESSION:
        return Problem("regression", LABEL, (), reason)
    if outputs == MULTILABEL:
        return Problem("multilabel", LABEL, classes, reason)
    return Problem("binary" if len(classes) == 2 else "multiclass", LABEL, classes, reason)


def check_columns(table: Table, reads: Sequence[str]) -> None:
    """Refuse (:class:`ColumnMismatchError`) rows none of whose columns the model reads: each row would be predicted
    from nothing. A column may lack cells (a missing input), and a table may lack some of the columns."""
    if (table.header is None and not table.rows) or set(reads) & set(table.columns):
        return
    has = ", ".join(table.columns) or "none"
    raise ColumnMismatchError(
        f"{table.source}: no column the model reads ({', '.join(reads)}: one per modality, holding file paths or "
        f"text); the table's columns: {has}"
    )


def predict_rows(
    backend: Backend,
    rows: Table | str | os.PathLike[str] | Sequence[Mapping[str, Any]],
    *,
    batch_size: int,
    autocast: Callable[[], contextlib.AbstractContextManager[None]],
    bad_log: BadSampleLog | None = None,
) -> Predictions:
    """The fusion classifier's prediction per row of ``rows`` (as :meth:`~polymodal.api.Model.predict` takes them),
    ``batch_size`` rows per model call under ``autocast``; bad cells go to ``bad_log`` (and ``.bad``)."""
    if not isinstance(backend, PolymodalBackend) or PREDICT not in backend.capabilities:
        raise TaskNotSupported(backend, "predict")
    table = as_table(rows)
    reads = sorted(backend.media[PREDICT])
    check_columns(table, reads)
    bad_log = bad_log or BadSampleLog()
    resolver = table.resolver()
    problem = fusion_problem(backend)
    first: dict[str, Any] = {}  # a prepared value of each modality: to ask the model what it predicts from nothing

    def cell(i: int, modality: str) -> Any:
        value = table.rows[i].get(modality)
        if is_missing(value):
            return None
        try:
            prepared = backend.prepare(modality, value, resolver, table.row_numbers[i])
        except BadSampleError as e:
            bad_log.record(e)
            return None
        first.setdefault(modality, prepared)
        return prepared

    width = 1 if problem.kind == "regression" else len(problem.classes)
    outputs = torch.zeros(len(table), width)
    empty: list[range] = []  # batches in which no row has any input
    for start in range(0, len(table), batch_size):
        batch = range(start, min(start + batch_size, len(table)))
        with autocast():
            logits = backend.predict({m: [cell(i, m) for i in batch] for m in reads})
        if logits is None:
            empty.append(batch)
        else:
            outputs[start : batch.stop] = logits.view(len(batch), -1)
    if empty:  # their rows get what the model predicts with every input absent, as rows with none in other batches do
        if not first:
            raise ValueError(
                f"{table.source}: no row has an input the model can read ({', '.join(reads)}); "
                f"{bad_log.total} bad cells" + (f", e.g. {bad_log.examples[0]}" if bad_log.examples else "")
            )
        with autocast():
            prior = backend.predict({m: [value] for m, value in first.items()}, absent=True)
        assert prior is not None
        for batch in empty:
            outputs[batch.start : batch.stop] = prior.view(1, -1)
    values = predictions(problem, outputs)
    # Each row keeps the table's identifier columns and the model's media columns (a folder's paths).
    keep = [m for m in reads if m != "text"]
    return Predictions(problem, values, list(table.row_numbers), list(bad_log.examples), id_columns(table, keep))


def evaluate_rows(
    backend: Backend,
    rows: Table | str | os.PathLike[str] | Sequence[Mapping[str, Any]],
    *,
    batch_size: int,
    autocast: Callable[[], contextlib.AbstractContextManager[None]],
) -> dict[str, Any]:
    """The fusion classifier's metrics on labelled ``rows`` (its modalities' columns and ``label``), as a fitted
    predictor's ``evaluate`` gives them (:func:`~polymodal.fit.predictor.score_rows`)."""
    table = as_table(rows)
    if LABEL not in table.columns:
        raise ValueError(f"{table.source}: no label column {LABEL!r} to evaluate against")
    result = predict_rows(backend, table, batch_size=batch_size, autocast=autocast)
    return score_rows(result.problem, result.values, table.values(LABEL), unreadable=len(table.bad))
