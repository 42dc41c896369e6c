"""Video as a modality: PyAV decoding of the sampled frames only, uniform/fps/segment sampling, frame folders, bad
files as counted bad samples (never a crash or a hang), and the video processor's (B, T, 3, H, W) batches."""

from __future__ import annotations

import io
import json
import wave
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from polymodal.data.errors import BadSampleError
from polymodal.data.processors import PROCESSORS, VideoAugment, VideoProcessor, build_processor
from polymodal.data.transforms import ImagePreprocess
from polymodal.data.video import VideoSampling, decode_video, sample_indices

av = pytest.importorskip("av")

RATE = 24


def frame_array(i: int, size: int = 32) -> np.ndarray:
    """Frame ``i``: its number in the red channel (x 4), a green square on the left half."""
    a = np.zeros((size, size, 3), np.uint8)
    a[..., 0] = i * 4 % 256
    a[size // 4 : size // 2, : size // 2, 1] = 255
    return a


def write_clip(path: Path, frames: int, codec: str = "libx264", size: int = 32, rate: int = RATE) -> Path:
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=rate)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(frames):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame_array(i, size), format="rgb24")))
        out.mux(stream.encode())
    return path


def frame_numbers(clip) -> list[int]:  # type: ignore[no-untyped-def]
    return [round(float(np.asarray(im)[:, :, 0].mean()) / 4) for im in clip.frames]


@pytest.mark.parametrize("suffix,codec", [("mp4", "libx264"), ("webm", "libvpx-vp9")])
def test_uniform_sampling_decodes_the_frames_evenly_over_the_clip_with_their_times(
    tmp_path: Path, suffix: str, codec: str
) -> None:
    path = write_clip(tmp_path / f"a.{suffix}", 60, codec)
    clip = decode_video(path, VideoSampling(frames=8))
    expected = [round(i * 59 / 7) for i in range(8)]
    assert frame_numbers(clip) == pytest.approx(expected, abs=1)  # lossy codecs: the red level within a step
    assert clip.times == pytest.approx([i / RATE for i in expected], abs=1e-3)  # webm keeps milliseconds
    assert clip.duration == pytest.approx(60 / RATE, abs=0.05) and clip.rate == RATE
    assert all(im.mode == "RGB" and im.size == (32, 32) for im in clip.frames)
    assert frame_numbers(decode_video(path.read_bytes(), VideoSampling(frames=8))) == frame_numbers(clip)


def test_fps_sampling_takes_a_fixed_rate_up_to_t_frames(tmp_path: Path) -> None:
    path = write_clip(tmp_path / "a.mp4", 60)
    clip = decode_video(path, VideoSampling(frames=8, sampling="fps", fps=6))
    assert clip.times == pytest.approx([k / 6 for k in range(8)])
    assert frame_numbers(clip) == pytest.approx([4 * k for k in range(8)], abs=1)
    few = decode_video(path, VideoSampling(frames=32, sampling="fps", fps=4))  # 2.5 s at 4 fps: 10 frames
    assert len(few.frames) == 10


def test_segment_sampling_is_random_per_segment_in_training_and_the_middle_otherwise(tmp_path: Path) -> None:
    settings = VideoSampling(frames=4, sampling="segments")
    assert sample_indices(40, RATE, settings) == [4, 14, 24, 34]  # middles of [0,9], [10,19], ...
    drawn = [sample_indices(40, RATE, settings, torch.Generator().manual_seed(s), random=True) for s in range(20)]
    assert all(10 * i <= d[i] < 10 * (i + 1) for d in drawn for i in range(4))
    assert len({tuple(d) for d in drawn}) > 5
    same = sample_indices(40, RATE, settings, torch.Generator().manual_seed(3), random=True)
    assert same == drawn[3]  # seeded: the same draw
    path = write_clip(tmp_path / "a.mp4", 40)
    clip = decode_video(path, settings, torch.Generator().manual_seed(3), random=True)
    assert frame_numbers(clip) == pytest.approx(drawn[3], abs=1)


def test_a_long_clip_is_reached_by_seeking_not_by_converting_every_frame(tmp_path: Path, monkeypatch) -> None:
    path = write_clip(tmp_path / "long.mp4", 720)  # 30 s
    converted = []
    original = av.VideoFrame.to_image
    monkeypatch.setattr(av.VideoFrame, "to_image", lambda self, *a, **k: converted.append(1) or original(self))
    clip = decode_video(path, VideoSampling(frames=4))
    assert len(converted) == 4
    assert frame_numbers(clip) == pytest.approx([i % 64 for i in (0, 240, 479, 719)], abs=1)  # red: 4 i mod 256


