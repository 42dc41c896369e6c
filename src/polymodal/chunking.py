"""How many items one model call takes: the size with the least time per item, measured on this machine.

A larger batch is not always faster per item. On a CPU a convolutional tower's activations outgrow the caches, and
where that happens depends on the CPU, the precision and the model (benchmarks/README.md, "Chunk sizes"). So the
sizes are measured on the calls the model gets anyway, not assumed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")
log = logging.getLogger(__name__)
DRIFT = 1.5  # the chosen size this much slower or faster per item than when chosen: time every size again
RECHECK = 50  # calls of the chosen size between timings of its neighbours


class ChunkSizer:
    """Learns the fastest chunk size among the powers of two up to ``limit`` (and ``limit`` itself).

    Each size is timed on real calls: its first call is warm-up (a new shape builds new kernels), then the fastest
    of its latest ``samples`` calls counts (so one descheduled call does not). A call explores the sizes it can fill
    that are not timed yet, largest first; once they are, it takes the fastest per item. Every ``recheck`` calls of
    the chosen size the sizes beside it are timed again, so that one unlucky exploration is not kept for good. When
    the chosen size's time per item moves by more than ``drift`` times from what it was when chosen (other
    processes now load the cores, or stopped), every size is timed again: where activations outgrow the caches
    moves with the load too.
    """

    def __init__(self, limit: int, samples: int = 3, drift: float = DRIFT, recheck: int = RECHECK) -> None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        if drift <= 1:
            raise ValueError(f"drift must be > 1, got {drift}")
        self.sizes = sorted({2**i for i in range(limit.bit_length()) if 2**i <= limit} | {limit})
        self.samples = samples
        self.drift = drift
        self.recheck = recheck
        self.relearned = 0  # times every size was timed again after the chosen one drifted
        self._since_check = 0  # timed calls of the chosen size since its neighbours were last timed
        self._calls: dict[int, int] = {}  # size -> calls timed so far, warm-up included
        self._recent: dict[int, deque[float]] = {}  # size -> seconds per item of its latest timed calls
        self._chosen: tuple[int, float] | None = None  # the fastest size and its seconds per item when chosen
        self._lock = threading.Lock()

    def next_size(self, remaining: int) -> int:
        """How many of ``remaining`` items the next call takes."""
        with self._lock:
            for size in reversed(self.sizes):
                if size <= remaining and self._calls.get(size, 0) < self.samples + 1:
                    return size
            best = self._best()
        return min(best or self.sizes[-1], remaining)

    def record(self, size: int, seconds: float) -> None:
        """A call of ``size`` items took ``seconds``; sizes not among ``sizes`` (a call's remainder) are not kept."""
        if size not in self.sizes:
            return
        with self._lock:
            calls = self._calls.get(size, 0) + 1
            self._calls[size] = calls
            if calls > 1:
                self._recent.setdefault(size, deque(maxlen=self.samples)).append(seconds / size)
                self._follow(size)

    def _follow(self, size: int) -> None:
        """After a timed call of ``size``: time every size again when the chosen size's time per item has drifted;
        else note the fastest size as chosen once its window is full."""
        recent = self._recent[size]
        if len(recent) < self.samples:
            return
        if self._chosen is not None and self._chosen[0] == size:
            ratio = min(recent) / self._chosen[1]
            if not 1 / self.drift <= ratio <= self.drift:
                log.info(
                    "chunk size %d takes %.2fx its time per item when chosen: timing every size again", size, ratio
                )
                self.relearned += 1
                self._calls = dict.fromkeys(self._calls, 1)  # warm already: no second warm-up
                self._recent.clear()
                self._chosen = None
                return
            self._since_check += 1
            if self._since_check >= self.recheck:
                self._since_check = 0
                at = self.sizes.index(size)
                for neighbour in self.sizes[max(at - 1, 0) : at + 2]:
                    if neighbour != size and neighbour in self._recent:  # warm: timed again from its next call
                        self._calls[neighbour] = 1
                        del self._recent[neighbour]
            return
        if size == self._best():
            self._chosen = (size, min(recent))
            self._since_check = 0

    def _best(self) -> int | None:
        timed = {size: min(recent) for size, recent in self._recent.items() if recent}
        return min(timed, key=timed.__getitem__) if timed else None

    def best(self) -> int | None:
        """The size with the fewest seconds per item so far; None before any size is timed."""
        with self._lock:
            return self._best()

    def measured(self) -> dict[int, float]:
        """Items per second at each size timed so far (its best of its latest calls)."""
        with self._lock:
            return {size: 1.0 / min(r) for size, r in sorted(self._recent.items()) if r and min(r) > 0}


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
