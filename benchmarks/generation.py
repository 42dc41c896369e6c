"""Text-to-image speed: training samples/s of shapes-diffusion and shapes-gan, and images generated per second.

Writes ``--n`` ShapesWorld scenes at 32 px (``generate_shapesworld``) into a temporary folder, removed afterwards, and
for each precision:

* training  each recipe (``shapes-diffusion`` at batch 32, ``shapes-gan`` at batch 64: a discriminator step, then a
            generator step, with their two optimizers) run by polymodal's trainer (``run_recipe``) for ``--warmup``
            + ``--steps`` steps, logging every step; samples/s over the timed steps only, from the trainer's own log
            (validation runs once, after the last step, and is not counted)
* sampling  the model each run saved (trained for those few steps only: these are speed figures, not quality) on
            ``--prompts`` of the test captions in one ``model.generate`` call under the precision's autocast: the
            diffusion model with each sampler at each step count, classifier-free guidance off (1.0) and on (3.0:
            the UNet reads the batch twice), and the GAN (one forward of its EMA generator); images/s = prompts /
            wall seconds of the call, after one untimed warm-up call per model.
* batching  ``Model.generate`` (the API) on ``--batching-prompts`` captions, one image each, DDIM at
            ``--batching-steps``, guidance off and on: one call per prompt (how the API ran before texts shared
            model calls) against all prompts in one call, alternated ``--batching-repeats`` times; the median
            images/s of each.

``--json PATH`` also writes every figure with the machine it was measured on (CPU model and flags, precision,
threads, the load average). ``--quick`` is a smoke run of a few seconds per part: its figures mean little.

Run: ``.venv/bin/python benchmarks/generation.py [--steps 8] [--prompts 16] [--batching-prompts 8] [--threads 2]
[--precisions auto] [--json out.json] [--quick]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

import polymodal
from model_throughput import precisions_to_run
from polymodal.data.shapes import generate_shapesworld
from polymodal.fsutil import write_atomic
from polymodal.hardware import choose_precision, describe_record, machine_header, machine_record
from polymodal.models.saved import SavedModel
from polymodal.train.recipe import load_recipe
from polymodal.train.run import run_recipe
from video_training import step_seconds

RECIPES = {"shapes-diffusion": 32, "shapes-gan": 64}  # recipe -> its train.batch_size
GUIDANCE_ON = 3.0  # DiffusionGenerator.generate's default


def sampler_settings(step_counts: list[int], ddpm_step_counts: list[int]) -> list[tuple[str, int]]:
    """(sampler, steps) pairs: DDIM and DPM-Solver at every count, DDPM (which needs many steps) at its own."""
    return [(s, n) for s in ("ddim", "dpm_solver") for n in step_counts] + [("ddpm", n) for n in ddpm_step_counts]


def train_rate(recipe: str, data: Path, run: Path, args: argparse.Namespace, precision: str) -> dict[str, Any]:
    """Samples/s of ``recipe`` over its timed steps, run by the trainer; the machine record it wrote."""
    batch = RECIPES[recipe]
    total = args.warmup + args.steps
    overrides = [
        f"data.path={data}",
        f"train.steps={total}",
        f"train.eval_every={total}",
        "train.warmup_steps=0",  # the learning-rate warm-up: no bearing on speed, and longer than a short run
        "train.log_every=1",
        "train.tensorboard=false",
        f"train.threads={args.threads}",
        f"train.precision={precision}",
    ]
    run_recipe(load_recipe(recipe, overrides), run, progress=False)
    timed = step_seconds(run / "metrics.jsonl", batch)[args.warmup :]
    return {
        "recipe": recipe,
        "batch": batch,
        "timed_steps": len(timed),
        "samples_per_s": batch * len(timed) / sum(timed),
        "s_per_step": [round(s, 4) for s in timed],
        "machine": json.loads((run / "machine.json").read_text()),
    }


def images_per_s(saved: SavedModel, inputs: tuple[torch.Tensor, torch.Tensor | None], **options: Any) -> float:
    """Images/s of one ``generate`` call over the prompts of ``inputs`` (one image each)."""
    started = time.perf_counter()
    images = saved.model.generate({"text": inputs}, num_per_text=1, seed=0, **options)  # type: ignore[operator]
    return images.size(0) / (time.perf_counter() - started)


def generation_rates(
    model_dir: Path, prompts: list[str], settings: list[tuple[str, int]], precision: str
) -> list[dict[str, Any]]:
    """Images/s of the saved generator at each setting (the GAN: one row), under ``precision``'s autocast."""
    saved = SavedModel.load(model_dir)
    saved.model.eval()
    inputs = saved.inputs("text", prompts)
    rows = []
    with torch.inference_mode(), choose_precision(precision, "cpu").autocast("cpu"):
        if "ddim" not in getattr(saved.model, "schedulers", {}):  # the GAN: sampler settings do not apply
            images_per_s(saved, inputs)  # warm-up
            return [
                {"sampler": "one forward", "steps": 1, "guidance": None, "images_per_s": images_per_s(saved, inputs)}
            ]
        images_per_s(saved, inputs, steps=1, guidance=GUIDANCE_ON)  # warm-up
        for sampler, steps in settings:
            for guidance in (1.0, GUIDANCE_ON):
                rate = images_per_s(saved, inputs, steps=steps, guidance=guidance, sampler=sampler)
                rows.append({"sampler": sampler, "steps": steps, "guidance": guidance, "images_per_s": rate})
    return rows


