"""Classification metrics on plain arrays of labels and scores.

Semantics follow scikit-learn (the tests compare against it): labels are compared as values,
the label set defaults to the sorted union of ``y_true`` and ``y_pred``, and any ratio whose
denominator is zero (a class never predicted -> precision, a class absent from ``y_true`` ->
recall, both zero -> F1) is reported as 0, i.e. sklearn's ``zero_division=0``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

Average = Literal["macro", "micro", "weighted"]


def accuracy(y_true: Sequence | np.ndarray, y_pred: Sequence | np.ndarray) -> float:
    """Fraction of items whose prediction equals the label."""
    y_true, y_pred = _check_pair(y_true, y_pred)
    return float(np.mean(y_true == y_pred)) if len(y_true) else 0.0


def top_k_accuracy(scores: np.ndarray, labels: Sequence[int] | np.ndarray, k: int) -> float:
    """Fraction of items whose label is among the ``k`` highest-scoring classes.

    ``scores`` is (N, C); ``labels`` holds class indices in ``[0, C)``. A tie with the label's
    score counts against the label (pessimistic), so constant scores never look like hits.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if scores.ndim != 2 or len(scores) != len(labels):
        raise ValueError(f"scores must be (N, C) with N == len(labels); got {scores.shape} and {len(labels)}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if len(labels) == 0:
        return 0.0
    label_score = scores[np.arange(len(labels)), labels][:, None]  # (N, 1)
    # Rank without sorting: how many *other* classes score at least as high as the label.
    rivals = (scores >= label_score).sum(axis=1) - 1
    return float(np.mean(rivals < k))


def roc_auc(y_true: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for the binary labels ``y_true`` (1 = positive): the chance that a
    random positive outscores a random negative, ties counting half (Mann-Whitney U). Needs both classes."""
    truth = np.asarray(y_true).astype(bool)
    values = np.asarray(scores, dtype=np.float64)
    if truth.shape != values.shape or truth.ndim != 1:
        raise ValueError(f"need two equal-length 1-d arrays, got {truth.shape} and {values.shape}")
    positives, negatives = int(truth.sum()), int((~truth).sum())
    if not positives or not negatives:
        raise ValueError("ROC-AUC needs both positive and negative examples")
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.arange(1, len(values) + 1)
    sorted_values = values[order]
    # Tied scores share the mean of their ranks.
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], len(values)]
    for start, end in zip(starts, ends):
        if end - start > 1:
            ranks[order[start:end]] = (start + 1 + end) / 2
    u = ranks[truth].sum() - positives * (positives + 1) / 2
    return float(u / (positives * negatives))


def confusion_matrix(
    y_true: Sequence | np.ndarray,
    y_pred: Sequence | np.ndarray,
    labels: Sequence | np.ndarray | None = None,
) -> np.ndarray:
    """(L, L) counts; row = true label, column = predicted label, in ``labels`` order.

    Items whose true or predicted label is not in ``labels`` are left out (as sklearn does).
    """
    y_true, y_pred = _check_pair(y_true, y_pred)
    label_arr = _label_set(y_true, y_pred, labels)
    t_idx, t_ok = _encode(y_true, label_arr)
    p_idx, p_ok = _encode(y_pred, label_arr)
    keep = t_ok & p_ok
    matrix = np.zeros((len(label_arr), len(label_arr)), dtype=np.int64)
    np.add.at(matrix, (t_idx[keep], p_idx[keep]), 1)
    return matrix


@dataclass(frozen=True)
class PRF:
    """Per-class and averaged precision / recall / F1.

    ``precision``, ``recall``, ``f1`` and ``support`` are arrays aligned with ``labels``;
    ``avg_*`` are the averages chosen by ``average``.
    """

    labels: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    support: np.ndarray
    average: str
    avg_precision: float
    avg_recall: float
    avg_f1: float


def precision_recall_f1(
    y_true: Sequence | np.ndarray,
    y_pred: Sequence | np.ndarray,
    average: Average = "macro",
    labels: Sequence | np.ndarray | None = None,
) -> PRF:
    """Precision, recall and F1 per class plus their ``macro``/``micro``/``weighted`` average.

    ``macro`` is the unweighted mean over ``labels``; ``weighted`` weights by true support;
    ``micro`` pools true/false positives and false negatives over ``labels``. Zero
    denominators give 0 (sklearn ``zero_division=0``).
    """
    if average not in ("macro", "micro", "weighted"):
        raise ValueError(f"average must be one of 'macro', 'micro', 'weighted'; got {average!r}")
    y_true, y_pred = _check_pair(y_true, y_pred)
    label_arr = _label_set(y_true, y_pred, labels)
    # Count per label directly (not via the confusion matrix) so predictions of labels
    # outside ``labels`` still count as misses for the listed true labels, as in sklearn.
    t_idx, t_ok = _encode(y_true, label_arr)
    p_idx, p_ok = _encode(y_pred, label_arr)
    n_labels = len(label_arr)
    tp = np.bincount(t_idx[t_ok & (y_true == y_pred)], minlength=n_labels).astype(np.float64)
    n_pred = np.bincount(p_idx[p_ok], minlength=n_labels).astype(np.float64)
    support = np.bincount(t_idx[t_ok], minlength=n_labels).astype(np.float64)

    precision = _safe_div(tp, n_pred)
    recall = _safe_div(tp, support)
    f1 = _safe_div(2 * precision * recall, precision + recall)

    if average == "micro":
        p = float(_safe_div(tp.sum(), n_pred.sum()))
        r = float(_safe_div(tp.sum(), support.sum()))
        f = float(_safe_div(2 * p * r, p + r))
    else:
        weights = support if average == "weighted" else np.ones_like(support)
        total = weights.sum()
        p, r, f = (float((v * weights).sum() / total) if total > 0 else 0.0 for v in (precision, recall, f1))
    return PRF(label_arr, precision, recall, f1, support.astype(np.int64), average, p, r, f)


def _safe_div(num: np.ndarray | float, den: np.ndarray | float) -> np.ndarray:
    """num / den with 0 where den == 0 (the zero_division=0 convention)."""
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    out = np.zeros(np.broadcast(num, den).shape)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _check_pair(y_true: Sequence | np.ndarray, y_pred: Sequence | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise ValueError(f"y_true and y_pred must be 1-D of equal length; got {y_true.shape} and {y_pred.shape}")
    return y_true, y_pred


def _label_set(y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence | np.ndarray | None) -> np.ndarray:
    if labels is not None:
        return np.asarray(labels)
    return np.unique(np.concatenate([y_true, y_pred]))


def _encode(values: np.ndarray, label_arr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Position of each value in ``label_arr`` (any order) and whether it is listed at all."""
    if len(label_arr) == 0:
        return np.zeros(len(values), dtype=np.int64), np.zeros(len(values), dtype=bool)
    sorter = np.argsort(label_arr, kind="stable")
    pos = np.searchsorted(label_arr, values, sorter=sorter).clip(max=len(label_arr) - 1)
    idx = sorter[pos]
    return idx, label_arr[idx] == values
