"""Images/s of a model's image embeddings in fixed call sizes, against the size ``Model`` learns on this machine.

A larger batch is not always faster per item (a conv tower's activations outgrow the caches), so ``Model`` times
the calls it makes and settles on the fastest size (``polymodal.api.chunking.ChunkSizer``). This prints what each
fixed size gives, what the model chose, and its rate, all interleaved round by round::

    .venv/bin/python benchmarks/chunk_sizes.py [--model runs/demo/clip/best] [--images 512] [--batch-size 32]
    benchmarks/avx2_only.sh .venv/bin/python benchmarks/chunk_sizes.py   # as an AVX2-only CPU
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from PIL import Image

import polymodal
from polymodal.api.model import Model
from polymodal.backends.base import embed
from polymodal.hardware import machine_header


def fixed_calls(model: Model, images: list[Image.Image], size: int) -> None:
    """Every image embedded in calls of exactly ``size`` (the model's own sizing bypassed)."""
    with torch.inference_mode(), model.precision_choice.autocast(model.device):
        for start in range(0, len(images), size):
            embed(model.backend, "image", images[start : start + size])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="runs/demo/clip/best")
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=32, help="the model's batch_size: the largest call")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds; the fastest of each row counts")
    args = parser.parse_args()

    model = polymodal.load(args.model, batch_size=args.batch_size)
    print(machine_header(precisions=(model.precision,)))
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)) for _ in range(args.images)]
    start = time.perf_counter()
    model.embed_image(images)  # the first pass: the sizer explores, then settles
    first = time.perf_counter() - start
    sizer = model.chunk_sizers["image"]
    print(f"model {args.model}, {model.precision}, batch_size {args.batch_size}, {args.images} images of 64 px")
    print(f"first pass (exploring): {args.images / first:.1f} images/s; chose calls of {sizer.best()}")
    print("  timed while exploring, images/s: " + ", ".join(f"{s}: {r:.1f}" for s, r in sizer.measured().items()))
    rows = {f"fixed calls of {s}": lambda s=s: fixed_calls(model, images, s) for s in sizer.sizes if s >= 4}
    rows["learned (Model.embed_image)"] = lambda: model.embed_image(images)
    best = dict.fromkeys(rows, float("inf"))
    for _ in range(args.rounds):
        for name, run in rows.items():
            began = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - began)
    reference = best[f"fixed calls of {args.batch_size}"]
    for name, secs in best.items():
        print(f"  {name:30} {args.images / secs:8.1f} images/s {reference / secs:6.2f}x calls of {args.batch_size}")


if __name__ == "__main__":
    main()
