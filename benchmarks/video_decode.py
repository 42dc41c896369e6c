"""Video decode + sample + preprocess throughput: polymodal against a plain PyAV loop, in the same run.

Writes two sets of clips into a temporary folder, removed afterwards:

* ``moves``  ``--moves`` ShapesWorld-moves clips (``generate_shapesworld_video``: 16 frames of 64 px, MPEG-4)
* ``long``   ``--long`` clips per codec of ``--seconds`` s at 30 fps, 320x240, a drifting gradient with a moving
             square and a little noise, written with PyAV: H.264 (libx264's defaults: a keyframe every 250 frames)
             and MPEG-4 (FFmpeg's defaults: one every 12)

then times, on the same files, each ``--repeats`` times (the best is reported, all are printed):

* ``decode_video``  ``polymodal.data.video.decode_video``: 8 frames sampled uniformly, as RGB (it seeks, and converts
                    only the sampled frames)
* ``processor``     ``VideoProcessor.prepare`` at ``--size`` px: the same, then each frame resized, cropped and
                    normalised: a (8, 3, S, S) tensor, what training and inference read
* ``pyav loop``     every frame decoded and converted to RGB (``frame.to_ndarray(format="rgb24")``), then the same
                    8 picked (``sample_indices``)

and checks that ``decode_video``'s 8 frames equal the loop's, pixel for pixel. Frames/s counts the clips' own frames
(clips/s x frames per clip): how much video goes through per second. Both paths use PyAV's default decoder threading;
``--threads`` sets torch's (the preprocessing).

Run: ``.venv/bin/python benchmarks/video_decode.py [--moves 200] [--long 3] [--seconds 20] [--repeats 3]``
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from polymodal.data.processors import VideoProcessor
from polymodal.data.shapes_video import generate_shapesworld_video
from polymodal.data.transforms import ImagePreprocess
from polymodal.data.video import VideoSampling, decode_video, require_av, sample_indices
from polymodal.hardware import machine_header

FPS, WIDTH, HEIGHT = 30, 320, 240
CODECS = {"h264": ("libx264", "mp4"), "mpeg4": ("mpeg4", "mp4")}


def write_long_clip(path: Path, codec: str, seconds: float, seed: int) -> Path:
    """A drifting colour gradient with a square crossing it and a little noise, so the encoder has motion and
    texture to code, at :data:`FPS` fps and :data:`WIDTH` x :data:`HEIGHT`."""
    av = require_av()
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        for i in range(round(seconds * FPS)):
            phase = i / FPS
            frame = np.stack(
                [128 + 100 * np.sin(x / 40 + phase), 128 + 100 * np.cos(y / 30 - phase), np.full_like(x, i % 256)], -1
            )
            left = int((i * 3) % (WIDTH - 40))
            frame[100:140, left : left + 40] = (250, 250, 40)
            frame += rng.normal(0, 4, frame.shape)
            rgb = frame.clip(0, 255).astype(np.uint8)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        out.mux(stream.encode())
    return path


def pyav_loop(path: Path, sampling: VideoSampling) -> list[np.ndarray]:
    """The plain way: decode and convert every frame, keep them, then pick the sampled ones."""
    with require_av().open(str(path)) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    return [frames[i] for i in sample_indices(len(frames), float(FPS), sampling)]


def frame_count(path: Path) -> int:
    with require_av().open(str(path)) as container:
        return container.streams.video[0].frames


def rates(run: Callable[[Path], object], paths: list[Path], repeats: int) -> list[float]:
    """Clips/s of ``run`` over ``paths``, once per repeat."""
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        for path in paths:
            run(path)
        out.append(len(paths) / (time.perf_counter() - start))
    return out


def same_frames(paths: list[Path], sampling: VideoSampling) -> str:
    """Whether decode_video's frames equal the loop's, over ``paths``; the largest pixel difference when not."""
    worst = 0
    for path in paths:
        ours = [np.asarray(im) for im in decode_video(path, sampling).frames]
        theirs = pyav_loop(path, sampling)
        if len(ours) != len(theirs):
            return f"no: {len(ours)} frames against {len(theirs)} in {path.name}"
        worst = max(worst, *(int(np.abs(a.astype(int) - b).max()) for a, b in zip(ours, theirs)))
    return "yes, pixel for pixel" if worst == 0 else f"no: max |pixel difference| {worst}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--moves", type=int, default=200, help="ShapesWorld-moves clips")
    parser.add_argument("--long", type=int, default=3, help="long clips per codec")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of a long clip")
    parser.add_argument("--size", type=int, default=128, help="the processor's frame size")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the preprocessing)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    try:
        av = require_av()
    except ImportError as e:
        print(e, file=sys.stderr)
        sys.exit(2)
    torch.set_num_threads(args.threads)
    print(machine_header(precisions=["fp32"]))  # CPU, flags, threads and the fp32 matmul peak beside the figures
    print(f"PyAV {av.__version__}, FFmpeg {'.'.join(map(str, av.library_versions['libavcodec']))} (libavcodec)")
    sampling = VideoSampling(frames=8, sampling="uniform")
    processor = VideoProcessor(sampling, ImagePreprocess(image_size=args.size))
    paths = {
        "decode_video": lambda path: decode_video(path, sampling),
        "processor": processor.prepare,
        "pyav loop": lambda path: pyav_loop(path, sampling),
    }
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        generate_shapesworld_video(root / "moves", args.moves)
        sets = {"ShapesWorld moves, 64x64 MPEG-4": sorted((root / "moves" / "videos").glob("*.mp4"))}
        for name, (codec, suffix) in CODECS.items():
            clips = [write_long_clip(root / f"{name}{i}.{suffix}", codec, args.seconds, i) for i in range(args.long)]
            sets[f"{args.seconds:g} s {WIDTH}x{HEIGHT} {FPS} fps {name}"] = clips
        print(
            f"8 uniform frames per clip; processor at {args.size} px; fp32; {args.threads} torch thread(s); "
            f"best of {args.repeats}"
        )
        print("| clips | path | clips/s (best) | frames/s (best) | all runs (clips/s) |")
        print("|---|---|---:|---:|---|")
        summary = []
        for label, clips in sets.items():
            frames = sum(frame_count(p) for p in clips) / len(clips)
            size = sum(p.stat().st_size for p in clips) / len(clips) / 1024
            for path in clips[:2]:  # warm the page cache and the imports
                decode_video(path, sampling)
            best = {}
            for name, run in paths.items():
                runs = rates(run, clips, args.repeats)
                best[name] = max(runs)
                print(
                    f"| {len(clips)} x {label}, {frames:.0f} frames, {size:,.0f} KB | {name} | {best[name]:,.1f} | "
                    f"{best[name] * frames:,.0f} | {', '.join(f'{r:,.1f}' for r in runs)} |"
                )
            summary.append(
                f"{label}: decode_video / pyav loop {best['decode_video'] / best['pyav loop']:.1f}x, "
                f"processor / pyav loop {best['processor'] / best['pyav loop']:.1f}x; "
                f"same frames: {same_frames(clips[:5], sampling)}"
            )
    print("\n".join(summary))


if __name__ == "__main__":
    main()
