"""AdamW step time: torch's per-tensor loop (its CPU default), foreach, and the fused kernel the trainer uses.

Times ``optimizer.step()`` alone over the trainable parameters of real presets (gradients filled with noise),
so the figure is what each training step pays for the update. Run::

    .venv/bin/python benchmarks/optimizer_step.py [--steps 50]
"""

from __future__ import annotations

import argparse
import time

import torch

from polymodal.hardware import machine_header
from polymodal.models import build_preset

MODELS = {
    "shapes-clip (ViT + text transformer)": ("shapes-clip", {}),
    "shapes-fusion, FiLM (ViT + text transformer)": ("shapes-fusion", {"fusion": "film"}),
    "shapes-caption": ("shapes-caption", {}),
}
VARIANTS = {
    "per-tensor loop (CPU default)": {"foreach": False},
    "foreach": {"foreach": True},
    "fused (the trainer)": {"fused": True},
}


def time_step(params: list[torch.nn.Parameter], steps: int, **options: bool) -> float:
    """Milliseconds per AdamW step."""
    optimizer = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.05, **options)
    for _ in range(5):  # state allocation and warm-up
        optimizer.step()
    start = time.perf_counter()
    for _ in range(steps):
        optimizer.step()
    return (time.perf_counter() - start) / steps * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()
    print(machine_header(precisions=["fp32"]))  # CPU, flags, threads and the fp32 matmul peak beside the figures
    torch.manual_seed(0)
    print("| model | tensors | parameters | " + " | ".join(f"{v} (ms)" for v in VARIANTS) + " | fused speed-up |")
    print("|---|---:|---:|" + "---:|" * (len(VARIANTS) + 1))
    for label, (preset, params) in MODELS.items():
        model = build_preset(preset, vocab_size=1000, **params)
        trainable = [p for p in model.parameters() if p.requires_grad]
        for p in trainable:
            p.grad = torch.randn_like(p)
        ms = {v: time_step(trainable, args.steps, **options) for v, options in VARIANTS.items()}
        speedup = ms["per-tensor loop (CPU default)"] / ms["fused (the trainer)"]
        print(
            f"| {label} | {len(trainable)} | {sum(p.numel() for p in trainable):,} | "
            + " | ".join(f"{ms[v]:.2f}" for v in VARIANTS)
            + f" | {speedup:.1f}x |"
        )


if __name__ == "__main__":
    main()
