"""Video decoding that cannot end a run: any container and codec PyAV's bundled FFmpeg reads (mp4/H.264, webm/VP9,
mkv, avi), or a folder of frame images, sampled to at most ``frames`` RGB frames with their timestamps.

Only the sampled frames are converted to RGB; the decoder seeks to a far target instead of decoding the frames
between. A missing, empty, truncated or undecodable file, one that is not a video (an image, a sound), a clip longer
than ``max_seconds``, frames larger than ``max_pixels`` or a decode slower than ``timeout_seconds`` raises
:class:`BadSampleError` naming the file (and the manifest row, when given), which a dataset counts and skips.
"""

from __future__ import annotations

import io
import math
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import torch
from PIL import Image
from pydantic import Field, model_validator

from polymodal.config import Config
from polymodal.data.errors import BadSampleError, media_errors, open_media
from polymodal.data.image import decode_image
from polymodal.data.schema import MediaRef
from polymodal.fsutil import atomic_file

Sampling = Literal["uniform", "fps", "segments"]

MAX_SECONDS = 3600.0  # a longer clip is a mistake (a stream, a whole film), not a sample
MAX_PIXELS = 3840 * 2160  # per frame: 4K; beyond it a sample costs seconds per frame
TIMEOUT_SECONDS = 60.0  # checked between packets: a broken or endless file fails instead of hanging
# Containers whose seeks land on a later keyframe than asked (MPEG transport and program streams): decoded on instead.
UNSEEKABLE_FORMATS = frozenset({"mpegts", "mpeg"})
SEEK_GAP = 2.0  # seconds: a nearer target is reached by decoding on, a farther one by seeking
FRAME_EXTENSIONS = frozenset({"jpg", "jpeg", "png", "webp", "bmp"})  # the frames of a frame folder


def require_av():  # type: ignore[no-untyped-def]
    """The PyAV module, or an ImportError that says how to install it."""
    try:
        import av
    except ImportError:
        raise ImportError("reading video needs PyAV: pip install 'polymodal[video]'") from None
    return av


def open_av(handle: Any, bad: Any, what: str = "video") -> Any:
    """A PyAV container on ``handle`` (a path or a file object); what FFmpeg cannot open raises ``bad`` (its errors,
    for what is not a container or has a truncated header, come in several types)."""
    av = require_av()
    try:
        return av.open(os.fspath(handle) if isinstance(handle, Path) else handle, metadata_errors="ignore")
    except Exception as e:
        raise bad(f"cannot open as {what} ({type(e).__name__}: {e})", "decode") from None


class VideoSampling(Config):
    """Which frames of a clip a model sees, and the bounds on what is decoded at all."""

    frames: int = Field(8, ge=1, le=1024, description="T: frames per clip (a shorter clip is padded and masked)")
    sampling: Sampling = Field(
        "uniform",
        description="uniform: T frames evenly over the clip; fps: one every 1/fps s from the start, up to T; "
        "segments: T equal segments, a random frame of each in training (TSN), the middle one otherwise",
    )
    fps: float | None = Field(None, gt=0, description="the rate of sampling: fps")
    folder_fps: float = Field(25.0, gt=0, description="the frame rate of a folder of frame images")
    max_seconds: float = Field(MAX_SECONDS, gt=0)
    max_pixels: int = Field(MAX_PIXELS, gt=0)
    timeout_seconds: float = Field(TIMEOUT_SECONDS, gt=0)

    @model_validator(mode="after")
    def _fps_given(self) -> VideoSampling:
        if self.sampling == "fps" and self.fps is None:
            raise ValueError("sampling 'fps' needs fps (frames per second to sample)")
        return self


@dataclass
class Clip:
    """Sampled frames in time order (RGB) with each one's time in seconds from the clip's start."""

    frames: list[Image.Image]
    times: list[float]
    duration: float  # seconds
    rate: float  # the clip's frames per second


