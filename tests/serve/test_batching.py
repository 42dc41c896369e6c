"""MicroBatcher: batched results equal unbatched ones; fewer calls than requests; failures stay with their job."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future

import pytest

from polymodal.serve.batching import MicroBatcher


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
