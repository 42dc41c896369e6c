"""Load test of ``polymodal serve``: requests/s and latency at concurrency 1, 8 and 32, on localhost only.

Generates a ShapesWorld image set (a few thousand PNGs), builds an index over it with the model, starts
``polymodal serve`` in a subprocess on a free loopback port, then sends a fixed number of requests per
scenario and concurrency level from a bare asyncio HTTP/1.1 client (kept-alive connections) and prints requests/s,
p50/p99/max latency, the 503s of admission control, the error count (must be zero) and how many model calls the
micro-batcher made. ``--soak N`` then sends N text searches and prints the server's memory after every tenth.

    .venv/bin/python benchmarks/server_load.py [--model runs/demo/clip/best] [--images 3000] \
        [--requests 300] [--concurrency 1 8 32] [--max-wait-ms 5] [--max-queue-ms 1000] [--batch-size 32] \
        [--index DIR] [--soak 100000 --soak-concurrency 32] [--export DIR]

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


def start_server(model: str, index: Path, port: int, args: argparse.Namespace, log: Path) -> subprocess.Popen:
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
        "--max-queue-ms",
        str(args.max_queue_ms),
        "--precision",
        args.precision,
    ]
    if args.export:
        cmd += ["--export", args.export, "--export-towers", args.export_towers]
    # The server's output (its access log too) goes to a file: an unread pipe would fill and stall it.
    with log.open("w") as output:
        server = subprocess.Popen(cmd, stdout=output, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            time.sleep(0.2)
    server.terminate()
    raise SystemExit("the server did not start within 120 s")


def scenarios(images: list[Path]) -> dict[str, list[bytes]]:
    """Per scenario, a cycle of whole HTTP/1.1 requests (bytes), encoded once so the client spends no time on them."""
    rng = random.Random(0)
    sample = [p.read_bytes() for p in rng.sample(images, min(64, len(images)))]
    encoded = [base64.b64encode(b).decode() for b in sample]
    searches = [httpx.Request("POST", "/search", json={"text": query, "k": 10}) for query in QUERIES]
    embeds = [httpx.Request("POST", "/embed", json={"images": [image]}) for image in encoded]
    classifies = [
        httpx.Request("POST", "/classify", files={"image": ("x.png", png, "image/png")}, data={"labels": LABELS})
        for png in sample
    ]
    return {
        name: [raw_request(request) for request in requests]
        for name, requests in [("search", searches), ("embed-image", embeds), ("classify", classifies)]
    }


def raw_request(request: httpx.Request) -> bytes:
    body = request.read()
    head = [f"{request.method} {request.url.raw_path.decode()} HTTP/1.1", "Host: 127.0.0.1"]
    head += [f"{name}: {value}" for name, value in request.headers.items() if name.lower() != "host"]
    if "content-length" not in request.headers:
        head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> tuple[int, float]:
    """Send one request on a kept-alive connection and read the whole response: its status and Retry-After."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length = next((int(line.split(b":", 1)[1]) for line in lines if line.lower().startswith(b"content-length:")), None)
    if length is None:
        raise RuntimeError(f"a response without Content-Length: {head[:200]!r}")
    await reader.readexactly(length)
    retry_after = next((float(line.split(b":", 1)[1]) for line in lines if line.lower().startswith(b"retry-after:")), 0)
    return status, retry_after


async def load(port: int, requests: list[bytes], total: int, concurrency: int) -> dict[str, Any]:
    """``total`` requests, ``concurrency`` connections each with one request in flight; latency per request.

    The client is a bare asyncio HTTP/1.1 loop over pre-encoded requests: a full HTTP client library costs as
    much CPU per request as the server on this 2-core machine and, at 32 connections, became the bottleneck.
    503s (admission control) are counted apart from errors, and the connection then waits its Retry-After, as a
    well-behaved client does; latencies are of the 200s.
    """
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    failures = 0
    counter = iter(range(total))

    async def worker() -> None:
        nonlocal failures
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for i in counter:
                start = time.perf_counter()
                try:
                    status, retry_after = await exchange(reader, writer, requests[i % len(requests)])
                except (OSError, asyncio.IncompleteReadError, RuntimeError):
                    failures += 1
                    writer.close()
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    continue
                statuses[status] = statuses.get(status, 0) + 1
                if status == 200:
                    latencies.append(time.perf_counter() - start)
                elif status == 503:
                    await asyncio.sleep(retry_after)
        finally:
            writer.close()

    start, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    latencies.sort()
    served = statuses.get(200, 0)
    return {
        "requests": total,
        "concurrency": concurrency,
        "errors": failures + sum(n for status, n in statuses.items() if status not in (200, 503)),
        "rejected_503": statuses.get(503, 0),
        "requests_per_s": served / wall,
        "p50_ms": 1000 * statistics.median(latencies) if latencies else float("nan"),
        "p99_ms": 1000 * latencies[min(served - 1, int(0.99 * served))] if latencies else float("nan"),
        "max_ms": 1000 * latencies[-1] if latencies else float("nan"),
        "client_cpu": cpu / wall,  # cores the load generator itself kept busy: taken from the server
    }


