"""Adversarial training (``objective.adversarial_examples``) against standard training, under attack.

Two CLIP models (``shapes-clip``: a ViT and a text transformer from scratch, InfoNCE with hard negatives) are trained
for the same steps on ShapesWorld, one on clean images and one on images moved by PGD within ``--train-epsilon`` of
each pixel. Each then classifies the test split's one-object scenes zero-shot (64 colour-shape prompts, ShapesWorld's
templates), clean and under ``polymodal eval --adversarial``'s PGD attack on the images (``--attack-steps`` steps
from a random start) at each ``--epsilons`` radius: every pixel moves by at most epsilon (of its [0, 1] range) in
the direction that most raises the cross-entropy of the true class. From scratch these models learn colour, not
shape, in a short run (see docs/training.md), so colour accuracy (the predicted class has the scene's colour) is the
figure; colour-shape is printed too. Accuracy has a 95% bootstrap interval.

``--models standard,finetuned`` adds (or keeps only) the standard model fine-tuned on PGD examples for
``--finetune-steps`` at a tenth of the learning rate: robust fine-tuning of a trained model, the usual practice for
pretrained towers.

Run: ``.venv/bin/python benchmarks/adversarial_training.py [--n 6000] [--steps 400] [--models M,M] [--data DIR]
[--out FILE]``
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

from polymodal.data.shapes import COLORS, SHAPES, generate_shapesworld, is_complete, load_split
from polymodal.evaluate.context import Attack, EvalContext
from polymodal.evaluate.prompts import SHAPES_TEMPLATES, zero_shot_classifier
from polymodal.fsutil import write_atomic
from polymodal.hardware import ThreadBudget, choose_precision, describe_record, machine_header, machine_record
from polymodal.metrics.bootstrap import bootstrap_ci
from polymodal.models import find_model_dir
from polymodal.train.recipe import load_recipe
from polymodal.train.run import run_recipe

BATCH = 64
RESAMPLES = 1000


def train(
    data: Path, run_dir: Path, args: argparse.Namespace, epsilon: float | None, init_from: Path | None = None
) -> dict[str, Any]:
    """A shapes-clip run: from scratch for ``--steps``, or fine-tuned from ``init_from`` for ``--finetune-steps``
    (at a tenth of the learning rate); with ``epsilon``, on PGD examples."""
    steps = args.steps if init_from is None else args.finetune_steps
    overrides = [f"data.path={data}", f"train.steps={steps}", f"train.eval_every={steps}"]
    overrides.append("train.tensorboard=false")
    if init_from is not None:
        overrides += [f"model.init_from={init_from}", "train.lr=5.0e-5", f"train.warmup_steps={max(1, steps // 10)}"]
    if epsilon is not None:
        attack = f"epsilon: {epsilon}, steps: {args.train_attack_steps}, clean_weight: {args.clean_weight}"
        overrides.append(f"objective.adversarial_examples={{{attack}}}")
    started = time.perf_counter()
    result = run_recipe(load_recipe("shapes-clip", overrides), run_dir, progress=False)
    return {"seconds": time.perf_counter() - started, "steps": result.step, "machine": result.machine}


CLASSES = [f"{c} {s}" for c in COLORS for s in SHAPES]


def scenes(data: Path, split: str) -> tuple[list[str], list[int]]:
    """The split's one-object scenes: image paths and colour-shape class indices."""
    rows = [r for r in load_split(data, split) if len(r["objects"]) == 1]
    return [str(data / r["image"]) for r in rows], [CLASSES.index(r["label"]["color_shape"]) for r in rows]


