"""How polymodal fit's audio features hold up when test recordings differ from the training ones in level or channel.

A predictor is fitted (``TablePredictor.fit``) on clean ShapesWorld speech (``generate_shapesworld(..., speech=True)``),
then scored on the test split as recorded and re-recorded under each condition:

* ``quieter -12 dB`` / ``quieter -24 dB``: the same samples at a lower gain (a distant or quiet microphone);
* ``louder +6 dB``: a higher gain, clipped to full scale as a real recorder would;
* ``narrowband 8 kHz``: resampled to 8 kHz and back (nothing above 4 kHz);
* ``telephone``: only 300-3400 Hz kept (a telephone's band);
* ``mp3 24 kbps``: encoded as MP3 at 24 kbit/s (libmp3lame through PyAV) and decoded again.

Tables: ``speaker`` (audio -> which of the eight eSpeak voices) and ``delivery`` (audio -> sarcastic or sincere: slow,
low and flat or not; the sentiment sentences). Each accuracy has a 95% bootstrap interval.

Run: ``.venv/bin/python benchmarks/fit_audio_conditions.py [--n 2000] [--time-limit 60] [--data DIR] [--out FILE]``
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from polymodal.data.audio import decode_audio, resample
from polymodal.data.shapes import generate_shapesworld, is_complete, load_split
from polymodal.fit import TablePredictor, rows_table
from polymodal.fit.search import encode_targets
from polymodal.fsutil import write_atomic
from polymodal.hardware import ThreadBudget, choose_precision, describe_record, machine_header, machine_record
from polymodal.metrics.bootstrap import bootstrap_ci

RATE = 16_000
LABEL = "label"
RESAMPLES = 1000


def gain(db: float) -> Callable[[np.ndarray], np.ndarray]:
    return lambda wave: np.clip(wave * 10 ** (db / 20), -1.0, 1.0)


def narrowband(wave: np.ndarray) -> np.ndarray:
    return resample(resample(torch.from_numpy(wave), RATE, 8_000), 8_000, RATE).numpy()


def telephone(wave: np.ndarray) -> np.ndarray:
    spectrum = np.fft.rfft(wave)
    hz = np.fft.rfftfreq(len(wave), 1 / RATE)
    spectrum[(hz < 300) | (hz > 3400)] = 0
    return np.fft.irfft(spectrum, len(wave)).astype(np.float32)


def mp3(wave: np.ndarray, bitrate: int = 24_000) -> np.ndarray:
    import av

    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp3") as out:
        stream = out.add_stream("libmp3lame", rate=RATE, layout="mono")
        stream.bit_rate = bitrate
        frame = av.AudioFrame.from_ndarray(wave.astype(np.float32)[None, :], format="flt", layout="mono")
        frame.sample_rate = RATE
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return decode_audio(buffer.getvalue(), RATE).numpy()


CONDITIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "quieter -12 dB": gain(-12),
    "quieter -24 dB": gain(-24),
    "louder +6 dB": gain(6),
    "narrowband 8 kHz": narrowband,
    "telephone": telephone,
    "mp3 24 kbps": mp3,
}


def rows_of(data: Path, task: str, split: str) -> list[dict[str, Any]]:
    if task == "speaker":
        return [{"audio": r["audio"], LABEL: r["voice"]} for r in load_split(data, split, "speech_")]
    return [{"audio": r["audio"], LABEL: r["delivery"]} for r in load_split(data, split, "sentiment_")]


def recorded(rows: list[dict[str, Any]], data: Path, out: Path, change: Callable[[np.ndarray], np.ndarray]) -> None:
    """Each row's sound under ``change``, written as 32-bit float WAV under ``out`` (same relative paths)."""
    import soundfile

    for row in rows:
        wave = decode_audio(data / row["audio"], RATE).numpy()
        target = out / row["audio"]
        target = target.with_suffix(".wav")
        target.parent.mkdir(parents=True, exist_ok=True)
        soundfile.write(target, change(wave), RATE, subtype="FLOAT")


def accuracy(predictor: TablePredictor, rows: list[dict[str, Any]], root: Path) -> dict[str, Any]:
    table = rows_table(rows, root)
    predicted = np.asarray(predictor.predict(table, progress=False).values).argmax(1)
    targets = encode_targets(predictor.problem, table.values(LABEL))
    hits = (predicted == targets.y.numpy())[targets.known.numpy()].astype(np.float64)
    low, high = bootstrap_ci(hits, n_resamples=RESAMPLES, seed=0)
    return {"accuracy": float(hits.mean()), "ci95": [low, high], "rows": len(hits)}


def run_task(task: str, data: Path, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    train, val, test = (rows_of(data, task, s) for s in ("train", "val", "test"))
    started = time.perf_counter()
    predictor = TablePredictor.fit(
        rows_table(train, data), LABEL, val=rows_table(val, data), time_limit=args.time_limit, progress=False
    )
    record: dict[str, Any] = {
        "rows": {"train": len(train), "val": len(val), "test": len(test)},
        "fit_seconds": time.perf_counter() - started,
        "chosen": predictor.network.candidate.label,
        "conditions": {"as recorded": accuracy(predictor, test, data)},
    }
    for name, change in CONDITIONS.items():
        root = work / task / name.replace(" ", "_")
        recorded(test, data, root, change)
        moved = [{**r, "audio": str(Path(r["audio"]).with_suffix(".wav"))} for r in test]
        record["conditions"][name] = accuracy(predictor, moved, root)
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000, help="ShapesWorld scenes (80%% train, 10%% val, 10%% test)")
    parser.add_argument("--time-limit", type=float, default=60.0, help="polymodal fit's limit per table, seconds")
    parser.add_argument("--tasks", default="speaker,delivery", help="which tables, in order")
    parser.add_argument("--threads", type=int, help="torch threads (default: POLYMODAL_THREADS)")
    parser.add_argument("--data", type=Path, help="ShapesWorld folder to reuse, or to generate and keep")
    parser.add_argument("--out", type=Path, help="also write every figure and the machine here (JSON)")
    args = parser.parse_args()
    budget = ThreadBudget(fixed=args.threads)
    torch.manual_seed(0)
    print(machine_header())
    machine = machine_record(choose_precision("fp32", "cpu"), budget.choice)
    print(describe_record(machine))
    with tempfile.TemporaryDirectory(prefix="polymodal-fit-audio-") as tmp:
        data = args.data or Path(tmp) / "shapes"
        if not is_complete(data, args.n, 0, 64, speech=True):
            print(f"generating ShapesWorld with speech ({args.n} scenes) in {data} ...", file=sys.stderr)
            generate_shapesworld(data, args.n, seed=0, image_size=64, workers=2, progress=False, speech=True)
        results = {}
        for task in args.tasks.split(","):
            r = results[task] = run_task(task, data, Path(tmp) / "conditions", args)
            rows = r["rows"]
            print(
                f"\n### {task}: train {rows['train']}, val {rows['val']}, test {rows['test']}; fit chose {r['chosen']}"
            )
            print("| test recordings | accuracy (95% CI) |")
            print("|---|---:|")
            for name, c in r["conditions"].items():
                print(f"| {name} | {c['accuracy']:.3f} ({c['ci95'][0]:.3f}-{c['ci95'][1]:.3f}) |")
    if args.out:
        write_atomic(args.out, json.dumps({"machine": machine, "tasks": results}, indent=1))


if __name__ == "__main__":
    main()