def rss_mib(pid: int) -> float:
    """Resident memory of a process, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


async def soak(port: int, pid: int, requests: list[bytes], total: int, concurrency: int) -> None:
    """``total`` requests in slices of a tenth, printing throughput, latency and the server's memory after each."""
    step = max(1, total // 10)
    first_rss = rss_mib(pid)
    print(f"soak: {total:,} requests at concurrency {concurrency}; server RSS {first_rss:.1f} MiB before")
    print(
        f"{'done':>9} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'503s':>6} {'errors':>6} {'RSS MiB':>8}"
    )
    done = 0
    while done < total:
        result = await load(port, requests, min(step, total - done), concurrency)
        done += result["requests"]
        print(
            f"{done:>9,} {result['requests_per_s']:>8.1f} {result['p50_ms']:>8.1f} {result['p99_ms']:>8.1f} "
            f"{result['max_ms']:>8.1f} {result['rejected_503']:>6} {result['errors']:>6} {rss_mib(pid):>8.1f}"
        )


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
    parser.add_argument("--max-queue-ms", type=float, default=1000.0, help="the server's admission budget (0: off)")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument(
        "--export",
        default=None,
        help="serve with the model's ONNX export (polymodal serve --export): towers where faster",
    )
    parser.add_argument("--export-towers", default="auto", help="auto or all (polymodal serve --export-towers)")
    parser.add_argument("--soak", type=int, default=0, help="then this many text searches, memory tracked")
    parser.add_argument("--soak-concurrency", type=int, default=32)
    parser.add_argument("--json", action="store_true", help="print one JSON line per result")
    args = parser.parse_args()
    precision = "bf16" if args.precision == "bf16" else "fp32"
    print(machine_header(precisions=(precision,)))  # CPU, flags, threads and the matmul peak of the precision used
    if not Path(args.model).exists():
        raise SystemExit(f"{args.model}: no such model; run `polymodal demo` first or pass --model DIR")

    with tempfile.TemporaryDirectory(prefix="polymodal-load-") as tmp:
        if args.index:
            index, images = args.index, indexed_images(args.index)
        else:
            index, images = prepare(args.model, args.images, Path(tmp))
        port = free_port()
        base_url = f"http://127.0.0.1:{port}"
        server = start_server(args.model, index, port, args, Path(tmp) / "server.log")
        try:
            requests = scenarios(images)
            print(
                f"server: {args.model}, {len(images):,} indexed images, batch size {args.batch_size}, "
                f"max wait {args.max_wait_ms:g} ms, admission budget {args.max_queue_ms:g} ms, {args.precision}, "
                f"{os.cpu_count()} CPUs shared with the client; access log on (to a file)"
            )
            for modality, tower in httpx.get(f"{base_url}/health", timeout=10).json()["runtime"]["towers"].items():
                print(f"  {modality} tower: {tower['runtime']} ({tower['reason']})")
            print(
                f"{'scenario':<12} {'conc.':>5} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'503s':>6} "
                f"{'errors':>6} {'batched calls':>13} {'client CPU':>10}"
            )
            for name in args.scenarios:
                asyncio.run(load(port, requests[name], min(20, args.requests), 4))  # warm-up
                for concurrency in args.concurrency:
                    before = batching(base_url)
                    result = asyncio.run(load(port, requests[name], args.requests, concurrency))
                    after = batching(base_url)
                    # /health itself goes through the batcher once per call: subtract it.
                    result["model_calls"] = after["model_calls"] - before["model_calls"] - 1
                    result["scenario"] = name
                    if args.json:
                        print(json.dumps(result))
                    else:
                        print(
                            f"{name:<12} {concurrency:>5} {result['requests_per_s']:>8.1f} {result['p50_ms']:>8.1f} "
                            f"{result['p99_ms']:>8.1f} {result['max_ms']:>8.1f} {result['rejected_503']:>6} "
                            f"{result['errors']:>6} {result['model_calls']:>13} {result['client_cpu']:>10.2f}"
                        )
                    if result["errors"]:
                        raise SystemExit(f"{result['errors']} errors in {name} at concurrency {concurrency}")
            if args.soak:
                asyncio.run(soak(port, server.pid, requests["search"], args.soak, args.soak_concurrency))
        finally:
            server.terminate()
            server.wait(10)


if __name__ == "__main__":
    main()
