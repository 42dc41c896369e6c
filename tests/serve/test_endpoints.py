"""Every endpoint against the Python API it wraps (the reference), plus batching under concurrent requests."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

import polymodal
from polymodal.api import Model
from polymodal.backends import load_backend
from polymodal.serve import create_app
from polymodal.serve.search import IndexDirectory
from tests.serve.conftest import COLORS, b64, make_client, png_bytes, shape_image
from tests.serve.fakes import FakeIndex
from tests.tiny_models import ANSWERS


def test_health_describes_model_index_and_endpoints(client, model: Model) -> None:  # noqa: ANN001
    health = client.get("/health").json()
    assert health["model"] == model.name and health["identity"] == model.identity
    assert health["capabilities"] == ["embed"] and health["embed_dim"] == model.embed_dim
    tuning = health["index"].pop("search_tuning")
    assert health["index"] == {"size": len(COLORS), "model_identity": model.identity}
    assert tuning.startswith("tuning not measured")  # six items: exact search, nothing to hold out or tune
    assert health["endpoints"] == {
        "/embed": True,
        "/classify": True,
        "/search": True,
        "/items/{item_id}/image": True,
        "/items/{item_id}/audio": True,
        "/items/{item_id}/video": True,
        "/caption": False,
        "/answer": False,
        "/generate": False,
        "/predict": False,
    }
    assert health["predictor"] is None and health["auth_required"] is False


def test_embed_matches_the_python_api(client, model: Model) -> None:  # noqa: ANN001
    texts = ["a red circle", "two yellow stars"]
    images = [shape_image("red"), shape_image("blue")]
    body = client.post("/embed", json={"texts": texts, "images": [b64(i) for i in images]}).json()
    assert body["dim"] == model.embed_dim
    np.testing.assert_allclose(body["text_embeddings"], model.embed_text(texts), atol=1e-5)
    np.testing.assert_allclose(body["image_embeddings"], model.embed_image(images), atol=1e-5)
    only_texts = client.post("/embed", json={"texts": texts}).json()
    assert only_texts["image_embeddings"] == [] and len(only_texts["text_embeddings"]) == 2


def test_classify_json_and_multipart_agree_with_the_python_api(client, model: Model) -> None:  # noqa: ANN001
    labels = ["red circle", "blue circle", "green circle"]
    image = shape_image("red")
    expected = model.classify(image, labels)[0]
    as_json = client.post("/classify", json={"image": b64(image), "labels": labels}).json()["labels"]
    as_form = client.post(
        "/classify", files={"image": ("red.png", png_bytes(image), "image/png")}, data={"labels": labels}
    ).json()["labels"]
    comma = client.post(
        "/classify",
        files={"image": ("red.png", png_bytes(image), "image/png")},
        data={"labels": ",".join(labels), "top_k": "2"},
    ).json()["labels"]
    for got in (as_json, as_form):
        assert [g["label"] for g in got] == [label for label, _ in expected]
        np.testing.assert_allclose([g["score"] for g in got], [s for _, s in expected], atol=1e-5)
    assert comma == as_form[:2]
    # A data: URL is accepted, and a single custom template is a template, not the name of a template set.
    custom = client.post(
        "/classify",
        json={"image": f"data:image/png;base64,{b64(image)}", "labels": labels, "templates": "a drawing of a {}"},
    ).json()["labels"]
    reference = model.classify(image, labels, templates=["a drawing of a {}"])[0]
    assert [g["label"] for g in custom] == [label for label, _ in reference]


def test_search_returns_the_exact_nearest_items_with_thumbnails(client, model: Model, fake_index: FakeIndex) -> None:  # noqa: ANN001
    hits = client.post("/search", json={"text": "a red circle", "k": 4}).json()["hits"]
    reference = fake_index.search_vectors(model.embed_text(["a red circle"]), k=4, kind="image")[0]
    assert [Path(h["path"]).name for h in hits] == [Path(r.path).name for r in reference]
    np.testing.assert_allclose([h["score"] for h in hits], [r.score for r in reference], atol=1e-5)
    assert all(h["kind"] == "image" and h["thumbnail_url"] == f"/items/{h['id']}/image?max_size=256" for h in hits)
    by_image = client.post("/search", json={"image": b64(shape_image("green")), "k": 1}).json()["hits"]
    assert Path(by_image[0]["path"]).name == "green.png" and by_image[0]["score"] == pytest.approx(1.0, abs=1e-4)
    # The same query as a file upload, options as form fields, as /classify takes them.
    upload = {"image": ("q.png", png_bytes(shape_image("green")), "image/png")}
    by_file = client.post("/search", files=upload, data={"k": "2", "kind": "image"})
    assert by_file.status_code == 200, by_file.text
    assert [h["id"] for h in by_file.json()["hits"]][:1] == [by_image[0]["id"]] and len(by_file.json()["hits"]) == 2
    for form, needle in [({"k": "0"}, "k"), ({"text": "a red circle"}, "text")]:  # a text query is JSON
        refused = client.post("/search", files=upload, data=form)
        assert refused.status_code == 422 and needle in refused.text


def test_item_images_are_served_by_id_only(client, image_dir: Path) -> None:  # noqa: ANN001
    hit = client.post("/search", json={"image": b64(shape_image("blue")), "k": 1}).json()["hits"][0]
    original = client.get(f"/items/{hit['id']}/image")
    assert original.status_code == 200 and original.headers["content-type"] == "image/png"
    assert original.content == (image_dir / "blue.png").read_bytes()
    thumb = client.get(hit["thumbnail_url"].replace("256", "16"))
    assert thumb.headers["content-type"] == "image/jpeg" and thumb.content[:2] == b"\xff\xd8"
    for bad in ["/items/999/image", "/items/-1/image", f"/items/{2**70}/image"]:
        response = client.get(bad)
        assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    # A path instead of an id is never read: it is not an id (422) or not a route (404).
    for traversal in ["/items/..%2F..%2Fetc%2Fpasswd/image", "/items/%2Fetc%2Fpasswd/image", "/items/../../image"]:
        response = client.get(traversal)
        assert response.status_code in (404, 422) and "root:" not in response.text
    assert client.get("/items/0/image", params={"max_size": 5000}).status_code == 422


def test_text_hits_without_an_image_get_no_thumbnail(model: Model, fake_index: FakeIndex) -> None:
    with make_client(model, fake_index) as client:
        hits = client.post("/search", json={"text": "a red circle", "k": 12}).json()["hits"]
        texts = [h for h in hits if h["kind"] == "text"]
        assert len(hits) == len(fake_index) and len(texts) == len(COLORS)
        assert all(h["thumbnail_url"] is None and h["text"].endswith("circle") for h in texts)
        only = client.post("/search", json={"text": "a red circle", "k": 3, "kind": "text"}).json()["hits"]
        assert [h["kind"] for h in only] == ["text"] * 3
        text_id = texts[0]["id"]
        assert client.get(f"/items/{text_id}/image").status_code == 404


def test_endpoints_the_model_cannot_serve_say_why(client) -> None:  # noqa: ANN001
    for path, body in [
        ("/caption", {"image": b64(shape_image("red"))}),
        ("/answer", {"image": b64(shape_image("red")), "question": "what colour?"}),
        ("/generate", {"text": "a red circle"}),
        ("/predict", {"rows": [{"x": 1}]}),
    ]:
        response = client.post(path, json=body)
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "not_supported"
        assert "supports embed" in response.json()["error"]["message"]


def test_without_an_index_search_is_404_and_health_says_so(model: Model) -> None:
    with make_client(model) as client:
        assert client.get("/health").json()["endpoints"]["/search"] is False
        response = client.post("/search", json={"text": "red"})
        assert response.status_code == 404 and "--index" in response.json()["error"]["message"]


def test_an_index_of_another_model_is_refused(model: Model, index_dir: Path, tmp_path: Path) -> None:
    from tests.tiny_models import save_tiny_model

    other = polymodal.load(save_tiny_model("dual_encoder", tmp_path / "other", seed=1))
    with pytest.raises(ValueError, match="rebuild it"):
        create_app(other, IndexDirectory(index_dir))


def test_caption_and_answer_match_the_python_api(tiny_captioner_dir: Path, tiny_vqa_dir: Path) -> None:
    image = shape_image("yellow")
    captioner = polymodal.load(tiny_captioner_dir)
    with make_client(captioner) as client:
        assert client.get("/health").json()["endpoints"]["/caption"] is True
        body = client.post("/caption", json={"image": b64(image), "max_new_tokens": 5}).json()
        assert body == {"caption": captioner.caption(image, max_new_tokens=5)[0]}
        # More tokens than the decoder holds (16) is capped at its length, as in the Python API, not refused.
        too_long = client.post("/caption", json={"image": b64(image), "max_new_tokens": 40})
        assert too_long.status_code == 200 and too_long.json() == {
            "caption": captioner.caption(image, max_new_tokens=15)[0]
        }
        too_many = client.post("/caption", json={"image": b64(image), "max_new_tokens": 101})  # schema bound
        assert too_many.status_code == 422 and "max_new_tokens" in str(too_many.json()["error"])
    vqa = polymodal.load(tiny_vqa_dir)
    with make_client(vqa) as client:
        endpoints = client.get("/health").json()["endpoints"]
        assert endpoints["/answer"] is True and endpoints["/classify"] is False
        form = client.post(
            "/answer",
            files={"image": ("y.png", png_bytes(image), "image/png")},
            data={"question": "what color is the shape"},
        ).json()
        assert form == {"answer": vqa.answer(image, "what color is the shape")[0]}
        assert form["answer"] in ANSWERS


class SpyBackend:
    """Delegates to a real backend and counts the calls that reach it."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: dict[str, int] = {"embed_text": 0, "embed_images": 0}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def to(self, device: Any) -> SpyBackend:
        self.inner.to(device)
        return self

    def embed_text(self, texts: Any) -> Any:
        self.calls["embed_text"] += 1
        return self.inner.embed_text(texts)

    def embed_images(self, images: Any) -> Any:
        self.calls["embed_images"] += 1
        return self.inner.embed_images(images)


