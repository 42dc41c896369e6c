"""Decode + log-mel throughput of 10 s clips at 16 kHz: polymodal against librosa, in the same run.

Writes ``--n`` synthetic 10 s clips (tones, a chirp and noise; FLAC or WAV) to a temporary folder, removed
afterwards, then times on the same files, each ``--repeats`` times (the best is reported, all are printed):

* ``polymodal``  ``AudioProcessor``: ``decode_audio`` per file, then ``AudioFeatures`` over batches of ``--batch``
* ``librosa``    ``librosa.load`` per file, ``librosa.feature.melspectrogram`` + ``librosa.power_to_db``

Both compute the same thing (n_fft 400, hop 160, ``--n-mels`` HTK bands without filter normalisation, periodic
Hann window, centred frames with reflected ends, power 2, floor 1e-10), so the line also gives the largest
difference of the two log-mel outputs on one clip in dB (polymodal's natural log times 10 / ln 10).

librosa comes with the project's test extra (``make setup`` installs it); where it is missing the script says how
to install it and exits with status 2. ``--threads`` pins torch's and the BLAS/OpenMP pools (threadpoolctl).

Run: ``.venv/bin/python benchmarks/audio_features.py [--n 64] [--format flac] [--batch 16] [--threads 1]``
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from polymodal.data.audio import AudioFeatures
from polymodal.data.processors import AudioProcessor
from polymodal.hardware import machine_header

RATE = 16_000
SECONDS = 10.0


def write_clips(directory: Path, n: int, fmt: str, seed: int = 0) -> list[Path]:
    """``n`` distinct 10 s clips: two tones, a chirp and a little noise each."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(SECONDS * RATE)) / RATE
    paths = []
    for i in range(n):
        f1, f2 = rng.uniform(100, 2000, 2)
        wave = 0.3 * np.sin(2 * np.pi * f1 * t) + 0.2 * np.sin(2 * np.pi * f2 * t)
        wave += 0.1 * np.sin(2 * np.pi * (200 + 300 * t) * t) + 0.02 * rng.standard_normal(t.size)
        path = directory / f"clip{i:04d}.{fmt}"
        sf.write(path, (wave / 1.2).astype(np.float32), RATE, subtype="PCM_16")
        paths.append(path)
    return paths


def polymodal_features(paths: list[Path], features: AudioFeatures, batch: int) -> list[torch.Tensor]:
    processor = AudioProcessor(features)
    return [
        processor.collate([processor.prepare(p) for p in paths[i : i + batch]]).x  # type: ignore[misc]
        for i in range(0, len(paths), batch)
    ]


def librosa_features(paths: list[Path], features: AudioFeatures) -> list[np.ndarray]:
    import librosa

    out = []
    for path in paths:
        wave, _ = librosa.load(path, sr=features.sample_rate)
        mel = librosa.feature.melspectrogram(
            y=wave,
            sr=features.sample_rate,
            n_fft=features.n_fft,
            hop_length=features.hop_length,
            n_mels=features.n_mels,
            htk=True,
            norm=None,
            pad_mode="reflect",
        )
        out.append(librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=None))
    return out


def clips_per_second(run: Callable[[], object], n: int, repeats: int) -> list[float]:
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        rates.append(n / (time.perf_counter() - start))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=64, help="clips")
    parser.add_argument("--format", choices=["flac", "wav"], default="flac")
    parser.add_argument("--batch", type=int, default=16, help="clips per AudioFeatures call (a training batch)")
    parser.add_argument("--n-mels", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="torch and BLAS/OpenMP threads")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    try:
        import librosa
        from threadpoolctl import threadpool_info, threadpool_limits
    except ImportError as e:
        print(f"{e.name} is missing: install the test extra (make setup, or pip install librosa)", file=sys.stderr)
        sys.exit(2)
    torch.set_num_threads(args.threads)
    print(machine_header(precisions=["fp32"]))  # CPU, flags, threads and the fp32 matmul peak beside the figures
    features = AudioFeatures(sample_rate=RATE, clip_seconds=SECONDS, n_mels=args.n_mels)
    with threadpool_limits(args.threads), tempfile.TemporaryDirectory() as tmp:
        pools = ", ".join(
            f"{p['internal_api']} {p.get('architecture', '')} x{p['num_threads']}" for p in threadpool_info()
        )
        print(f"librosa {librosa.__version__}; numpy pools: {pools}")
        paths = write_clips(Path(tmp), args.n, args.format)
        mb = sum(p.stat().st_size for p in paths) / 2**20
        ours = polymodal_features(paths[:2], features, args.batch)[0]  # warm imports, page cache, librosa's caches
        theirs = librosa_features(paths[:2], features)
        diff_db = float(np.abs(ours[0].numpy() * (10 / math.log(10)) - theirs[0]).max())
        rates = {
            "polymodal": clips_per_second(
                lambda: polymodal_features(paths, features, args.batch), args.n, args.repeats
            ),
            "librosa": clips_per_second(lambda: librosa_features(paths, features), args.n, args.repeats),
        }
    best = {name: max(r) for name, r in rates.items()}
    print(
        f"{args.n} x {SECONDS:.0f} s {args.format.upper()} clips at {RATE} Hz ({mb:.1f} MB), n_mels {args.n_mels}, "
        f"polymodal batch {args.batch}, {args.threads} thread(s), fp32, best of {args.repeats}"
    )
    print("| path | clips/s (best) | all runs |")
    print("|---|---:|---|")
    for name, r in rates.items():
        print(f"| {name} | {best[name]:,.0f} | {', '.join(f'{x:,.0f}' for x in r)} |")
    print(f"polymodal / librosa: {best['polymodal'] / best['librosa']:.2f}x; max |log-mel difference| {diff_db:.2e} dB")


if __name__ == "__main__":
    main()
