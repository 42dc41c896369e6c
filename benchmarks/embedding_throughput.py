"""Embedding throughput: polymodal's EmbeddingModel and ONNX export vs transformers' CLIPModel on the SAME weights.

A random CLIP checkpoint (ViT-B/32 sized by default: 12+12 layers, 768/512 wide, 224 px,
77 tokens) is saved to a temporary directory and loaded twice: as ``transformers.CLIPModel``
(the reference, called as its docs show: ``get_image_features`` under ``torch.no_grad``, fp32)
and through polymodal's interop (``load_clip``) as an ``EmbeddingModel``. Then images/s and
texts/s at one batch size, for these polymodal paths:

    fp32              inference_mode, float32 weights (the same math as HF: a sanity check)
    bf16 autocast     inference_mode + torch.autocast(bfloat16), float32 weights        (bf16 only)
    bf16 weights      load_clip(..., dtype=torch.bfloat16): weights stored in bf16      (bf16 only)
    onnxruntime fp32  the towers exported by ``polymodal export``, run by onnxruntime
    onnxruntime int8  the export's int8 variants (int8, int8-mixed, int8-block: docs/export.md)

and, for fairness, HF with the same bf16 autocast (bf16 only). The bf16 rows run only where
the CPU runs bf16 natively, unless ``--precisions fp32,bf16`` asks for them. Every row prints
its ratio to HF fp32 measured in the same run and the cosine similarity of its embeddings with
that reference; the ONNX variant the export chose as default is marked. Text batches are 77
tokens long (CLIP pads to its context length). Everything is written to a temporary directory
that is removed at the end, also on errors and Ctrl-C.

Random weights have no outlier activations, so they flatter quantisation: ``--trained-text``
(``--trained-text-only`` without the CLIP rows) also exports the packaged MiniLM sentence encoder
(trained weights, 6 layers) with ``polymodal export``, prints the default it chose and each
variant's cosine to PyTorch fp32 on the export's calibration sample and held-out check set, and
times the variants against transformers' MiniLM on the held-out texts repeated to the batch; then over a corpus
of ``--corpus-batches`` batches, where polymodal's ``embed_text`` batches texts of like length together, against
transformers in corpus order and sorted by length as sentence-transformers does.

    .venv/bin/python benchmarks/embedding_throughput.py [--size b32|small] [--batch 32] [--iters 5]
                                                        [--threads 2] [--no-onnx] [--precisions fp32,bf16]
                                                        [--trained-text | --trained-text-only] [--corpus-batches 8]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from polymodal.hardware import bf16_native, machine_header

SIZES = {
    # openai/clip-vit-base-patch32's architecture.
    "b32": {
        "text": {"hidden_size": 512, "num_hidden_layers": 12, "num_attention_heads": 8, "intermediate_size": 2048},
        "vision": {
            "hidden_size": 768,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
            "intermediate_size": 3072,
            "image_size": 224,
            "patch_size": 32,
        },
        "projection_dim": 512,
    },
    "small": {
        "text": {"hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 1024},
        "vision": {
            "hidden_size": 384,
            "num_hidden_layers": 6,
            "num_attention_heads": 6,
            "intermediate_size": 1536,
            "image_size": 224,
            "patch_size": 32,
        },
        "projection_dim": 256,
    },
}
CONTEXT = 77


def save_random_clip(directory: Path, size: str) -> None:
    """A random CLIPModel with a tiny tokenizer and CLIP preprocessing, saved like a Hub checkpoint."""
    import transformers as t

    from polymodal.data.text import train_tokenizer

    spec = SIZES[size]
    tok = train_tokenizer(["a photo of a red cat on a blue square"], vocab_size=64)
    t.PreTrainedTokenizerFast(
        tokenizer_object=tok.backend, pad_token="[PAD]", bos_token="[BOS]", eos_token="[EOS]", unk_token="[UNK]"
    ).save_pretrained(directory)
    config = t.CLIPConfig(
        # Real CLIP has a 49408-token vocabulary: the embedding table's size matters for memory, not speed.
        text_config={
            **spec["text"],
            "vocab_size": 49408,
            "max_position_embeddings": CONTEXT,
            "pad_token_id": 0,
            "bos_token_id": 2,
            "eos_token_id": 3,
        },
        vision_config=spec["vision"],
        projection_dim=spec["projection_dim"],
    )
    torch.manual_seed(0)
    t.CLIPModel(config).save_pretrained(directory)
    side = spec["vision"]["image_size"]
    t.CLIPImageProcessorPil(size={"shortest_edge": side}, crop_size={"height": side, "width": side}).save_pretrained(
        directory
    )


def time_rows(fns: list[Callable[[], torch.Tensor]], rounds: int) -> tuple[list[float], list[torch.Tensor]]:
    """Best-of-``rounds`` seconds per call for each fn, after one warm-up call each.

    Rounds go over all fns in turn (not fn by fn), so a burst of load from other processes on
    a shared machine hits every path alike; best-of, not mean, for the same reason.
    """
    outs = [fn() for fn in fns]
    best = [float("inf")] * len(fns)
    for _ in range(rounds):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            outs[i] = fn()
            best[i] = min(best[i], time.perf_counter() - start)
    return best, outs


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean cosine similarity of matching rows."""
    a, b = torch.as_tensor(a).float(), torch.as_tensor(b).float()
    return float(F.cosine_similarity(a, b, dim=-1).mean())


