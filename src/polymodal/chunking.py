"""How many items one model call takes: the size with the least time per item, measured on this machine.

A larger batch is not always faster per item. On a CPU a convolutional tower's activations outgrow the caches, and
where that happens depends on the CPU, the precision and the model (benchmarks/README.md, "Chunk sizes"). So the
sizes are measured on the calls the model gets anyway, not assumed.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


class ChunkSizer:
    """Learns the fastest chunk size among the powers of two up to ``limit`` (and ``limit`` itself).

    Each size is timed on real calls: its first call is warm-up (a new shape builds new kernels), then the fastest
    of ``samples`` calls counts (so one descheduled call does not). A call explores the sizes it can fill that are
    not timed yet, largest first; once they are, it takes the fastest per item.
    """

    def __init__(self, limit: int, samples: int = 3) -> None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        self.sizes = sorted({2**i for i in range(limit.bit_length()) if 2**i <= limit} | {limit})
        self.samples = samples
        self._calls: dict[int, int] = {}  # size -> calls timed so far, warm-up included
        self._seconds_per_item: dict[int, float] = {}  # size -> the fewest seconds per item measured
        self._lock = threading.Lock()

    def next_size(self, remaining: int) -> int:
        """How many of ``remaining`` items the next call takes."""
        with self._lock:
            for size in reversed(self.sizes):
                if size <= remaining and self._calls.get(size, 0) < self.samples + 1:
                    return size
            best = self.best()
        return min(best or self.sizes[-1], remaining)

    def record(self, size: int, seconds: float) -> None:
        """A call of ``size`` items took ``seconds``; sizes not among ``sizes`` (a call's remainder) are not kept."""
        if size not in self.sizes:
            return
        with self._lock:
            calls = self._calls.get(size, 0) + 1
            self._calls[size] = calls
            if calls > 1:
                self._seconds_per_item[size] = min(self._seconds_per_item.get(size, math.inf), seconds / size)

    def best(self) -> int | None:
        """The size with the fewest seconds per item so far; None before any size is timed."""
        timed = self._seconds_per_item
        return min(timed, key=timed.__getitem__) if timed else None

    def measured(self) -> dict[int, float]:
        """Items per second at each size timed so far."""
        return {size: 1.0 / secs for size, secs in sorted(self._seconds_per_item.items()) if secs > 0}


def map_in_sized_calls(sizer: ChunkSizer, fn: Callable[[Sequence[T]], R], items: Sequence[T]) -> list[R]:
    """``fn`` over ``items`` in calls of the sizes ``sizer`` picks, each call timed for it; one result per call."""
    results, start = [], 0
    while start < len(items):
        size = sizer.next_size(len(items) - start)
        began = time.perf_counter()
        results.append(fn(items[start : start + size]))
        sizer.record(size, time.perf_counter() - began)
        start += size
    return results
