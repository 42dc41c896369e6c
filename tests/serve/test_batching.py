"""MicroBatcher: batched results equal unbatched ones; fewer calls than requests; failures stay with their job."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future

import pytest

from polymodal.serve.batching import MicroBatcher, Overloaded


class Recorder:
    """A batch function (square each item) that records the batches it was called with."""

    def __init__(self, delay: float = 0.0) -> None:
        self.batches: list[list[int]] = []
        self.threads: set[str] = set()
        self.delay = delay

    def __call__(self, items: list[int]) -> list[int]:
        self.batches.append(list(items))
        self.threads.add(threading.current_thread().name)
        time.sleep(self.delay)
        return [x * x for x in items]


def test_concurrent_jobs_share_calls_and_get_their_own_results() -> None:
    batcher = MicroBatcher(max_batch_size=8, max_wait_ms=50)
    square = Recorder()
    futures = [batcher.submit("square", [i, i + 100], square) for i in range(10)]  # 20 items
    results = [f.result(timeout=5) for f in futures]
    batcher.close()
    assert results == [[i * i, (i + 100) ** 2] for i in range(10)]
    assert len(square.batches) < 10
    assert max(len(b) for b in square.batches) <= 8
    assert sorted(x for b in square.batches for x in b) == sorted(list(range(10)) + [i + 100 for i in range(10)])
    assert square.threads == {"polymodal-model"}  # the model is only ever called from the one worker thread
    assert (
        batcher.stats.requests == 10 and batcher.stats.items == 20 and batcher.stats.model_calls == len(square.batches)
    )


def test_jobs_with_different_keys_never_share_a_call() -> None:
    batcher = MicroBatcher(max_batch_size=32, max_wait_ms=50)
    square, other = Recorder(), Recorder()
    futures = [batcher.submit("a" if i % 2 else "b", [i], square if i % 2 else other) for i in range(8)]
    assert [f.result(timeout=5) for f in futures] == [[i * i] for i in range(8)]
    batcher.close()
    assert all(x % 2 == 1 for b in square.batches for x in b)
    assert all(x % 2 == 0 for b in other.batches for x in b)


def test_a_job_larger_than_the_batch_runs_whole() -> None:
    batcher = MicroBatcher(max_batch_size=4, max_wait_ms=0)
    square = Recorder()
    assert batcher.submit("k", list(range(10)), square).result(timeout=5) == [x * x for x in range(10)]
    batcher.close()
    assert square.batches == [list(range(10))]


def test_one_bad_job_fails_alone() -> None:
    def fragile(items: list[int]) -> list[int]:
        if any(x < 0 for x in items):
            raise ValueError(f"negative item in {items}")
        return [x + 1 for x in items]

    batcher = MicroBatcher(max_batch_size=16, max_wait_ms=100)
    good = [batcher.submit("k", [i], fragile) for i in range(3)]
    bad = batcher.submit("k", [-1], fragile)
    assert [f.result(timeout=5) for f in good] == [[1], [2], [3]]
    with pytest.raises(ValueError, match="negative"):
        bad.result(timeout=5)
    batcher.close()


def test_cancelled_jobs_are_skipped() -> None:
    batcher = MicroBatcher(max_batch_size=1, max_wait_ms=0)
    slow, square = Recorder(delay=0.2), Recorder()
    first = batcher.submit("slow", [1], slow)
    time.sleep(0.05)  # the worker is busy with the slow job
    cancelled = batcher.submit("square", [7], square)
    assert cancelled.cancel()
    kept = batcher.submit("square", [3], square)
    assert first.result(timeout=5) == [1] and kept.result(timeout=5) == [9]
    batcher.close()
    assert square.batches == [[3]]


def test_wrong_result_count_is_an_error_not_a_hang() -> None:
    batcher = MicroBatcher()
    future: Future = batcher.submit("k", [1, 2], lambda items: items[:1])
    with pytest.raises(RuntimeError, match="1 results for 2 items"):
        future.result(timeout=5)
    batcher.close()
    # A closed batcher starts a fresh worker on the next job (the app's lifespan may run more than once).
    assert batcher.submit("k", [1, 2], lambda items: [x * 10 for x in items]).result(timeout=5) == [10, 20]
    batcher.close()


def test_a_job_waits_for_company_only_while_another_request_may_still_submit() -> None:
    # One active request, and it has its job queued: nothing can join, so the job runs at once (not after 30 s).
    alone = MicroBatcher(max_batch_size=8, max_wait_ms=30_000, active_requests=lambda: 1)
    square = Recorder()
    assert alone.submit("k", [2], square).result(timeout=10) == [4]
    alone.close()
    # Two active requests and one job queued: the job waits, and the second request's job joins its call.
    active = [2]
    shared = MicroBatcher(max_batch_size=8, max_wait_ms=30_000, active_requests=lambda: active[0])
    together = Recorder()
    first = shared.submit("k", [2], together)
    time.sleep(0.1)
    second = shared.submit("k", [3], together)
    assert first.result(timeout=10) == [4] and second.result(timeout=10) == [9]
    shared.close()
    assert together.batches == [[2, 3]]


def test_admission_control_refuses_work_the_queue_cannot_serve_within_the_budget() -> None:
    batcher = MicroBatcher(max_batch_size=1, max_wait_ms=0, max_queue_ms=600)
    slow = Recorder(delay=0.5)  # 0.5 s per call of one item
    assert batcher.submit("slow", [1], slow).result(timeout=5) == [1]  # teaches the estimate: 0.5 s per item
    # The first is admitted into an empty queue, the second behind at most 0.5 s of work; then 0.5 s more is queued.
    queued = [batcher.submit("slow", [i], slow) for i in range(2)]
    with pytest.raises(Overloaded) as refused:
        batcher.submit("slow", [9], slow)
    assert refused.value.retry_after >= 1 and refused.value.expected_wait > 0.6
    assert "busy" in str(refused.value)
    with pytest.raises(Overloaded):
        batcher.admit()
    assert batcher.stats.rejected == 2
    # Lookups that must answer under load skip the check; and once the queue drains, work is admitted again.
    assert batcher.submit("lookup", [5], square_items, admit=False).result(timeout=5) == [25]
    assert [f.result(timeout=5) for f in queued] == [[0], [1]]
    assert batcher.submit("slow", [3], slow).result(timeout=5) == [9]
    batcher.close()
    assert 9 not in [x for b in slow.batches for x in b]


def square_items(items: list[int]) -> list[int]:
    return [x * x for x in items]


def test_admission_needs_a_positive_budget() -> None:
    with pytest.raises(ValueError, match="max_queue_ms"):
        MicroBatcher(max_queue_ms=0)