def test_concurrent_requests_are_batched_and_equal_to_unbatched_calls(tiny_dual_encoder_dir: Path) -> None:
    n = 24
    texts = [f"a {c} circle number {i}" for i, c in enumerate(list(COLORS) * 4)]
    images = [shape_image(c) for c in list(COLORS) * 4]
    spy = SpyBackend(load_backend(tiny_dual_encoder_dir))
    model = Model(spy, batch_size=64)
    expected_text, expected_image = model.embed_text(texts), model.embed_image(images)
    app = create_app(model, settings=None)
    spy.calls = {"embed_text": 0, "embed_images": 0}

    async def run() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            requests = [http.post("/embed", json={"texts": [t]}) for t in texts]
            requests += [http.post("/embed", json={"images": [b64(i)]}) for i in images]
            return await asyncio.gather(*requests)

    responses = asyncio.run(run())
    assert all(r.status_code == 200 for r in responses)
    got_text = np.array([r.json()["text_embeddings"][0] for r in responses[:n]])
    got_image = np.array([r.json()["image_embeddings"][0] for r in responses[n:]])
    np.testing.assert_allclose(got_text, expected_text, atol=1e-5)
    np.testing.assert_allclose(got_image, expected_image, atol=1e-5)
    assert spy.calls["embed_text"] < n and spy.calls["embed_images"] < n, spy.calls
    stats = app.state.service.batcher.stats
    assert stats.requests == 2 * n and stats.model_calls < 2 * n and stats.largest_batch > 1
    with TestClient(app) as client:  # image calls took the sizes the model timed; /health says the fastest
        assert client.get("/health").json()["batching"]["chunk_sizes"] == {"image": model.chunk_sizers["image"].best()}
    assert model.chunk_sizers["image"].measured()


def test_the_server_frees_the_loading_threads_openmp_workers_at_start(model: Model, monkeypatch) -> None:  # noqa: ANN001
    """The model computes in the batcher's thread; workers left from loading would slow its small batches."""
    import polymodal.serve.app as serve_app

    calls: list[bool] = []
    monkeypatch.setattr(serve_app, "release_idle_threads", lambda: calls.append(True) or True)
    with TestClient(create_app(model)) as client:
        assert calls == [True]
        assert client.post("/embed", json={"texts": ["a red circle"]}).status_code == 200
