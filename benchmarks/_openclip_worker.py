"""One timed training run, printed as a JSON line; the open_clip side of train_vs_openclip.py.

This file runs inside ``.venv-openclip`` (torch 2.14.1 + open_clip, see openclip_env.sh), so
it imports only torch at module level: ``train_vs_openclip.py`` imports the shared helpers
below (``load_batches``, ``time_training``, ``profile_steps``) for the polymodal side, so
both sides are timed by the same code. open_clip itself is imported inside ``build_openclip``.

The open_clip step is the body of ``open_clip_train.train.train_one_epoch``: autocast forward,
``ClipLoss`` on the model's ``logit_scale``, backward, AdamW step, then clamping
``logit_scale`` to log(100) as the open_clip trainer does after every step. AdamW groups follow
``open_clip_train/main.py``: no weight decay for params with ndim < 2, ``bn``/``ln``/``bias``
names and ``logit_scale``.

    .venv-openclip/bin/python benchmarks/_openclip_worker.py --batches FILE --arch JSON \
        --precision bf16 --warmup 3 --threads 2 [--lr 1e-3] [--profile]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

# (images (B, 3, H, W), token ids (B, T), mask (B, T) True = real token) -> loss
StepFn = Callable[[Tensor, Tensor, Tensor], Tensor]

# ----------------------------------------------------------------- shared by both sides


def load_batches(path: str) -> dict[str, Any]:
    """The synthetic batches train_vs_openclip.py saved: ``images`` (S, B, 3, H, W) float,
    ``ids`` (S, B, T) long, ``mask`` (S, B, T) bool, plus ``meta``."""
    return torch.load(path, weights_only=True)


def autocast(precision: str) -> torch.autocast:
    """bf16 autocast on CPU, as both trainers use it (Accelerate / open_clip ``amp_bf16``)."""
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")


def time_training(step: StepFn, batches: dict[str, Any], warmup: int) -> dict[str, Any]:
    """Run one training step per saved batch; the first ``warmup`` steps are not timed.

    The first warm-up step runs under ``FlopCounterMode`` to count the model FLOPs of one
    forward + backward (the optimizer's elementwise work is not counted, as usual for MFU).
    Every step reads its loss with ``float()``, as both trainers do for logging.
    """
    images, ids, mask = batches["images"], batches["ids"], batches["mask"]
    total = images.size(0)
    if not 0 < warmup < total:
        raise ValueError(f"warmup={warmup} must be between 1 and the number of batches - 1 ({total - 1})")
    losses: list[float] = []
    wall: list[float] = []
    cpu: list[float] = []
    flops = 0
    for i in range(total):
        start, start_cpu = time.perf_counter(), time.process_time()
        if i == 0:
            with FlopCounterMode(display=False) as counter:
                loss = step(images[i], ids[i], mask[i])
            flops = counter.get_total_flops()
        else:
            loss = step(images[i], ids[i], mask[i])
        losses.append(float(loss))
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    timed = step_times(wall[warmup:], images.size(1), cpu[warmup:])
    return {"flops_per_step": flops, **timed, "first_loss": losses[0], "last_loss": losses[-1]}


def step_times(seconds: list[float], batch_size: int, cpu_seconds: list[float] | None = None) -> dict[str, Any]:
    """Per-step wall times in ms, their median, and samples/s at the median step time (robust
    to the multi-second stalls a shared machine adds now and then; the mean is kept too).

    ``cpu_seconds``: the process CPU time (all threads) of each step. Waiting for a core
    that another job holds costs wall time but no CPU time, so on a loaded machine CPU time
    per step compares the two sides' work more fairly than wall time.
    """
    median = statistics.median(seconds)
    return {
        "step_ms": [round(t * 1e3, 3) for t in seconds],
        "ms_per_step": median * 1e3,
        "samples_per_s": batch_size / median,
        "mean_samples_per_s": batch_size * len(seconds) / sum(seconds),
        "cpu_ms": [round(t * 1e3, 3) for t in cpu_seconds] if cpu_seconds is not None else None,
    }


def profile_steps(step: StepFn, batches: dict[str, Any], steps: int = 3, rows: int = 20) -> str:
    """torch.profiler table of the ops that take the most self CPU time over ``steps`` steps."""
    from torch.profiler import ProfilerActivity, profile

    images, ids, mask = batches["images"], batches["ids"], batches["mask"]
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for i in range(steps):
            float(step(images[i], ids[i], mask[i]))
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def count_params(groups: dict[str, list[nn.Parameter]]) -> dict[str, int]:
    """Parameter counts per named group, plus ``total``."""
    counts = {name: sum(p.numel() for p in params) for name, params in groups.items()}
    counts["total"] = sum(counts.values())
    return counts


def emit(result: dict[str, Any]) -> None:
    """The worker's answer: one JSON line, last on stdout."""
    print(json.dumps(result), flush=True)


def worker_args(description: str) -> argparse.ArgumentParser:
    """Command-line options every worker takes (both sides must be timed alike)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--batches", required=True, help="file written by train_vs_openclip.py")
    parser.add_argument("--arch", required=True, help="JSON: sizes of the shapes-clip architecture")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--profile", action="store_true", help="also return a torch.profiler table")
    return parser


# ----------------------------------------------------------------- open_clip side


def build_openclip(arch: dict[str, int]) -> nn.Module:
    """open_clip's CLIP with the sizes of polymodal's shapes-clip (default GELU, no QuickGELU)."""
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    vision = CLIPVisionCfg(
        layers=arch["vision_layers"],
        width=arch["vision_width"],
        head_width=arch["vision_width"] // arch["vision_heads"],
        patch_size=arch["patch_size"],
        image_size=arch["image_size"],
    )
    text = CLIPTextCfg(
        context_length=arch["context_length"],
        vocab_size=arch["vocab_size"],
        width=arch["text_width"],
        heads=arch["text_heads"],
        layers=arch["text_layers"],
    )
    return CLIP(arch["embed_dim"], vision, text, output_dict=True)


def openclip_step(model: nn.Module, lr: float, weight_decay: float, precision: str) -> StepFn:
    from open_clip.loss import ClipLoss

    loss_fn = ClipLoss()
    named = list(model.named_parameters())

    def exclude(n: str, p: nn.Parameter) -> bool:  # open_clip_train/main.py
        return p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or "logit_scale" in n

    optimizer = torch.optim.AdamW(
        [
            {"params": [p for n, p in named if exclude(n, p)], "weight_decay": 0.0},
            {"params": [p for n, p in named if not exclude(n, p)], "weight_decay": weight_decay},
        ],
        lr=lr,
        betas=(0.9, 0.98),
    )

    def step(images: Tensor, ids: Tensor, mask: Tensor) -> Tensor:
        # open_clip takes no padding mask: its text tower is causal and pools the argmax
        # token (the EOS id, the largest in the vocabulary), so padding never reaches it.
        with autocast(precision):
            out = model(images, ids)
            loss = loss_fn(out["image_features"], out["text_features"], out["logit_scale"])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        return loss

    return step


def main() -> None:
    args = worker_args(__doc__.splitlines()[0]).parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    import open_clip

    arch = json.loads(args.arch)
    batches = load_batches(args.batches)
    model = build_openclip(arch).train()
    params = count_params(
        {
            "vision": [p for n, p in model.named_parameters() if n.startswith("visual.")],
            "text": [p for n, p in model.named_parameters() if not n.startswith("visual.") and n != "logit_scale"],
            "temperature": [model.logit_scale],
        }
    )
    step = openclip_step(model, args.lr, args.weight_decay, args.precision)
    result = time_training(step, batches, args.warmup)
    if args.profile:
        result["profile"] = profile_steps(step, batches)
    emit(
        {
            "side": "open_clip",
            "versions": f"torch {torch.__version__}, open_clip {open_clip.__version__}",
            "precision": args.precision,
            "threads": torch.get_num_threads(),
            "params": params,
            **result,
        }
    )


if __name__ == "__main__":
    sys.exit(main())
