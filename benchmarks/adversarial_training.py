"""Adversarial training (``objective.adversarial_examples``) against standard training, under attack.

Two statement classifiers (``shapes-fusion``: is this statement true of this image?) are trained for the same steps
on ShapesWorld, one on clean images and one on images moved by PGD within ``--train-epsilon`` of each pixel. Each is
then scored on the test split's statements, clean and under a PGD attack (``--attack-steps`` steps, a random start)
on the images at each ``--epsilons`` value: the attack moves every pixel by at most epsilon (of its [0, 1] range)
in the direction that most raises the classifier's loss on the true answer. Accuracy has a 95% bootstrap interval
(the statements about one image resampled together).

Run: ``.venv/bin/python benchmarks/adversarial_training.py [--n 2000] [--steps 600] [--data DIR] [--out FILE]``
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from polymodal.data.shapes import generate_shapesworld, is_complete, load_split
from polymodal.evaluate.scoring import grouped_bootstrap_ci
from polymodal.fsutil import write_atomic
from polymodal.hardware import ThreadBudget, choose_precision, describe_record, machine_header, machine_record
from polymodal.models import SavedModel, find_model_dir
from polymodal.modules.attacks import pgd_images
from polymodal.train.recipe import load_recipe
from polymodal.train.run import run_recipe

BATCH = 64
RESAMPLES = 1000


def train(data: Path, run_dir: Path, args: argparse.Namespace, epsilon: float | None) -> dict[str, Any]:
    overrides = [
        f"data.path={data}",
        f"model.params.fusion={args.fusion}",
        f"train.steps={args.steps}",
        f"train.eval_every={args.steps}",
        "train.tensorboard=false",
    ]
    if epsilon is not None:
        overrides.append(f"objective.adversarial_examples={{epsilon: {epsilon}, steps: {args.train_attack_steps}}}")
    started = time.perf_counter()
    result = run_recipe(load_recipe("shapes-fusion", overrides), run_dir, progress=False)
    return {"seconds": time.perf_counter() - started, "steps": result.step, "machine": result.machine}


def statements(data: Path, split: str) -> tuple[list[str], list[str], list[int], list[int]]:
    """Per statement of the split: its image, its text, its label (1: true) and its image's index."""
    images, texts, labels, owners = [], [], [], []
    for i, row in enumerate(load_split(data, split)):
        for s in row["statements"]:
            images.append(str(data / row["image"]))
            texts.append(s["text"])
            labels.append(int(bool(s["label"])))
            owners.append(i)
    return images, texts, labels, owners


def accuracy_under_attack(
    saved: SavedModel, items: tuple[list[str], list[str], list[int], list[int]], epsilon: float, steps: int
) -> dict[str, Any]:
    images, texts, labels, owners = items
    preprocess = saved.processors["image"].preprocess
    hits = []
    generator = torch.Generator().manual_seed(0)
    for start in range(0, len(texts), BATCH):
        part = slice(start, start + BATCH)
        inputs = {"image": saved.inputs("image", images[part]), "text": saved.inputs("text", texts[part])}
        target = torch.tensor(labels[part])
        if epsilon > 0:
            mask = inputs["image"][1]

            def loss_of(x: torch.Tensor, inputs: dict = inputs, mask: Any = mask, target: Any = target) -> torch.Tensor:
                return F.cross_entropy(saved.model({**inputs, "image": (x, mask)}), target)

            moved = pgd_images(
                loss_of,
                inputs["image"][0],
                epsilon=epsilon,
                steps=steps,
                mean=preprocess.mean,
                std=preprocess.std,
                generator=generator,
            )
            inputs["image"] = (moved, mask)
        with torch.inference_mode():
            hits.extend((saved.model(inputs).argmax(-1) == target).tolist())
    correct = np.asarray(hits, dtype=np.float64)
    low, high = grouped_bootstrap_ci(correct, owners, n_resamples=RESAMPLES, seed=0)
    return {"accuracy": float(correct.mean()), "ci95": [low, high], "statements": len(correct)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000, help="ShapesWorld scenes (80%% train, 10%% val, 10%% test)")
    parser.add_argument("--steps", type=int, default=600, help="training steps of each model")
    parser.add_argument("--fusion", default="film", help="the statement classifier's fusion (model.params.fusion)")
    parser.add_argument("--train-epsilon", type=float, default=4 / 255, help="adversarial training's epsilon")
    parser.add_argument("--train-attack-steps", type=int, default=3, help="PGD steps per training batch")
    parser.add_argument("--epsilons", default="0,0.00392,0.00784,0.0157,0.0314", help="attack radii (of [0, 1])")
    parser.add_argument("--attack-steps", type=int, default=10, help="PGD steps of the evaluation attack")
    parser.add_argument("--threads", type=int, help="torch threads (default: POLYMODAL_THREADS)")
    parser.add_argument("--data", type=Path, help="ShapesWorld folder to reuse, or to generate and keep")
    parser.add_argument("--out", type=Path, help="also write every figure and the machine here (JSON)")
    args = parser.parse_args()
    budget = ThreadBudget(fixed=args.threads)
    torch.manual_seed(0)
    print(machine_header())
    machine = machine_record(choose_precision("fp32", "cpu"), budget.choice)
    print(f"{describe_record(machine)} (the attacks); training in the recipe's precision (auto)")
    epsilons = [float(e) for e in args.epsilons.split(",")]
    results: dict[str, Any] = {"machine": machine, "args": {k: str(v) for k, v in vars(args).items()}, "models": {}}
    with tempfile.TemporaryDirectory(prefix="polymodal-adversarial-") as tmp:
        data = args.data or Path(tmp) / "shapes"
        if not is_complete(data, args.n, 0, 64):
            generate_shapesworld(data, args.n, seed=0, image_size=64, workers=2, progress=False)
        test = statements(data, "test")
        for name, epsilon in (("standard", None), ("adversarial", args.train_epsilon)):
            trained = train(data, Path(tmp) / name, args, epsilon)
            saved = SavedModel.load(find_model_dir(Path(tmp) / name))
            started = time.perf_counter()
            scores = {str(e): accuracy_under_attack(saved, test, e, args.attack_steps) for e in epsilons}
            results["models"][name] = {**trained, "eval_seconds": time.perf_counter() - started, "accuracy": scores}
            took = f"{trained['steps']} steps in {trained['seconds']:.0f} s"
            print(f"{name}: trained {took} ({describe_record(trained['machine'])})")
    print(f"\n### test statements ({len(test[2])}), accuracy (95% CI) under PGD-{args.attack_steps} on the images")
    trained_on = f"epsilon {args.train_epsilon:.4f}, PGD-{args.train_attack_steps}"
    print(f"| epsilon (of [0, 1]) | standard training | adversarial training ({trained_on}) |")
    print("|---|---:|---:|")
    for e in epsilons:
        cells = []
        for name in ("standard", "adversarial"):
            a = results["models"][name]["accuracy"][str(e)]
            cells.append(f"{a['accuracy']:.3f} ({a['ci95'][0]:.3f}-{a['ci95'][1]:.3f})")
        label = "clean" if e == 0 else f"{e:.4f} ({e * 255:.0f}/255)"
        print(f"| {label} | {cells[0]} | {cells[1]} |")
    if args.out:
        write_atomic(args.out, json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
