"""A long recording cut into segments: as it is decoded (``Model.audio_segments``, ``stream_audio``) against decoded
whole and then cut (how segments were made before, up to an hour). Writes a WAV of ``--minutes`` of noise and a
slow tone at ``--rate`` Hz, then, each in its own process (so each peak is its own), cuts it into ``--seconds``
segments at 16 kHz and prints the segments, the seconds taken and the process's peak resident memory, beside
that of a process that only imports polymodal.

Run: ``.venv/bin/python benchmarks/audio_segments.py [--minutes 55] [--rate 44100] [--seconds 10]``
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from polymodal.hardware import machine_header

TARGET = 16_000
CHILD = """
import json, resource, sys, time
mode, path, seconds, rate = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
from polymodal.api.audio import AudioSegment, segment_sound
from polymodal.data.audio import Waveform, decode_audio
started, n, covered = time.perf_counter(), 0, 0.0
if mode == "streamed":
    for segment in segment_sound(path, seconds, rate):
        n, covered = n + 1, covered + segment.end - segment.start
elif mode == "whole":
    samples, step = decode_audio(path, rate, max_seconds=86_400).numpy(), round(seconds * rate)
    starts = range(0, len(samples), step)
    segments = [AudioSegment(s / rate, min(s + step, len(samples)) / rate, Waveform(samples[s : s + step], rate))
                for s in starts]
    n, covered = len(segments), sum(s.end - s.start for s in segments)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"segments": n, "hours": covered / 3600, "seconds": time.perf_counter() - started, "peak_mb": peak}))
"""


def write_recording(path: Path, minutes: int, rate: int) -> None:
    import soundfile as sf

    rng = np.random.default_rng(0)
    with sf.SoundFile(path, "w", rate, 1, subtype="PCM_16") as f:
        for minute in range(minutes):
            t = np.arange(60 * rate) / rate
            tone = 0.2 * np.sin(2 * np.pi * (200 + minute) * t)
            f.write((0.1 * rng.standard_normal(60 * rate) + tone).astype(np.float32))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=int, default=55, help="length of the recording")
    parser.add_argument("--rate", type=int, default=44_100, help="its sample rate (segments are at 16 kHz)")
    parser.add_argument("--seconds", type=float, default=10.0, help="segment length")
    args = parser.parse_args()
    print(machine_header())
    with tempfile.TemporaryDirectory(prefix="polymodal-audio-segments-") as tmp:
        path = Path(tmp) / "recording.wav"
        write_recording(path, args.minutes, args.rate)
        size = path.stat().st_size / 2**20
        print(f"{args.minutes} min at {args.rate} Hz, 16-bit mono WAV ({size:.0f} MiB), {args.seconds:g} s segments")
        print(f"{'how':34} {'segments':>8} {'hours':>6} {'seconds':>8} {'peak MiB':>9}")
        for mode, label in (("imports", "imports only"), ("streamed", "cut as decoded"), ("whole", "decoded whole")):
            run = subprocess.run(
                [sys.executable, "-c", CHILD, mode, str(path), str(args.seconds), str(TARGET)],
                capture_output=True,
                text=True,
                check=True,
            )
            got = json.loads(run.stdout.strip().splitlines()[-1])
            print(f"{label:34} {got['segments']:8d} {got['hours']:6.2f} {got['seconds']:8.1f} {got['peak_mb']:9.0f}")


if __name__ == "__main__":
    main()
