"""Load test of ``polymodal serve``: requests/s and latency at concurrency 1, 8 and 32, on localhost only.

Generates a ShapesWorld image set (a few thousand PNGs), builds an index over it with the model, starts
``polymodal serve`` in a subprocess on a free loopback port, then sends a fixed number of requests per
scenario and concurrency level from an asyncio + httpx client and prints requests/s, p50/p99 latency, the
error count (must be zero) and how many model calls the micro-batcher made.

    .venv/bin/python benchmarks/server_load.py [--model runs/demo/clip/best] [--images 3000] \
        [--requests 300] [--concurrency 1 8 32] [--max-wait-ms 5] [--batch-size 32] [--index DIR]

Scenarios: ``search`` (POST /search, a text query, k=10), ``embed-image`` (POST /embed, one 64 px PNG as
base64), ``classify`` (POST /classify, multipart upload, 5 labels).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from polymodal.hardware import machine_header

QUERIES = [
    "a red circle",
    "a blue square",
    "two green triangles",
    "a yellow star left of a purple cross",
    "three shapes",
    "a small cyan heart",
    "a large red square above a blue circle",
]
LABELS = ["circle", "square", "triangle", "star", "heart"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def prepare(model: str, n_images: int, work: Path) -> tuple[Path, list[Path]]:
    """ShapesWorld images and an index over them (both under ``work``)."""
    import polymodal
    from polymodal.data.shapes import generate_shapesworld
    from polymodal.index import build_index

    start = time.perf_counter()
    # generate_shapesworld writes n images to train/val/test plus n // 10 novel ones.
    generate_shapesworld(work / "shapes", n=max(1, round(n_images / 1.1)), seed=0, image_size=64, progress=False)
    images = sorted((work / "shapes" / "images").glob("*.png"))
    loaded = polymodal.load(model, batch_size=128)
    build_index(work / "shapes" / "images", work / "index", loaded, model_ref=str(Path(model).resolve()))
    print(f"prepared {len(images):,} images and their index in {time.perf_counter() - start:.1f} s")
    return work / "index", images


def indexed_images(index: Path) -> list[Path]:
    """The image files an existing index holds (to reuse one instead of generating and embedding images)."""
    from polymodal.index import VectorIndex
    from polymodal.index.store import all_ids

    with VectorIndex.open(index) as opened:
        items = opened.items(all_ids(opened.conn))
    return sorted(Path(item.path) for item in items.values() if item.kind == "image" and item.path)


def start_server(model: str, index: Path, port: int, args: argparse.Namespace) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "polymodal",
        "serve",
        "--model",
        model,
        "--index",
        str(index),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--batch-size",
        str(args.batch_size),
        "--max-wait-ms",
        str(args.max_wait_ms),
        "--precision",
        args.precision,
    ]
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited: {server.stderr.read() if server.stderr else ''}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            time.sleep(0.2)
    server.terminate()
    raise SystemExit("the server did not start within 120 s")


def scenarios(images: list[Path]) -> dict[str, Callable[[httpx.AsyncClient, int], Any]]:
    rng = random.Random(0)
    sample = [p.read_bytes() for p in rng.sample(images, min(64, len(images)))]
    encoded = [base64.b64encode(b).decode() for b in sample]

    def search(client: httpx.AsyncClient, i: int) -> Any:
        return client.post("/search", json={"text": QUERIES[i % len(QUERIES)], "k": 10})

    def embed_image(client: httpx.AsyncClient, i: int) -> Any:
        return client.post("/embed", json={"images": [encoded[i % len(encoded)]]})

    def classify(client: httpx.AsyncClient, i: int) -> Any:
        return client.post(
            "/classify", files={"image": ("x.png", sample[i % len(sample)], "image/png")}, data={"labels": LABELS}
        )

    return {"search": search, "embed-image": embed_image, "classify": classify}


async def load(
    base_url: str, request: Callable[[httpx.AsyncClient, int], Any], total: int, concurrency: int
) -> dict[str, Any]:
    """``total`` requests, ``concurrency`` in flight at once; latency per request, wall time overall."""
    latencies: list[float] = []
    errors = 0
    counter = iter(range(total))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async with httpx.AsyncClient(base_url=base_url, timeout=60, limits=limits) as client:

        async def worker() -> None:
            nonlocal errors
            for i in counter:
                start = time.perf_counter()
                try:
                    response = await request(client, i)
                    errors += response.status_code != 200
                except httpx.HTTPError:
                    errors += 1
                latencies.append(time.perf_counter() - start)

        start, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    latencies.sort()
    return {
        "requests": total,
        "concurrency": concurrency,
        "errors": errors,
        "requests_per_s": total / wall,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
        "client_cpu": cpu / wall,  # cores the load generator itself kept busy: taken from the server
    }


def batching(base_url: str) -> dict[str, int]:
    return httpx.get(f"{base_url}/health").json()["batching"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="runs/demo/clip/best", help="a model with 'embed' (run `polymodal demo`)")
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--index", type=Path, help="reuse this index (built with --model) instead of generating one")
    parser.add_argument("--requests", type=int, default=300, help="per scenario and concurrency level")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--scenarios", nargs="+", default=["search", "embed-image", "classify"])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--json", action="store_true", help="print one JSON line per result")
    args = parser.parse_args()
    print(machine_header())  # CPU, flags, threads and matmul peaks beside the figures
    if not Path(args.model).exists():
        raise SystemExit(f"{args.model}: no such model; run `polymodal demo` first or pass --model DIR")

    with tempfile.TemporaryDirectory(prefix="polymodal-load-") as tmp:
        if args.index:
            index, images = args.index, indexed_images(args.index)
        else:
            index, images = prepare(args.model, args.images, Path(tmp))
        port = free_port()
        base_url = f"http://127.0.0.1:{port}"
        server = start_server(args.model, index, port, args)
        try:
            requests = scenarios(images)
            print(
                f"server: {args.model}, {len(images):,} indexed images, batch size {args.batch_size}, "
                f"max wait {args.max_wait_ms:g} ms, {args.precision}, {os.cpu_count()} CPUs shared with the client"
            )
            print(
                f"{'scenario':<12} {'conc.':>5} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6} "
                f"{'batched calls':>13} {'client CPU':>10}"
            )
            for name in args.scenarios:
                asyncio.run(load(base_url, requests[name], min(20, args.requests), 4))  # warm-up
                for concurrency in args.concurrency:
                    before = batching(base_url)
                    result = asyncio.run(load(base_url, requests[name], args.requests, concurrency))
                    after = batching(base_url)
                    # /health itself goes through the batcher once per call: subtract it.
                    result["model_calls"] = after["model_calls"] - before["model_calls"] - 1
                    result["scenario"] = name
                    if args.json:
                        print(json.dumps(result))
                    else:
                        print(
                            f"{name:<12} {concurrency:>5} {result['requests_per_s']:>8.1f} {result['p50_ms']:>8.1f} "
                            f"{result['p99_ms']:>8.1f} {result['errors']:>6} {result['model_calls']:>13} "
                            f"{result['client_cpu']:>10.2f}"
                        )
                    if result["errors"]:
                        raise SystemExit(f"{result['errors']} errors in {name} at concurrency {concurrency}")
        finally:
            server.terminate()
            server.wait(10)


if __name__ == "__main__":
    main()
