"""The server with clips: /embed, /classify and /search take video uploads (an image-text model embeds them per
frame), search hits carry a segment's times, GET /items/{id}/video streams only indexed clips and answers Range
requests, /caption and /answer take a clip for a captioner or question answerer of clips, and bad or long uploads
are 4xx naming the field."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

import polymodal
from polymodal.api import Model
from polymodal.api.video import IMAGE_FRAMES
from polymodal.data.video import VideoSampling, decode_video, web_playable
from polymodal.serve.search import IndexDirectory
from tests.api.video_model import (  # noqa: F401
    colour_model_dir,
    colour_video_model_dir,
    picture,
    video_captioner_dir,
    video_question_answerer_dir,
    write_clip,
)
from tests.serve.conftest import make_client, png_bytes


@pytest.fixture(scope="module")
def colour_model(colour_model_dir: Path) -> Model:  # noqa: F811
    return polymodal.load(colour_model_dir, precision="fp32")


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("clips")
    picture("red").save(folder / "still.png")
    return {
        "red": write_clip(folder / "red.mp4", ["red"], 2.0),
        "blue": write_clip(folder / "blue.mp4", ["blue"], 1.5),
        "red-then-blue": write_clip(folder / "red-then-blue.mp4", ["red", "blue"], 1.0),
        "still": folder / "still.png",
    }


@pytest.fixture(scope="module")
def client(colour_model: Model, clips, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:  # noqa: ANN001
    from polymodal.index import build_index

    out = tmp_path_factory.mktemp("video_index") / "index"
    build_index(clips["red"].parent, out, colour_model, segment_seconds=1.0)
    with make_client(colour_model, IndexDirectory(out), max_video_seconds=3.0) as test_client:
        yield test_client


def b64_file(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def error(response) -> dict:  # noqa: ANN001
    return response.json()["error"]


def test_health_says_how_clips_are_embedded(client) -> None:  # noqa: ANN001
    health = client.get("/health").json()
    assert health["media"] == {"embed": ["image", "text"]} and health["video_embedding"] == IMAGE_FRAMES
    assert health["endpoints"]["/items/{item_id}/video"] and health["limits"]["max_video_seconds"] == 3.0


def test_embed_takes_clips_as_base64_and_as_multipart_parts(client, colour_model: Model, clips) -> None:  # noqa: ANN001
    paths = [clips["red"], clips["red-then-blue"]]
    expected = colour_model.embed_video(paths)
    as_json = client.post("/embed", json={"videos": [b64_file(p) for p in paths], "texts": ["a red picture"]})
    assert as_json.status_code == 200, as_json.text
    np.testing.assert_allclose(as_json.json()["video_embeddings"], expected, atol=1e-5)
    assert len(as_json.json()["text_embeddings"]) == 1 and as_json.json()["image_embeddings"] == []
    parts = [("videos", (p.name, p.read_bytes(), "video/mp4")) for p in paths]
    as_form = client.post("/embed", files=parts)
    assert as_form.status_code == 200, as_form.text
    np.testing.assert_allclose(as_form.json()["video_embeddings"], expected, atol=1e-5)


def test_classify_a_clip_in_json_and_multipart(client, clips) -> None:  # noqa: ANN001
    body = {"video": b64_file(clips["blue"]), "labels": ["red", "blue"], "templates": "a {} picture"}
    ranked = client.post("/classify", json=body)
    assert ranked.status_code == 200, ranked.text
    assert ranked.json()["labels"][0]["label"] == "blue"
    form = {"labels": "red,blue", "templates": "a {} picture"}
    upload = client.post("/classify", data=form, files={"video": ("red.mp4", clips["red"].read_bytes(), "video/mp4")})
    assert upload.status_code == 200 and upload.json()["labels"][0]["label"] == "red"


def test_search_hits_carry_the_moment_and_a_playable_url(client, clips) -> None:  # noqa: ANN001
    hits = client.post("/search", json={"text": "a blue picture", "kind": "video", "k": 3}).json()["hits"]
    found = {(Path(h["path"]).name, h["start"], h["end"]) for h in hits}
    assert found == {("blue.mp4", 0.0, 1.0), ("blue.mp4", 1.0, 1.5), ("red-then-blue.mp4", 1.0, 2.0)}
    assert all(h["video_url"] == f"/items/{h['id']}/video" and h["thumbnail_url"] is None for h in hits)
    by_clip = client.post("/search", json={"video": b64_file(clips["red"]), "k": 3, "kind": "video"}).json()["hits"]
    assert {(Path(h["path"]).name, h["start"]) for h in by_clip} == {
        ("red.mp4", 0.0),
        ("red.mp4", 1.0),
        ("red-then-blue.mp4", 0.0),  # its red second
    }
    image = client.post("/search", json={"text": "a red picture", "kind": "image"}).json()["hits"][0]
    assert image["video_url"] is None and image["start"] is None and image["thumbnail_url"]


def test_items_video_streams_only_indexed_clips_with_range_requests(client, clips, tmp_path: Path) -> None:  # noqa: ANN001
    hits = client.post("/search", json={"text": "a red picture", "kind": "video", "k": 6}).json()["hits"]
    hit = next(h for h in hits if Path(h["path"]).name == "red.mp4")
    whole = client.get(hit["video_url"])
    data = whole.content
    assert whole.status_code == 200 and whole.headers["content-type"] == "video/mp4"
    assert whole.headers["accept-ranges"] == "bytes"
    # The clip is MPEG-4 Part 2, which Chromium does not play: it is sent as its H.264 copy, made once.
    played = tmp_path / "played.mp4"
    played.write_bytes(data)
    assert web_playable(played) and not web_playable(clips["red"]) and data != clips["red"].read_bytes()
    assert len(decode_video(played, VideoSampling(frames=64)).frames) == 16  # every frame of its 2 s at 8 fps
    assert client.get(hit["video_url"]).content == data
    part = client.get(hit["video_url"], headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == data[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(data)}"
    tail = client.get(hit["video_url"], headers={"Range": "bytes=-50"})
    assert tail.status_code == 206 and tail.content == data[-50:]
    assert client.get(hit["video_url"], headers={"Range": f"bytes={len(data) + 10}-"}).status_code == 416
    image = client.post("/search", json={"text": "a red picture", "kind": "image"}).json()["hits"][0]
    assert client.get(f"/items/{image['id']}/video").status_code == 404  # an image is not served as a video
    assert client.get("/items/999999/video").status_code == 404
    assert client.get("/items/../../etc/passwd/video").status_code == 404


def test_bad_long_and_mislabelled_clips_are_4xx_naming_the_field(client, clips, tmp_path: Path) -> None:  # noqa: ANN001
    cut = clips["red"].read_bytes()[:300]
    response = client.post("/embed", json={"videos": [b64_file(clips["red"]), base64.b64encode(cut).decode()]})
    assert response.status_code == 422 and error(response)["code"] == "bad_video"
    assert error(response)["message"].startswith("videos[1]: ")
    empty = client.post("/classify", data={"labels": "a,b"}, files={"video": ("e.mp4", b"", "video/mp4")})
    assert empty.status_code == 422 and error(empty)["code"] == "bad_video" and "empty" in error(empty)["message"]
    long = write_clip(tmp_path / "long.mp4", ["red", "blue", "red", "blue"], 1.0)  # 4 s, the limit is 3
    too_long = client.post("/search", json={"video": b64_file(long)})
    assert too_long.status_code == 413 and error(too_long)["code"] == "video_too_long"
    assert "3 s" in error(too_long)["message"] and error(too_long)["message"].startswith("video: ")
    a_picture = client.post("/search", json={"video": base64.b64encode(png_bytes(picture("red"))).decode()})
    assert a_picture.status_code == 422 and error(a_picture)["code"] == "bad_video"


@pytest.fixture(scope="module")
def video_captioner(video_captioner_dir: Path) -> Model:  # noqa: F811
    return polymodal.load(video_captioner_dir, precision="fp32")


def test_caption_takes_a_clip_when_the_captioner_reads_clips(video_captioner: Model, model: Model, clips) -> None:  # noqa: ANN001
    assert video_captioner.media("caption") == {"video"}
    expected = video_captioner.caption(clips["red-then-blue"], max_new_tokens=5)[0]
    with make_client(video_captioner) as captioner:
        by_form = captioner.post(
            "/caption",
            data={"max_new_tokens": "5"},
            files={"video": ("clip.mp4", clips["red-then-blue"].read_bytes(), "video/mp4")},
        )
        assert by_form.status_code == 200, by_form.text
        assert by_form.json()["caption"] == expected
        by_json = captioner.post("/caption", json={"video": b64_file(clips["red-then-blue"]), "max_new_tokens": 5})
        assert by_json.json()["caption"] == expected
        image = captioner.post("/caption", files={"image": ("s.png", clips["still"].read_bytes(), "image/png")})
        assert image.status_code == 400 and "it takes video" in error(image)["message"]
        both = captioner.post("/caption", json={"video": b64_file(clips["red"]), "image": b64_file(clips["still"])})
        assert both.status_code == 422
    # An image-text embedding model embeds clips by frames, but cannot caption them.
    with make_client(model) as embedder:
        refused = embedder.post("/caption", json={"video": b64_file(clips["red"])})
        assert refused.status_code == 400 and error(refused)["code"] == "not_supported"


def test_answer_takes_a_clip_when_the_question_answerer_reads_clips(
    video_question_answerer_dir: Path,  # noqa: F811
    model: Model,
    clips,  # noqa: ANN001
) -> None:
    answerer = polymodal.load(video_question_answerer_dir, precision="fp32")
    assert answerer.media("answer") == {"video"}
    question = "what colour is the shape"
    expected = answerer.answer([clips["red"], clips["blue"]], question)
    assert set(expected) <= {"red", "blue"}
    with make_client(answerer) as server:
        for name, answer in zip(("red", "blue"), expected):
            by_form = server.post(
                "/answer",
                data={"question": question},
                files={"video": ("c.mp4", clips[name].read_bytes(), "video/mp4")},
            )
            assert by_form.status_code == 200, by_form.text
            assert by_form.json() == {"answer": answer}
            by_json = server.post("/answer", json={"video": b64_file(clips[name]), "question": question})
            assert by_json.json() == {"answer": answer}
        assert server.get("/health").json()["media"]["answer"] == ["video"]
        image = server.post(
            "/answer", files={"image": ("s.png", clips["still"].read_bytes(), "image/png")}, data={"question": question}
        )
        assert image.status_code == 400 and "it takes video" in error(image)["message"]
        both = server.post(
            "/answer", json={"video": b64_file(clips["red"]), "image": b64_file(clips["still"]), "question": question}
        )
        assert both.status_code == 422
    # An image-text embedding model embeds clips by frames, but cannot answer questions about them.
    with make_client(model) as embedder:
        refused = embedder.post("/answer", json={"video": b64_file(clips["red"]), "question": question})
        assert refused.status_code == 400 and error(refused)["code"] == "not_supported"


def test_a_video_tower_serves_clips_through_its_own_tower(colour_video_model_dir: Path, clips) -> None:  # noqa: ANN001, F811
    model = polymodal.load(colour_video_model_dir, precision="fp32")
    with make_client(model) as tower:
        health = tower.get("/health").json()
        assert health["media"] == {"embed": ["text", "video"]} and health["video_embedding"] == "video tower"
        response = tower.post("/embed", files=[("videos", ("b.mp4", clips["blue"].read_bytes(), "video/mp4"))])
        np.testing.assert_allclose(response.json()["video_embeddings"], model.embed_video(clips["blue"]), atol=1e-5)
        image = tower.post("/classify", json={"image": b64_file(clips["still"]), "labels": ["red", "blue"]})
        assert image.status_code == 400 and "it takes text, video" in error(image)["message"]


def test_clips_over_the_models_own_bounds_are_refused_before_the_model_sees_them(client) -> None:  # noqa: ANN001
    from PIL import Image

    from polymodal.data.shapes_video import encode_mp4

    huge = encode_mp4([Image.new("RGB", (4000, 2200), (200, 20, 20))] * 2)  # under 40M pixels, over 4K
    response = client.post("/embed", json={"videos": [base64.b64encode(huge).decode()]})
    assert response.status_code == 413 and error(response)["code"] == "video_too_large"
    assert "8,294,400 pixels" in error(response)["message"] and error(response)["message"].startswith("videos[0]: ")


def test_a_sample_the_model_cannot_decode_is_a_4xx_not_a_500(colour_model: Model, clips, monkeypatch) -> None:  # noqa: ANN001
    from polymodal.data.errors import BadSampleError

    embed = colour_model.embed

    def refuse(modality: str, items: object) -> np.ndarray:
        if modality != "video":
            return embed(modality, items)
        raise BadSampleError("stream ends early", source="<bytes>", field=modality, kind="truncated")

    monkeypatch.setattr(colour_model, "embed", refuse)
    with make_client(colour_model) as refusing:
        embedded = refusing.post("/embed", json={"videos": [b64_file(clips["red"])]})
        assert embedded.status_code == 422 and error(embedded)["code"] == "bad_video"
        assert "stream ends early" in error(embedded)["message"]
        ranked = refusing.post("/classify", json={"video": b64_file(clips["red"]), "labels": ["red", "blue"]})
        assert ranked.status_code == 422 and error(ranked)["code"] == "bad_video"


@pytest.mark.parametrize("endpoint", ["/caption", "/answer"])
def test_a_clip_the_captioner_or_answerer_cannot_decode_is_bad_video(
    endpoint: str,
    video_captioner_dir: Path,  # noqa: F811
    video_question_answerer_dir: Path,  # noqa: F811
    clips,  # noqa: ANN001
    monkeypatch,  # noqa: ANN001
) -> None:
    from polymodal.data.errors import BadSampleError

    model = polymodal.load(video_captioner_dir if endpoint == "/caption" else video_question_answerer_dir)

    def refuse(*args: object, **kwargs: object) -> list[str]:
        raise BadSampleError("stream ends early", source="<bytes>", field="video", kind="truncated")

    monkeypatch.setattr(model, endpoint.lstrip("/"), refuse)
    with make_client(model) as refusing:
        body = {"video": b64_file(clips["red"]), **({"question": "what colour"} if endpoint == "/answer" else {})}
        response = refusing.post(endpoint, json=body)
        assert response.status_code == 422 and error(response)["code"] == "bad_video", response.text
        assert "stream ends early" in error(response)["message"]


def test_a_question_answerer_of_two_media_together_is_a_clear_4xx(tmp_path: Path, clips) -> None:  # noqa: ANN001
    from tests.api.video_model import save_video_question_answerer

    model = polymodal.load(save_video_question_answerer(tmp_path / "model", with_image=True))
    assert model.media("answer") == {"image", "video"}
    with pytest.raises(ValueError, match="reads image and video together to answer questions; pass items of one"):
        model.answer(clips["red"], "what colour is the shape")
    with make_client(model) as server:
        response = server.post("/answer", json={"video": b64_file(clips["red"]), "question": "what colour"})
        assert response.status_code == 422 and error(response)["code"] == "invalid_request"
        assert "reads image and video together" in error(response)["message"]


def test_a_clip_that_does_not_open_is_named_by_its_upload(client, clips) -> None:  # noqa: ANN001
    """PyAV names an in-memory clip '<none>': the client sees the name of what it uploaded instead."""
    cut = clips["red"].read_bytes()[:300]
    named = client.post("/classify", data={"labels": "a,b"}, files={"video": ("cut.mp4", cut, "video/mp4")})
    message = error(named)["message"]
    assert named.status_code == 422 and error(named)["code"] == "bad_video"
    assert message.startswith("video: ") and "'cut.mp4'" in message and "<none>" not in message
    unnamed = client.post("/search", json={"video": base64.b64encode(cut).decode()})
    assert "the uploaded file" in error(unnamed)["message"] and "<none>" not in error(unnamed)["message"]
