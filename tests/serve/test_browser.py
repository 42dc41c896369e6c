"""The web page in a real browser: uvicorn on a free port, Debian's Chromium driven headless by Playwright."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from polymodal.api import Model
from polymodal.serve import ServeSettings, create_app
from polymodal.serve.search import IndexDirectory
from tests.api.audio_model import audio_model_dir, write_sounds  # noqa: F401
from tests.api.table_predictor import fit_dir  # noqa: F401
from tests.api.video_model import (  # noqa: F401
    colour_model_dir,
    picture,
    video_captioner_dir,
    video_question_answerer_dir,
    write_webm,
)
from tests.serve.conftest import shape_image
from tests.serve.live import serve

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's Chromium at /usr/bin/chromium")
playwright_api = pytest.importorskip("playwright.sync_api")


ALL_LOADED = "[...document.querySelectorAll('#results img')].every(i => i.complete && i.naturalWidth > 0)"


def wait_until(page, expression: str, timeout: float = 15.0) -> None:  # noqa: ANN001
    """Poll ``expression`` in the page. (``page.wait_for_function`` evaluates strings with eval(), which the
    page's Content-Security-Policy forbids, as it should; ``page.evaluate`` goes through the debugger instead.)"""
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, f"timed out waiting for: {expression}"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with playwright_api.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def server_url(model: Model, index_dir: Path) -> Iterator[str]:
    with serve(create_app(model, IndexDirectory(index_dir))) as url:
        yield url


def test_search_shows_thumbnails_and_classify_works(browser, server_url: str, image_dir: Path) -> None:  # noqa: ANN001
    requests: list[str] = []
    problems: list[str] = []
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    page.on("request", lambda request: requests.append(request.url))
    # CSP violations and script errors show up as console errors.
    page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on("response", lambda r: problems.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    page.goto(server_url + "/")

    page.wait_for_selector("#search-section:not([hidden])")
    assert "embed" in page.inner_text("#model-info") and "6 items" in page.inner_text("#model-info")
    # Only what the dual encoder can do is offered.
    assert page.is_visible("#classify-form") and page.is_visible("#similar-button")
    assert not page.is_visible("#caption-button") and not page.is_visible("#answer-form")
    assert page.is_hidden("#generate-section")  # a dual encoder does not generate
    assert not page.is_visible("#key-form")  # no API key on this server

    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip"  # keyboard users can skip to content
    page.fill("#query", "a red circle")
    page.press("#query", "Enter")
    wait_until(page, "document.querySelectorAll('#results img').length === 6 && " + ALL_LOADED)
    widths = page.eval_on_selector_all("#results img", "imgs => imgs.map(i => i.naturalWidth)")
    assert len(widths) == 6 and all(w > 0 for w in widths)
    scores = page.eval_on_selector_all("#results .score", "els => els.map(e => parseFloat(e.textContent))")
    assert scores == sorted(scores, reverse=True)
    assert "6 results" in page.inner_text("#search-status")

    page.set_input_files("#file", str(image_dir / "green.png"))
    page.wait_for_selector("#preview:not([hidden])")
    page.fill("#labels", "red, green, blue")
    page.click("#classify-form button")
    page.wait_for_selector(".bars li", timeout=15_000)
    rows = page.eval_on_selector_all(".bars li", "els => els.map(e => e.textContent)")
    assert len(rows) == 3 and all("%" in r for r in rows)

    page.click("#similar-button")  # search by the uploaded image: it is in the index, so it comes first
    wait_until(page, "document.querySelector('#search-status').textContent.includes('green.png') && " + ALL_LOADED)
    assert page.inner_text("#results li:first-child .name") == "green.png"

    page.close()
    assert not problems, problems
    external = [url for url in requests if not url.startswith((server_url, "blob:"))]  # blob: the local preview
    assert requests and not external, f"the page must not load anything external: {external}"


def test_with_an_api_key_the_page_asks_for_it_and_thumbnails_still_load(
    browser,
    model: Model,  # noqa: ANN001
    index_dir: Path,
) -> None:
    app = create_app(model, IndexDirectory(index_dir), ServeSettings(api_key="page-key"))
    with serve(app) as url:
        page = browser.new_page()
        page.goto(url + "/")
        page.wait_for_selector("#key-form:not([hidden])")
        page.fill("#query", "a blue circle")
        page.press("#query", "Enter")
        wait_until(page, "!document.querySelector('#alert').hidden")
        assert "API key" in page.inner_text("#alert")
        page.fill("#api-key", "page-key")
        page.press("#api-key", "Enter")
        page.press("#query", "Enter")
        # <img src> cannot send the key: the page fetches thumbnails with it and shows blob: URLs.
        wait_until(page, "document.querySelectorAll('#results img').length === 6 && " + ALL_LOADED)
        assert all(
            src.startswith("blob:") for src in page.eval_on_selector_all("#results img", "i => i.map(e => e.src)")
        )
        assert page.is_hidden("#alert")
        page.close()


@pytest.mark.parametrize("kind", ["captioner", "vqa"])
def test_caption_and_question_actions_appear_only_for_models_that_have_them(
    browser,
    kind: str,
    request,  # noqa: ANN001
    image_dir: Path,
) -> None:
    import polymodal

    model = polymodal.load(request.getfixturevalue(f"tiny_{kind}_dir"))
    with serve(create_app(model)) as url:
        page = browser.new_page()
        page.goto(url + "/")
        page.wait_for_selector("#image-section:not([hidden])")
        assert page.is_hidden("#search-section") and page.is_hidden("#classify-form")  # no embed, no index
        page.set_input_files("#file", str(image_dir / "red.png"))
        if kind == "captioner":
            assert page.is_visible("#caption-button") and page.is_hidden("#answer-form")
            page.click("#caption-button")
            # The tiny captioner's decoder holds 16 tokens, fewer than the API's default of 30: the caption is
            # capped at the decoder's length rather than refused, and the page shows the same text as the API.
            wait_until(page, "document.querySelector('#image-output .answer') !== null")
            assert page.is_hidden("#alert")
            assert page.inner_text("#image-output .answer") == model.caption(image_dir / "red.png")[0].strip()
        else:
            assert page.is_visible("#answer-form") and page.is_hidden("#caption-button")
            page.fill("#question", "what color is the shape")
            page.press("#question", "Enter")
            wait_until(page, "document.querySelector('#image-output .answer') !== null")
            assert (
                page.inner_text("#image-output .answer")
                == model.answer(image_dir / "red.png", "what color is the shape")[0]
            )
        page.close()


def test_predict_form_of_a_fitted_predictor(browser, fit_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001, F811
    import polymodal

    model = polymodal.load(fit_dir)
    problems: list[str] = []
    with serve(create_app(model)) as url:
        page = watched_page(browser, problems)
        page.goto(url + "/")
        page.wait_for_selector("#predict-section:not([hidden])")
        assert page.is_hidden("#image-section") and page.is_hidden("#search-section")  # it only predicts
        kinds = page.eval_on_selector_all("#predict-fields input", "els => els.map(e => [e.dataset.column, e.type])")
        assert kinds == [["x", "number"], ["colour", "text"], ["review", "text"], ["photo", "file"]]
        row = {"x": "0.4", "colour": "green", "review": "rude staff and a broken shower", "photo": "photos/red.png"}
        for i, column in enumerate(["x", "colour", "review"]):
            page.fill(f"#predict-{i}", row[column])
        page.set_input_files("#predict-3", str(fit_dir.parent / row["photo"]))
        page.click("#predict-form button")
        wait_until(page, "document.querySelector('#predict-output .prediction') !== null")
        monkeypatch.chdir(fit_dir.parent)
        expected = model.predict([row])
        assert page.inner_text("#predict-output .prediction strong") == expected.labels[0]
        shown = page.eval_on_selector_all("#predict-output .bar", "els => els.map(e => e.textContent)")
        best = max(zip(model.predictor.problem.classes, expected.values[0]), key=lambda pair: pair[1])
        assert len(shown) == 2 and shown[0] == f"{best[0]}{100 * best[1]:.1f}%"
        page.close()
    assert not problems, problems


def watched_page(browser, problems: list[str]):  # noqa: ANN001, ANN201
    """A tall page whose script errors, CSP violations (console errors) and 4xx/5xx responses go to ``problems``."""
    page = browser.new_page(viewport={"width": 1200, "height": 1100})
    page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on("response", lambda r: problems.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    return page


ALL_PLAYABLE = "[...document.querySelectorAll('#results audio')].every(a => a.readyState >= 1 && a.duration > 0)"


def test_sounds_are_searched_played_and_classified(browser, audio_model_dir: Path, tmp_path: Path) -> None:  # noqa: ANN001, F811
    """An audio-image-text model over a folder of tones and a picture: the page offers a sound input, plays sound
    results from /items/{id}/audio (WAV, FLAC and OGG), classifies a chosen sound and finds it by itself."""
    import polymodal
    from polymodal.index import build_index

    folder = tmp_path / "media"
    files = write_sounds(folder)
    shape_image("red").save(folder / "red.png")
    model = polymodal.load(audio_model_dir, precision="fp32")
    build_index(folder, tmp_path / "index", model)
    problems: list[str] = []
    with serve(create_app(model, IndexDirectory(tmp_path / "index"))) as url:
        page = watched_page(browser, problems)
        page.goto(url + "/")
        page.wait_for_selector("#sound-pick:not([hidden])")
        # Its image tower embeds clips by frames too, so the page takes all three.
        assert page.inner_text("#image-title") == "Ask about an image, a sound or a video"
        assert page.get_attribute("#file", "accept") == "image/*,audio/*,video/*"

        page.fill("#query", "a high tone")
        page.press("#query", "Enter")
        wait_until(page, f"document.querySelectorAll('#results li').length === 7 && {ALL_PLAYABLE} && {ALL_LOADED}")
        shown = page.eval_on_selector_all("#results .name", "els => els.map(e => e.textContent)")
        assert sorted(shown[:3]) == sorted(p.name for p in files["high"]), shown
        assert page.eval_on_selector_all("#results img", "imgs => imgs.length") == 1  # the picture, as before

        page.set_input_files("#audio-file", str(files["low"][1]))
        page.wait_for_selector("#sound-preview:not([hidden])")
        assert page.is_hidden("#preview")
        page.fill("#labels", "low, high")
        page.click("#classify-form button")
        page.wait_for_selector(".bars li", timeout=15_000)
        assert page.eval_on_selector_all(".bars li", "els => els.length") == 2

        page.click("#similar-button")  # search by the chosen sound: it is in the index, so it comes first
        status = "document.querySelector('#search-status').textContent"
        wait_until(page, f"{status}.includes('low-b.flac') && {ALL_PLAYABLE}")
        assert page.inner_text("#results li:first-child .name") == "low-b.flac"
        page.screenshot(path=str(tmp_path / "sounds.png"), full_page=True)
        page.close()
    assert not problems, problems


ALL_SEEKED = (
    "[...document.querySelectorAll('#results video')].every(v => v.readyState >= 1 && v.duration > 0 && "
    "Math.abs(v.currentTime - parseFloat(v.src.split('#t=')[1] || '0')) < 0.01)"
)


def test_videos_are_searched_played_from_their_moment_and_classified(
    browser, colour_model_dir: Path, tmp_path: Path
) -> None:  # noqa: ANN001, F811
    """An image-text model over WebM clips cut into 1-second segments and a picture: the page offers a video input,
    plays each segment from its moment (src .../video#t=START, seeking through Range requests), classifies a chosen
    clip by its frames and finds the clip by itself."""
    import polymodal
    from polymodal.index import build_index

    folder = tmp_path / "media"
    write_webm(folder / "red.webm", ["red"], 2.0)
    write_webm(folder / "blue.webm", ["blue"], 2.0)
    write_webm(folder / "red-then-blue.webm", ["red", "blue"], 1.0)
    picture("red").save(folder / "still.png")
    model = polymodal.load(colour_model_dir, precision="fp32")
    build_index(folder, tmp_path / "index", model, segment_seconds=1.0)
    problems: list[str] = []
    ranges: list[str] = []
    with serve(create_app(model, IndexDirectory(tmp_path / "index"))) as url:
        page = watched_page(browser, problems)
        page.on("request", lambda r: ranges.append(r.headers.get("range", "")) if "/video" in r.url else None)
        page.goto(url + "/")
        page.wait_for_selector("#video-pick:not([hidden])")
        assert page.is_hidden("#sound-pick")
        assert page.inner_text("#image-title") == "Ask about an image or a video"
        assert page.get_attribute("#file", "accept") == "image/*,video/*"

        page.fill("#query", "a blue picture")
        page.press("#query", "Enter")
        wait_until(page, f"document.querySelectorAll('#results li').length === 7 && {ALL_SEEKED} && {ALL_LOADED}")
        first = page.eval_on_selector_all(
            "#results li",
            "els => els.slice(0, 3).map(e => [e.querySelector('.name').textContent, "
            "e.querySelector('video').src.split('#')[1]])",
        )
        assert sorted(first) == [["blue.webm", "t=0"], ["blue.webm", "t=1"], ["red-then-blue.webm", "t=1"]], first
        times = page.eval_on_selector_all("#results video", "vs => vs.map(v => v.currentTime)")
        assert sorted(times) == [0, 0, 0, 1, 1, 1]  # each player waits at its segment's start
        assert page.inner_text("#results li:first-child .moment") in ("0–1 s", "1–2 s")
        assert page.eval_on_selector_all("#results img", "imgs => imgs.length") == 1  # the picture, as before
        assert any(r.startswith("bytes=") for r in ranges), "the player asks for byte ranges"

        page.set_input_files("#video-file", str(folder / "blue.webm"))
        page.wait_for_selector("#video-preview:not([hidden])")
        assert page.is_hidden("#preview") and page.is_hidden("#sound-preview")
        page.fill("#labels", "red, blue")
        page.click("#classify-form button")
        page.wait_for_selector(".bars li", timeout=15_000)
        assert page.inner_text(".bars li:first-child span") == "blue"

        page.click("#similar-button")  # search by the chosen clip: the blue seconds come first
        status = "document.querySelector('#search-status').textContent"
        wait_until(page, f"{status}.includes('blue.webm') && {ALL_SEEKED}")
        names = page.eval_on_selector_all("#results .name", "els => els.slice(0, 3).map(e => e.textContent)")
        assert sorted(names) == ["blue.webm", "blue.webm", "red-then-blue.webm"], names
        page.screenshot(path=str(tmp_path / "videos.png"), full_page=True)
        page.close()
    assert not problems, problems


@pytest.mark.parametrize("kind", ["captioner", "question answerer"])
def test_a_model_of_clips_offers_a_video_input_and_captions_it_or_answers_about_it(
    browser, kind: str, request, tmp_path: Path
) -> None:  # noqa: ANN001, F811
    import polymodal

    clip = write_webm(tmp_path / "clip.webm", ["red", "blue"], 1.0)
    model_dir = request.getfixturevalue("video_captioner_dir" if kind == "captioner" else "video_question_answerer_dir")
    model = polymodal.load(model_dir, precision="fp32")
    question = "what colour is the shape"
    problems: list[str] = []
    with serve(create_app(model)) as url:
        page = watched_page(browser, problems)
        page.goto(url + "/")
        page.wait_for_selector("#video-pick:not([hidden])")
        assert page.inner_text("#image-title") == "Ask about a video" and page.is_hidden("#sound-pick")
        assert page.get_attribute("#file", "accept") == "video/*"
        page.set_input_files("#video-file", str(clip))
        page.wait_for_selector("#video-preview:not([hidden])")
        assert page.is_hidden("#classify-form")
        if kind == "captioner":
            assert page.is_visible("#caption-button") and page.is_hidden("#answer-form")
            page.click("#caption-button")
            expected = model.caption(clip)[0]
        else:
            assert page.is_visible("#answer-form") and page.is_hidden("#caption-button")
            page.fill("#question", question)
            page.click("#answer-form button[type=submit]")
            expected = model.answer(clip, question)[0]
        wait_until(page, "document.querySelector('#image-output .answer') !== null")
        assert page.inner_text("#image-output .answer") == expected.strip()
        page.close()
    assert not problems, problems


def test_a_generator_offers_only_the_generate_section_and_shows_the_apis_images(
    browser, tiny_diffusion_dir: Path, tmp_path: Path
) -> None:  # noqa: ANN001
    import base64
    import io

    import numpy as np
    from PIL import Image

    import polymodal

    model = polymodal.load(tiny_diffusion_dir)
    prompt = "a red circle above a blue square"
    problems: list[str] = []
    requests: list[str] = []
    with serve(create_app(model, settings=ServeSettings(max_generate_images=6, max_generate_steps=50))) as url:
        page = watched_page(browser, problems)
        page.on("request", lambda request: requests.append(request.url))
        page.goto(url + "/")
        page.wait_for_selector("#generate-section:not([hidden])")
        assert page.is_hidden("#search-section") and page.is_hidden("#image-section")
        assert "generate" in page.inner_text("#model-info")
        # The inputs stop at this server's limits.
        assert page.get_attribute("#gen-n", "max") == "6" and page.get_attribute("#gen-steps", "max") == "50"
        assert page.input_value("#gen-steps") == "25"

        page.fill("#prompt", prompt)
        page.fill("#gen-n", "3")
        page.fill("#gen-steps", "2")
        page.fill("#gen-seed", "5")
        page.select_option("#gen-sampler", "dpm_solver")
        page.press("#prompt", "Enter")
        shown = "[...document.querySelectorAll('#generated img')]"
        wait_until(page, f"{shown}.length === 3 && {shown}.every(i => i.complete && i.naturalWidth === 32)")
        assert page.is_hidden("#alert") and "3 images" in page.inner_text("#generate-status")
        sources = page.eval_on_selector_all("#generated img", "imgs => imgs.map(i => i.src)")
        expected = model.generate(prompt, n=3, steps=2, seed=5, sampler="dpm_solver")
        for src, want in zip(sources, expected):
            header, _, data = src.partition(",")
            assert header == "data:image/png;base64"
            np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(base64.b64decode(data)))), np.asarray(want))
        alts = page.eval_on_selector_all("#generated img", "imgs => imgs.map(i => i.alt)")
        assert alts[0] == f"{prompt} (image 1 of 3)"
        page.screenshot(path=str(tmp_path / "generate.png"), full_page=True)

        page.fill("#prompt", "   ")  # blank after trimming: nothing is sent
        page.press("#prompt", "Enter")
        page.close()
    assert not problems, problems
    assert sum("/generate" in r for r in requests) == 1
    external = [r for r in requests if not r.startswith((url, "data:"))]
    assert not external, external
