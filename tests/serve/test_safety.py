"""Every refusal: size, pixels, content type, malformed input, API key, CORS; only real bugs are a 500."""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import struct
import zlib

import pytest
from PIL import Image

from polymodal.api import Model
from polymodal.serve import ServeSettings, create_app
from polymodal.serve.safety import bind_warning
from tests.serve.conftest import b64, make_client, png_bytes, shape_image


def error(response) -> dict:  # noqa: ANN001
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    return body["error"]


def bomb_png(width: int, height: int) -> bytes:
    """A valid PNG header claiming width x height, with a tiny payload: a decompression bomb's shape."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


@pytest.fixture(scope="module")
def small(model: Model, fake_index):  # noqa: ANN001, ANN201
    """A server with a 64 kB upload limit and a 100k pixel limit."""
    with make_client(model, fake_index, max_upload_bytes=64 * 1024, max_pixels=100_000) as client:
        yield client


def test_body_over_the_limit_is_413_by_content_length(small) -> None:  # noqa: ANN001
    response = small.post("/embed", content=b"x" * (65 * 1024), headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert error(response)["message"] == "request body is over the upload limit of 0.0625 MB (65,536 bytes)"


def test_body_over_the_limit_is_413_without_content_length(model: Model) -> None:
    """Driven at the ASGI level: TestClient reads a streamed body whole before the app sees it."""
    app = create_app(model, settings=ServeSettings(max_upload_bytes=64 * 1024))
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/embed",
        "raw_path": b"/embed",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json")],
        "http_version": "1.1",
        "scheme": "http",
        "server": ("test", 80),
        "client": ("test", 1),
        "root_path": "",
    }
    received, sent = [], []

    async def receive() -> dict:
        received.append(1)
        return {"type": "http.request", "body": b"x" * 4096, "more_body": len(received) < 100}

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 413 and b'"too_large"' in sent[1]["body"]
    assert len(received) == 17  # 17 x 4 kB is the first chunk over 64 kB: the rest is never read


def test_decompression_bomb_is_413_naming_the_pixel_limit(small) -> None:  # noqa: ANN001
    data = base64.b64encode(bomb_png(20_000, 20_000)).decode()
    for response in (
        small.post("/classify", json={"image": data, "labels": ["a", "b"]}),
        small.post(
            "/classify", files={"image": ("bomb.png", bomb_png(20_000, 20_000), "image/png")}, data={"labels": "a,b"}
        ),
        small.post("/embed", json={"images": [data]}),
    ):
        assert response.status_code == 413
        err = error(response)
        assert err["code"] == "image_too_large" and "limit" in err["message"] and "100,000 pixels" in err["message"]


def test_wrong_content_type_is_415(small) -> None:  # noqa: ANN001
    for path, kwargs in [
        ("/embed", {"content": b'{"texts": ["a"]}', "headers": {"Content-Type": "text/plain"}}),
        ("/search", {"content": b'{"text": "a"}'}),  # no Content-Type at all
        ("/generate", {"files": {"image": ("a.png", b"x", "image/png")}}),
        ("/caption", {"content": b"raw", "headers": {"Content-Type": "image/png"}}),
    ]:
        response = small.post(path, **kwargs)
        assert response.status_code == 415, (path, response.text)
        assert error(response)["code"] == "unsupported_media_type" and "application/json" in error(response)["message"]


@pytest.mark.parametrize(
    "path,body,code,needle",
    [
        ("/embed", b'{"texts": [', "invalid_json", "JSON"),
        ("/classify", b'{"image": ', "invalid_json", "not valid JSON"),
        ("/classify", b"\xff\xfe", "invalid_json", "not valid JSON"),
        ("/embed", b"{}", "invalid_request", "at least one of texts, images, audio or videos"),
        ("/embed", b'{"texts": "not a list"}', "invalid_request", "texts"),
        ("/embed", b'{"texts": ["a"], "colour": 1}', "invalid_request", "colour"),
        ("/embed", b'{"images": ["%%%not base64"]}', "bad_base64", "images[0]"),
        ("/embed", b'{"images": [""]}', "bad_image", "empty"),
        ("/embed", b'{"images": ["aGVsbG8gd29ybGQ="]}', "bad_image", "not a recognised image format"),
        ("/search", b'{"text": "a", "image": "x"}', "invalid_request", "exactly one of text, image, audio or video"),
        ("/search", b'{"text": "a", "k": 0}', "invalid_request", "k"),
        ("/search", b'{"image": "data:image/png,abc"}', "bad_base64", "base64"),
        ("/classify", b'{"labels": ["a", "b"]}', "invalid_request", "image"),
        ("/classify", b'{"image": "aGk=", "labels": ["only one"]}', "invalid_request", "labels"),
    ],
)
def test_malformed_requests_are_422_with_a_json_error(small, path: str, body: bytes, code: str, needle: str) -> None:  # noqa: ANN001
    response = small.post(path, content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    err = error(response)
    assert err["code"] == code and needle in err["message"], err


def test_image_and_label_problems_in_valid_requests_are_422(small) -> None:  # noqa: ANN001
    truncated = png_bytes(shape_image("red"))[:60]
    response = small.post("/classify", files={"image": ("t.png", truncated, "image/png")}, data={"labels": "a,b"})
    assert response.status_code == 422 and error(response)["code"] == "bad_image"
    response = small.post("/classify", data={"labels": "a,b"}, files={"other": ("x.txt", b"x", "text/plain")})
    assert response.status_code == 422 and "'image'" in error(response)["message"]
    response = small.post("/classify", json={"image": b64(shape_image("red")), "labels": ["a", "a"]})
    assert response.status_code == 422 and "distinct" in error(response)["message"]
    response = small.post(
        "/classify", json={"image": b64(shape_image("red")), "labels": ["a", "b"], "templates": "no-such-set"}
    )
    assert response.status_code == 422 and "unknown template set" in error(response)["message"]


def test_unknown_routes_and_methods_use_the_error_shape(small) -> None:  # noqa: ANN001
    assert error(small.get("/nope"))["code"] == "not_found"
    assert error(small.get("/embed"))["code"] == "method_not_allowed"


def test_api_key_is_required_when_set(model: Model) -> None:
    with make_client(model, api_key="s3cret-key") as client:
        payload = {"texts": ["a"]}
        missing = client.post("/embed", json=payload)
        assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
        assert error(missing)["code"] == "unauthorized"
        assert client.post("/embed", json=payload, headers={"X-API-Key": "wrong"}).status_code == 401
        assert client.post("/embed", json=payload, headers={"Authorization": "Bearer s3cret-keyX"}).status_code == 401
        assert client.post("/embed", json=payload, headers={"Authorization": "Basic s3cret-key"}).status_code == 401
        assert client.post("/embed", json=payload, headers={"Authorization": "Bearer s3cret-key"}).status_code == 200
        assert client.post("/embed", json=payload, headers={"X-API-Key": "s3cret-key"}).status_code == 200
        assert client.get("/items/0/image").status_code == 401
        # Health and the page stay open (probes, and the page asks for the key); they reveal no data.
        health = client.get("/health")
        assert health.status_code == 200 and health.json()["auth_required"] is True
        assert client.get("/").status_code == 200
        schemes = client.get("/openapi.json").json()["components"]["securitySchemes"]
        assert {s["type"] for s in schemes.values()} == {"http", "apiKey"}


def test_no_cors_by_default_and_only_the_listed_origin_when_set(model: Model) -> None:
    origin = {"Origin": "http://evil.example"}
    with make_client(model) as client:
        assert "access-control-allow-origin" not in client.get("/health", headers=origin).headers
    with make_client(model, cors_origins=("http://app.example",)) as client:
        assert "access-control-allow-origin" not in client.get("/health", headers=origin).headers
        allowed = client.get("/health", headers={"Origin": "http://app.example"})
        assert allowed.headers["access-control-allow-origin"] == "http://app.example"


def test_page_and_responses_carry_security_headers(small) -> None:  # noqa: ANN001
    page = small.get("/")
    assert page.status_code == 200 and "<title>polymodal</title>" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"
    for asset in ("/static/app.js", "/static/style.css"):
        assert small.get(asset).status_code == 200
    # The docs UIs would load scripts from a CDN: they are off; the schema itself is served.
    assert small.get("/docs").status_code == 404 and small.get("/redoc").status_code == 404
    assert "/search" in small.get("/openapi.json").json()["paths"]


def test_a_real_bug_is_a_logged_500_with_a_json_error(model: Model, caplog: pytest.LogCaptureFixture) -> None:
    from fastapi.testclient import TestClient

    app = create_app(model)
    app.state.service.model = None  # break the server itself: any model call now raises AttributeError
    with TestClient(app, raise_server_exceptions=False) as client, caplog.at_level(logging.ERROR):
        response = client.post("/embed", json={"texts": ["a"]})
    assert response.status_code == 500 and error(response)["code"] == "internal_error"
    assert "AttributeError" not in response.text  # no internals leak to the client ...
    assert any("unexpected error serving POST /embed" in r.message for r in caplog.records)  # ... they are logged


def test_settings_validate_and_bind_warnings() -> None:
    with pytest.raises(ValueError, match="max_upload_bytes"):
        ServeSettings(max_upload_bytes=0)
    with pytest.raises(ValueError, match="api_key"):
        ServeSettings(api_key="  ")
    assert bind_warning("127.0.0.1", None) is None and bind_warning("localhost", None) is None
    assert "WITHOUT AUTHENTICATION" in (bind_warning("0.0.0.0", None) or "")
    assert "all network interfaces" in (bind_warning("0.0.0.0", "k") or "")
    assert "WITHOUT" not in (bind_warning("0.0.0.0", "k") or "")


def test_pixel_limit_allows_images_under_it(small) -> None:  # noqa: ANN001
    image = Image.new("RGB", (300, 300), (10, 200, 10))  # 90,000 pixels: under the 100,000 limit
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG")
    response = small.post(
        "/classify", files={"image": ("ok.jpg", buffer.getvalue(), "image/jpeg")}, data={"labels": ["green", "red"]}
    )
    assert response.status_code == 200 and len(response.json()["labels"]) == 2
