"""Training speed of polymodal's shapes-clip against open_clip's CLIP of the same size.

Both sides train on the same synthetic batches (saved once to a file both read), with AdamW
at the same lr / betas / weight decay, in fp32 and (where the CPU runs bf16 natively, or when asked with
``--precisions``) in bf16 autocast, 2 threads each. Each
run is a fresh process: the polymodal side in this environment (torch 2.13.0 CPU), the
open_clip side in ``.venv-openclip`` (torch 2.14.1 + open_clip_torch, created by
``benchmarks/openclip_env.sh``; open_clip never enters the main .venv). Runs alternate
(polymodal, open_clip, polymodal, open_clip, ...) and the summary takes the median over
rounds, so load from other jobs on a shared machine hits both sides alike.

What is timed, per side (warm-up steps excluded):

* ``polymodal``: the body of ``Trainer.fit`` on a real ``Trainer`` (its Accelerate autocast,
  its AdamW parameter groups and LR schedule): ``ContrastiveObjective`` forward, backward, step.
* ``open_clip``: the body of ``open_clip_train``'s ``train_one_epoch``: ``CLIP`` forward,
  ``ClipLoss``, backward, AdamW step, ``logit_scale`` clamp (see ``_openclip_worker.py``).
* ``polymodal Trainer.fit`` (``--trainer``): the whole loop, DataLoader over the same tensors,
  logging and scheduler; timed between the ends of consecutive optimizer steps.

MFU = FLOPs of one forward+backward (``FlopCounterMode``) / measured step time / the matmul peak of
the precision the step ran in (``polymodal.hardware.matmul_peaks``, best of one measurement per round, of the
precisions run only; the peaks and the CPU flags are printed with the figures).

    bash benchmarks/openclip_env.sh      # once
    .venv/bin/python benchmarks/train_vs_openclip.py [--rounds 2] [--steps 20] [--trainer] [--profile]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # benchmarks/ is no package: import the sibling scripts' helpers

from _openclip_worker import (  # noqa: E402
    StepFn,
    count_params,
    emit,
    load_batches,
    profile_steps,
    step_times,
    time_training,
    worker_args,
)
from polymodal.data.collate import Batch  # noqa: E402
from polymodal.hardware import bf16_native, machine_header, matmul_peaks  # noqa: E402
from polymodal.models import PRESETS, EmbeddingModel, build_model  # noqa: E402
from polymodal.models.config import EmbeddingConfig  # noqa: E402
from polymodal.train.config import TrainConfig  # noqa: E402
from polymodal.train.objectives import ContrastiveObjective  # noqa: E402
from polymodal.train.trainer import Trainer  # noqa: E402

PRESET = "shapes-clip"
DEFAULT_OPENCLIP_PYTHON = HERE.parent / ".venv-openclip" / "bin" / "python"

# ----------------------------------------------------------------- architecture and data


def preset_config(vocab_size: int, image_size: int, text_length: int, stem: str = "patch") -> EmbeddingConfig:
    config = PRESETS.build(PRESET, vocab_size=vocab_size, image_size=image_size, max_length=text_length)
    # open_clip's ViT embeds patches with one strided convolution: by default compare like with like. The preset's
    # convolutional stem (``--stem conv``: what shapes-clip.yaml trains) costs ~20% more FLOPs and has no open_clip
    # counterpart.
    config.encoders["image"].params["stem"] = stem
    return config


def arch_of(config: EmbeddingConfig) -> dict[str, int]:
    """The sizes open_clip's CLIPVisionCfg / CLIPTextCfg need, read off the preset so the
    two sides cannot drift apart."""
    vision, text = config.encoders["image"].params, config.encoders["text"].params
    return {
        "image_size": vision["image_size"],
        "patch_size": vision["patch_size"],
        "vision_width": vision["width"],
        "vision_layers": vision["depth"],
        "vision_heads": vision["heads"],
        "vocab_size": text["vocab_size"],
        "context_length": text["max_length"],
        "text_width": text["width"],
        "text_layers": text["depth"],
        "text_heads": text["heads"],
        "embed_dim": config.embed_dim,
    }


def make_batches(path: Path, count: int, batch: int, arch: dict[str, int], min_length: int, seed: int) -> None:
    """``count`` seeded batches: images in [-1, 1] (normalised pixels), captions of random
    length in [min_length, T] padded with 0 to T, each ending in the EOS id ``vocab - 1``.

    EOS is the largest id so that open_clip's argmax pooling and polymodal's "last real
    token" pooling read the same position.
    """
    g = torch.Generator().manual_seed(seed)
    size, length, vocab = arch["image_size"], arch["context_length"], arch["vocab_size"]
    images = torch.rand(count, batch, 3, size, size, generator=g) * 2 - 1  # (S, B, 3, H, W)
    ids = torch.randint(4, vocab - 1, (count, batch, length), generator=g)  # (S, B, T)
    lengths = torch.randint(min_length, length + 1, (count, batch, 1), generator=g)  # (S, B, 1)
    positions = torch.arange(length)  # (T,)
    mask = positions < lengths  # (S, B, T), True = real token
    ids = ids.masked_fill(positions == lengths - 1, vocab - 1).masked_fill(~mask, 0)
    meta = {"seed": seed, "batch": batch, **arch}
    torch.save({"images": images, "ids": ids, "mask": mask, "meta": meta}, path)


# ----------------------------------------------------------------- polymodal side (worker)


def image_text_batch(
    images: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor, names: list[str] | None = None
) -> Batch:
    """A batch in which every sample has both its image and its caption."""
    present = torch.ones(images.size(0), dtype=torch.bool)  # (B,)
    return Batch(
        ids=names or [],
        inputs={"image": (images, None), "text": (ids, mask)},
        present={"image": present, "text": present},
    )


class SavedRows(torch.utils.data.Dataset):
    """The saved batches as S*B rows, for ``Trainer.fit``; items are row indices and
    ``collate`` gathers them (the cheapest possible data pipeline)."""

    def __init__(self, batches: dict[str, Any]) -> None:
        self.batch = batches["images"].size(1)
        self.images = batches["images"].flatten(0, 1)  # (S*B, 3, H, W)
        self.ids = batches["ids"].flatten(0, 1)  # (S*B, T)
        self.mask = batches["mask"].flatten(0, 1)  # (S*B, T)

    def __len__(self) -> int:
        return self.images.size(0)

    def __getitem__(self, index: int) -> int:
        return index

    def collate(self, indices: list[int]) -> Batch:
        rows = torch.tensor(indices)
        return image_text_batch(self.images[rows], self.ids[rows], self.mask[rows], [str(i) for i in indices])


def polymodal_trainer(
    arch: dict[str, int],
    precision: str,
    lr: float,
    weight_decay: float,
    rows: SavedRows,
    run_dir: Path,
    stem: str = "patch",
) -> Trainer:
    """A real polymodal Trainer for shapes-clip over ``rows``, one pass of them; no grad
    clipping (open_clip's default) and no warm-up, so both optimizers do the same work."""
    model = build_model(preset_config(arch["vocab_size"], arch["image_size"], arch["context_length"], stem))
    train = TrainConfig(
        steps=len(rows) // rows.batch,
        batch_size=rows.batch,
        lr=lr,
        weight_decay=weight_decay,
        grad_clip=None,
        precision="bf16" if precision == "bf16" else "no",
    )
    return Trainer(model, ContrastiveObjective(), rows, train, run_dir, collate_fn=rows.collate, progress=False)


def polymodal_step(trainer: Trainer) -> StepFn:
    """The body of ``Trainer.fit`` for one micro-batch, without data loading and logging."""
    acc = trainer.accelerator

    def step(images: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        batch = image_text_batch(images, ids, mask)
        with acc.autocast():
            loss = trainer.wrapped(batch)["loss"]
        acc.backward(loss)
        trainer.optimizer.step()
        trainer.scheduler.step()
        trainer.optimizer.zero_grad(set_to_none=True)
        return loss

    return step


def time_trainer_fit(trainer: Trainer, batch: int, warmup: int) -> dict[str, Any]:
    """Run ``Trainer.fit`` and time each step from the end of one optimizer step to the end
    of the next (so data loading, logging and everything else the loop does is included)."""
    marks: list[tuple[float, float]] = []
    optimizer_step = trainer.optimizer.step

    def marked_step(*args: Any, **kwargs: Any) -> Any:
        out = optimizer_step(*args, **kwargs)
        marks.append((time.perf_counter(), time.process_time()))
        return out

    trainer.optimizer.step = marked_step  # type: ignore[method-assign]
    result = trainer.fit()
    wall = [b[0] - a[0] for a, b in zip(marks, marks[1:])][warmup - 1 :]
    cpu = [b[1] - a[1] for a, b in zip(marks, marks[1:])][warmup - 1 :]
    return {
        "flops_per_step": None,
        **step_times(wall, batch, cpu),
        "first_loss": None,
        "last_loss": result.last_losses.get("loss"),
    }


def polymodal_worker(argv: list[str]) -> None:
    parser = worker_args("polymodal side of train_vs_openclip.py")
    parser.add_argument("--trainer", action="store_true", help="time Trainer.fit instead of the bare step")
    parser.add_argument("--stem", choices=("patch", "conv"), default="patch")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    arch = json.loads(args.arch)
    batches = load_batches(args.batches)
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp)
        rows = SavedRows(batches)
        trainer = polymodal_trainer(arch, args.precision, args.lr, args.weight_decay, rows, run_dir, args.stem)
        model: EmbeddingModel = trainer.module.model  # type: ignore[assignment]
        params = count_params(
            {
                "vision": [*model.encoders["image"].parameters(), *model.projections["image"].parameters()],
                "text": [*model.encoders["text"].parameters(), *model.projections["text"].parameters()],
                "temperature": list(trainer.module.objective.parameters()),
            }
        )
        if args.trainer:
            result = time_trainer_fit(trainer, rows.batch, args.warmup)
        else:
            step = polymodal_step(trainer)
            result = time_training(step, batches, args.warmup)
            if args.profile:
                result["profile"] = profile_steps(step, batches)
    emit(
        {
            "side": "polymodal Trainer.fit" if args.trainer else "polymodal",
            "versions": f"torch {torch.__version__}",
            "precision": args.precision,
            "threads": torch.get_num_threads(),
            "params": params,
            **result,
        }
    )


# ----------------------------------------------------------------- orchestration


def run_worker(command: list[str], threads: int) -> dict[str, Any]:
    """Run one worker process and parse the JSON line it prints last."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"worker failed ({' '.join(command[:2])} ...):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def print_params(poly: dict[str, int], oc: dict[str, int]) -> None:
    print(f"\nparameters        {'polymodal':>10} {'open_clip':>10} {'diff':>7}")
    for key in ("vision", "text", "temperature", "total"):
        diff = (poly[key] - oc[key]) / oc[key]
        print(f"  {key:15} {poly[key]:10,} {oc[key]:10,} {diff:+7.2%}")


def _pooled_median(results: list[dict[str, Any]], key: str) -> float | None:
    values = [v for r in results for v in (r[key] or [])]
    return statistics.median(values) if values else None


def summarise(runs: list[dict[str, Any]], peaks: dict[str, float], precisions: list[str]) -> list[dict[str, Any]]:
    """Per (side, precision): the median step time over every timed step of every round, its
    samples/s and MFU, and the ratio to open_clip.

    The median, not the mean: on a shared machine a step now and then stalls for seconds
    while other jobs hold the cores, and the mean would mostly measure those stalls.
    """
    rows = []
    for precision in precisions:
        by_side: dict[str, list[dict[str, Any]]] = {}
        for r in runs:
            if r["precision"] == precision:
                by_side.setdefault(r["side"], []).append(r)
        flops = next(r["flops_per_step"] for r in by_side["polymodal"])
        medians = {side: _pooled_median(results, "step_ms") for side, results in by_side.items()}
        cpu = {side: _pooled_median(results, "cpu_ms") for side, results in by_side.items()}
        batch = runs[0]["batch"]
        for side, results in by_side.items():
            ms = medians[side]
            side_flops = results[0]["flops_per_step"] or flops  # Trainer.fit: the same model
            rows.append(
                {
                    "side": side,
                    "precision": precision,
                    "samples_per_s": batch / ms * 1e3,
                    "ms_per_step": ms,
                    "gflop_per_step": side_flops / 1e9,
                    "mfu": side_flops / (ms / 1e3) / peaks[precision],
                    "vs_open_clip": medians["open_clip"] / ms,
                    "steps": sum(len(r["step_ms"]) for r in results),
                    "cpu_ms_per_step": cpu[side],
                    "cpu_vs_open_clip": cpu["open_clip"] / cpu[side] if cpu[side] else None,
                }
            )
    return rows


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        return polymodal_worker(sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64, help="the recipe's batch size")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per run")
    parser.add_argument("--rounds", type=int, default=2, help="A/B rounds; the summary is their median")
    parser.add_argument(
        "--precisions",
        nargs="+",
        choices=("fp32", "bf16"),
        help="default: fp32, and bf16 where this CPU runs it natively (without, bf16 is ~100x slower)",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1e-3, help="the recipe's lr")
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--text-length", type=int, default=32, help="T: the recipe's max_length")
    parser.add_argument("--min-text-length", type=int, default=8)
    parser.add_argument("--vocab-size", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--trainer", action="store_true", help="also time polymodal's whole Trainer.fit loop")
    parser.add_argument("--profile", action="store_true", help="print a torch.profiler table per side (first round)")
    parser.add_argument("--openclip-python", type=Path, default=DEFAULT_OPENCLIP_PYTHON)
    parser.add_argument("--json", type=Path, help="also write every run and the summary here")
    parser.add_argument(
        "--stem",
        choices=("patch", "conv"),
        default="patch",
        help="polymodal's image stem: patch (like open_clip's) or conv (the shapes-clip recipe's)",
    )
    args = parser.parse_args()
    if not args.openclip_python.exists():
        raise SystemExit(f"{args.openclip_python} not found: create it with 'bash benchmarks/openclip_env.sh'")

    torch.set_num_threads(args.threads)
    precisions = args.precisions or (["fp32", "bf16"] if bf16_native("cpu") else ["fp32"])
    if "bf16" not in precisions and not args.precisions:
        print("bf16 skipped: this CPU has no native bf16 (ask for it with --precisions fp32 bf16)")
    peaks = dict.fromkeys(precisions, 0.0)
    arch = arch_of(preset_config(args.vocab_size, args.image_size, args.text_length))
    print(
        f"{PRESET}: {json.dumps(arch)}; batch {args.batch}, {args.warmup} warm-up + {args.steps} timed steps, "
        f"{args.threads} threads"
    )

    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        batches = Path(tmp) / "batches.pt"
        make_batches(batches, args.warmup + args.steps, args.batch, arch, args.min_text_length, args.seed)
        common = [
            "--batches",
            str(batches),
            "--arch",
            json.dumps(arch),
            "--warmup",
            str(args.warmup),
            "--threads",
            str(args.threads),
            "--lr",
            str(args.lr),
            "--weight-decay",
            str(args.weight_decay),
        ]
        commands = {
            "polymodal": [sys.executable, __file__, "--worker", *common, "--stem", args.stem],
            "open_clip": [str(args.openclip_python), str(HERE / "_openclip_worker.py"), *common],
        }
        if args.trainer:
            commands["polymodal Trainer.fit"] = [*commands["polymodal"], "--trainer"]
        print(
            f"\n{'round':>5} {'side':22} {'precision':9} {'samples/s':>10} {'ms/step':>8} "
            f"{'first/last loss':>16} {'load':>5}"
        )
        for round_ in range(args.rounds):
            # Re-measured every round and the highest kept: other jobs only ever lower it,
            # and a peak measured in a busy moment would inflate MFU past 100%.
            for name, gflops in matmul_peaks(precisions=precisions).items():
                peaks[name] = max(peaks[name], gflops * 1e9)
            for precision in precisions:
                for side, command in commands.items():
                    profile = ["--profile"] if args.profile and round_ == 0 and "Trainer" not in side else []
                    load = os.getloadavg()[0]  # other jobs on the machine, for the record
                    r = run_worker([*command, "--precision", precision, *profile], args.threads)
                    r["round"], r["load_before"], r["batch"] = round_ + 1, load, args.batch
                    runs.append(r)
                    first = "-" if r["first_loss"] is None else f"{r['first_loss']:.3f}"
                    print(
                        f"{round_ + 1:5} {r['side']:22} {precision:9} {r['samples_per_s']:10.1f} "
                        f"{r['ms_per_step']:8.1f} {first:>7} / {r['last_loss']:.3f} {load:5.1f}",
                        flush=True,
                    )
                    if "profile" in r:
                        print(f"\n--- torch.profiler, {r['side']} {precision} ({r['versions']}) ---\n{r['profile']}")

    print(f"\nmatmul peak: best of {args.rounds} measurements, {args.threads} threads")
    print(machine_header({name: value / 1e9 for name, value in peaks.items()}))
    first = {r["side"]: r for r in runs}
    print(
        f"\nversions: polymodal side {first['polymodal']['versions']}; open_clip side {first['open_clip']['versions']}"
    )
    print_params(first["polymodal"]["params"], first["open_clip"]["params"])
    summary = summarise(runs, peaks, precisions)
    print(f"\nmedian step time over all timed steps of {args.rounds} rounds")
    print(
        f"{'side':22} {'precision':9} {'samples/s':>10} {'ms/step':>8} {'GFLOP/step':>10} {'MFU':>6} "
        f"{'vs open_clip':>12} {'CPU ms/step':>11} {'CPU vs open_clip':>16}"
    )
    for row in summary:
        cpu_ms = "-" if row["cpu_ms_per_step"] is None else f"{row['cpu_ms_per_step']:.1f}"
        cpu_ratio = "-" if row["cpu_vs_open_clip"] is None else f"{row['cpu_vs_open_clip']:.2f}x"
        print(
            f"{row['side']:22} {row['precision']:9} {row['samples_per_s']:10.1f} {row['ms_per_step']:8.1f} "
            f"{row['gflop_per_step']:10.2f} {row['mfu']:6.1%} {row['vs_open_clip']:11.2f}x {cpu_ms:>11} {cpu_ratio:>16}"
        )
    print("vs open_clip: open_clip's median step time / this side's (above 1 = faster than open_clip)")
    if args.json:
        args.json.write_text(json.dumps({"peaks": peaks, "arch": arch, "runs": runs, "summary": summary}, indent=1))


if __name__ == "__main__":
    main()
