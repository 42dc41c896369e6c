"""Micro-batching: concurrent requests queue up and run on the model together, on one worker thread.

The model is not thread-safe and is much faster per item in batches, so every model call goes through one
:class:`MicroBatcher`. A request is a *job*: a batch key (requests with the same key can share a model call,
e.g. ``"embed_text"`` or ``("classify", labels, templates)``), its items, and the function that runs a list of
items. The worker takes the first job, waits up to ``max_wait_ms`` for more (or until ``max_batch_size`` items
are queued), groups the jobs by key and makes one call per group, then hands each job its slice of the results.

Under load the batches fill from the queue; a request alone does not wait for company that cannot come (when every
active request already has its job queued, see ``active_requests``). Admission control bounds the waiting: a job
that the queue ahead of it would hold up longer than ``max_queue_ms`` (estimated from each key's recent seconds per
item) is refused at once with :class:`Overloaded`, which the server answers with 503 and ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import math
import queue
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

RunBatch = Callable[[list[Any]], Sequence[Any]]  # items -> one result per item, in order


@dataclass
class _Job:
    key: Hashable
    items: list[Any]
    run: RunBatch
    future: Future = field(default_factory=Future)


@dataclass
class BatchStats:
    """Counters for tests and /health: ``model_calls < requests`` means batching happened."""

    requests: int = 0
    items: int = 0
    model_calls: int = 0
    largest_batch: int = 0
    rejected: int = 0  # jobs refused because the queue ahead of them was over its time budget


class Overloaded(Exception):
    """The queue cannot serve another job within the time budget; retry after ``retry_after`` seconds."""

    def __init__(self, expected_wait: float, budget: float) -> None:
        super().__init__(
            f"the server is busy: the queued work needs about {expected_wait * 1000:.0f} ms, over its "
            f"{budget * 1000:.0f} ms budget; retry later"
        )
        self.expected_wait = expected_wait
        self.retry_after = max(1, math.ceil(expected_wait))  # whole seconds, as the Retry-After header takes


_STOP = object()
ITEM_SECONDS_SMOOTHING = 0.2  # weight of the newest call in a key's moving average of seconds per item


class MicroBatcher:
    """Runs submitted jobs on one daemon worker thread, batching jobs that share a key."""

    def __init__(
        self,
        max_batch_size: int = 32,
        max_wait_ms: float = 5.0,
        *,
        name: str = "polymodal-model",
        before_batch: Callable[[], object] | None = None,
        max_queue_ms: float | None = None,
        active_requests: Callable[[], int] | None = None,
    ) -> None:
        """``before_batch`` runs on the worker thread before each batch (e.g. to follow the machine's load);
        ``max_queue_ms`` is the admission budget (None: admit everything); ``active_requests`` counts the requests
        the server is handling, so that a batch waits for company only while some of them have no job queued yet.
        """
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if max_queue_ms is not None and max_queue_ms <= 0:
            raise ValueError(f"max_queue_ms must be > 0, got {max_queue_ms}")
        self.max_batch_size = max_batch_size
        self.max_wait = max(0.0, max_wait_ms) / 1000.0
        self.max_queue_seconds = None if max_queue_ms is None else max_queue_ms / 1000.0
        self.active_requests = active_requests
        self.stats = BatchStats()
        self.name = name
        self.before_batch = before_batch
        self._queue: queue.Queue[Any] = queue.Queue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        # Admission bookkeeping, under _load_lock: items queued per key, jobs not yet answered, seconds per item.
        self._load_lock = threading.Lock()
        self._queued: dict[Hashable, int] = {}
        self._unanswered = 0
        self._item_seconds: dict[Hashable, float] = {}
        self._running: tuple[Hashable, int, float] | None = None  # the call in progress: key, items, start time

    # -- client side ------------------------------------------------------------------------------------------
    def submit(self, key: Hashable, items: Sequence[Any], run: RunBatch, *, admit: bool = True) -> Future:
        """Queue ``items``; the future resolves to their results (a list, in order) or to the error.

        Raises :class:`Overloaded` instead when the work queued ahead would take longer than the budget (unless
        ``admit`` is False: for cheap lookups that must answer even under load, such as /health's).
        """
        self._start()
        job = _Job(key, list(items), run)
        with self._load_lock:
            if admit:
                self._admit()
            self._queued[key] = self._queued.get(key, 0) + len(job.items)
            self._unanswered += 1
        job.future.add_done_callback(self._answered)
        self._queue.put(job)
        return job.future

    def admit(self) -> None:
        """Raise :class:`Overloaded` when the queued work is over the budget: a server checks before it decodes a
        request's media, so that a refusal costs next to nothing."""
        with self._load_lock:
            self._admit()

    def expected_wait(self) -> float:
        """Seconds the queued jobs will hold the model, as admission control estimates them."""
        with self._load_lock:
            return self._expected_wait()

    def _admit(self) -> None:
        if self.max_queue_seconds is None:
            return
        wait = self._expected_wait()
        if wait > self.max_queue_seconds:
            self.stats.rejected += 1
            raise Overloaded(wait, self.max_queue_seconds)

    def _expected_wait(self) -> float:
        # Each key's queued items at its recent seconds per item, plus what is left of the call in progress; a key
        # never run yet counts as free (its first calls teach the estimate).
        wait = sum(items * self._item_seconds.get(key, 0.0) for key, items in self._queued.items())
        if self._running is not None:
            key, items, started = self._running
            wait += max(0.0, items * self._item_seconds.get(key, 0.0) - (time.monotonic() - started))
        return wait

    def _answered(self, _: Future) -> None:
        with self._load_lock:
            self._unanswered -= 1

    def _company_possible(self) -> bool:
        """Whether another job may arrive soon: some active request has no job queued or running yet."""
        if self.active_requests is None:
            return True
        with self._load_lock:
            unanswered = self._unanswered
        return self.active_requests() > unanswered

    async def run(self, key: Hashable, items: Sequence[Any], run: RunBatch, *, admit: bool = True) -> list[Any]:
        """``submit`` for async callers: awaits the results without blocking the event loop."""
        return await asyncio.wrap_future(self.submit(key, items, run, admit=admit))

    def _start(self) -> None:
        # Started on first use rather than in __init__, and again after close(): an app can be served, shut down
        # and served again (test clients run the app's lifespan once per session), and an unused one costs nothing.
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
                self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        """Finish the queued jobs, then stop the worker (a later ``submit`` starts a new one)."""
        with self._lock:
            thread, self._thread = self._thread, None
            if thread is not None and thread.is_alive():
                self._queue.put(_STOP)
                thread.join(timeout)

    # -- worker side ------------------------------------------------------------------------------------------
    def _loop(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is _STOP:
                return
            jobs, stopping = self._collect(first)
            if self.before_batch is not None:
                self.before_batch()
            for group in self._groups(jobs):
                self._run_group(group)

    def _collect(self, first: _Job) -> tuple[list[_Job], bool]:
        """The first job plus whatever arrives within ``max_wait`` (up to ``max_batch_size`` items)."""
        jobs, count = [first], len(first.items)
        deadline = time.monotonic() + self.max_wait
        stopping = False
        while count < self.max_batch_size:
            remaining = deadline - time.monotonic()
            try:
                if remaining > 0 and self._queue.empty() and self._company_possible():
                    job = self._queue.get(timeout=remaining)
                else:
                    job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is _STOP:
                stopping = True
                break
            jobs.append(job)
            count += len(job.items)
        with self._load_lock:
            for job in jobs:
                self._queued[job.key] -= len(job.items)
                if not self._queued[job.key]:
                    del self._queued[job.key]
        return jobs, stopping

    def _groups(self, jobs: list[_Job]) -> list[list[_Job]]:
        """Jobs grouped by key (first-come order), each group cut to at most ``max_batch_size`` items.

        A job larger than the limit runs alone, whole: its caller asked for that many items in one request.
        """
        by_key: dict[Hashable, list[_Job]] = {}  # dicts keep insertion order: first-come groups run first
        for job in jobs:
            by_key.setdefault(job.key, []).append(job)
        groups: list[list[_Job]] = []
        for same_key in by_key.values():
            current: list[_Job] = []
            size = 0
            for job in same_key:
                if current and size + len(job.items) > self.max_batch_size:
                    groups.append(current)
                    current, size = [], 0
                current.append(job)
                size += len(job.items)
            groups.append(current)
        return groups

    def _run_group(self, jobs: list[_Job]) -> None:
        # A job whose client went away (its asyncio future was cancelled) is dropped here, before any work.
        jobs = [job for job in jobs if job.future.set_running_or_notify_cancel()]
        if not jobs:
            return
        items = [item for job in jobs for item in job.items]
        try:
            results = self._call(jobs[0].run, items, len(jobs), jobs[0].key)
        except Exception as error:  # noqa: BLE001 - handed to the waiting request, which decides the status
            if len(jobs) == 1:
                jobs[0].future.set_exception(error)
                return
            # One request's bad input must not fail its neighbours: rerun each job alone to find the culprit.
            for job in jobs:
                try:
                    job.future.set_result(list(self._call(job.run, job.items, 1, job.key)))
                except Exception as single_error:  # noqa: BLE001
                    job.future.set_exception(single_error)
            return
        start = 0
        for job in jobs:
            job.future.set_result(list(results[start : start + len(job.items)]))
            start += len(job.items)

    def _call(self, run: RunBatch, items: list[Any], requests: int, key: Hashable) -> Sequence[Any]:
        started = time.monotonic()
        with self._load_lock:
            self._running = (key, len(items), started)
        try:
            results = run(items)
        finally:
            per_item = (time.monotonic() - started) / max(1, len(items))
            with self._load_lock:
                self._running = None
                previous = self._item_seconds.get(key)
                self._item_seconds[key] = (
                    per_item if previous is None else previous + ITEM_SECONDS_SMOOTHING * (per_item - previous)
                )
        if len(results) != len(items):
            raise RuntimeError(f"batch function returned {len(results)} results for {len(items)} items")
        self.stats.model_calls += 1
        self.stats.requests += requests
        self.stats.items += len(items)
        self.stats.largest_batch = max(self.stats.largest_batch, len(items))
        return results
