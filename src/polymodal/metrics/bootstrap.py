"""Percentile bootstrap confidence intervals, deterministic for a given seed."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


def bootstrap_ci(
    values: Sequence[float] | np.ndarray | Callable[[np.ndarray], float],
    n_items: int | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> tuple[float, float]:
    """(low, high) percentile bootstrap interval at level ``1 - alpha``.

    Two forms:
    - mean-type metrics: pass per-item values (e.g. per-question VQA accuracy, per-query
      recall hits); each resample is the mean of items drawn with replacement.
    - corpus metrics (BLEU, CIDEr): pass ``metric(indices) -> float`` and ``n_items``; it is
      called with each resample's item indices (duplicates included), e.g. with per-item BLEU
      statistics ``stats = bleu_stats(refs, preds)``: ``lambda idx: bleu_from_stats(stats[idx].sum(0))[3]``
      (a repeated item's row is summed again, so it counts repeatedly).
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    rng = np.random.default_rng(seed)
    if callable(values):
        if n_items is None or n_items < 1:
            raise ValueError("n_items (>= 1) is required when values is a metric function")
        stats = np.array([values(rng.integers(0, n_items, n_items)) for _ in range(n_resamples)], dtype=np.float64)
    else:
        arr = np.asarray(values, dtype=np.float64)
        if arr.ndim != 1 or len(arr) == 0:
            raise ValueError(f"values must be a non-empty 1-D sequence, got shape {arr.shape}")
        idx = rng.integers(0, len(arr), (n_resamples, len(arr)))  # (R, N)
        stats = arr[idx].mean(axis=1)
    low, high = np.quantile(stats, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)
