"""Training throughput with every core vs one thread fewer, while another process holds a core.

The situation of a second polymodal process (or any busy process) on the machine: ``--busy 1`` starts that
many processes that each keep one core busy with a single-threaded matmul loop. For each thread count the
shapes-fusion (GMU) preset trains forward+backward+AdamW on a fixed batch; the figures are samples/s. It also
prints what ``polymodal.hardware.ThreadBudget`` chooses in each situation.

    .venv/bin/python benchmarks/threads_under_load.py [--busy 1] [--steps 30] [--batch 64] [--precision auto]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import time

import torch

from polymodal.hardware import ThreadBudget, choose_precision, machine_header, usable_cores
from polymodal.models import build_preset


def hold_a_core(stop: mp.Event, share: float = 1.0) -> None:  # type: ignore[valid-type]
    """Keep one core busy with a single-threaded matmul loop for ``share`` of every 20 ms."""
    torch.set_num_threads(1)
    a = torch.randn(384, 384)
    while not stop.is_set():  # type: ignore[attr-defined]
        began = time.perf_counter()
        while time.perf_counter() - began < share * 0.02:
            a @ a
        if share < 1:
            time.sleep((1 - share) * 0.02)


def samples_per_second(threads: int, steps: int, batch: int, precision: str) -> float:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_preset("shapes-fusion", fusion="gmu", vocab_size=512, image_size=64)
    images, ids = torch.randn(batch, 3, 64, 64), torch.randint(4, 512, (batch, 12))
    labels = torch.randint(0, 2, (batch,))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    choice = choose_precision(precision, "cpu")

    def step() -> None:
        with choice.autocast("cpu"):
            logits = model({"image": (images, None), "text": (ids, None)})
            loss = torch.nn.functional.cross_entropy(logits.float(), labels)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(3):
        step()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return batch * steps / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--busy", type=int, default=1, help="processes that each hold one core")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--precision", default="auto")
    args = parser.parse_args()
    os.environ.pop("POLYMODAL_THREADS", None)
    cores = usable_cores()
    precision = choose_precision(args.precision, "cpu").precision
    print(machine_header(precisions=[precision]))
    print(f"shapes-fusion (gmu), batch {args.batch}, {args.steps} timed steps, {precision}, {cores} usable cores")
    print(f"{'situation':28} {'threads':>7} {'samples/s':>10}")
    for busy in (0, args.busy):
        stop = mp.Event()
        holders = [mp.Process(target=hold_a_core, args=(stop,), daemon=True) for _ in range(busy)]
        for p in holders:
            p.start()
        time.sleep(1.0 if busy else 0.0)
        try:
            chosen = ThreadBudget(window=0.5)
            situation = f"{busy} core(s) held elsewhere"
            for threads in sorted({cores, max(1, cores - busy)}, reverse=True):
                rate = samples_per_second(threads, args.steps, args.batch, precision)
                print(f"{situation:28} {threads:7d} {rate:10.1f}", flush=True)
            print(f"{'':28} ThreadBudget chose {chosen.threads} ({chosen.choice.reason})")
        finally:
            stop.set()
            for p in holders:
                p.join(5)


if __name__ == "__main__":
    main()
