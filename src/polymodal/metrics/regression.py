"""Regression metrics on plain arrays (definitions as scikit-learn's, which the tests compare against)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def regression_metrics(y_true: Sequence[float] | np.ndarray, y_pred: Sequence[float] | np.ndarray) -> dict[str, float]:
    """``rmse``, ``mae`` and ``r2`` (the coefficient of determination; 0.0 when ``y_true`` is constant)."""
    truth = np.asarray(y_true, dtype=np.float64)
    pred = np.asarray(y_pred, dtype=np.float64)
    if truth.shape != pred.shape or truth.ndim != 1 or not len(truth):
        raise ValueError(f"need two equal-length 1-d arrays, got {truth.shape} and {pred.shape}")
    error = pred - truth
    total = float(((truth - truth.mean()) ** 2).sum())
    r2 = 1.0 - float((error**2).sum()) / total if total > 0 else 0.0
    return {"rmse": float(np.sqrt((error**2).mean())), "mae": float(np.abs(error).mean()), "r2": r2}
