"""Training samples/s of the shapes-video-clip recipe with its locked, cached frame tower: the first epoch against
the later ones.

Writes ``--n`` ShapesWorld-moves clips (``generate_shapesworld_video``) into a temporary folder, removed afterwards,
and trains ``shapes-video-clip`` on them with polymodal's trainer (``run_recipe``) for ``--steps`` steps of
``--batch`` clips, logging every step. In the first epoch every frame of a batch goes through the packaged
EfficientNet-Lite0 (8 frames of 128 px per clip) and every clip is decoded; from the second on, the frame tower's
outputs come from its cache (``model.cache``) and the prepared clips from the dataset's memo, so a step costs the
temporal transformer, the text tower and the loss. Per-step times come from the trainer's own log (its running
samples/s, from the start of training): validation runs once, after the last step, and is not counted.

Run: ``.venv/bin/python benchmarks/video_training.py [--n 120] [--steps 20] [--batch 32] [--threads 2]``
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from polymodal.data.shapes_video import generate_shapesworld_video
from polymodal.hardware import choose_precision, describe_record, machine_header
from polymodal.train.recipe import load_recipe
from polymodal.train.run import run_recipe


def step_seconds(metrics: Path, batch: int) -> list[float]:
    """Each step's seconds, from the cumulative samples/s the trainer logs at every step."""
    ends = [
        record["step"] * batch / record["samples_per_s"]
        for record in map(json.loads, metrics.read_text().splitlines())
        if "samples_per_s" in record
    ]
    return [end - start for start, end in zip([0.0, *ends], ends)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=120, help="clips generated (80%% train)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2, help="torch threads for training")
    parser.add_argument("--precision", default="auto", help="the recipe's train.precision")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    precision = choose_precision(args.precision, "cpu").precision
    print(machine_header(precisions=[precision]))  # CPU, flags, threads and the matmul peak of the precision run
    with tempfile.TemporaryDirectory() as tmp:
        data, run = Path(tmp) / "moves", Path(tmp) / "run"
        generate_shapesworld_video(data, args.n)
        train_clips = len((data / "train.jsonl").read_text().splitlines())
        per_epoch = train_clips // args.batch
        if per_epoch < 1 or args.steps <= per_epoch:
            raise SystemExit(f"{train_clips} training clips, batch {args.batch}: --steps must pass one epoch")
        overrides = [
            f"data.path={data}",
            f"train.steps={args.steps}",
            f"train.batch_size={args.batch}",
            f"train.eval_every={args.steps}",
            "train.warmup_steps=4",
            "train.log_every=1",
            "train.tensorboard=false",
            f"train.threads={args.threads}",
            f"train.precision={args.precision}",
        ]
        started = time.perf_counter()
        run_recipe(load_recipe("shapes-video-clip", overrides), run, progress=False)
        wall = time.perf_counter() - started
        seconds = step_seconds(run / "metrics.jsonl", args.batch)
        machine = json.loads((run / "machine.json").read_text())
    first, later = seconds[:per_epoch], seconds[per_epoch:]
    first_rate, later_rate = args.batch * len(first) / sum(first), args.batch * len(later) / sum(later)
    print(f"trained in: {describe_record(machine)}")
    print(
        f"shapes-video-clip on {train_clips} training clips of ShapesWorld moves, batch {args.batch} "
        f"({per_epoch} steps per epoch), {args.steps} steps; {wall:.0f} s wall with data generation excluded, "
        "model building, validation and saving included"
    )
    print("| steps | samples/s | s/step (mean) | s/step (min-max) |")
    print("|---|---:|---:|---|")
    for label, part, rate in (
        (f"first epoch (1-{per_epoch}): frames through EfficientNet-Lite0", first, first_rate),
        (f"later epochs ({per_epoch + 1}-{args.steps}): cached", later, later_rate),
    ):
        print(f"| {label} | {rate:,.1f} | {sum(part) / len(part):.3f} | {min(part):.3f}-{max(part):.3f} |")
    print(f"later / first: {later_rate / first_rate:.1f}x")
    print("seconds per step:", " ".join(f"{s:.2f}" for s in seconds))


if __name__ == "__main__":
    main()