def test_a_folder_of_frames_decodes_like_a_clip(tmp_path: Path) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(12):
        Image.fromarray(frame_array(i)).save(folder / f"{i:04d}.png")
    (folder / "notes.txt").write_text("not a frame")
    clip = decode_video(folder, VideoSampling(frames=4, folder_fps=12))
    assert frame_numbers(clip) == [0, 4, 7, 11]
    assert clip.times == pytest.approx([0, 4 / 12, 7 / 12, 11 / 12]) and clip.duration == 1.0


def bad_kind(ref, settings: VideoSampling | None = None) -> BadSampleError:  # type: ignore[no-untyped-def]
    with pytest.raises(BadSampleError) as e:
        decode_video(ref, settings, source="m.jsonl", row=7)
    assert e.value.source == "m.jsonl" and e.value.row == 7 and e.value.field == "video"
    return e.value


def test_bad_files_are_bad_samples_naming_file_row_and_field(tmp_path: Path) -> None:
    good = write_clip(tmp_path / "good.mp4", 48).read_bytes()
    (tmp_path / "truncated.mp4").write_bytes(good[: len(good) // 2])
    webm = write_clip(tmp_path / "good.webm", 96, "libvpx-vp9").read_bytes()
    (tmp_path / "truncated.webm").write_bytes(webm[: len(webm) // 3])
    (tmp_path / "garbage.mp4").write_bytes(bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8)))
    (tmp_path / "empty.mp4").write_bytes(b"")
    Image.fromarray(frame_array(1)).save(tmp_path / "image.png")
    (tmp_path / "image.mp4").write_bytes((tmp_path / "image.png").read_bytes())
    sound = io.BytesIO()
    with wave.open(sound, "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(8000), w.writeframes(b"\0\0" * 8000)
    (tmp_path / "sound.mp4").write_bytes(sound.getvalue())
    cases = {
        "missing.mp4": "missing_file",
        "empty.mp4": "empty_file",
        "truncated.mp4": "decode",
        "truncated.webm": "truncated",
        "garbage.mp4": "decode",
        "image.mp4": "not_a_video",
        "sound.mp4": "not_a_video",
    }
    for name, kind in cases.items():
        error = bad_kind(tmp_path / name)
        assert (name, error.kind) == (name, kind) and name in str(error)


def test_absurd_clips_are_bounded_in_length_pixels_and_time(tmp_path: Path) -> None:
    path = write_clip(tmp_path / "a.mp4", 48)
    assert bad_kind(path, VideoSampling(max_seconds=1.0)).kind == "too_long"
    assert bad_kind(path, VideoSampling(max_pixels=32 * 31)).kind == "too_large"
    assert bad_kind(path, VideoSampling(timeout_seconds=1e-9)).kind == "timeout"
    endless = tmp_path / "stream.h264"  # a raw stream: no header says how long it is
    with av.open(str(endless), "w", format="h264") as out:
        stream = out.add_stream("libx264", rate=RATE)
        stream.width = stream.height = 32
        for i in range(72):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame_array(i), format="rgb24")))
        out.mux(stream.encode())
    assert len(decode_video(endless, VideoSampling(frames=4)).frames) == 4
    assert bad_kind(endless, VideoSampling(max_seconds=2.0)).kind == "too_long"


def processor(frames: int = 8, augment: VideoAugment | None = None, sampling: str = "uniform") -> VideoProcessor:
    return VideoProcessor(VideoSampling(frames=frames, sampling=sampling), ImagePreprocess(image_size=16), augment)


def test_processor_batches_clips_as_b_t_3_h_w_with_a_mask_of_real_frames(tmp_path: Path) -> None:
    long, short = write_clip(tmp_path / "long.mp4", 40), write_clip(tmp_path / "short.mp4", 5)
    proc = processor()
    assert PROCESSORS.get("video") is VideoProcessor and proc.deterministic
    values = [proc.prepare(long), proc.prepare(short), None]
    assert values[0].shape == (8, 3, 16, 16) and values[1].shape == (5, 3, 16, 16)
    batch = proc.collate(values)
    assert batch.x.shape == (3, 8, 3, 16, 16) and batch.x.dtype == torch.float32
    assert batch.mask.tolist() == [[True] * 8, [True] * 5 + [False] * 3, [False] * 8]
    assert batch.present.tolist() == [True, True, False]
    assert torch.equal(batch.x[1, 5:], torch.zeros(3, 3, 16, 16))
    image = ImagePreprocess(image_size=16).to_tensor(decode_video(short, VideoSampling(frames=8)).frames[2])
    assert torch.equal(batch.x[1, 2], image)  # each frame exactly as the image processing makes it


