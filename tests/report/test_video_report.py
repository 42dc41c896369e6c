"""Reports of video examples: a frame strip (8 uniformly sampled frames, each with its time) in HTML and Markdown, from
a tiny clip written here; a missing and an undecodable clip named in a note; the strips' bytes bounded."""

from __future__ import annotations

import base64
import functools
import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from polymodal.data.video import VideoSampling, decode_video
from polymodal.report import build, write_report
from polymodal.report.strips import MAX_REPORT_STRIP_BYTES, STRIP_FRAMES, FrameStrips
from tests.data.test_video import RATE, write_clip
from tests.report.conftest import result_document, write_result

FRAMES, SIZE = 48, 96  # 2 s at 24 fps; frame i has red level 4 i (tests.data.test_video.frame_array)
FIGURE = re.compile(r'<figure><img src="data:image/png;base64,([^"]*)" alt="([^"]*)"[^>]*><figcaption>([0-9.]+) s')
STRIP = re.compile(r'<div class="strip"><div class="frames">(.*?)</div>')


def _png(data: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(data)))


@pytest.fixture
def clips(tmp_path: Path) -> dict[str, Path]:
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"not a video at all" * 10)
    return {
        "clip": write_clip(tmp_path / "moves.mp4", FRAMES, size=SIZE),
        "missing": tmp_path / "gone.mp4",
        "garbage": garbage,
    }


def _run(folder: Path, clips: dict[str, Path], images: dict[str, Path]) -> Path:
    """A result file with a clip captioned, a missing and an undecodable clip, and a caption retrieving clips."""
    doc = result_document(images)
    doc["results"] = [
        {
            "benchmark": "shapes-video-caption",
            "split": "test",
            "headline": "CIDEr-D",
            "metrics": {"CIDEr-D": 0.5},
            "examples": [
                {"video": str(clips["clip"]), "prediction": "the red circle moves left", "reference": "it grows"},
                {"video": str(clips["missing"]), "prediction": "a square appears", "reference": "a square appears"},
                {"video": str(clips["garbage"]), "prediction": "x", "reference": "y"},
            ],
        },
        {
            "benchmark": "shapes-video-retrieval",
            "split": "test",
            "headline": "t2v_R@1",
            "metrics": {"t2v_R@1": 0.25},
            "examples": [
                {
                    "text": "the red circle moves left",
                    "retrieved": [
                        {"video": str(clips["clip"]), "score": 0.8},
                        {"video": str(clips["garbage"]), "score": 0.1},
                    ],
                }
            ],
        },
    ]
    return write_result(folder / "run", doc).parent


def test_html_shows_eight_frames_of_the_clip_with_their_times(
    tmp_path: Path, clips: dict[str, Path], images: dict[str, Path]
) -> None:
    html = write_report([_run(tmp_path, clips, images)], tmp_path / "out").html.read_text()
    strips = STRIP.findall(html)
    assert len(strips) == 2  # the captioned clip, and the same clip retrieved by the caption
    want = decode_video(clips["clip"], VideoSampling(frames=STRIP_FRAMES))
    indices = [round(i * (FRAMES - 1) / (STRIP_FRAMES - 1)) for i in range(STRIP_FRAMES)]  # uniform over 48 frames
    for strip in strips:
        figures = FIGURE.findall(strip)
        assert [float(t) for _, _, t in figures] == pytest.approx([i / RATE for i in indices], abs=0.006)
        assert [float(t) for _, _, t in figures] == pytest.approx(want.times, abs=0.006)
        for (data, alt, time), frame in zip(figures, want.frames):
            with _png(data) as im:
                assert im.format == "PNG" and im.size == (64, 64)  # 96 px shrunk to the strip's 64
                red = np.asarray(im.convert("RGB"))[..., 0].mean()
            # The decoded frame itself, not a neighbour (frame numbers are 4 red levels apart).
            assert abs(red - np.asarray(frame)[..., 0].mean()) < 0.5
            assert alt == f"moves.mp4 at {time} s"
    assert "moves.mp4 · 2.0 s" in html
    assert 'class="examples videos"' in html


def test_bad_clips_are_named_notes_and_the_report_renders(
    tmp_path: Path, clips: dict[str, Path], images: dict[str, Path]
) -> None:
    written = write_report([_run(tmp_path, clips, images)], tmp_path / "out")
    html, md = written.html.read_text(), written.markdown.read_text()
    assert f"{clips['missing']}: no such file" in html
    assert re.search(re.escape(f"{clips['garbage']}: cannot ") + r"(open|decode) as video", html)
    assert html.count(f"{clips['garbage']}: cannot") == 2  # the example's and the retrieved tile's note
    assert "gone.mp4: no such file" in md and "garbage.mp4: cannot" in md
    assert html.rstrip().endswith("</html>")


def test_markdown_writes_the_frames_and_their_times(
    tmp_path: Path, clips: dict[str, Path], images: dict[str, Path]
) -> None:
    out = tmp_path / "out"
    md = write_report([_run(tmp_path, clips, images)], out).markdown.read_text()
    assert "| video | prediction | reference |" in md
    frames = re.findall(r"!\[moves\.mp4 at ([0-9.]+) s\]\((report_assets/vid-[0-9a-f]+-\d\.png)\) ([0-9.]+) s", md)
    assert len(frames) == 2 * STRIP_FRAMES and all(alt == time for alt, _, time in frames)
    assert len({path for _, path, _ in frames}) == STRIP_FRAMES  # one file per frame, shared by both uses
    assert all((out / path).is_file() for _, path, _ in frames)
    # A re-run keeps the frames and removes only stale files of its own kinds.
    (out / "report_assets" / "vid-0000000000000000-0.png").write_bytes(b"stale")
    write_report([_run(tmp_path, clips, images)], out)
    assert not (out / "report_assets" / "vid-0000000000000000-0.png").exists()
    assert all((out / path).is_file() for _, path, _ in frames)


def test_strips_past_the_budget_name_the_clip_and_say_why(
    tmp_path: Path, clips: dict[str, Path], images: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    strip, note = FrameStrips().get(str(clips["clip"]))
    assert note is None and strip is not None and len(strip.frames) == STRIP_FRAMES
    size = sum(len(frame.png) for frame in strip.frames)
    assert size < MAX_REPORT_STRIP_BYTES / 100  # the default bound holds a hundred strips of this clip
    # Room for one strip: the second use (the retrieved clip) is named with a note instead.
    monkeypatch.setattr(build, "FrameStrips", functools.partial(FrameStrips, max_total=size + 10))
    written = write_report([_run(tmp_path, clips, images)], tmp_path / "out")
    html, md = written.html.read_text(), written.markdown.read_text()
    figures = [f for strip in STRIP.findall(html) for f in FIGURE.findall(strip)]
    assert len(figures) == STRIP_FRAMES and sum(len(base64.b64decode(d)) for d, _, _ in figures) <= size + 10
    assert re.search(r"frames not embedded: the report&#x27;s \d+ KB for frame strips is spent", html)
    assert f"{clips['clip']} (frames not embedded" in md.replace("\\", "")
