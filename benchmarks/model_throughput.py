"""Forward+backward throughput and model FLOP utilisation (MFU) of the small presets.

MFU = (model FLOPs per training step, counted by torch's FlopCounterMode) x steps/s, divided
by this machine's measured matmul peak on 2 threads (fp32 ~147 GFLOP/s, bf16 ~379 GFLOP/s,
see DESIGN.md). The peak is re-measured here too, so the ratio is honest on another machine.

    .venv/bin/python benchmarks/model_throughput.py [--batch 64] [--steps 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from polymodal.models import PRESETS, build_preset


def matmul_peak(dtype: torch.dtype, n: int = 2048, reps: int = 5) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - start)


def step_fn(name: str, model: torch.nn.Module, batch: int, vocab: int, image_size: int, precision: str):  # type: ignore[no-untyped-def]
    images = torch.randn(batch, 3, image_size, image_size)
    ids = torch.randint(4, vocab, (batch, 16))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            if name == "shapes-fusion":
                out = model({"image": (images, None), "text": (ids, None)})
            else:
                out = model(images, ids)
            values = [out] if isinstance(out, torch.Tensor) else list(out.values())
            loss = sum(v.float().square().mean() for v in values)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    print(f"measured matmul peak ({args.threads} threads): fp32 {peaks['fp32'] / 1e9:.0f} GFLOP/s, bf16 {peaks['bf16'] / 1e9:.0f} GFLOP/s")
    print(f"{'preset':16} {'params':>8} {'precision':>9} {'samples/s':>10} {'GFLOP/step':>11} {'MFU':>6}")
    for name in PRESETS.names():
        for precision in ("fp32", "bf16"):
            model = build_preset(name, vocab_size=512, image_size=args.image_size)
            step = step_fn(name, model, args.batch, 512, args.image_size, precision)
            with FlopCounterMode(display=False) as counter:
                step()
            flops = counter.get_total_flops()
            step()  # warm-up
            start = time.perf_counter()
            for _ in range(args.steps):
                step()
            seconds = (time.perf_counter() - start) / args.steps
            params = sum(p.numel() for p in model.parameters()) / 1e6
            mfu = flops / seconds / peaks[precision]
            print(f"{name:16} {params:7.2f}M {precision:>9} {args.batch / seconds:10.1f} {flops / 1e9:11.2f} {mfu:6.1%}")


if __name__ == "__main__":
    main()
