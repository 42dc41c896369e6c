"""Throughput and peak memory of chunked retrieval metrics on random unit vectors.

    .venv/bin/python benchmarks/retrieval_eval.py --images 100000 --captions-per-image 1
    .venv/bin/python benchmarks/retrieval_eval.py --images 100000 --captions-per-image 5

The full similarity matrix would need images * texts * 4 bytes (40 GB for 100k x 100k);
the chunked pass keeps one (chunk, texts) block plus the ranks.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time

import numpy as np
import torch

from polymodal.hardware import machine_header
from polymodal.metrics import retrieval_metrics


def _peak_rss_mib() -> float:
    # ru_maxrss is KiB on Linux, bytes on macOS.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def _unit(generator: torch.Generator, n: int, dim: int) -> torch.Tensor:
    x = torch.randn(n, dim, generator=generator)
    return x / x.norm(dim=1, keepdim=True)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--captions-per-image", type=int, default=1)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--chunk-size", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(machine_header(precisions=["fp32"]))  # CPU, flags, threads and the fp32 matmul peak beside the figures

    generator = torch.Generator().manual_seed(0)
    images = _unit(generator, args.images, args.dim)
    owner = np.repeat(np.arange(args.images), args.captions_per_image)
    texts = _unit(generator, len(owner), args.dim)
    rss_inputs = _peak_rss_mib()

    start = time.perf_counter()
    metrics = retrieval_metrics(images, texts, owner, chunk_size=args.chunk_size)
    seconds = time.perf_counter() - start
    peak = _peak_rss_mib()

    n_texts = len(owner)
    full_matrix_gib = args.images * n_texts * 4 / 2**30
    print(f"{args.images} images x {n_texts} texts, dim {args.dim}, chunk {args.chunk_size}, {args.threads} threads")
    print(
        f"time {seconds:.1f} s | {args.images / seconds:,.0f} image queries/s | "
        f"{n_texts / seconds:,.0f} text queries/s (both directions in one pass)"
    )
    print(
        f"peak RSS {peak:,.0f} MiB (after building inputs: {rss_inputs:,.0f} MiB); "
        f"a full fp32 similarity matrix would be {full_matrix_gib:,.1f} GiB"
    )
    print({k: round(v, 5) for k, v in metrics.items()})
    return {"seconds": seconds, "peak_rss_mib": peak, **metrics}


if __name__ == "__main__":
    main()
