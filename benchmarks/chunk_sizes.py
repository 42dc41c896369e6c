"""Images/s of a model's image embeddings in fixed call sizes, against the size ``Model`` learns on this machine;
then the same for ``polymodal fit``'s image featurizer (the packaged EfficientNet-Lite0 at 224 px); with
``--video-model``, for clips embedded zero-shot through a model's image tower per frame; with ``--onnx``, for the
model's ONNX export (fp32 graph) in onnxruntime, beside PyTorch.

A larger batch is not always faster per item (a conv tower's activations outgrow the caches), so ``Model`` and the
featurizers time the calls they make and settle on the fastest size (``polymodal.chunking.ChunkSizer``). This
prints what each fixed size gives, what was chosen, and its rate, all interleaved round by round::

    .venv/bin/python benchmarks/chunk_sizes.py [--model runs/demo/clip/best] [--images 512] [--batch-size 32]
    benchmarks/avx2_only.sh .venv/bin/python benchmarks/chunk_sizes.py   # as an AVX2-only CPU
    .venv/bin/python benchmarks/chunk_sizes.py --video-model polymodal-base  # also clips through its image tower
    .venv/bin/python benchmarks/chunk_sizes.py --onnx   # also the model's ONNX export in onnxruntime
    .venv/bin/python benchmarks/chunk_sizes.py --busy 1 [--busy-share 0.5]  # then while another process computes
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import polymodal
from polymodal.api.model import Model
from polymodal.backends.base import embed
from polymodal.chunking import ChunkSizer
from polymodal.data.errors import BadSampleLog
from polymodal.fit.features import featurizers_for
from polymodal.fit.table import Table
from polymodal.hardware import ThreadBudget, machine_header
from threads_under_load import hold_a_core


def fixed_calls(model: Model, images: list[Image.Image], size: int) -> None:
    """Every image embedded in calls of exactly ``size`` (the model's own sizing bypassed), in the precision the
    model runs its image tower in."""
    with torch.inference_mode(), model.tower_precision("image").autocast(model.device):
        for start in range(0, len(images), size):
            embed(model.backend, "image", images[start : start + size])


def best_seconds(rows: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """The fastest of ``rounds`` runs of each row, the rows interleaved round by round."""
    best = dict.fromkeys(rows, float("inf"))
    for _ in range(rounds):
        for name, run in rows.items():
            began = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - began)
    return best


def fit_featurizer(images: list[Image.Image], batch_size: int, rounds: int) -> None:
    """``polymodal fit``'s image featurizer over the images saved as PNG files: in its learned call size, and held
    to calls of ``batch_size`` (what it did before)."""
    with tempfile.TemporaryDirectory(prefix="polymodal-chunks-") as tmp:
        for i, image in enumerate(images):
            image.save(Path(tmp) / f"{i}.png")
        table = Table("bench", Path(tmp), [{"image": f"{i}.png"} for i in range(len(images))], list(range(len(images))))
        learned, held = (featurizers_for({"image": "image"})[0] for _ in range(2))
        held.sizer = ChunkSizer(batch_size)
        held.sizer.sizes = [batch_size]  # the only size it may take
        learned.transform(table, BadSampleLog())  # explores, then settles
        print(f"polymodal fit image featurizer (EfficientNet-Lite0, 224 px), {len(images)} PNG files")
        print(
            "  timed while exploring, images/s: "
            + ", ".join(f"{s}: {r:.1f}" for s, r in learned.sizer.measured().items())
        )
        rows = {
            f"calls of {batch_size}": lambda: held.transform(table, BadSampleLog()),
            f"learned (chose {learned.sizer.best()})": lambda: learned.transform(table, BadSampleLog()),
        }
        best = best_seconds(rows, rounds)
        reference = best[f"calls of {batch_size}"]
        for name, secs in best.items():
            print(f"  {name:30} {len(images) / secs:8.1f} images/s {reference / secs:6.2f}x calls of {batch_size}")


def video_frames(model_name: str, images: list[Image.Image], batch_size: int, rounds: int) -> None:
    """Clips of 8 frames (the images, as MP4) embedded by ``model_name``'s image tower per frame: in the size it
    learns, and held to calls of ``batch_size`` (what it did before)."""
    from polymodal.data.shapes_video import encode_mp4

    clips = [encode_mp4(images[i : i + 8], fps=4) for i in range(0, len(images) - 7, 8)]
    learned, held = (polymodal.load(model_name, batch_size=batch_size) for _ in range(2))
    held.chunk_sizers["image"] = ChunkSizer(batch_size)
    held.chunk_sizers["image"].sizes = [batch_size]  # the only size it may take
    learned.embed_video(clips)  # explores, then settles
    frames = 8 * len(clips)
    precision = learned.tower_precision("image").precision
    print(f"{model_name}: {len(clips)} clips of 8 frames through its image tower, {precision}")
    rows = {f"calls of {batch_size}": lambda: held.embed_video(clips), "learned": lambda: learned.embed_video(clips)}
    best = best_seconds(rows, rounds)
    reference = best[f"calls of {batch_size}"]
    for name, secs in best.items():
        print(f"  {name:30} {frames / secs:8.1f} frames/s {reference / secs:6.2f}x calls of {batch_size}")
    print(f"  chose calls of {learned.chunk_sizers['image'].best()} (the first passes explore)")


def onnx_rows(model: Model, images: list[Image.Image], sizes: list[int], rounds: int) -> None:
    """The model's ONNX export (its fp32 graph) in onnxruntime, images/s at each call size, against the PyTorch
    model's learned size in the same rounds."""
    from polymodal.export import OnnxDualEncoder, export_onnx

    with tempfile.TemporaryDirectory(prefix="polymodal-chunks-onnx-") as tmp:
        began = time.perf_counter()
        export_onnx(model.source, Path(tmp) / "onnx", quantize=False)
        print(f"ONNX export of {model.source} (fp32 graph): {time.perf_counter() - began:.0f} s")
        rows: dict[str, Callable[[], object]] = {}
        for size in sizes:
            runtime = OnnxDualEncoder(Path(tmp) / "onnx", variant="fp32", batch_size=size)
            rows[f"onnxruntime fp32, calls of {size}"] = lambda r=runtime: r.embed_images(images)
        rows[f"PyTorch {model.tower_precision('image').precision}, learned"] = lambda: model.embed_image(images)
        best = best_seconds(rows, rounds)
        reference = best[f"PyTorch {model.tower_precision('image').precision}, learned"]
        for name, secs in best.items():
            print(f"  {name:30} {len(images) / secs:8.1f} images/s {reference / secs:6.2f}x PyTorch learned")


def size_rows(model: Model, images: list[Image.Image], rounds: int, batch_size: int) -> None:
    """Images/s in each fixed call size from 4 up, and in the size the model learns, interleaved."""
    sizes = [s for s in model.chunk_sizers["image"].sizes if s >= 4]
    rows = {f"fixed calls of {s}": lambda s=s: fixed_calls(model, images, s) for s in sizes}
    rows["learned (Model.embed_image)"] = lambda: model.embed_image(images)
    best = best_seconds(rows, rounds)
    reference = best[f"fixed calls of {batch_size}"]
    for name, secs in best.items():
        print(f"  {name:30} {len(images) / secs:8.1f} images/s {reference / secs:6.2f}x calls of {batch_size}")


def under_load(model: Model, images: list[Image.Image], args: argparse.Namespace) -> None:
    """The same rows while ``args.busy`` other processes each keep a core busy for ``args.busy_share`` of the time,
    after the model learned its size on the quiet machine, at the thread count polymodal's budget takes under that
    load (as a server's does): whether the fastest size moves with the load, and whether the sizer follows it."""
    sizer = model.chunk_sizers["image"]
    quiet_choice, drifted, quiet_threads = sizer.best(), sizer.drifted, torch.get_num_threads()
    spawn = mp.get_context("spawn")  # not fork: this process's OpenMP threads are running
    stop = spawn.Event()
    holders = [spawn.Process(target=hold_a_core, args=(stop, args.busy_share), daemon=True) for _ in range(args.busy)]
    for holder in holders:
        holder.start()
    try:
        time.sleep(1.0)
        budget = ThreadBudget(window=0.5)
        start = time.perf_counter()
        model.embed_image(images)
        rate = args.images / (time.perf_counter() - start)
        sizer_now = model.chunk_sizers["image"]
        learned = (
            f"drifted {sizer.drifted - drifted} time(s), chose {sizer.best()}"
            if sizer_now is sizer
            else f"learned anew at this thread count, chose {sizer_now.best()}"
        )
        print(
            f"with {args.busy} other process(es) each keeping a core {args.busy_share:.0%} busy: the budget took "
            f"{budget.threads} thread(s) ({budget.choice.reason}); first pass {rate:.1f} images/s; the sizer "
            f"{learned} (quiet: {quiet_choice})"
        )
        size_rows(model, images, args.rounds, args.batch_size)
    finally:
        stop.set()
        for holder in holders:
            holder.join()
        torch.set_num_threads(quiet_threads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="runs/demo/clip/best")
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=32, help="the model's batch_size: the largest call")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds; the fastest of each row counts")
    parser.add_argument("--fit-images", type=int, default=256, help="images for the fit featurizer's rows")
    parser.add_argument("--video-model", help="also time clips through this model's image tower per frame")
    parser.add_argument("--onnx", action="store_true", help="also time the model's ONNX export in onnxruntime")
    parser.add_argument("--video-frames", type=int, default=128, help="frames (8 a clip) for the video rows")
    parser.add_argument(
        "--busy", type=int, default=0, help="then time the sizes again while this many processes each hold a core"
    )
    parser.add_argument("--busy-share", type=float, default=1.0, help="of the time each --busy process computes")
    args = parser.parse_args()

    model = polymodal.load(args.model, batch_size=args.batch_size)
    print(machine_header(precisions=(model.tower_precision("image").precision,)))
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)) for _ in range(args.images)]
    start = time.perf_counter()
    model.embed_image(images)  # the first pass: the sizer explores, then settles
    first = time.perf_counter() - start
    sizer = model.chunk_sizers["image"]
    tower = model.tower_precision("image")
    print(f"model {args.model}, image tower in {tower.precision} ({tower.reason}), batch_size {args.batch_size}")
    print(f"{args.images} images of 64 px")
    print(f"first pass (exploring): {args.images / first:.1f} images/s; chose calls of {sizer.best()}")
    print("  timed while exploring, images/s: " + ", ".join(f"{s}: {r:.1f}" for s, r in sizer.measured().items()))
    size_rows(model, images, args.rounds, args.batch_size)
    if args.busy:
        under_load(model, images, args)
    if args.onnx:
        onnx_rows(model, images, [s for s in sizer.sizes if s >= 4], args.rounds)
    fit_featurizer(images[: args.fit_images], args.batch_size, args.rounds)
    if args.video_model:
        video_frames(args.video_model, images[: args.video_frames], args.batch_size, args.rounds)


if __name__ == "__main__":
    main()
