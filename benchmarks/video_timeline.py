"""Timelines of long clips (``Model.caption_segments``, ``caption --segment-seconds``) on ShapesWorld moves: each long
clip is K clips of a split played one after another (their packets copied, so each frame decodes as in its own
file), and every segment of a clip's length has a known reference.
Prints, for the segments and for the same clips captioned alone: BLEU-4 and CIDEr-D against the clips' references,
how often a segment's caption equals its clip's, and the speed (segments/s, seconds of video per second).

    .venv/bin/python benchmarks/video_timeline.py --model runs/demo-video/video-caption/model \\
        --data runs/demo-video/shapes --videos 40 --clips-per-video 5
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from polymodal.evaluate.scoring import caption_scores
from polymodal.hardware import machine_header


def concatenate(paths: list[Path], target: Path) -> float:
    """The clips' video packets one after another in one MP4 (a stream copy: every frame decodes as in its own
    file); the seconds of the last clip."""
    import av

    with av.open(str(target), "w", format="mp4") as out:
        stream, offset = None, 0
        for path in paths:
            with av.open(str(path)) as source:
                video = source.streams.video[0]
                stream = stream or out.add_stream_from_template(video)
                end = offset
                for packet in source.demux(video):
                    if packet.dts is None:  # the flush packet
                        continue
                    packet.pts, packet.dts = packet.pts + offset, packet.dts + offset
                    end = max(end, packet.pts + packet.duration)
                    packet.stream = stream
                    out.mux(packet)
                seconds = float((end - offset) * video.time_base)
                offset = end
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="A captioner of clips (or of images: middle frames)")
    parser.add_argument("--data", type=Path, required=True, help="A ShapesWorld moves folder (polymodal data shapes)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--videos", type=int, default=40)
    parser.add_argument("--clips-per-video", type=int, default=5)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    import polymodal

    model = polymodal.load(args.model, precision=args.precision, batch_size=args.batch_size)
    rows = [json.loads(line) for line in (args.data / f"{args.split}.jsonl").read_text().splitlines() if line]
    rows = rows[: args.videos * args.clips_per_video]
    print(machine_header(precisions=(model.tower_precision().precision,)))
    print(f"model {args.model}: {model.tower_precision().precision}; {len(rows)} clips of {args.split}")
    with tempfile.TemporaryDirectory(prefix="polymodal-timeline-") as tmp:
        videos, parts = [], []
        for v in range(0, len(rows) - args.clips_per_video + 1, args.clips_per_video):
            group = rows[v : v + args.clips_per_video]
            path = Path(tmp) / f"long-{v // args.clips_per_video:03d}.mp4"
            seconds = concatenate([args.data / row["video"] for row in group], path)
            videos.append(path)
            parts.append(group)
        print(f"{len(videos)} long clips of {args.clips_per_video} x {seconds:g} s, segments of {seconds:g} s")

        start = time.perf_counter()
        timelines = [model.caption_segments(path, seconds, merge=False) for path in videos]
        segment_time = time.perf_counter() - start
        start = time.perf_counter()
        alone = model.caption([str(args.data / row["video"]) for group in parts for row in group])
        alone_time = time.perf_counter() - start

    refs = {i: row["captions"] for i, row in enumerate(r for group in parts for r in group)}
    segmented = [t.caption for timeline in timelines for t in timeline]
    assert len(segmented) == len(refs), (len(segmented), len(refs))
    total_seconds = len(refs) * seconds
    print(f"{'captions of':28} {'BLEU-4':>7} {'CIDEr-D':>8} {'segments/s':>11} {'video s/s':>10}")
    for name, preds, took in (
        ("segments of the long clips", segmented, segment_time),
        ("each clip alone", alone, alone_time),
    ):
        metrics, _, _ = caption_scores(refs, dict(enumerate(preds)), with_ci=False)
        print(
            f"{name:28} {metrics['BLEU-4']:7.3f} {metrics['CIDEr-D']:8.3f} {len(preds) / took:11.1f} "
            f"{total_seconds / took:10.1f}"
        )
    same = sum(a == b for a, b in zip(segmented, alone)) / len(alone)
    print(f"a segment captioned as its clip alone: {same:.3f}")


if __name__ == "__main__":
    main()
