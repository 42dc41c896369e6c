"""Data-loading throughput: decode + preprocess images/s, plain loop vs DataLoader workers.

Writes ``--n`` synthetic PNGs per size (shapes on a gradient, so they compress like drawings,
not like noise) into a temp dir, then times:

* ``loop``      decode_image + ImagePreprocess.to_tensor, one image after another
* ``dl w=0``    MultimodalDataset + collate through a DataLoader in the main process
* ``dl w=N``    the same with N worker processes
* ``epoch 2``   a second epoch over the same dataset in the main process, with the prepared-media memo
                (``memo_mb``, on by default) and without it (``memo_mb=0``):
                what every epoch after the first costs when nothing is augmented

Run: ``.venv/bin/python benchmarks/data_loading.py [--n 500] [--sizes 64 224 1024] [--workers 0 2]``
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch.utils.data import DataLoader

from polymodal.data.dataset import MultimodalDataset
from polymodal.data.image import decode_image
from polymodal.data.processors import ImageProcessor
from polymodal.data.schema import Sample
from polymodal.data.transforms import ImagePreprocess
from polymodal.hardware import machine_header


def make_images(directory: Path, n: int, size: int, seed: int = 0) -> list[Sample]:
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 255, size, dtype=np.float32)
    samples = []
    for i in range(n):
        channels = [np.add.outer(ramp, ramp) / 2, np.tile(ramp, (size, 1)), np.full((size, size), i % 256)]
        base = np.stack(channels, -1)  # (size, size, 3)
        img = Image.fromarray(base.astype(np.uint8), "RGB")
        draw = ImageDraw.Draw(img)
        for _ in range(4):
            x0, y0 = rng.integers(0, size * 3 // 4, 2)
            w = int(rng.integers(size // 8, size // 3))
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            draw.ellipse((x0, y0, x0 + w, y0 + w), fill=colour)
        path = directory / f"{size}_{i:04d}.png"
        img.save(path)
        samples.append(Sample(f"{size}_{i}", image=str(path), text=["a picture"]))
    return samples


def time_loop(samples: list[Sample], pre: ImagePreprocess) -> float:
    start = time.perf_counter()
    for s in samples:
        pre.to_tensor(decode_image(s.image))
    return len(samples) / (time.perf_counter() - start)


def time_loader(
    samples: list[Sample], pre: ImagePreprocess, workers: int, batch_size: int, ds: MultimodalDataset | None = None
) -> tuple[float, float]:
    """(images/s over the whole epoch including worker start-up, seconds to the first batch)."""
    ds = ds if ds is not None else MultimodalDataset(samples, {"image": ImageProcessor(pre)}, text_mode="first")
    loader = DataLoader(ds, batch_size=batch_size, num_workers=workers, collate_fn=ds.collate_fn)
    start = time.perf_counter()  # includes worker start-up, as a real epoch does
    first = None
    count = 0
    for batch in loader:
        first = first if first is not None else time.perf_counter() - start
        count += len(batch)
    assert count == len(samples)
    return count / (time.perf_counter() - start), first or 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500, help="images per size")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 224])
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out-size", type=int, default=None, help="preprocess image_size (default: min(size, 224))")
    args = parser.parse_args()
    print(machine_header(precisions=["fp32"]))  # CPU, flags, threads and the fp32 matmul peak beside the figures
    torch.set_num_threads(1)  # decoding is single-threaded anyway; workers give the parallelism

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            samples = make_images(Path(tmp), args.n, size)
            kb = sum(Path(s.image).stat().st_size for s in samples) / len(samples) / 1024  # type: ignore[arg-type]
            out = args.out_size or min(size, 224)
            pre = ImagePreprocess.preset("clip", image_size=out)
            time_loader(samples[:64], pre, 0, args.batch_size)  # warm the page cache and imports
            figures = {"loop (img/s)": f"{time_loop(samples, pre):,.0f}"}
            for w in args.workers:
                rate, first = time_loader(samples, pre, w, args.batch_size)
                figures[f"DataLoader w={w} (img/s)"] = f"{rate:,.0f}"
                figures[f"w={w} 1st batch (s)"] = f"{first:.2f}"
            for label, memo_mb in (("epoch 2, memo (img/s)", 1024), ("epoch 2, no memo (img/s)", 0)):
                ds = MultimodalDataset(samples, {"image": ImageProcessor(pre)}, text_mode="first", memo_mb=memo_mb)
                time_loader(samples, pre, 0, args.batch_size, ds)  # epoch 1 fills the memo
                figures[label] = f"{time_loader(samples, pre, 0, args.batch_size, ds)[0]:,.0f}"
            rows.append((f"{args.n} x {size}px PNG ({kb:.0f} KB avg) -> {out}", figures))

    names = list(rows[0][1])
    print("| images | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    for label, figures in rows:
        print(f"| {label} | " + " | ".join(figures[n] for n in names) + " |")


if __name__ == "__main__":
    main()
