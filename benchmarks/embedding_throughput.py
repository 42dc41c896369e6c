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
also exports the packaged MiniLM sentence encoder (trained weights, 6 layers) the same way and
prints each variant's cosine to its PyTorch fp32 embeddings of a few sentences (int8-mixed
calibrated, as in an export, on the export's own sample texts, which the second set avoids).

    .venv/bin/python benchmarks/embedding_throughput.py [--size b32|small] [--batch 32] [--iters 5]
                                                        [--threads 2] [--no-onnx] [--precisions fp32,bf16]
                                                        [--trained-text]
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
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-onnx", dest="onnx", action="store_false")
    parser.add_argument(
        "--precisions", default=None, help="fp32 or fp32,bf16 (default: bf16 too only where the CPU runs it natively)"
    )
    parser.add_argument("--trained-text", action="store_true", help="also int8 accuracy on the packaged MiniLM")
    args = parser.parse_args()
    precisions = parse_precisions(args.precisions)
    torch.set_num_threads(args.threads)
    # CPU, flags, threads and the matmul peaks of the precisions measured here, beside the figures
    print(machine_header(precisions=precisions))
    with tempfile.TemporaryDirectory(prefix="polymodal-bench-") as tmp:
        run(Path(tmp), args, precisions)
        if args.trained_text:
            trained_text_accuracy(Path(tmp))


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
            f"{name} {v['items_per_second']:.1f}/s cosine {v['cosine_min']:.5f}"
            for name, v in entry["variants"].items()
        )
        print(f"  default for {modality}: {entry['default']} (on the export's sample of 8: {figures})")
    names = {name for modality in ("image", "text") for name in manifest[PARTS[modality]]["variants"]}
    return manifest, {name: OnnxEmbedder(tmp / "onnx", threads=threads, variant=name) for name in sorted(names)}


def onnx_run(
    onnx: Any, tower: str, pixels: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor
) -> Callable[[], torch.Tensor]:
    np_pixels, np_ids, np_mask = pixels.numpy(), ids.numpy(), mask.numpy()
    if tower == "image":
        return lambda: torch.from_numpy(onnx.embed_pixels(np_pixels))
    return lambda: torch.from_numpy(onnx.embed_ids(np_ids, np_mask))


SENTENCES = [
    "a photo of a cat sitting on a red sofa",
    "two dogs playing in the snow",
    "The quarterly report shows revenue grew 12% year over year.",
    "How do I reset my password?",
    "Photosynthesis converts light energy into chemical energy.",
    "Il pleut des cordes ce matin.",
    "def f(x): return x * 2",
    "diagram",
]
OTHER_SENTENCES = [  # none of them in the export's own sample (polymodal.export.onnx.SAMPLE_TEXTS)
    "a man riding a horse along the beach at sunset",
    "Where is the nearest train station?",
    "The stock market fell sharply after the announcement.",
    "Neural networks learn representations from data.",
    "Ich habe heute leider keine Zeit.",
    "SELECT name FROM users WHERE id = 1;",
    "sunset",
    "Please find the attached invoice for March.",
    "The patient reported mild headaches and nausea.",
    "a child flying a kite in a green park",
    "What is the capital of Australia?",
    "Water boils at 100 degrees Celsius at sea level.",
    "El perro duerme en el sofá.",
    "Update the firmware before restarting the router.",
    "ok",
    "A long, winding road through snowy mountains under a grey sky, with a single red car far away.",
]


def trained_text_accuracy(tmp: Path) -> None:
    """The packaged MiniLM (trained weights) exported and quantised like a tower (int8-mixed calibrated on the
    export's own sample texts): each variant's cosine to PyTorch on SENTENCES and on OTHER_SENTENCES."""
    import warnings

    from polymodal.export.onnx import SAMPLE_TEXTS
    from polymodal.export.variants import QUANTIZERS, cosines, make_session
    from polymodal.pretrained import MiniLM

    minilm = MiniLM.load()

    def feeds_and_embeds(texts: list[str]) -> tuple[dict[str, Any], Any]:
        ids, mask = minilm.tokenizer.encode_batch(texts, 64)
        with torch.inference_mode():
            return {"ids": ids.numpy(), "mask": mask.long().numpy()}, tower(ids, mask.long()).numpy()

    class Tower(torch.nn.Module):
        def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            return F.normalize(minilm.encoder(ids, mask.bool()).pooled, dim=-1)

    tower = Tower().eval()
    calibration, _ = feeds_and_embeds(list(SAMPLE_TEXTS))
    sets = {
        "8 sentences": feeds_and_embeds(SENTENCES),
        f"{len(OTHER_SENTENCES)} others": feeds_and_embeds(OTHER_SENTENCES),
    }
    example = {name: torch.from_numpy(value) for name, value in sets["8 sentences"][0].items()}
    batch, sequence = torch.export.Dim("batch", min=1), torch.export.Dim("sequence", min=1, max=64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            tower,
            (example["ids"], example["mask"]),
            str(tmp / "minilm.onnx"),
            dynamo=True,
            input_names=["ids", "mask"],
            dynamic_shapes={"ids": {0: batch, 1: sequence}, "mask": {0: batch, 1: sequence}},
            external_data=False,
            verbose=False,
        )
    files = {"fp32": tmp / "minilm.onnx"}
    for name, build in QUANTIZERS.items():
        start = time.perf_counter()
        build(files["fp32"], tmp / f"minilm.{name}.onnx", calibration)
        files[name] = tmp / f"minilm.{name}.onnx"
        print(f"MiniLM {name} built in {time.perf_counter() - start:.1f} s")
    print("MiniLM (trained weights): cosine to PyTorch fp32, worst / mean, on " + " | ".join(sets))
    for name, path in files.items():
        session = make_session(path, torch.get_num_threads())
        figures = [cosines(session.run(None, feeds)[0], want) for feeds, want in sets.values()]
        print(f"  {name:11} " + " | ".join(f"{cos.min():.5f} / {cos.mean():.5f}" for cos in figures))


if __name__ == "__main__":
    main()
