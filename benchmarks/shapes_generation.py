"""ShapesWorld generation speed: images/s with one process and with two workers.

Each figure comes twice: images per wall-clock second, and images per CPU-second of the generating processes
(this one and its workers), which other jobs on a shared machine disturb far less than the wall clock.

Run: ``.venv/bin/python benchmarks/shapes_generation.py [--n 4000] [--image-size 64]``.
Each measurement writes a fresh dataset (PNG files + JSONL) to a temporary directory under
``--dir`` (default /dev/shm), so the figure includes PNG encoding and file writes, as
`polymodal data shapes` does; pass ``--dir runs`` to include the disk.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

from polymodal.data.shapes import generate_shapesworld, make_example
from polymodal.hardware import machine_header


def _render_only(n: int, image_size: int) -> float:
    """Images/s for sampling + drawing + texts alone (no PNG, no disk), one process."""
    start = time.perf_counter()
    for i in range(n):
        make_example(0, i, image_size, novel=False)
    return n / (time.perf_counter() - start)


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (pool workers) so far."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _load() -> str:
    """The 1, 5 and 15 minute load averages: other jobs on the machine, for the record beside each figure."""
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4000, help="images in train+val+test per run")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs")
    # Default to RAM-backed tmpfs: on the 2-core CI machine creating files on disk (ext4) runs
    # at only ~900-11,000 files/s depending on other load, which would hide the generator's cost.
    default_dir = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()
    parser.add_argument("--dir", default=default_dir, help="parent of the temporary output directories")
    args = parser.parse_args()
    print(machine_header(precisions=["fp32"]))  # CPU, flags, threads and the fp32 matmul peak beside the figures
    os.makedirs(args.dir, exist_ok=True)

    print(f"python {platform.python_version()}, {os.cpu_count()} cpus, n={args.n}, image_size={args.image_size}")
    print(f"load average at the start: {_load()}")
    print(f"output under {args.dir}")
    print(f"render only (1 process): {_render_only(min(args.n, 2000), args.image_size):,.0f} images/s")
    for workers in (1, 2):
        wall = cpu = 0.0
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
                cpu_start = _cpu_seconds()
                summary = generate_shapesworld(tmp, args.n, image_size=args.image_size, workers=workers, progress=False)
                cpu_used = _cpu_seconds() - cpu_start
            wall = max(wall, summary["total"] / summary["elapsed_seconds"])
            cpu = max(cpu, summary["total"] / max(cpu_used, 1e-9))
        print(
            f"generate_shapesworld workers={workers}: {wall:,.0f} images/s, {cpu:,.0f} images per CPU-second "
            f"(best of {args.repeats}; load {_load()})"
        )


if __name__ == "__main__":
    main()
