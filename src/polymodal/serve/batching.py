"""Micro-batching: concurrent requests queue up and run on the model together, on one worker thread.

The model is not thread-safe and is much faster per item in batches, so every model call goes through one
:class:`MicroBatcher`. A request is a *job*: a batch key (requests with the same key can share a model call,
e.g. ``"embed_text"`` or ``("classify", labels, templates)``), its items, and the function that runs a list of
items. The worker takes the first job, waits up to ``max_wait_ms`` for more (or until ``max_batch_size`` items
are queued), groups the jobs by key and makes one call per group, then hands each job its slice of the results.
"""

from __future__ import annotations

import asyncio
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


_STOP = object()


class MicroBatcher:
    """Runs submitted jobs on one daemon worker thread, batching jobs that share a key."""

    def __init__(
        self,
        max_batch_size: int = 32,
        max_wait_ms: float = 5.0,
        *,
        name: str = "polymodal-model",
        before_batch: Callable[[], object] | None = None,
    ) -> None:
        """``before_batch`` runs on the worker thread before each batch (e.g. to follow the machine's load)."""
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        self.max_batch_size = max_batch_size
        self.max_wait = max(0.0, max_wait_ms) / 1000.0
        self.stats = BatchStats()
        self.name = name
        self.before_batch = before_batch
        self._queue: queue.Queue[Any] = queue.Queue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    # -- client side ------------------------------------------------------------------------------------------
    def submit(self, key: Hashable, items: Sequence[Any], run: RunBatch) -> Future:
        """Queue ``items``; the future resolves to their results (a list, in order) or to the error."""
        self._start()
        job = _Job(key, list(items), run)
        self._queue.put(job)
        return job.future

    async def run(self, key: Hashable, items: Sequence[Any], run: RunBatch) -> list[Any]:
        """``submit`` for async callers: awaits the results without blocking the event loop."""
        return await asyncio.wrap_future(self.submit(key, items, run))

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
        while count < self.max_batch_size:
            remaining = deadline - time.monotonic()
            try:
                job = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if job is _STOP:
                return jobs, True
            jobs.append(job)
            count += len(job.items)
        return jobs, False

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
            results = self._call(jobs[0].run, items, len(jobs))
        except Exception as error:  # noqa: BLE001 - handed to the waiting request, which decides the status
            if len(jobs) == 1:
                jobs[0].future.set_exception(error)
                return
            # One request's bad input must not fail its neighbours: rerun each job alone to find the culprit.
            for job in jobs:
                try:
                    job.future.set_result(list(self._call(job.run, job.items, 1)))
                except Exception as single_error:  # noqa: BLE001
                    job.future.set_exception(single_error)
            return
        start = 0
        for job in jobs:
            job.future.set_result(list(results[start : start + len(job.items)]))
            start += len(job.items)

    def _call(self, run: RunBatch, items: list[Any], requests: int) -> Sequence[Any]:
        results = run(items)
        if len(results) != len(items):
            raise RuntimeError(f"batch function returned {len(results)} results for {len(items)} items")
        self.stats.model_calls += 1
        self.stats.requests += requests
        self.stats.items += len(items)
        self.stats.largest_batch = max(self.stats.largest_batch, len(items))
        return results
