"""The server with sounds: /embed (JSON and multipart), /classify and /search by an uploaded clip, GET
/items/{id}/audio (only indexed files, with their content type), and 4xx for bad, long or unsupported uploads."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient

import polymodal
from polymodal.api import Model
from polymodal.serve.search import IndexDirectory
from tests.api.audio_model import CAPTIONS, RATE, audio_model_dir, write_sounds  # noqa: F401
from tests.serve.conftest import b64, make_client, png_bytes, shape_image


@pytest.fixture(scope="module")
def audio_model(audio_model_dir: Path) -> Model:  # noqa: F811
    return polymodal.load(audio_model_dir, precision="fp32")


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, list[Path]]]:
    folder = tmp_path_factory.mktemp("media")
    files = write_sounds(folder)
    files["image"] = [folder / "red.png"]
    shape_image("red").save(files["image"][0])
    return folder, files


@pytest.fixture(scope="module")
def audio_index(audio_model: Model, media, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: ANN001
    from polymodal.index import build_index

    out = tmp_path_factory.mktemp("audio_index") / "index"
    build_index(media[0], out, audio_model)
    return out


@pytest.fixture(scope="module")
def client(audio_model: Model, audio_index: Path) -> Iterator[TestClient]:
    with make_client(audio_model, IndexDirectory(audio_index), max_audio_seconds=2.0) as test_client:
        yield test_client


def b64_file(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def flac(seconds: float) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, np.zeros(int(seconds * RATE), dtype="float32"), RATE, format="FLAC")
    return buffer.getvalue()


def error(response) -> dict:  # noqa: ANN001
    return response.json()["error"]


def test_health_says_the_model_embeds_sounds(client) -> None:  # noqa: ANN001
    health = client.get("/health").json()
    assert health["media"] == {"embed": ["audio", "image", "text"]}
    assert health["endpoints"]["/items/{item_id}/audio"] and health["limits"]["max_audio_seconds"] == 2.0


def test_embed_takes_sounds_as_base64_and_as_multipart_parts(client, audio_model: Model, media) -> None:  # noqa: ANN001
    clips = media[1]["low"][:1] + media[1]["high"][1:2]
    expected = audio_model.embed_audio(clips)
    body = client.post("/embed", json={"audio": [b64_file(p) for p in clips], "texts": ["a low tone"]}).json()
    np.testing.assert_allclose(body["audio_embeddings"], expected, atol=1e-5)
    np.testing.assert_allclose(body["text_embeddings"], audio_model.embed_text("a low tone"), atol=1e-5)
    assert body["image_embeddings"] == [] and body["dim"] == audio_model.embed_dim
    files = [("audio", (p.name, p.read_bytes(), "audio/x-wav")) for p in clips]
    files.append(("images", ("red.png", png_bytes(shape_image("red")), "image/png")))
    form = client.post("/embed", files=files, data={"texts": ["a high tone, with a comma"]}).json()
    np.testing.assert_allclose(form["audio_embeddings"], expected, atol=1e-5)
    np.testing.assert_allclose(form["image_embeddings"], audio_model.embed_image(shape_image("red")), atol=1e-5)
    np.testing.assert_allclose(form["text_embeddings"], audio_model.embed_text("a high tone, with a comma"), atol=1e-5)


def test_classify_a_sound_in_json_and_multipart(client, media) -> None:  # noqa: ANN001
    clip = media[1]["high"][2]
    options = {"labels": ["low", "high"], "templates": "a {} tone"}
    by_json = client.post("/classify", json={**options, "audio": b64_file(clip)}).json()["labels"]
    by_form = client.post("/classify", data=options, files={"audio": (clip.name, clip.read_bytes())}).json()["labels"]
    assert by_json[0]["label"] == "high" and by_json == by_form
    both = client.post("/classify", json={**options, "audio": b64_file(clip), "image": b64(shape_image("red"))})
    assert both.status_code == 422 and "exactly one of image, audio or video" in error(both)["message"]


def test_search_by_a_clip_and_by_text_finds_sounds_that_play(client, media) -> None:  # noqa: ANN001
    clip = media[1]["low"][1]
    hits = client.post("/search", json={"audio": b64_file(clip), "k": 3}).json()["hits"]
    assert hits[0]["path"] == str(clip) and hits[0]["kind"] == "audio" and hits[0]["score"] > 0.999
    assert sorted(Path(h["path"]).name for h in hits) == sorted(p.name for p in media[1]["low"])
    assert all(h["audio_url"] == f"/items/{h['id']}/audio" and h["thumbnail_url"] is None for h in hits)
    by_text = client.post("/search", json={"text": CAPTIONS["high"], "k": 3, "kind": "audio"}).json()["hits"]
    assert sorted(Path(h["path"]).name for h in by_text) == sorted(p.name for p in media[1]["high"])
    (image,) = client.post("/search", json={"audio": b64_file(clip), "k": 1, "kind": "image"}).json()["hits"]
    assert image["thumbnail_url"].startswith(f"/items/{image['id']}/image") and image["audio_url"] is None


def test_items_audio_streams_only_indexed_sound_files(client, media) -> None:  # noqa: ANN001
    hits = client.post("/search", json={"text": "a low tone", "k": 7}).json()["hits"]
    by_name = {Path(h["path"]).name: h for h in hits}
    for name, content_type in [("low-a.wav", "audio/wav"), ("low-b.flac", "audio/flac"), ("low-c.ogg", "audio/ogg")]:
        response = client.get(by_name[name]["audio_url"])
        assert response.status_code == 200 and response.headers["content-type"] == content_type
        assert response.content == Path(by_name[name]["path"]).read_bytes()
    image_id = by_name["red.png"]["id"]
    assert client.get(f"/items/{image_id}/audio").status_code == 404  # an image is not served as a sound ...
    assert client.get(f"/items/{by_name['low-a.wav']['id']}/image").status_code == 404  # ... nor a sound as an image
    for bad in ["/items/999/audio", "/items/-1/audio", f"/items/{2**70}/audio"]:
        assert client.get(bad).status_code == 404, bad
    traversals = ["/items/..%2F..%2Fetc%2Fpasswd/audio", "/items/1%2F..%2F..%2Fsecret/audio", "/items/low.wav/audio"]
    for traversal in traversals:
        assert client.get(traversal).status_code in (404, 422), traversal


@pytest.mark.parametrize(
    "payload,status,code,needle",
    [
        ({"audio": base64.b64encode(b"RIFF\x24\x00\x00\x00WAVEfmt ").decode()}, 422, "bad_audio", "audio: "),
        ({"audio": base64.b64encode(b"hello world, not a sound").decode()}, 422, "bad_audio", "cannot decode audio"),
        ({"audio": ""}, 422, "bad_audio", "audio: audio data is empty"),
        ({"audio": "%%% not base64"}, 422, "bad_base64", "audio: not valid base64"),
        ({"audio": base64.b64encode(flac(3.0)).decode()}, 413, "audio_too_long", "3 s long, more than the 2 s allowed"),
    ],
)
def test_bad_or_long_sounds_are_4xx_naming_the_field(client, payload, status, code, needle) -> None:  # noqa: ANN001
    for response in [
        client.post("/search", json={**payload, "k": 1}),
        client.post("/classify", json={**payload, "labels": ["low", "high"]}),
    ]:
        assert response.status_code == status, response.text
        assert error(response)["code"] == code and needle in error(response)["message"], error(response)


def test_multipart_sound_problems_are_4xx(client, media) -> None:  # noqa: ANN001
    truncated = media[1]["low"][0].read_bytes()[:50]
    bad = client.post("/embed", files=[("audio", ("a.wav", b"x" * 10)), ("audio", ("b.wav", truncated))])
    assert bad.status_code == 422 and error(bad)["code"] == "bad_audio" and "audio[0]" in error(bad)["message"]
    long = client.post("/classify", data={"labels": ["a", "b"]}, files={"audio": ("long.flac", flac(5.0))})
    assert long.status_code == 413 and error(long)["code"] == "audio_too_long"
    stray = client.post("/embed", files={"sound": ("a.wav", b"x")})
    assert stray.status_code == 422 and "sound: unknown part" in error(stray)["message"]
    none = client.post("/classify", data={"labels": ["a", "b"]}, files={"other": ("a.wav", b"x")})
    assert none.status_code == 422 and "one file part named 'image' or 'audio'" in error(none)["message"]


def test_size_limit_and_models_without_audio(audio_model: Model, model: Model, media) -> None:  # noqa: ANN001
    clip = media[1]["low"][0]
    with make_client(audio_model, max_upload_bytes=1024) as small:
        response = small.post("/embed", json={"audio": [b64_file(clip)]})
        assert response.status_code == 413 and error(response)["code"] == "too_large"
    with make_client(model) as image_only:  # the tiny image-text dual encoder
        for response in [
            image_only.post("/embed", json={"audio": [b64_file(clip)]}),
            image_only.post("/classify", json={"audio": b64_file(clip), "labels": ["a", "b"]}),
        ]:
            assert response.status_code == 400 and error(response)["code"] == "not_supported"
            assert "audio: it takes image, text, video" in error(response)["message"]
        assert image_only.get("/health").json()["media"] == {"embed": ["image", "text"]}


def test_a_sound_that_does_not_decode_is_named_by_its_upload_not_a_file_object(client) -> None:  # noqa: ANN001
    """libsndfile names the in-memory file it was given (<_io.BytesIO object at 0x7f...>): the client sees the name
    of what it uploaded instead."""
    text = b"hello world, not a sound"
    named = client.post("/classify", data={"labels": "a,b"}, files={"audio": ("dir/clip.wav", text, "audio/wav")})
    message = error(named)["message"]
    assert named.status_code == 422 and error(named)["code"] == "bad_audio"
    assert message.startswith("audio: ") and "'clip.wav'" in message
    assert "BytesIO" not in message and "0x" not in message and "dir/" not in message
    files = [("audio", ("good.flac", flac(0.5), "audio/flac")), ("audio", ("bad.wav", text, "audio/wav"))]
    embedded = client.post("/embed", files=files)
    assert embedded.status_code == 422 and error(embedded)["message"].startswith("audio[1]: ")
    assert "'bad.wav'" in error(embedded)["message"] and "BytesIO" not in error(embedded)["message"]
    unnamed = client.post("/search", json={"audio": base64.b64encode(text).decode()})
    assert unnamed.status_code == 422 and "the uploaded file" in error(unnamed)["message"]
    assert "BytesIO" not in error(unnamed)["message"]


def test_a_model_that_embeds_sounds_but_no_labels_does_not_offer_classify(tmp_path: Path) -> None:
    """A classifier over one audio tower embeds sounds (search, verification) but has no text tower for labels:
    /health says /classify does not work here, and /classify answers 400 not_supported (it was a 422)."""
    from polymodal.data.audio import AudioFeatures
    from polymodal.data.processors import AudioProcessor
    from polymodal.models import build_model, save_model
    from tests.api.audio_model import AUDIO, FEATURES

    config = {
        "kind": "fusion_classifier",
        "encoders": {"audio": AUDIO},
        "fusion": {"name": "concat"},
        "fusion_dim": 16,
        "num_classes": 2,
    }
    saved = save_model(
        tmp_path / "voices", build_model(config).eval(), {"audio": AudioProcessor(AudioFeatures(**FEATURES))}
    )
    model = polymodal.load(saved, precision="fp32")
    assert "embed" in model.capabilities and "text" not in model.accepts()
    with make_client(model) as client:
        endpoints = client.get("/health").json()["endpoints"]
        assert endpoints["/embed"] is True and endpoints["/classify"] is False
        refused = client.post("/classify", json={"audio": "AAAA", "labels": ["a", "b"]})
        assert refused.status_code == 400 and refused.json()["error"]["code"] == "not_supported"
