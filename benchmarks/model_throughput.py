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


# Audio inputs: ShapesWorld's scene sounds as the audio recipes see them (2 s, 64 log-mel bands, 20 ms hops).
AUDIO_BANDS, AUDIO_FRAMES = 64, 101


def step_fn(model: ComposedModel, batch: int, vocab: int, image_size: int, precision: str):  # type: ignore[no-untyped-def]
    ids = torch.randint(4, vocab, (batch, 16))
    media = {
        "image": torch.randn(batch, 3, image_size, image_size),
        "audio": torch.randn(batch, AUDIO_BANDS, AUDIO_FRAMES),
        "text": ids,
    }
    inputs = {m: (x, None) for m, x in media.items() if m in model.encoders}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            if isinstance(model, Captioner):  # the caption is the decoder's input (teacher forcing)
                out = model(inputs, ids)["logits"]
            else:
                out = model(inputs)
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
    peaks = matmul_peaks(precisions=precisions)
    print(machine_header(peaks))
    print(f"{'preset':40} {'params':>8} {'precision':>9} {'samples/s':>10} {'GFLOP/step':>11} {'MFU':>6}")
    # Each preset as the packaged recipes use it; the audio ones with their audio tower.
    variants = [(name, {}) for name in PRESETS.names()] + [
        ("shapes-fusion", {"source": "audio", "fusion": "product"}),
        ("shapes-caption", {"source": "audio"}),
    ]
    for name, params in variants:
        label = name + "".join(f" {k}={v}" for k, v in params.items())
        for precision in precisions:
            model = build_preset(name, vocab_size=512, image_size=args.image_size, **params)
            step = step_fn(model, args.batch, 512, args.image_size, precision)
            with FlopCounterMode(display=False) as counter:
                step()
            flops = counter.get_total_flops()
            step()  # warm-up
            start = time.perf_counter()
            for _ in range(args.steps):
                step()
            seconds = (time.perf_counter() - start) / args.steps
            millions = sum(p.numel() for p in model.parameters()) / 1e6
            mfu = flops / seconds / (peaks[precision] * 1e9)  # against the peak of the precision this step ran in
            rate = args.batch / seconds
            print(f"{label:40} {millions:7.2f}M {precision:>9} {rate:10.1f} {flops / 1e9:11.2f} {mfu:6.1%}")


if __name__ == "__main__":
    main()
