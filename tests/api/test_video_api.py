"""The Python API with clips: zero-shot by an image-text model's image tower per frame (checked against the mean
of the frames' own embeddings), by a video tower, segments with their times, zero-shot classification, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import polymodal
from polymodal.api.video import IMAGE_FRAMES, VIDEO_TOWER
from polymodal.backends import TaskNotSupported
from polymodal.data.errors import BadSampleError
from polymodal.data.video import VideoSampling, decode_video, frames_at
from tests.api.video_model import colour_model_dir, colour_video_model_dir, write_clip  # noqa: F401


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("clips")
    return {
        "red": write_clip(folder / "red.mp4", ["red"], 2.0),
        "blue": write_clip(folder / "blue.mp4", ["blue"], 1.5),
        "red-then-blue": write_clip(folder / "red-then-blue.mp4", ["red", "blue"], 1.0),
    }


def test_an_image_text_model_embeds_a_clip_as_the_mean_of_its_frames(colour_model_dir, clips) -> None:  # noqa: ANN001, F811
    model = polymodal.load(colour_model_dir, precision="fp32")
    assert model.video_embedding == IMAGE_FRAMES and model.media() == {"image", "text"}
    assert model.accepts() == {"image", "text", "video"}
    vectors = model.embed_video([clips["red-then-blue"], clips["red"].read_bytes()])
    assert set(model.chunk_sizers) == {"image"}  # the frames went through the image tower's call sizes
    assert vectors.shape == (2, model.embed_dim) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    frames = decode_video(clips["red-then-blue"], VideoSampling()).frames  # 8 uniform frames: 4 red, 4 blue
    assert len(frames) == 8
    mean = model.embed_image(frames).mean(0)
    np.testing.assert_allclose(vectors[0], mean / np.linalg.norm(mean), atol=1e-5)
    np.testing.assert_allclose(model.embed("video", str(clips["red"])), vectors[1:], atol=1e-5)


def test_classify_clips_zero_shot_with_the_image_tower(colour_model_dir, clips) -> None:  # noqa: ANN001, F811
    model = polymodal.load(colour_model_dir, precision="fp32", batch_size=3)  # frames span several image batches
    ranked = model.classify(
        [clips["blue"], clips["red"]], ["red", "blue"], modality="video", templates=["a {} picture"]
    )
    assert [r[0][0] for r in ranked] == ["blue", "red"] and all(r[0][1] > 0.5 for r in ranked)


def test_segments_carry_their_times_and_embed_only_their_frames(colour_model_dir, clips) -> None:  # noqa: ANN001, F811
    model = polymodal.load(colour_model_dir, precision="fp32")
    segments = list(model.video_segments(str(clips["red-then-blue"]), 1.0))
    assert [(s.start, s.end) for s in segments] == [(0.0, 1.0), (1.0, 2.0)]
    assert all(len(s.clip.frames) == 8 and all(s.start <= t < s.end for t in s.clip.times) for s in segments)
    red, blue = model.embed_video([s.clip for s in segments])
    captions = model.embed_text(["a red picture", "a blue picture"])
    assert (captions @ red).argmax() == 0 and (captions @ blue).argmax() == 1
    # Shorter than a segment: one segment, the whole clip.
    (whole,) = model.video_segments(str(clips["blue"]), 5.0)
    assert (whole.start, whole.end) == (0.0, 1.5)
    with pytest.raises(ValueError, match="segment seconds must be a finite number > 0"):
        model.video_segments(str(clips["blue"]), 0)


def test_a_video_tower_embeds_files_and_decoded_segments_alike(colour_video_model_dir, colour_model_dir, clips) -> None:  # noqa: ANN001, F811
    model = polymodal.load(colour_video_model_dir, precision="fp32")
    assert model.video_embedding == VIDEO_TOWER and model.media() == {"text", "video"}
    red, mixed = model.embed_video([clips["red"], clips["red-then-blue"]])
    first, second = model.embed_video([s.clip for s in model.video_segments(str(clips["red-then-blue"]), 1.0)])
    np.testing.assert_allclose(first, red, atol=0.02)  # a red second embeds like a red clip (codec noise apart)
    captions = model.embed_text(["a red picture", "a blue picture"])
    assert (captions @ second).argmax() == 1 and (captions @ mixed).max() < (captions @ red).max()
    # The tower averages the same frames the image-text model averages one by one: the two paths agree.
    by_frames = polymodal.load(colour_model_dir, precision="fp32").embed_video(clips["red"])[0]
    assert float(red @ by_frames) > 0.99


def test_bad_clips_and_models_that_cannot_embed_video(colour_model_dir, tiny_captioner_dir, tmp_path: Path) -> None:  # noqa: ANN001, F811
    model = polymodal.load(colour_model_dir, precision="fp32")
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 40)
    with pytest.raises(BadSampleError, match="broken.mp4"):
        model.embed_video(broken)
    with pytest.raises(BadSampleError, match="empty"):
        model.embed_video(b"")
    with pytest.raises(ValueError, match="expected a video path, encoded bytes or a Clip"):
        model.embed_video([np.zeros(3)])
    captioner = polymodal.load(tiny_captioner_dir)
    assert captioner.video_embedding is None
    with pytest.raises(TaskNotSupported, match="cannot embed"):
        captioner.embed_video(broken)


def test_a_long_clip_is_cut_into_whole_segments_as_it_is_decoded(
    colour_model_dir, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # noqa: ANN001, F811
    """Every segment of a long clip has all its frames (1,040 of them here: past the 1,024 one decode took before,
    which thinned them), each from its own second, and the clip is decoded as the segments are taken."""
    import polymodal.api.video as video_api

    clip = write_clip(tmp_path / "long.mp4", ["red", "blue"] * 65, 1.0)  # 130 s at 8 fps
    given: list[float] = []

    def counting(ref, times, settings):  # type: ignore[no-untyped-def]
        for item in frames_at(ref, times, settings):
            given.append(item[0])
            yield item

    monkeypatch.setattr(video_api, "frames_at", counting)
    model = polymodal.load(colour_model_dir, precision="fp32")
    segments = model.video_segments(str(clip), 1.0)
    first = next(segments)
    assert len(given) <= 9  # the first segment's 8 frames (and the next one's first): nothing more decoded yet
    taken = [first, *segments]
    assert [(s.start, s.end, len(s.clip.frames)) for s in taken] == [(float(j), j + 1.0, 8) for j in range(130)]
    assert all(s.start <= t < s.end for s in taken for t in s.clip.times) and len(given) == 1040
    captions = model.embed_text(["a red picture", "a blue picture"])
    colours = (model.embed_video([s.clip for s in taken[-4:]]) @ captions.T).argmax(1)
    assert colours.tolist() == [0, 1, 0, 1]


def test_segments_of_a_variable_rate_clip_take_each_frame_once(tmp_path: Path) -> None:
    """15 frames 20 ms apart, then 15 frames 200 ms apart: no segment holds more than T frames, and the last one is
    not the clip's final frame repeated to fill the frames its header's rate promised."""
    import fractions

    import av

    from polymodal.api.video import segment_clip

    path = tmp_path / "vfr.mp4"
    times = [i * 0.02 if i < 15 else 0.3 + (i - 15) * 0.2 for i in range(30)]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=25)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = fractions.Fraction(1, 1000)
        for i, t in enumerate(times):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), i * 8, np.uint8), format="rgb24")
            frame.pts, frame.time_base = round(1000 * t), fractions.Fraction(1, 1000)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    segments = list(segment_clip(str(path), 1.0, VideoSampling(frames=8)))
    assert len(segments) == 4 and all(1 <= len(s.clip.frames) <= 8 for s in segments)
    for s in segments:
        assert len(set(s.clip.times)) == len(s.clip.times), (s.start, s.clip.times)  # no frame twice


def test_segments_at_ntsc_rates_get_all_their_frames(tmp_path: Path) -> None:
    """At 29.97 fps a sampled frame's time may fall half a frame before its segment's start: each segment still gets
    its T frames (grouped by when they were asked for, not by their rounded times)."""
    import fractions

    import av

    from polymodal.api.video import segment_clip

    path = tmp_path / "ntsc.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=fractions.Fraction(30000, 1001))
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        for i in range(300):  # 10 s
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), i % 256, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    segments = list(segment_clip(str(path), 1.0, VideoSampling(frames=8)))
    assert [len(s.clip.frames) for s in segments] == [8] * 10


def _clip_of(path: Path, frames: list[tuple[float, int]], fmt: str | None = None, keyframe_every: int = 12) -> Path:
    """A 32 px clip of grey frames (time in seconds, grey level), each at its own timestamp (ms), muxed as ``fmt``."""
    import fractions

    import av

    with av.open(str(path), "w", format=fmt) as out:
        stream = out.add_stream("mpeg4", rate=25)
        stream.codec_context.gop_size = keyframe_every
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = fractions.Fraction(1, 1000)
        for t, level in frames:
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), level, np.uint8), format="rgb24")
            frame.pts, frame.time_base = round(1000 * t), fractions.Fraction(1, 1000)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def _levels(segment) -> list[int]:  # noqa: ANN001
    return [round(float(np.asarray(f).mean()) / 10) * 10 for f in segment.clip.frames]


def test_a_clip_with_a_frame_only_at_each_change_is_cut_by_what_is_on_screen(tmp_path: Path) -> None:
    """A screen recording's frames come only when the picture changes: dark from 0 s, light from 6 s (and a last
    frame at 11.9 s). Each second shows what was on screen then, not the next frame in the file."""
    from polymodal.api.video import segment_clip

    path = _clip_of(tmp_path / "screen.mp4", [(0.0, 40), (6.0, 200), (11.9, 200)])
    segments = list(segment_clip(str(path), 1.0, VideoSampling(frames=4)))
    assert len(segments) == 12
    assert [_levels(s)[0] for s in segments] == [40] * 6 + [200] * 6
    assert all(len(s.clip.frames) == 1 for s in segments)  # one frame on screen the whole second, taken once


def test_segments_of_an_mpeg_ts_clip_hold_their_own_seconds(tmp_path: Path) -> None:
    """Segments are read in one pass, without seeks (in long MPEG-TS files a seek can land on a later keyframe):
    each frame from its own time (frame i of 25 fps has grey level 10 * (i // 25), a new level every second)."""
    from polymodal.api.video import segment_clip

    frames = [(i / 25, 10 * (i // 25)) for i in range(25 * 12)]
    path = _clip_of(tmp_path / "clip.ts", frames, fmt="mpegts", keyframe_every=100)
    segments = list(segment_clip(str(path), 1.0, VideoSampling(frames=4)))
    assert [s.start for s in segments] == [float(j) for j in range(12)]
    assert [set(_levels(s)) for s in segments] == [{10 * j} for j in range(12)]


def test_a_truncated_clip_ends_its_segments_where_its_frames_end_and_says_so(tmp_path: Path) -> None:
    from polymodal.api.video import segment_clip

    path = _clip_of(tmp_path / "whole.mkv", [(i / 25, 10 * (i // 250)) for i in range(25 * 60)], fmt="matroska")
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.warns(UserWarning, match=r"cut.mkv: frames end at \d+\.\d s of the 60\.0 s its header declares"):
        segments = list(segment_clip(str(cut), 5.0, VideoSampling(frames=2)))
    assert 3 <= len(segments) < 12 and segments[-1].end < 60.0
    assert all(s.start <= t < s.end + 1e-6 for s in segments for t in s.clip.times)


def test_segments_of_a_whole_clip_end_at_its_length_and_a_cut_one_where_its_frames_do(tmp_path: Path) -> None:
    """Long segments (12 s of a 20 s clip): a whole clip's last segment ends at 20 s, no warning; cut in half, the
    last one ends where the frames do, with a warning (a whole segment went missing silently before)."""
    import warnings

    from polymodal.api.video import segment_clip

    path = _clip_of(tmp_path / "whole.mkv", [(i / 25, 10 * (i // 250)) for i in range(25 * 20)], fmt="matroska")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        whole = list(segment_clip(str(path), 12.0, VideoSampling(frames=8)))
    assert [(s.start, s.end) for s in whole] == [(0.0, 12.0), (12.0, 20.0)]
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size * 55 // 100])
    with pytest.warns(UserWarning, match="cut.mkv: frames end at"):
        parts = list(segment_clip(str(cut), 12.0, VideoSampling(frames=8)))
    assert parts[-1].end < 20.0 - 1 and all(t < parts[-1].end for t in parts[-1].clip.times)