def sample_indices(
    count: int,
    rate: float,
    settings: VideoSampling,
    generator: torch.Generator | None = None,
    random: bool = False,
    start: float = 0.0,
) -> list[int]:
    """Indices (sorted, of ``count`` frames at ``rate``) that ``settings`` samples; ``random`` draws segment frames;
    ``fps`` sampling begins ``start`` seconds in."""
    t = settings.frames
    if count <= 0:
        return []
    if settings.sampling == "fps":
        step = rate / float(settings.fps)  # type: ignore[arg-type]
        first = start * rate
        n = min(t, math.ceil((count - first) / step - 1e-9))
        return [min(count - 1, math.floor(first + k * step + 1e-9)) for k in range(max(0, n))]
    if start:
        raise ValueError(f"a start time needs 'fps' sampling, not {settings.sampling!r}")
    if count <= t:
        return list(range(count))  # every frame; the rest of the T slots are padding
    if settings.sampling == "uniform":
        return [round(i * (count - 1) / (t - 1)) for i in range(t)] if t > 1 else [(count - 1) // 2]
    bounds = [i * count / t for i in range(t + 1)]
    out = []
    for i in range(t):
        low, high = math.floor(bounds[i]), max(math.floor(bounds[i]), math.ceil(bounds[i + 1]) - 1)
        if random:
            out.append(low + int(torch.randint(high - low + 1, (), generator=generator)))
        else:
            out.append((low + high) // 2)
    return out


def decoded(clip: MediaRef | Clip, sampling: VideoSampling) -> Clip:
    """The clip's sampled frames (a decoded clip, such as a segment, is taken as it is); a bad file raises
    BadSampleError."""
    return clip if isinstance(clip, Clip) else decode_video(clip, sampling)


def decode_video(
    ref: MediaRef,
    settings: VideoSampling | None = None,
    generator: torch.Generator | None = None,
    *,
    random: bool = False,
    source: str | None = None,
    row: int | None = None,
    field: str = "video",
    start: float = 0.0,
) -> Clip:
    """``ref`` (a video file, its bytes, or a folder of frame images) -> the frames ``settings`` samples, or
    BadSampleError. ``random`` draws the frame of each segment from ``generator`` (training); ``start`` (seconds,
    ``fps`` sampling) skips the clip's beginning, so a long clip can be decoded a window at a time."""
    settings = settings or VideoSampling()
    bad = media_errors(ref, source, row, field)
    if isinstance(ref, (str, os.PathLike)) and Path(ref).is_dir():
        return _decode_folder(Path(ref), settings, generator, random, bad, source, row, field, start)
    handle: Any = open_media(ref, bad, "a path, bytes or a folder of frames")
    if isinstance(handle, Path):
        handle = os.fspath(handle)
    deadline = time.monotonic() + settings.timeout_seconds
    opened = []

    def reopen():  # type: ignore[no-untyped-def]
        """The container from its start (a raw stream cannot seek back)."""
        if isinstance(handle, io.BytesIO):
            handle.seek(0)
        opened.append(open_av(handle, bad))
        return opened[-1]

    try:
        return _decode_container(reopen(), reopen, settings, generator, random, deadline, bad, start)
    except BadSampleError:
        raise
    except Exception as e:
        raise bad(f"cannot decode video ({type(e).__name__}: {e})", "decode") from None
    finally:
        for container in opened:
            container.close()


def _video_stream(container, settings, bad):  # type: ignore[no-untyped-def]
    """The container's first video stream, its frame rate and its start time, within the pixel bound."""
    fmt = container.format.name
    if fmt == "image2" or fmt.endswith("_pipe"):
        raise bad(f"an image ({fmt.removesuffix('_pipe')}), not a video", "not_a_video")
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["nothing"]
        raise bad(f"no video stream ({fmt} holding {', '.join(kinds)})", "not_a_video")
    stream = container.streams.video[0]
    width, height = stream.codec_context.width, stream.codec_context.height
    if width * height > settings.max_pixels:
        raise bad(f"frames are {width}x{height}, over the {settings.max_pixels:,} pixels allowed", "too_large")
    rate = float(stream.average_rate or stream.guessed_rate or 0) or 25.0
    start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
    return stream, rate, start


def frames_at(
    ref: MediaRef, times: Iterable[float], settings: VideoSampling | None = None
) -> Iterator[tuple[float, float, Image.Image]]:
    """``(time, frame time, frame)`` for each of ``times`` (seconds from the clip's start, non-decreasing): the frame
    on screen then, or the next one when it is due within a quarter of a frame. The clip is decoded once from its
    start, with no seeks (timestamps after a seek are not to be trusted in every container: MPEG-TS lands on a later
    keyframe), and only the frames given are converted. Times past the stream's last frame (and its duration) get
    none: the iterator stops. A bad file raises BadSampleError, as does a stream that stalls ``timeout_seconds``."""
    settings = settings or VideoSampling()
    bad = media_errors(ref, None, None, "video")
    wanted = iter(times)
    if isinstance(ref, (str, os.PathLike)) and Path(ref).is_dir():
        clip = decode_video(ref, settings.model_copy(update={"frames": 1}))
        names = sorted(
            n for n in os.listdir(ref) if not n.startswith(".") and n.rpartition(".")[2].lower() in FRAME_EXTENSIONS
        )
        for t in wanted:
            index = math.floor(t * clip.rate + 1e-6)
            if index >= len(names):
                return
            yield t, index / clip.rate, decode_image(Path(ref) / names[index], max_pixels=settings.max_pixels)
        return
    container = open_av(open_media(ref, bad, "a path, bytes or a folder of frames"), bad)
    try:
        with container:
            yield from _frames_at(container, wanted, settings, bad)
    except BadSampleError:
        raise
    except Exception as e:
        raise bad(f"cannot decode video ({type(e).__name__}: {e})", "decode") from None


def _frames_at(container, wanted, settings, bad):  # type: ignore[no-untyped-def]
    stream, rate, start = _video_stream(container, settings, bad)
    # near: a frame due that soon after a time asked for is the one meant (rounding: 29.97 fps frames fall a sliver
    # late); bounded, as a variable-rate clip's average rate can be a frame in seconds. slack: timestamps' rounding.
    half, near, slack = 0.5 / rate, min(0.25 / rate, 0.01), 1e-4
    target = next(wanted, None)
    shown: tuple[float, Any] | None = None  # the last frame decoded: (its time, the frame), converted when given
    converted: dict[float, Image.Image] = {}  # the frame given last, so a repeat is not converted again
    last_duration = 1 / rate
    deadline = time.monotonic() + settings.timeout_seconds

    def give(at: float, pick: tuple[float, Any]) -> tuple[float, float, Image.Image]:
        if pick[0] not in converted:
            if pick[1].width * pick[1].height > settings.max_pixels:
                raise bad(f"frames are {pick[1].width}x{pick[1].height}, over the pixel bound", "too_large")
            converted.clear()
            converted[pick[0]] = pick[1].to_image()
        return at, pick[0], converted[pick[0]]

    for decoded, frame in enumerate(container.decode(stream), start=1):
        if decoded > settings.max_seconds * rate * 2 or time.monotonic() > deadline:
            kind = "timeout" if time.monotonic() > deadline else "too_long"
            raise bad(
                f"decoding ran past the bounds ({settings.timeout_seconds:.0f} s a frame, {decoded} frames)", kind
            )
        deadline = time.monotonic() + settings.timeout_seconds  # a stall, not a long clip, is the failure
        now = float(frame.time) - start if frame.pts is not None else (shown[0] + 1 / rate if shown else 0.0)
        while target is not None and now > target + slack:
            # This frame comes after the target: the one on screen then is the previous, unless this one is due
            # within a quarter of a frame (at 29.97 fps a time asked for is often a sliver before a frame).
            yield give(target, (now, frame) if shown is None or now - target < near else shown)
            deadline = time.monotonic() + settings.timeout_seconds  # the caller's time between frames is no stall
            target = next(wanted, None)
        if target is None:
            return
        shown = (now, frame)
        if frame.duration:
            last_duration = float(frame.duration * stream.time_base)
    while target is not None and shown is not None and target < shown[0] + max(last_duration, half) - slack:
        yield give(target, shown)  # the last frame, on screen for its duration
        target = next(wanted, None)


def _decode_container(container, reopen, settings, generator, random, deadline, bad, start_at) -> Clip:  # type: ignore[no-untyped-def]
    """Probe the stream (rate, frame count, bounds), then decode the sampled frames with seeks."""
    stream, rate, start = _video_stream(container, settings, bad)
    base = stream.time_base
    if stream.duration:
        duration = float(stream.duration * base)
    elif container.duration:
        duration = container.duration / 1_000_000  # AV_TIME_BASE
    else:
        duration = _demux_length(container, stream, rate, settings, deadline, bad)
        container = reopen()
        stream = container.streams.video[0]
    if duration > settings.max_seconds:
        raise bad(f"{duration:.0f} s long, more than the {settings.max_seconds:.0f} s allowed", "too_long")
    count = int(stream.frames) or max(1, round(duration * rate))
    indices = sample_indices(count, rate, settings, generator, random, start_at)
    targets = sorted({start + i / rate for i in indices})
    seekable = container.format.name not in UNSEEKABLE_FORMATS
    found = _seek_and_decode(container, stream, targets, rate, count, settings, deadline, bad, seekable)
    if not found:
        raise bad("no decodable frames", "decode")
    missing = [t for t in targets if t not in found]
    if missing:
        last = max(found)
        end = found[last][0]
        if start + duration - 1 / rate - end > max(0.5, 0.1 * duration):
            raise bad(f"frames end at {end - start:.2f} s of the {duration:.2f} s the header declares", "truncated")
        for t in missing:  # the last frames a header promised: the clip's last decodable frame stands in
            found[t] = found[last]
    times = [start + i / rate for i in indices]
    return Clip([found[t][1] for t in times], [found[t][0] - start for t in times], duration, rate)


def _demux_length(container, stream, rate, settings, deadline, bad) -> float:  # type: ignore[no-untyped-def]
    """Seconds of a stream whose header does not say, from its packets (not decoded), bounded by the limits."""
    packets = 0
    for packet in container.demux(stream):
        if packet.size:
            packets += 1
        if packets > settings.max_seconds * rate:
            raise bad(f"longer than the {settings.max_seconds:.0f} s allowed", "too_long")
        if time.monotonic() > deadline:
            raise bad(f"reading took longer than {settings.timeout_seconds:.0f} s", "timeout")
    return packets / rate


def _seek_and_decode(container, stream, targets, rate, count, settings, deadline, bad, seekable=True):  # type: ignore[no-untyped-def]
    """{target time: (frame time, RGB image)} of the first frame at or after each target (half a frame early)."""
    half = 0.5 / rate
    found: dict[float, tuple[float, Image.Image]] = {}
    frames = None  # the decoder's frame iterator, restarted after each seek
    position = -math.inf  # time of the last frame decoded
    decoded = 0
    seeks_help = seekable  # false once a seek lands behind where decoding already was (sparse keyframes)
    landed = None  # time of the first frame after the last (re)start
    for target in targets:
        if frames is None or (seeks_help and target - position > SEEK_GAP):
            try:
                if frames is not None or target > SEEK_GAP:
                    container.seek(int(target / stream.time_base), stream=stream, backward=True)
                frames, landed = iter(container.decode(stream)), None
            except Exception:  # a raw stream cannot seek: decode on from where the decoder is
                seeks_help = False
                if frames is None:
                    frames, landed = iter(container.decode(stream)), None
        for frame in frames:
            decoded += 1
            if decoded > count + settings.max_seconds * rate or time.monotonic() > deadline:
                kind = "timeout" if time.monotonic() > deadline else "too_long"
                raise bad(f"decoding ran past the bounds ({settings.timeout_seconds:.0f} s, {decoded} frames)", kind)
            # A raw stream has no timestamps (and cannot seek): count frames from the start.
            now = float(frame.time) if frame.pts is not None else max(position + 1 / rate, 0.0)
            if landed is None:
                landed = now
                seeks_help = seeks_help and not (now < position - half)
            position = now
            if now >= target - half:
                if frame.width * frame.height > settings.max_pixels:
                    raise bad(f"frames are {frame.width}x{frame.height}, over the pixel bound", "too_large")
                found[target] = (now, frame.to_image())
                break
        else:
            break  # the stream ended before this target: the rest are missing too
    return found


def _decode_folder(path, settings, generator, random, bad, source, row, field, start) -> Clip:  # type: ignore[no-untyped-def]
    """A folder of frame images (sorted by name) as a clip at ``folder_fps``; only sampled frames are decoded."""
    names = sorted(
        e.name
        for e in os.scandir(path)
        if e.is_file() and not e.name.startswith(".") and e.name.rpartition(".")[2].lower() in FRAME_EXTENSIONS
    )
    if not names:
        raise bad("folder holds no frame images", "empty_file")
    rate = settings.folder_fps
    if len(names) > settings.max_seconds * rate:
        raise bad(f"{len(names)} frames, more than {settings.max_seconds:.0f} s at {rate:g} fps", "too_long")
    indices = sample_indices(len(names), rate, settings, generator, random, start)
    frames = []
    for i in indices:
        image = decode_image(path / names[i], max_pixels=settings.max_pixels, source=source, row=row, field=field)
        frames.append(image)
    return Clip(frames, [i / rate for i in indices], len(names) / rate, rate)


# What browsers' <video> plays: these codecs in MP4 or WebM files (MPEG-4 Part 2, HEVC, MJPEG, and AVI, MOV or MKV
# files, are not played by every browser; Chromium plays no MPEG-4 Part 2 at all). The suffix decides the content type
# a file is served with, so it counts too (FFmpeg reads WebM and MKV with one demuxer).
WEB_VIDEO_CODECS = frozenset({"h264", "vp8", "vp9", "av1"})
WEB_SUFFIXES = {".mp4": "mp4", ".m4v": "mp4", ".webm": "webm"}  # -> one of the container's demuxer names
WEB_AUDIO_CODECS = frozenset({"aac", "mp3", "opus", "vorbis", "flac"})


def web_playable(path: str | os.PathLike) -> bool:
    """Whether browsers play ``path`` as it is: an MP4 or WebM whose video and sound use the codecs they decode."""
    av = require_av()
    container_name = WEB_SUFFIXES.get(Path(path).suffix.lower())
    if container_name is None:
        return False
    with av.open(os.fspath(path), metadata_errors="ignore") as container:
        if not container.streams.video or container_name not in container.format.name.split(","):
            return False
        if any(s.codec_context.name not in WEB_VIDEO_CODECS for s in container.streams.video):
            return False
        return all(s.codec_context.name in WEB_AUDIO_CODECS for s in container.streams.audio)


def transcode_for_web(
    source: str | os.PathLike, target: str | os.PathLike, settings: VideoSampling | None = None
) -> Path:
    """``source`` re-encoded as H.264 (and its first sound track as AAC) in an MP4 that every browser plays, written
    atomically to ``target``. The bounds of ``settings`` on duration, frame size and time apply: BadSampleError."""
    settings = settings or VideoSampling()
    bad = media_errors(source, None, None, "video")
    av = require_av()
    deadline = time.monotonic() + settings.timeout_seconds
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with av.open(os.fspath(source), metadata_errors="ignore") as container, atomic_file(target) as written:
            if not container.streams.video:
                raise bad("has no video stream", "decode")
            video = container.streams.video[0]
            width, height = video.codec_context.width, video.codec_context.height
            if width * height > settings.max_pixels:
                raise bad(f"frames of {width}x{height} exceed {settings.max_pixels} pixels", "too_large")
            seconds = float(container.duration or 0) / av.time_base
            if seconds > settings.max_seconds:
                raise bad(f"{seconds:.0f} s is longer than {settings.max_seconds:.0f} s", "too_long")
            sound = container.streams.audio[0] if container.streams.audio else None
            rate = video.average_rate or video.guessed_rate or 25
            # faststart: the index first, so a player starts before the whole file has arrived.
            with av.open(os.fspath(written), "w", format="mp4", options={"movflags": "+faststart"}) as out:
                picture = out.add_stream("libx264", rate=rate, options={"preset": "veryfast", "crf": "20"})
                picture.width, picture.height = width - width % 2, height - height % 2  # 4:2:0 needs even sizes
                picture.pix_fmt = "yuv420p"
                step = 1 / Fraction(rate)  # frames are renumbered at the clip's average rate
                picture.codec_context.time_base = step
                track = resampler = None
                if sound is not None:
                    layout = "stereo" if sound.codec_context.channels > 1 else "mono"
                    track = out.add_stream("aac", rate=sound.codec_context.sample_rate, layout=layout)
                    resampler = av.AudioResampler(format="fltp", layout=layout, rate=track.codec_context.sample_rate)
                count = 0
                for packet in container.demux(*(s for s in (video, sound) if s is not None)):
                    if time.monotonic() > deadline:
                        raise bad(f"transcoding took over {settings.timeout_seconds:.0f} s", "timeout")
                    for frame in packet.decode():
                        if packet.stream is video:
                            image = frame.reformat(picture.width, picture.height, "yuv420p")
                            image.pts, image.time_base = count, step
                            count += 1
                            out.mux(picture.encode(image))
                        else:
                            for part in resampler.resample(frame):  # type: ignore[union-attr]
                                part.pts = None  # the encoder counts samples
                                out.mux(track.encode(part))  # type: ignore[union-attr]
                if count == 0:
                    raise bad("has no decodable frame", "decode")
                out.mux(picture.encode())
                if track is not None:
                    for part in resampler.resample(None):  # type: ignore[union-attr]
                        out.mux(track.encode(part))
                    out.mux(track.encode())
    except BadSampleError:
        raise
    except Exception as e:  # FFmpeg's errors (truncated, not a container) come in several types
        raise bad(f"cannot transcode ({type(e).__name__}: {e})", "decode") from None
    return target
