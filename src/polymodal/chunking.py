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
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import islice
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")
log = logging.getLogger(__name__)
DRIFT = 1.5  # the chosen size this much slower or faster per item than when chosen: the load changed
RECHECK = 50  # calls of the chosen size before the sizes beside it are timed again; doubling up to MAX_RECHECK
MAX_RECHECK = 1600


class ChunkSizer:
    """Learns the fastest chunk size among the powers of two up to ``limit`` (and ``limit`` itself).

    Each size is timed on real calls: its first call is warm-up (a new shape builds new kernels), then the fastest
    of its latest ``samples`` calls counts (so one descheduled call does not). A call explores the sizes it can fill
    that are not timed yet, largest first; once they are, it takes the fastest per item. After ``recheck`` calls of
    the chosen size, the sizes beside it get one more timed call (then after twice as many, while it stays chosen), so
    that an unlucky first timing is not kept for good. When all of the chosen size's latest calls are more than
    ``drift`` times slower (or faster) per item than when it was chosen (other processes now load the cores, or
    stopped), the other sizes' timings are scaled alike and the sizes beside it are looked at again soon: a load that
    comes and goes costs no extra calls, and a fastest size that moved with the load is found.
    """

    def __init__(self, limit: int, samples: int = 3, drift: float = DRIFT, recheck: int = RECHECK) -> None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        if samples < 1 or recheck < 1:
            raise ValueError(f"samples and recheck must be >= 1, got {samples} and {recheck}")
        if drift <= 1:
            raise ValueError(f"drift must be > 1, got {drift}")
        self.sizes = sorted({2**i for i in range(limit.bit_length()) if 2**i <= limit} | {limit})
        self.samples = samples
        self.drift = drift
        self.recheck = recheck
        self.drifted = 0  # times the chosen size's time per item drifted (the others' timings scaled alike)
        # size -> calls counted toward being timed enough (samples + 1, warm-up included); set back to let a warm
        # size take more timed calls
        self._calls: dict[int, int] = {}
        self._recent: dict[int, deque[float]] = {}  # size -> seconds per item of its latest timed calls
        self._chosen: tuple[int, float] | None = None  # the fastest size and its seconds per item when chosen
        self._since_check = 0  # timed calls of the chosen size since the sizes beside it were last timed
        self._interval = recheck  # calls of the chosen size between those timings: doubles while it stays chosen
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
        """After a timed call of ``size``: note the fastest size as chosen once its window is full; for the chosen
        size, time the sizes beside it again now and then, and carry a drift of its time over to the others."""
        recent = self._recent[size]
        if len(recent) < self.samples:
            return
        if self._chosen is None or self._chosen[0] != size:
            if size == self._best():  # a new size won: look around it at the first interval again
                self._chosen, self._since_check, self._interval = (size, min(recent)), 0, self.recheck
            return
        self._since_check += 1
        ratio = min(recent) / self._chosen[1]
        if min(recent) > self.drift * self._chosen[1] or max(recent) < self._chosen[1] / self.drift:
            # The other sizes were timed under the old load: their times scaled as the chosen one's moved, so that
            # they compete with it on the new load's terms until they are timed again.
            log.info("chunk size %d now takes %.2fx its time per item when chosen", size, ratio)
            self.drifted += 1
            for other, times in self._recent.items():
                if other != size:
                    self._recent[other] = deque((t * ratio for t in times), maxlen=self.samples)
            self._chosen = (size, min(recent))
            self._interval = min(self._interval, 4 * self.recheck)  # the fastest size may have moved: look soon
        if self._since_check >= self._interval:  # while the re-checks keep this size, they come less often
            self._since_check, self._interval = 0, min(2 * self._interval, MAX_RECHECK)
            self._time_beside(size)

    def _time_beside(self, size: int) -> None:
        """Let the warm sizes beside ``size`` take one more timed call (``samples`` if never timed)."""
        at = self.sizes.index(size)
        for other in (self.sizes[at - 1] if at else None, self.sizes[at + 1] if at + 1 < len(self.sizes) else None):
            if other is not None and other in self._calls:
                self._calls[other] = self.samples if other in self._recent else 1

    def _best(self) -> int | None:
        timed = {size: min(recent) for size, recent in self._recent.items() if recent}
        return min(timed, key=timed.__getitem__) if timed else None

    def best(self) -> int | None:
        """The size with the fewest seconds per item so far; None before any size is timed."""
        with self._lock:
            return self._best()

    def measured(self) -> dict[int, float]:
        """Items per second at each size timed under the current load (its best of its latest calls)."""
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


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """``items`` ``size`` at a time, the last list shorter; an iterator is read as it goes."""
    rest = iter(items)
    while group := list(islice(rest, size)):
        yield group