def test_training_augmentation_is_the_same_for_every_frame_and_off_at_inference(tmp_path: Path) -> None:
    still = tmp_path / "still.mp4"
    with av.open(str(still), "w") as out:  # every frame the same picture: augmented frames must stay equal
        stream = out.add_stream("libx264", rate=RATE, options={"crf": "0"})
        stream.width = stream.height = 32
        for _ in range(24):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame_array(3), format="rgb24")))
        out.mux(stream.encode())
    augment = VideoAugment(random_resized_crop=True, scale=(0.2, 0.5), hflip=True)
    proc = processor(4, augment, "segments")
    assert not proc.deterministic and proc.for_inference().deterministic
    a = proc.prepare(still, torch.Generator().manual_seed(0))
    b = proc.prepare(still, torch.Generator().manual_seed(1))
    assert all(torch.allclose(a[0], a[i], atol=0.05) for i in range(1, 4))
    assert not torch.allclose(a[0], b[0], atol=0.05)  # another clip draw, another crop
    assert torch.equal(proc.for_inference().prepare(still), processor(4, None, "segments").prepare(still))


def test_settings_round_trip_through_processors_json(tmp_path: Path) -> None:
    proc = VideoProcessor(
        VideoSampling(frames=6, sampling="fps", fps=2.0, max_seconds=60), ImagePreprocess(image_size=24, crop="none")
    )
    saved = json.loads(json.dumps({"video": proc.settings()}))
    loaded = build_processor("video", saved["video"], tmp_path)
    assert isinstance(loaded, VideoProcessor) and loaded.settings() == proc.settings()
    recipe = VideoProcessor.from_settings(
        {"frames": 4, "image": {"image_size": 16}, "augment": {"hflip": True}}, tmp_path
    )
    assert recipe.augment is not None and recipe.for_inference().augment is None
    assert "augment" not in recipe.settings() and recipe.sampling.frames == 4
    with pytest.raises(ValueError, match="fps"):
        VideoSampling(sampling="fps")


def test_clips_browsers_cannot_play_are_transcoded_to_h264_with_their_frames_and_sound(tmp_path: Path) -> None:
    from polymodal.data.shapes_video import encode_mp4
    from polymodal.data.video import transcode_for_web, web_playable

    # Frame numbers 8 apart (so a dropped or repeated frame shows); odd sizes: H.264's 4:2:0 wants even ones.
    frames = [Image.fromarray(frame_array(8 * i, 33)) for i in range(16)]
    sound = np.sin(np.arange(32_000) / 16_000 * 2 * np.pi * 440).astype(np.float32)
    mpeg4 = tmp_path / "part2.mp4"
    mpeg4.write_bytes(encode_mp4(frames, fps=8, sound=sound))  # MPEG-4 Part 2, which Chromium does not play
    h264, vp9 = write_clip(tmp_path / "h264.mp4", 8), write_clip(tmp_path / "vp9.webm", 8, "libvpx-vp9")
    assert not web_playable(mpeg4) and web_playable(h264) and web_playable(vp9)
    assert not web_playable(write_clip(tmp_path / "h264.mkv", 8))  # Matroska: not every browser

    out = transcode_for_web(mpeg4, tmp_path / "cache" / "played.mp4")
    assert web_playable(out) and not list(out.parent.glob("*.tmp*"))  # written atomically
    with av.open(str(out)) as played:
        video, audio = played.streams.video[0], played.streams.audio[0]
        assert (video.codec_context.name, audio.codec_context.name) == ("h264", "aac")
        assert (video.codec_context.width, video.codec_context.height) == (32, 32)
        assert float(played.duration) / av.time_base == pytest.approx(2.0, abs=0.15)
        assert audio.codec_context.sample_rate == 16_000
    clip, original = (decode_video(p, VideoSampling(frames=16)) for p in (out, mpeg4))
    assert len(clip.frames) == 16 and np.allclose(frame_numbers(clip), frame_numbers(original), atol=2)

    assert bad_kind_of_transcode(mpeg4, tmp_path, VideoSampling(max_seconds=1.0)) == "too_long"
    assert bad_kind_of_transcode(mpeg4, tmp_path, VideoSampling(max_pixels=32 * 32)) == "too_large"
    (tmp_path / "cut.mp4").write_bytes(mpeg4.read_bytes()[:400])
    assert bad_kind_of_transcode(tmp_path / "cut.mp4", tmp_path) == "decode"
    assert not (tmp_path / "out.mp4").exists()  # nothing written for a bad clip


def bad_kind_of_transcode(path: Path, folder: Path, settings: VideoSampling | None = None) -> str:
    from polymodal.data.video import transcode_for_web

    with pytest.raises(BadSampleError) as e:
        transcode_for_web(path, folder / "out.mp4", settings)
    assert str(path) in str(e.value)
    return e.value.kind
