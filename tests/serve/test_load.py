"""Under load: admission control answers 503 with Retry-After, the access log is written off the request path, and
queries are searched in one batched call (embedding and index together)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from polymodal.api import Model
from polymodal.serve.traffic import access_logger, start_access_log
from tests.serve.conftest import b64, make_client, shape_image
from tests.serve.fakes import FakeIndex


def test_over_budget_requests_get_503_with_retry_after_and_health_still_answers(
    model: Model, fake_index: FakeIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    with make_client(model, fake_index, max_queue_ms=500) as client:
        batcher = client.app.state.service.batcher
        assert client.post("/search", json={"text": "a red circle", "k": 1}).status_code == 200
        monkeypatch.setattr(batcher, "_expected_wait", lambda: 3.2)  # as if 3.2 s of work were queued
        for response in (
            client.post("/search", json={"text": "a red circle", "k": 1}),
            client.post("/embed", json={"images": [b64(shape_image("red"))]}),
            client.post("/classify", json={"image": b64(shape_image("red")), "labels": ["red", "blue"]}),
        ):
            assert response.status_code == 503
            assert response.headers["retry-after"] == "4"  # whole seconds, rounded up
            error = response.json()["error"]
            assert error["code"] == "overloaded" and "500 ms budget" in error["message"]
        health = client.get("/health")  # cheap lookups skip admission: a load balancer can still ask
        assert health.status_code == 200
        assert health.json()["batching"]["rejected"] == 3 and health.json()["limits"]["max_queue_ms"] == 500
        monkeypatch.undo()
        assert client.post("/search", json={"text": "a red circle", "k": 1}).status_code == 200


def test_admission_control_can_be_switched_off(model: Model, fake_index: FakeIndex) -> None:
    with make_client(model, fake_index, max_queue_ms=None) as client:
        batcher = client.app.state.service.batcher
        batcher._item_seconds["busy"], batcher._queued["busy"] = 60.0, 5  # five minutes of work queued
        assert batcher.expected_wait() == pytest.approx(300.0)
        assert client.post("/search", json={"text": "a red circle", "k": 1}).status_code == 200
        assert client.get("/health").json()["limits"]["max_queue_ms"] is None


def test_text_search_is_one_batched_call(model: Model, fake_index: FakeIndex) -> None:
    with make_client(model, fake_index) as client:
        stats = client.app.state.service.batcher.stats
        before = stats.model_calls
        assert client.post("/search", json={"text": "a blue square", "k": 2}).status_code == 200
        assert stats.model_calls == before + 1


def test_access_log_lines_reach_the_file_through_the_queue(model: Model, fake_index: FakeIndex, tmp_path: Path) -> None:
    saved = (access_logger.handlers[:], access_logger.level, access_logger.propagate)
    log_file = tmp_path / "logs" / "access.log"
    listener = start_access_log(log_file, terminal=False)
    try:
        with make_client(model, fake_index) as client:
            assert client.post("/search", json={"text": "a red circle", "k": 1}).status_code == 200
            assert client.post("/search", json={"text": "", "k": 0}).status_code == 422
            assert client.get("/health").status_code == 200
            traffic_count = client.app.state.service.batcher.active_requests()
    finally:
        listener.stop()  # flushes the queue
        access_logger.handlers, access_logger.level, access_logger.propagate = saved
    lines = log_file.read_text().splitlines()
    assert len(lines) == 3
    assert '"POST /search" 200' in lines[0] and '"POST /search" 422' in lines[1] and '"GET /health" 200' in lines[2]
    assert all(line.endswith(" ms") for line in lines)
    assert traffic_count == 0  # every request that was counted in was counted out


def test_no_destination_switches_the_access_log_off(tmp_path: Path) -> None:
    saved = (access_logger.handlers[:], access_logger.level, access_logger.propagate)
    listener = start_access_log(None, terminal=False)
    try:
        assert not access_logger.isEnabledFor(logging.INFO)
    finally:
        listener.stop()
        access_logger.handlers, access_logger.level, access_logger.propagate = saved
