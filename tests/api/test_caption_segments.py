"""A long clip or recording captioned a segment at a time (``Model.caption_segments``, ``caption --segment-seconds``):
each segment described by what it holds, with its times; consecutive equal captions as one span; an image
captioner reads each segment's middle frame; bad files and options are clear errors."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

import polymodal
from polymodal.api.timeline import TimedCaption, clock, merge_repeats
from polymodal.backends import TaskNotSupported
from polymodal.cli.main import app
from polymodal.data.audio import AudioFeatures
from polymodal.data.errors import BadSampleError
from polymodal.data.processors import AudioProcessor, TextProcessor
from polymodal.data.text import train_tokenizer
from polymodal.data.video import VideoSampling, decode_video
from polymodal.models import build_model, parse_model_config, save_model
from tests.api.audio_model import AUDIO, FEATURES, RATE, tone
from tests.api.video_model import save_video_captioner, write_clip

RED, BLUE = "a red picture", "a blue picture"
runner = CliRunner()


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("clips")
    return {
        "rrbr": write_clip(folder / "rrbr.mp4", ["red", "red", "blue", "red"]),
        "rbrb": write_clip(folder / "rbrb.mp4", ["red", "blue", "red", "blue"]),
    }


@pytest.fixture(scope="module")
def clip_captioner(tmp_path_factory: pytest.TempPathFactory) -> polymodal.Model:
    """A captioner of clips trained to say which colour its frames show."""
    directory = save_video_captioner(tmp_path_factory.mktemp("clip-captioner") / "model", steps=120, frames=2)
    return polymodal.load(directory, precision="fp32", batch_size=3)  # 4 segments: two calls


@pytest.fixture(scope="module")
def picture_captioner(tmp_path_factory: pytest.TempPathFactory) -> polymodal.Model:
    """A captioner of pictures trained the same way."""
    directory = save_video_captioner(tmp_path_factory.mktemp("picture-captioner") / "model", steps=120, source="image")
    return polymodal.load(directory, precision="fp32")


def test_each_segment_is_described_by_what_it_shows(clip_captioner: polymodal.Model, clips) -> None:  # noqa: ANN001
    calls: list[tuple[int, int]] = []
    every = clip_captioner.caption_segments(clips["rrbr"], 1.0, merge=False, progress=lambda *a: calls.append(a))
    assert [(t.start, t.end, t.caption) for t in every] == [
        (0.0, 1.0, RED),
        (1.0, 2.0, RED),
        (2.0, 3.0, BLUE),
        (3.0, 4.0, RED),
    ]
    assert calls == [(3, 4), (4, 4)]  # a call per batch of segments, counted against the clip's four
    timeline = clip_captioner.caption_segments(str(clips["rrbr"]), 1.0)
    assert timeline == [TimedCaption(0.0, 2.0, RED), TimedCaption(2.0, 3.0, BLUE), TimedCaption(3.0, 4.0, RED)]
    # A segment's caption is the captioner's caption of the segment's frames, decoded or not.
    (segment,) = [s for s in clip_captioner.video_segments(str(clips["rrbr"]), 1.0) if s.start == 2.0]
    assert clip_captioner.caption(segment.clip) == [BLUE]
    whole = decode_video(clips["rbrb"], VideoSampling(frames=2))
    assert clip_captioner.caption(whole) == clip_captioner.caption(str(clips["rbrb"]))


def test_a_segment_longer_than_the_clip_is_the_whole_clip(clip_captioner: polymodal.Model, clips) -> None:  # noqa: ANN001
    (only,) = clip_captioner.caption_segments(clips["rrbr"], 60.0, merge=False)
    assert (only.start, only.end) == (0.0, 4.0)


def test_a_picture_captioner_reads_each_segments_middle_frame(picture_captioner: polymodal.Model, clips) -> None:  # noqa: ANN001
    # Red then blue in each 2-second segment: the first frame is red, the middle one (at 1 s, 3 s) blue.
    every = picture_captioner.caption_segments(clips["rbrb"], 2.0, merge=False)
    assert [(t.start, t.end, t.caption) for t in every] == [(0.0, 2.0, BLUE), (2.0, 4.0, BLUE)]
    assert picture_captioner.caption_segments(clips["rbrb"], 1.0) == [
        TimedCaption(0.0, 1.0, RED),
        TimedCaption(1.0, 2.0, BLUE),
        TimedCaption(2.0, 3.0, RED),
        TimedCaption(3.0, 4.0, BLUE),
    ]


@pytest.fixture(scope="module")
def sound_captioner(tmp_path_factory: pytest.TempPathFactory) -> polymodal.Model:
    """An untrained captioner of sounds (a small audio CNN and a text decoder)."""
    tokenizer = train_tokenizer(["a low tone", "a high tone"], vocab_size=32, kind="wordlevel")
    decoder = {"vocab_size": tokenizer.vocab_size, "max_length": 8, "params": {"width": 16, "depth": 1, "heads": 2}}
    config = {"kind": "captioner", "encoders": {"audio": AUDIO}, "source": "audio", "decoder": decoder}
    processors = {"audio": AudioProcessor(AudioFeatures(**FEATURES)), "text": TextProcessor(tokenizer, 8)}
    directory = tmp_path_factory.mktemp("sound-captioner") / "model"
    return polymodal.load(save_model(directory, build_model(parse_model_config(config)).eval(), processors))


def test_a_sound_captioner_describes_each_segment_of_a_recording(
    sound_captioner: polymodal.Model, tmp_path: Path
) -> None:
    model = sound_captioner
    recording = np.concatenate([tone(220, 1.0), tone(1760, 1.0), tone(220, 0.5)])
    sf.write(tmp_path / "tones.wav", recording, RATE)
    every = model.caption_segments(tmp_path / "tones.wav", 1.0, merge=False, max_new_tokens=4)
    assert [(t.start, t.end) for t in every] == [(0.0, 1.0), (1.0, 2.0), (2.0, 2.5)]
    sounds = [s.sound for s in model.audio_segments(str(tmp_path / "tones.wav"), 1.0)]
    assert [t.caption for t in every] == model.caption(sounds, max_new_tokens=4)


def test_what_cannot_be_cut_into_segments_is_a_clear_error(
    clip_captioner: polymodal.Model,
    tiny_dual_encoder_dir: Path,
    clips,  # noqa: ANN001
    tmp_path: Path,
) -> None:
    with pytest.raises(ValueError, match="segment seconds must be a finite number > 0"):
        clip_captioner.caption_segments(clips["rrbr"], 0)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(clips["rrbr"].read_bytes()[:300])
    with pytest.raises(BadSampleError, match="broken.mp4"):
        clip_captioner.caption_segments(broken, 1.0)
    with pytest.raises(TaskNotSupported):
        polymodal.load(tiny_dual_encoder_dir).caption_segments(clips["rrbr"], 1.0)


def test_repeated_captions_merge_only_when_consecutive_and_adjacent() -> None:
    items = [
        TimedCaption(0, 1, "A red  picture"),
        TimedCaption(1, 2, "a red picture"),
        TimedCaption(2, 3, "a blue picture"),
        TimedCaption(4, 5, "a blue picture"),  # a gap (a bad stretch) keeps spans apart
    ]
    assert merge_repeats(items) == [
        TimedCaption(0, 2, "A red  picture"),
        TimedCaption(2, 3, "a blue picture"),
        TimedCaption(4, 5, "a blue picture"),
    ]
    assert merge_repeats([]) == []
    assert [clock(s) for s in (0, 4, 61.5, 3599.96, 3725)] == ["0:00", "0:04", "1:01.5", "1:00:00", "1:02:05"]


def test_cli_prints_each_clips_timeline(
    clip_captioner: polymodal.Model,
    clips,  # noqa: ANN001
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # noqa: ANN001
    caption = ["caption", "-m", str(clip_captioner.source), "--precision", "fp32"]
    picture = tmp_path / "still.png"
    picture.write_bytes(b"\x89PNG\r\n\x1a\n")  # an image: one picture, no segments
    result = runner.invoke(app, [*caption, str(clips["rrbr"]), "--segment-seconds", "1"])
    assert result.exit_code == 0, result.output
    assert "0:00-0:02  a red picture" in result.stdout and "0:02-0:03  a blue picture" in result.stdout
    result = runner.invoke(
        app,
        [*caption, str(clips["rrbr"]), str(picture), "--segment-seconds", "2", "--every-segment", "--json"],
    )
    assert result.exit_code == 1
    first, second = json.loads(result.stdout)
    assert first == {
        "video": str(clips["rrbr"]),
        "segments": [
            {"start": 0.0, "end": 2.0, "caption": RED},
            {"start": 2.0, "end": 4.0, "caption": clip_captioner.caption_segments(clips["rrbr"], 2)[-1].caption},
        ],
    }
    assert second["image"] == str(picture) and "--segment-seconds cuts clips and sounds" in second["error"]
    # A file of more segments than the cap is that file's error; the others are still described.
    from polymodal.cli import tasks

    monkeypatch.setattr(tasks, "MAX_CLI_SEGMENTS", 3)
    short = write_clip(tmp_path / "short.mp4", ["red", "blue"])  # 2 segments of 1 s; rrbr has 4
    result = runner.invoke(app, [*caption, str(clips["rrbr"]), str(short), "--segment-seconds", "1", "--json"])
    long_entry, short_entry = json.loads(result.stdout)
    assert result.exit_code == 1 and "4 segments of 1 s, more than 3" in long_entry["error"]
    assert [s["caption"] for s in short_entry["segments"]] == [RED, BLUE]
    for args, message in [
        (["--segment-seconds", "0"], "--segment-seconds must be > 0"),
        (["--every-segment"], "--every-segment needs --segment-seconds"),
    ]:
        result = runner.invoke(app, [*caption, str(clips["rrbr"]), *args])
        assert result.exit_code == 2 and message in result.output


def test_the_server_returns_a_clips_timeline(
    clip_captioner: polymodal.Model,
    picture_captioner: polymodal.Model,
    clips,  # noqa: ANN001
) -> None:
    from tests.serve.conftest import make_client

    clip = base64.b64encode(clips["rrbr"].read_bytes()).decode()
    with make_client(clip_captioner) as client:
        answer = client.post("/caption", json={"video": clip, "segment_seconds": 1})
        assert answer.status_code == 200, answer.text
        assert answer.json() == {
            "caption": f"{RED}; {BLUE}; {RED}",
            "segments": [
                {"start": 0.0, "end": 2.0, "caption": RED},
                {"start": 2.0, "end": 3.0, "caption": BLUE},
                {"start": 3.0, "end": 4.0, "caption": RED},
            ],
        }
        form = {"segment_seconds": "1", "every_segment": "true"}
        files = {"video": ("rrbr.mp4", clips["rrbr"].read_bytes(), "video/mp4")}
        every = client.post("/caption", data=form, files=files)
        assert every.status_code == 200, every.text
        assert [s["caption"] for s in every.json()["segments"]] == [RED, RED, BLUE, RED]
        plain = client.post("/caption", json={"video": clip})  # no segments: one caption, as before
        assert plain.status_code == 200 and set(plain.json()) == {"caption"}
        too_many = client.post("/caption", json={"video": clip, "segment_seconds": 0.001})
        assert too_many.status_code == 422 and "more than 1000" in too_many.text
        for bad in (0, -1):
            assert client.post("/caption", json={"video": clip, "segment_seconds": bad}).status_code == 422
        picture = base64.b64encode(b"not read").decode()
        not_a_clip = client.post("/caption", json={"image": picture, "segment_seconds": 1})
        assert not_a_clip.status_code == 422 and "upload a video" in not_a_clip.text
    with make_client(picture_captioner) as client:  # reads each segment's middle frame
        answer = client.post("/caption", json={"video": clip, "segment_seconds": 1})
        assert answer.status_code == 200, answer.text
        assert [s["caption"] for s in answer.json()["segments"]] == [RED, BLUE, RED]


def test_the_server_captions_sounds_and_their_segments(sound_captioner: polymodal.Model, tmp_path: Path) -> None:
    """A captioner of sounds is served too: /caption takes an `audio` upload, and with segment_seconds its timeline."""
    from tests.serve.conftest import make_client

    recording = np.concatenate([tone(220, 1.0), tone(1760, 1.0)])
    sf.write(tmp_path / "tones.wav", recording, RATE)
    sound = base64.b64encode((tmp_path / "tones.wav").read_bytes()).decode()
    expected = sound_captioner.caption_segments(tmp_path / "tones.wav", 1.0, merge=False, max_new_tokens=4)
    with make_client(sound_captioner) as client:
        whole = client.post("/caption", json={"audio": sound, "max_new_tokens": 4})
        assert whole.status_code == 200, whole.text
        assert whole.json() == {"caption": sound_captioner.caption(str(tmp_path / "tones.wav"), max_new_tokens=4)[0]}
        form = {"segment_seconds": "1", "every_segment": "true", "max_new_tokens": "4"}
        files = {"audio": ("tones.wav", (tmp_path / "tones.wav").read_bytes(), "audio/wav")}
        timeline = client.post("/caption", data=form, files=files)
        assert timeline.status_code == 200, timeline.text
        assert timeline.json()["segments"] == [t.as_dict() for t in expected]
        clip = client.post("/caption", json={"video": sound, "segment_seconds": 1})  # not what it reads
        assert clip.status_code == 400 and clip.json()["error"]["code"] == "not_supported"
