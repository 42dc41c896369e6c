"""POST /generate against Model.generate (the reference): base64 PNGs, seeded, bounded, batched."""

from __future__ import annotations

import asyncio
import base64
import io
import threading

import httpx
import numpy as np
import pytest
from PIL import Image

import polymodal
from polymodal.api import Model
from polymodal.serve import create_app
from tests.api.test_generate_api import assert_same_up_to_rounding
from tests.serve.conftest import make_client

PROMPTS = ["a red circle above a blue square", "two yellow stars"]


def decoded(entry: dict) -> np.ndarray:
    image = Image.open(io.BytesIO(base64.b64decode(entry["image"], validate=True)))
    assert image.format == "PNG"
    return np.asarray(image)


@pytest.mark.parametrize("kind", ["tiny_diffusion", "tiny_gan"])
def test_generate_returns_the_apis_images_as_pngs(kind: str, request) -> None:  # noqa: ANN001
    model: Model = request.getfixturevalue(kind)
    options = {"n": 2, "steps": 2, "guidance": 2.5, "seed": 11, "sampler": "dpm_solver"}
    with make_client(model) as client:
        health = client.get("/health").json()
        assert health["capabilities"] == ["generate"] and health["media"] == {"generate": ["text"]}
        assert health["endpoints"]["/generate"] and not health["endpoints"]["/caption"]
        assert health["limits"]["max_generate_images"] == 16 and health["limits"]["max_generate_steps"] == 200
        response = client.post("/generate", json={"texts": PROMPTS, **options})
        assert response.status_code == 200, response.text
        images = response.json()["images"]
        assert [(e["text_index"], e["image_index"], e["text"]) for e in images] == [
            (t, i, PROMPTS[t]) for t in range(2) for i in range(2)
        ]
        expected = model.generate(PROMPTS, **options)
        for entry, want in zip(images, expected):
            np.testing.assert_array_equal(decoded(entry), np.asarray(want))

        one = client.post("/generate", json={"text": PROMPTS[1], **options}).json()["images"]
        assert_same_up_to_rounding(np.stack([decoded(e) for e in one]), np.stack([decoded(e) for e in images[2:]]))
        again = client.post("/generate", json={"texts": PROMPTS, **options}).json()["images"]
        assert again == images
        other_seed = client.post("/generate", json={"texts": PROMPTS, **{**options, "seed": 12}}).json()["images"]
        assert [e["image"] for e in other_seed] != [e["image"] for e in images]


def test_generate_bounds_are_enforced_with_clear_messages(tiny_gan: Model) -> None:
    with make_client(tiny_gan, max_generate_images=4, max_generate_steps=10) as client:
        assert client.get("/health").json()["limits"]["max_generate_images"] == 4
        cases = [
            ({"texts": PROMPTS, "n": 3}, "too_many_images", "2 text(s) x n=3 = 6 images; this server makes at most 4"),
            ({"text": "a", "steps": 11}, "too_many_steps", "steps=11: this server samples at most 10"),
            ({"text": "a", "n": 65}, "invalid_request", "n: Input should be less than or equal to 64"),
            ({"text": "a", "sampler": "euler"}, "invalid_request", "sampler: Input should be 'ddim'"),
            ({"text": "a", "guidance": -1}, "invalid_request", "guidance"),
            ({"text": "   "}, "invalid_request", "text #0 is empty"),
            ({"text": "a", "texts": ["b"]}, "invalid_request", "exactly one of text or texts"),
            ({"texts": []}, "invalid_request", "texts"),
            ({"text": "a", "colour": "red"}, "invalid_request", "colour"),
        ]
        for body, code, message in cases:
            response = client.post("/generate", json=body)
            assert response.status_code == 422, (body, response.text)
            assert response.json()["error"]["code"] == code and message in response.json()["error"]["message"]
        form = client.post("/generate", data={"text": "a red circle"})
        assert form.status_code == 415
        assert client.post("/generate", json={"texts": PROMPTS, "n": 2, "steps": 10}).status_code == 200


def test_concurrent_generate_requests_are_batched_and_equal_to_separate_calls(tiny_gan_dir) -> None:  # noqa: ANN001
    model = polymodal.load(tiny_gan_dir)
    texts = [f"a red circle number {i}" for i in range(6)]
    expected = [model.generate(t, n=2, seed=3) for t in texts]
    app = create_app(model)

    async def run() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            return await asyncio.gather(*(http.post("/generate", json={"text": t, "n": 2, "seed": 3}) for t in texts))

    responses = asyncio.run(run())
    assert all(r.status_code == 200 for r in responses)
    for response, want in zip(responses, expected):
        got = [decoded(e) for e in response.json()["images"]]
        assert_same_up_to_rounding(np.stack(got), np.stack([np.asarray(w) for w in want]))
    stats = app.state.service.batcher.stats
    assert stats.requests == len(texts) and stats.model_calls < len(texts)


def test_concurrent_generate_requests_share_one_model_call(
    tiny_diffusion_dir,  # noqa: ANN001
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = polymodal.load(tiny_diffusion_dir)
    options = {"n": 2, "steps": 3, "guidance": 2.0, "seed": 9, "sampler": "ddim"}
    alone = {t: np.stack([np.asarray(i) for i in model.generate(t, **options)]) for t in PROMPTS}
    calls: list[list[str]] = []
    backend_generate = model.backend.generate
    monkeypatch.setattr(
        model.backend, "generate", lambda texts, **kw: calls.append(list(texts)) or backend_generate(texts, **kw)
    )
    app = create_app(model)
    batcher = app.state.service.batcher
    # Hold the model's thread until both requests have queued their jobs, so that they meet in one batch.
    both_queued = threading.Event()
    queued: list[object] = []
    submit = batcher.submit

    def counting_submit(key, items, run, **kwargs):  # noqa: ANN001, ANN202
        future = submit(key, items, run, **kwargs)
        queued.append(key)
        if len(queued) == len(PROMPTS):
            both_queued.set()
        return future

    monkeypatch.setattr(batcher, "submit", counting_submit)
    gate_running = threading.Event()  # the worker's batch is then closed: the gate runs alone in it

    def hold(items: list) -> list:  # noqa: ANN001
        gate_running.set()
        return [both_queued.wait(30) for _ in items]

    gate = submit("gate", [None], hold, admit=False)
    assert gate_running.wait(30)  # else a request arriving within the batching window joins the gate's batch

    async def run() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            return await asyncio.gather(*(http.post("/generate", json={"text": t, **options}) for t in PROMPTS))

    responses = asyncio.run(run())
    assert gate.result(timeout=5) == [True]
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    assert calls == [PROMPTS]  # both requests' texts in one backend call
    for prompt, response in zip(PROMPTS, responses):
        got = np.stack([decoded(e) for e in response.json()["images"]])
        assert_same_up_to_rounding(got, alone[prompt])