def parse_precisions(text: str | None) -> tuple[str, ...]:
    """``fp32,bf16`` -> ('fp32', 'bf16'); by default fp32, and bf16 where the CPU runs it natively."""
    if text is None:
        return ("fp32", "bf16") if bf16_native("cpu") else ("fp32",)
    names = tuple(dict.fromkeys(p.strip() for p in text.split(",") if p.strip()))
    unknown = [p for p in names if p not in ("fp32", "bf16")]
    if unknown or "fp32" not in names:
        raise SystemExit(f"--precisions {text!r}: give fp32, optionally with bf16 (fp32 is the reference)")
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=list(SIZES), default="b32")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--iters", type=int, default=5, help="timed rounds over all paths")
    parser.add_argument(
        "--corpus-batches", type=int, default=8, help="MiniLM corpus rows: batches of held-out texts in the corpus"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-onnx", dest="onnx", action="store_false")
    parser.add_argument(
        "--precisions", default=None, help="fp32 or fp32,bf16 (default: bf16 too only where the CPU runs it natively)"
    )
    parser.add_argument(
        "--trained-text", action="store_true", help="also export the packaged MiniLM: its choice, accuracy and speed"
    )
    parser.add_argument("--trained-text-only", action="store_true", help="only the MiniLM part of --trained-text")
    args = parser.parse_args()
    precisions = parse_precisions(args.precisions)
    torch.set_num_threads(args.threads)
    # CPU, flags, threads and the matmul peaks of the precisions measured here, beside the figures
    print(machine_header(precisions=precisions))
    with tempfile.TemporaryDirectory(prefix="polymodal-bench-") as tmp:
        if not args.trained_text_only:
            run(Path(tmp), args, precisions)
        if args.trained_text or args.trained_text_only:
            trained_text(Path(tmp), args, precisions)


def run(tmp: Path, args: argparse.Namespace, precisions: tuple[str, ...]) -> None:
    import transformers as t

    from polymodal.interop import clip_features, load_clip

    save_random_clip(tmp / "clip", args.size)
    hf = t.CLIPModel.from_pretrained(tmp / "clip", local_files_only=True).eval()
    fp32 = load_clip(tmp / "clip")
    side = fp32.preprocess.image_size
    torch.manual_seed(1)
    pixels = torch.randn(args.batch, 3, side, side)
    ids = torch.randint(5, 64, (args.batch, CONTEXT))
    ids[:, -1] = 3  # EOS last: polymodal's EOS pooling and HF's pooler read the same token
    mask = torch.ones_like(ids, dtype=torch.bool)
    bf16_autocast = lambda: torch.autocast("cpu", dtype=torch.bfloat16)  # noqa: E731

    def hf_run(tower: str, ctx: Callable = nullcontext) -> Callable[[], torch.Tensor]:
        inputs = {"pixel_values": pixels} if tower == "image" else {"input_ids": ids, "attention_mask": mask.long()}

        def go() -> torch.Tensor:
            with torch.no_grad(), ctx():
                return clip_features(hf, **inputs)

        return go

    def pm(model: torch.nn.Module, tower: str, ctx: Callable = nullcontext) -> Callable[[], torch.Tensor]:
        def go() -> torch.Tensor:
            with torch.inference_mode(), ctx():
                return model.embed("image", pixels) if tower == "image" else model.embed("text", ids, mask)

        return go

    rows: list[tuple[str, str, Callable[[], torch.Tensor]]] = []
    manifest, onnx = export_variants(tmp, args.threads) if args.onnx else ({}, {})
    bf16 = load_clip(tmp / "clip", dtype=torch.bfloat16) if "bf16" in precisions else None
    for tower in ("image", "text"):
        rows.append((tower, "transformers CLIPModel fp32 (reference)", hf_run(tower)))
        rows.append((tower, "polymodal fp32", pm(fp32.model, tower)))
        if bf16 is not None:
            rows.append((tower, "transformers CLIPModel + bf16 autocast", hf_run(tower, bf16_autocast)))
            rows.append((tower, "polymodal bf16 autocast", pm(fp32.model, tower, bf16_autocast)))
            rows.append((tower, "polymodal bf16 weights", pm(bf16.model, tower)))
        for name, embedder in onnx.items():
            marked = " (default)" if manifest[f"{tower}_encoder"]["default"] == name else ""
            rows.append((tower, f"polymodal onnxruntime {name}{marked}", onnx_run(embedder, tower, pixels, ids, mask)))

    print(
        f"CLIP size {args.size}, batch {args.batch}, {args.threads} threads, best of {args.iters}, "
        f"torch {torch.__version__}, attention {hf.config._attn_implementation}, precisions {','.join(precisions)}"
    )
    print(f"{'tower':6} {'path':42} {'items/s':>9} {'vs HF fp32':>10} {'cos vs fp32':>11}")
    seconds, outs = time_rows([fn for _, _, fn in rows], args.iters)
    reference: dict[str, tuple[float, torch.Tensor]] = {}
    for (tower, name, _), secs, out in zip(rows, seconds, outs):
        rate = args.batch / secs
        if tower not in reference:
            reference[tower] = (rate, F.normalize(out.float(), dim=-1))
        base_rate, base_out = reference[tower]
        print(f"{tower:6} {name:42} {rate:9.1f} {rate / base_rate:9.2f}x {cosine(out, base_out):11.5f}", flush=True)


def export_variants(tmp: Path, threads: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Export the checkpoint (int8 variants and the default chosen on this machine); (manifest, OnnxEmbedder per
    variant)."""
    from polymodal.export import OnnxEmbedder, export_onnx
    from polymodal.export.onnx import PARTS

    start = time.perf_counter()
    manifest = export_onnx(tmp / "clip", tmp / "onnx")
    print(f"ONNX export of both towers, int8 variants and the choice: {time.perf_counter() - start:.0f} s")
    for modality in ("image", "text"):
        entry = manifest[PARTS[modality]]
        figures = ", ".join(
            f"{name} {v['items_per_second']:.1f}/s worst cosine {v['cosine_min']:.5f} / {v['heldout_cosine_min']:.5f}"
            for name, v in entry["variants"].items()
        )
        rows = entry["check_set"]["rows"]
        print(f"  default for {modality}: {entry['default']} (sample of 8 / held-out {rows}: {figures})")
    names = {name for modality in ("image", "text") for name in manifest[PARTS[modality]]["variants"]}
    return manifest, {name: OnnxEmbedder(tmp / "onnx", threads=threads, variant=name) for name in sorted(names)}


def onnx_run(
    onnx: Any, tower: str, pixels: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor
) -> Callable[[], torch.Tensor]:
    np_pixels, np_ids, np_mask = pixels.numpy(), ids.numpy(), mask.numpy()
    if tower == "image":
        return lambda: torch.from_numpy(onnx.embed_pixels(np_pixels))
    return lambda: torch.from_numpy(onnx.embed_ids(np_ids, np_mask))


def save_minilm_model(directory: Path) -> Path:
    """A polymodal embedding model whose text tower is the packaged MiniLM (trained weights, mean pooling, 256
    tokens) with an identity projection, so its text embeddings are MiniLM's own, beside a tiny random image tower
    (an embedding model binds two modalities)."""
    from polymodal.data.processors import ImageProcessor, TextProcessor
    from polymodal.data.transforms import ImagePreprocess
    from polymodal.models import build_model, parse_model_config, save_model
    from polymodal.pretrained import MiniLM
    from polymodal.pretrained.minilm import MAX_TOKENS

    minilm = MiniLM.load()
    image = {"name": "vit", "params": {"image_size": 32, "patch_size": 8, "width": 32, "depth": 1, "heads": 2}}
    text = {"name": "hf_text", "params": {"path": "pretrained:minilm", "pooling": "mean"}}
    config = parse_model_config(
        {"kind": "embedding", "embed_dim": minilm.dim, "encoders": {"image": image, "text": text}}
    )
    torch.manual_seed(0)
    model = build_model(config).eval()
    with torch.no_grad():
        model.projections["text"].proj.weight.copy_(torch.eye(minilm.dim))
    processors = {
        "image": ImageProcessor(ImagePreprocess(image_size=32)),
        "text": TextProcessor(minilm.tokenizer, MAX_TOKENS),
    }
    return save_model(directory, model, processors)


def trained_text(tmp: Path, args: argparse.Namespace, precisions: tuple[str, ...]) -> None:
    """The packaged MiniLM (trained weights) through ``polymodal export``: the default it chooses and each variant's
    cosine on the export's calibration sample and held-out check set, then texts/s against transformers' own MiniLM
    (mean pooling, as sentence-transformers computes it) on the held-out texts repeated to the batch: the ONNX
    variants and polymodal's own model in each of ``precisions`` (bf16: autocast, its default where bf16 is
    native)."""
    import transformers as t

    import polymodal
    from polymodal.export import OnnxEmbedder, export_onnx
    from polymodal.export.check import CHECK_TEXTS
    from polymodal.pretrained.locate import minilm_dir

    start = time.perf_counter()
    manifest = export_onnx(save_minilm_model(tmp / "minilm"), tmp / "minilm-onnx")
    entry = manifest["text_encoder"]
    print(f"\nMiniLM export (both towers, variants, choice): {time.perf_counter() - start:.0f} s")
    print(f"MiniLM default: {entry['default']}; cosine to PyTorch fp32, worst / mean:")
    print(f"  {'variant':11} {'sample of 8':>19} {'held-out ' + str(entry['check_set']['rows']):>19} {'items/s':>9}")
    for name, v in entry["variants"].items():
        print(
            f"  {name:11} {v['cosine_min']:9.5f} / {v['cosine_mean']:.5f} "
            f"{v['heldout_cosine_min']:9.5f} / {v['heldout_cosine_mean']:.5f} {v['items_per_second']:9.1f}"
        )

    texts = [CHECK_TEXTS[i % len(CHECK_TEXTS)] for i in range(args.batch)]
    tokenizer = t.AutoTokenizer.from_pretrained(minilm_dir(), local_files_only=True)
    hf = t.AutoModel.from_pretrained(minilm_dir(), local_files_only=True).eval()
    inputs = tokenizer(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
    ids, mask = inputs["input_ids"].numpy(), inputs["attention_mask"].numpy()

    def hf_run() -> torch.Tensor:
        with torch.no_grad():
            hidden = hf(**inputs).last_hidden_state
            weights = inputs["attention_mask"].unsqueeze(-1).float()
            return F.normalize((hidden * weights).sum(1) / weights.sum(1), dim=-1)

    rows: list[tuple[str, Callable[[], torch.Tensor]]] = [("transformers MiniLM fp32 (reference)", hf_run)]
    models = {f"polymodal {p}": polymodal.load(tmp / "minilm", precision=p, batch_size=args.batch) for p in precisions}
    rows += [(name, lambda m=model: torch.as_tensor(m.embed_text(texts))) for name, model in models.items()]
    for name in entry["variants"]:
        embedder = OnnxEmbedder(tmp / "minilm-onnx", threads=args.threads, variant=name)
        marked = " (default)" if entry["default"] == name else ""
        rows.append((f"onnxruntime {name}{marked}", lambda e=embedder: torch.from_numpy(e.embed_ids(ids, mask))))
    seconds, outs = time_rows([fn for _, fn in rows], args.iters)
    print(f"MiniLM texts/s, batch {args.batch} ({ids.shape[1]} tokens), {args.threads} threads, best of {args.iters}")
    print(f"  {'path':40} {'texts/s':>9} {'vs HF fp32':>10} {'cos worst / mean':>17}")
    for (name, _), secs, out in zip(rows, seconds, outs):
        rate = args.batch / secs
        worst = float(F.cosine_similarity(out.float(), outs[0].float(), dim=-1).min())
        print(
            f"  {name:40} {rate:9.1f} {rate * seconds[0] / args.batch:9.2f}x {worst:8.5f} / {cosine(out, outs[0]):.5f}",
            flush=True,
        )
    corpus_rows(tokenizer, hf, models, args)


def corpus_rows(tokenizer: Any, hf: Any, models: dict[str, Any], args: argparse.Namespace) -> None:
    """Texts/s over a corpus of ``--corpus-batches`` batches of the held-out texts in a shuffled order: transformers
    in batches of the corpus order (a plain loop) and in batches sorted by length (as sentence-transformers'
    ``encode`` does), against polymodal's ``embed_text`` of the whole list (which sorts by length too). Tokenizing
    is timed in every row, as ``embed_text`` includes it."""
    import random

    from polymodal.export.check import CHECK_TEXTS

    rng = random.Random(0)
    corpus = [CHECK_TEXTS[rng.randrange(len(CHECK_TEXTS))] for _ in range(args.batch * args.corpus_batches)]

    def hf_embed(texts: list[str]) -> torch.Tensor:
        inputs = tokenizer(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
        with torch.no_grad():
            hidden = hf(**inputs).last_hidden_state
        weights = inputs["attention_mask"].unsqueeze(-1).float()
        return F.normalize((hidden * weights).sum(1) / weights.sum(1), dim=-1)

    def hf_in_order() -> torch.Tensor:
        return torch.cat([hf_embed(corpus[i : i + args.batch]) for i in range(0, len(corpus), args.batch)])

    def hf_by_length() -> torch.Tensor:
        order = sorted(range(len(corpus)), key=lambda i: len(corpus[i]))
        rows = torch.cat(
            [hf_embed([corpus[j] for j in order[i : i + args.batch]]) for i in range(0, len(order), args.batch)]
        )
        return rows[torch.argsort(torch.tensor(order))]

    rows = [("transformers MiniLM fp32, corpus order (reference)", hf_in_order)]
    rows.append(("transformers MiniLM fp32, sorted by length", hf_by_length))
    rows += [(f"{name} embed_text", lambda m=m: torch.as_tensor(m.embed_text(corpus))) for name, m in models.items()]
    seconds, outs = time_rows([fn for _, fn in rows], args.iters)
    shape = f"batches of {args.batch}, {args.threads} threads, best of {args.iters}"
    print(f"MiniLM texts/s over a corpus of {len(corpus)} texts, {shape}")
    print(f"  {'path':52} {'texts/s':>9} {'vs HF fp32':>10} {'cos worst / mean':>17}")
    for (name, _), secs, out in zip(rows, seconds, outs):
        worst = float(F.cosine_similarity(out.float(), outs[0].float(), dim=-1).min())
        rate = len(corpus) / secs
        print(
            f"  {name:52} {rate:9.1f} {seconds[0] / secs:9.2f}x {worst:8.5f} / {cosine(out, outs[0]):.5f}", flush=True
        )


if __name__ == "__main__":
    main()
