"""Forward+backward throughput and model FLOP utilisation (MFU) of the small presets.

MFU = (model FLOPs per training step, counted by torch's FlopCounterMode) x steps/s, divided by this
machine's matmul peak in the precision the step ran in, measured in the same run (printed with the CPU flags).
``--precisions auto`` (the default) runs what ``train.precision: auto`` would pick here; bf16 on a CPU without
native bf16 is about 100x slower: ask for it by name.

    .venv/bin/python benchmarks/model_throughput.py [--batch 64] [--steps 5] [--threads 2] [--precisions fp32,bf16]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from polymodal.hardware import choose_precision, machine_header, matmul_peaks
from polymodal.models import PRESETS, Captioner, ComposedModel, build_preset


def precisions_to_run(value: str) -> list[str]:
    """``auto`` (what training would pick on this machine), or names such as ``fp32,bf16``."""
    return [choose_precision(name.strip(), "cpu").precision for name in value.split(",") if name.strip()]


def step_fn(model: ComposedModel, batch: int, vocab: int, image_size: int, precision: str):  # type: ignore[no-untyped-def]
    images = torch.randn(batch, 3, image_size, image_size)
    ids = torch.randint(4, vocab, (batch, 16))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            if isinstance(model, Captioner):  # the caption is the decoder's input (teacher forcing)
                out = model({model.source: (images, None)}, ids)["logits"]
            else:
                out = model({"image": (images, None), "text": (ids, None)})
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
    parser.add_argument("--precisions", default="auto", help="auto, or a list such as fp32,bf16")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    precisions = precisions_to_run(args.precisions)
    peaks = matmul_peaks()
    print(machine_header(peaks))
    print(f"{'preset':16} {'params':>8} {'precision':>9} {'samples/s':>10} {'GFLOP/step':>11} {'MFU':>6}")
    for name in PRESETS.names():
        for precision in precisions:
            model = build_preset(name, vocab_size=512, image_size=args.image_size)
            step = step_fn(model, args.batch, 512, args.image_size, precision)
            with FlopCounterMode(display=False) as counter:
                step()
            flops = counter.get_total_flops()
            step()  # warm-up
            start = time.perf_counter()
            for _ in range(args.steps):
                step()
            seconds = (time.perf_counter() - start) / args.steps
            params = sum(p.numel() for p in model.parameters()) / 1e6
            mfu = flops / seconds / (peaks[precision] * 1e9)  # against the peak of the precision this step ran in
            print(
                f"{name:16} {params:7.2f}M {precision:>9} {args.batch / seconds:10.1f} {flops / 1e9:11.2f} {mfu:6.1%}"
            )


if __name__ == "__main__":
    main()