def prompt_batching_rates(
    model_dir: Path, prompts: list[str], steps: int, precision: str, repeats: int
) -> list[dict[str, Any]]:
    """Images/s of ``Model.generate`` over ``prompts`` at DDIM ``steps``, guidance off and on: one call per prompt
    against one call for all (a batch that holds them all), alternated ``repeats`` times; the median of each."""
    model = polymodal.load(model_dir, precision=precision, batch_size=len(prompts))
    model.generate(prompts, steps=1)  # warm-up
    calls = {"per text": lambda options: [model.generate(p, **options) for p in prompts]}
    calls["batched"] = lambda options: model.generate(prompts, **options)
    rows = []
    for guidance in (1.0, GUIDANCE_ON):
        options = {"steps": steps, "guidance": guidance, "sampler": "ddim"}
        rates: dict[str, list[float]] = {name: [] for name in calls}
        for _ in range(repeats):
            for name, call in calls.items():
                started = time.perf_counter()
                call(options)
                rates[name].append(len(prompts) / (time.perf_counter() - started))
        for name, measured in rates.items():
            rows.append(
                {
                    "calls": name,
                    "prompts": len(prompts),
                    "steps": steps,
                    "guidance": guidance,
                    "images_per_s": statistics.median(measured),
                    "images_per_s_each": [round(r, 3) for r in measured],
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=600, help="ShapesWorld scenes generated (80%% train)")
    parser.add_argument("--warmup", type=int, default=3, help="training steps run before the timed ones")
    parser.add_argument("--steps", type=int, default=8, help="timed training steps per recipe")
    parser.add_argument("--prompts", type=int, default=16, help="test captions in each generate call")
    parser.add_argument("--step-counts", default="10,25,50", help="DDIM and DPM-Solver steps")
    parser.add_argument("--ddpm-step-counts", default="25,50", help="DDPM steps (empty: no DDPM)")
    parser.add_argument("--batching-prompts", type=int, default=8, help="prompts timed one call each vs in one")
    parser.add_argument("--batching-steps", type=int, default=10, help="DDIM steps of the batching comparison")
    parser.add_argument("--batching-repeats", type=int, default=3, help="alternated runs of that comparison")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--precisions", default="auto", help="auto, or a list such as fp32,bf16")
    parser.add_argument("--json", type=Path, help="also write every figure and the machine here")
    parser.add_argument("--quick", action="store_true", help="a smoke run: few scenes, steps and prompts")
    args = parser.parse_args()
    if args.quick:
        args.n, args.warmup, args.steps, args.prompts = 120, 1, 2, 4
        args.batching_prompts, args.batching_steps, args.batching_repeats = 4, 2, 1
        args.step_counts, args.ddpm_step_counts = "2", "2"
    counts = [int(c) for c in args.step_counts.split(",") if c.strip()]
    ddpm_counts = [int(c) for c in args.ddpm_step_counts.split(",") if c.strip()]
    settings = sampler_settings(counts, ddpm_counts)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    precisions = precisions_to_run(args.precisions)
    print(machine_header(precisions=precisions))  # CPU, flags, threads and the matmul peaks of the precisions run
    load = os.getloadavg()
    print(f"load average at the start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (1, 5, 15 min)")
    results: dict[str, Any] = {"load_average_start": load, "precisions": {}}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "shapes"
        generate_shapesworld(data, args.n, image_size=32, progress=False)
        rows = [json.loads(line) for line in (data / "test.jsonl").read_text().splitlines()]
        captions = [r["captions"][0] for r in rows]
        prompts = [captions[i % len(captions)] for i in range(args.prompts)]
        for precision in precisions:
            record = machine_record(choose_precision(precision, "cpu"))
            record["threads"] = {"threads": args.threads}
            training, generation = [], {}
            for recipe in RECIPES:
                run = Path(tmp) / f"{recipe}-{precision}"
                training.append(train_rate(recipe, data, run, args, precision))
                generation[recipe] = generation_rates(run / "model", prompts, settings, precision)
            batch_prompts = [captions[i % len(captions)] for i in range(args.batching_prompts)]
            batching = prompt_batching_rates(
                Path(tmp) / f"shapes-diffusion-{precision}" / "model",
                batch_prompts,
                args.batching_steps,
                precision,
                args.batching_repeats,
            )
            results["precisions"][precision] = {
                "machine": record,
                "training": training,
                "generation": generation,
                "prompt_batching": batching,
            }
            print(f"\n{describe_record(record)}")
            print(f"training: {args.warmup} warm-up + {args.steps} timed steps on {int(args.n * 0.8)} scenes, 32 px")
            print("| recipe | batch | samples/s | s/step (mean) | s/step (min-max) |")
            print("|---|---:|---:|---:|---|")
            for t in training:
                s = t["s_per_step"]
                print(
                    f"| {t['recipe']} | {t['batch']} | {t['samples_per_s']:,.1f} | {sum(s) / len(s):.3f} | "
                    f"{min(s):.3f}-{max(s):.3f} |"
                )
            print(f"generation: {args.prompts} prompts per call, one image each, 32 px; models trained only for the")
            print("steps above (speed, not quality); guidance 3.0 runs the UNet on twice the batch")
            print("| model | sampler | steps | images/s, guidance off | images/s, guidance 3.0 |")
            print("|---|---|---:|---:|---:|")
            diffusion = generation["shapes-diffusion"]
            for off, on in zip(diffusion[::2], diffusion[1::2]):
                print(
                    f"| shapes-diffusion | {off['sampler']} | {off['steps']} | {off['images_per_s']:,.1f} | "
                    f"{on['images_per_s']:,.1f} |"
                )
            gan = generation["shapes-gan"][0]
            print(f"| shapes-gan | one forward | 1 | {gan['images_per_s']:,.1f} | - |")
            print_prompt_batching(batching)
    load = os.getloadavg()
    results["load_average_end"] = load
    wall = time.perf_counter() - started
    print(f"\nload average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; wall {wall:.0f} s")
    if args.json:
        write_atomic(args.json, json.dumps(results, indent=1))


def print_prompt_batching(rows: list[dict[str, Any]]) -> None:
    first = rows[0]
    print(f"prompt batching: Model.generate on {first['prompts']} prompts, one image each, DDIM {first['steps']} steps")
    print("| calls | images/s, guidance off | images/s, guidance 3.0 |")
    print("|---|---:|---:|")
    by_calls: dict[str, dict[float, float]] = {}
    for row in rows:
        by_calls.setdefault(row["calls"], {})[row["guidance"]] = row["images_per_s"]
    for calls, rates in by_calls.items():
        print(f"| {calls} | {rates[1.0]:,.2f} | {rates[GUIDANCE_ON]:,.2f} |")


if __name__ == "__main__":
    main()