def accuracy_under_attack(
    ctx: EvalContext, classes: torch.Tensor, images: list[str], labels: list[int], epsilon: float, steps: int
) -> dict[str, Any]:
    """Zero-shot colour and colour-shape accuracy (95% CIs) of the scenes moved by ``polymodal eval --adversarial``'s
    attack at ``epsilon`` (clean at 0) among the (C, D) ``classes``."""
    if epsilon > 0:
        embedded = ctx.embed_attacked(images, labels, classes, Attack(epsilon, steps))
    else:
        embedded = ctx.embed_media("image", images)
    y, p, n = np.asarray(labels), (embedded @ classes.T).argmax(-1).numpy(), len(SHAPES)
    out = {"scenes": len(y)}
    for name, hits in (("colour", y // n == p // n), ("colour_shape", y == p)):
        low, high = bootstrap_ci(hits.astype(np.float64), n_resamples=RESAMPLES, seed=0)
        out[name] = {"accuracy": float(hits.mean()), "ci95": [low, high]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=6000, help="ShapesWorld scenes (80%% train, 10%% val, 10%% test)")
    parser.add_argument("--steps", type=int, default=400, help="training steps of each model")
    parser.add_argument("--train-epsilon", type=float, default=4 / 255, help="adversarial training's epsilon")
    parser.add_argument("--train-attack-steps", type=int, default=2, help="PGD steps per training batch")
    parser.add_argument("--clean-weight", type=float, default=1.0, help="weight of the clean images' loss")
    parser.add_argument(
        "--models",
        default="standard,adversarial",
        help="which of standard, adversarial (from scratch), finetuned (the standard model fine-tuned adversarially)",
    )
    parser.add_argument("--finetune-steps", type=int, default=200, help="adversarial fine-tuning steps (finetuned)")
    parser.add_argument("--epsilons", default="0,0.00784,0.0157,0.0314,0.0627", help="attack radii (of [0, 1])")
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
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if set(models) - {"standard", "adversarial", "finetuned"} or ("finetuned" in models and "standard" not in models):
        parser.error(f"--models {args.models}: choose from standard, adversarial, finetuned (finetuned needs standard)")
    results: dict[str, Any] = {"machine": machine, "args": {k: str(v) for k, v in vars(args).items()}, "models": {}}
    with tempfile.TemporaryDirectory(prefix="polymodal-adversarial-") as tmp:
        data = args.data or Path(tmp) / "shapes"
        if not is_complete(data, args.n, 0, 64):
            generate_shapesworld(data, args.n, seed=0, image_size=64, workers=2, progress=False)
        images, labels = scenes(data, "test")
        for name in [m for m in ("standard", "adversarial", "finetuned") if m in models]:  # finetuned after standard
            epsilon = None if name == "standard" else args.train_epsilon
            init_from = find_model_dir(Path(tmp) / "standard") if name == "finetuned" else None
            trained = train(data, Path(tmp) / name, args, epsilon, init_from)
            ctx = EvalContext(model=str(find_model_dir(Path(tmp) / name)), batch_size=BATCH)
            started = time.perf_counter()
            classes = zero_shot_classifier(ctx.embed_texts, CLASSES, SHAPES_TEMPLATES)
            scores = {
                str(e): accuracy_under_attack(ctx, classes, images, labels, e, args.attack_steps) for e in epsilons
            }
            results["models"][name] = {**trained, "eval_seconds": time.perf_counter() - started, "accuracy": scores}
            took = f"{trained['steps']} steps in {trained['seconds']:.0f} s"
            print(f"{name}: trained {took} ({describe_record(trained['machine'])})")
    trained_on = f"epsilon {args.train_epsilon:.4f}, PGD-{args.train_attack_steps}, clean weight {args.clean_weight:g}"
    headers = {
        "standard": f"standard ({args.steps} steps)",
        "adversarial": f"adversarial ({args.steps} steps)",
        "finetuned": f"standard + {args.finetune_steps} adversarial steps",
    }
    print(f"\n### {len(labels)} one-object test scenes, zero-shot accuracy (95% CI) under PGD-{args.attack_steps}")
    print(f"adversarial examples in training: {trained_on}")
    print(f"| epsilon (of [0, 1]) | figure | {' | '.join(headers[m] for m in models)} |")
    print("|---|---|" + "---:|" * len(models))
    for e in epsilons:
        label = "clean" if e == 0 else f"{e:.4f} ({e * 255:.0f}/255)"
        for figure in ("colour", "colour_shape"):
            cells = []
            for name in models:
                a = results["models"][name]["accuracy"][str(e)][figure]
                cells.append(f"{a['accuracy']:.3f} ({a['ci95'][0]:.3f}-{a['ci95'][1]:.3f})")
            print(f"| {label} | {figure.replace('_', '-')} | {' | '.join(cells)} |")
    if args.out:
        write_atomic(args.out, json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
