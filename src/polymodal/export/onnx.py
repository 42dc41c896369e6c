"""Export an image-text embedding model's towers to ONNX: ``image_encoder.onnx``, ``text_encoder.onnx`` and
``export.json`` (inputs, outputs, preprocessing), plus the tokenizer.

Exporter: ``torch.onnx.export(..., dynamo=True)``, the torch.export-based exporter that is the
default since torch 2.9. The TorchScript exporter (``dynamo=False``) also handles these
towers on torch 2.13 and is faster to run, but it is deprecated there and emits a warning
on every call; the dynamo path is the one that keeps working. Batch (and, for text, sequence
length) are dynamic dimensions, so one file serves any batch size.

Every export is checked before it is written: onnxruntime must reproduce PyTorch on the
example inputs (``max_abs_diff`` in export.json), else nothing is written.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from polymodal.export.source import DualEncoderSource, ExportError, load_dual_encoder
from polymodal.fsutil import atomic_directory
from polymodal.models import EmbeddingModel
from polymodal.version import __version__

IMAGE_FILE = "image_encoder.onnx"
TEXT_FILE = "text_encoder.onnx"
MANIFEST_FILE = "export.json"
TOKENIZER_DIR = "tokenizer"
CHECK_TOLERANCE = 1e-4


def require_onnx() -> None:
    """onnx, onnxscript and onnxruntime come with the ``onnx`` extra."""
    import importlib.util

    missing = [m for m in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(m) is None]
    if missing:
        raise ExportError(f"ONNX export needs {', '.join(missing)}: pip install 'polymodal[onnx]'")


class ImageTower(nn.Module):
    """pixel_values (B, 3, S, S) -> image_embeds (B, D), unit norm."""

    def __init__(self, model: EmbeddingModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: Tensor) -> Tensor:
        return self.model.embed("image", pixel_values)


class TextTower(nn.Module):
    """input_ids (B, T) int64, attention_mask (B, T) int64 1/0 -> text_embeds (B, D), unit norm.

    The mask is int64 in the graph (the ONNX convention runtimes expect) and made bool here.
    """

    def __init__(self, model: EmbeddingModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        return self.model.embed("text", input_ids, attention_mask.bool())


def _example_text(source: DualEncoderSource) -> tuple[Tensor, Tensor]:
    # Batch 2 and length >= 2 with real padding: torch.export specialises dimensions of size 1.
    length = min(8, source.max_length)
    ids = torch.randint(5, 20, (2, length))
    if source.tokenizer is not None:
        texts = ["a photo of a small red circle", "a square"]
        ids, mask = source.tokenizer.encode_batch(texts, length)
        return ids, mask.long()
    mask = torch.ones_like(ids)
    mask[1, length // 2 :] = 0
    return ids, mask


def _export_one(
    module: nn.Module,
    args: tuple[Tensor, ...],
    names: list[str],
    output: str,
    dynamic: dict[str, dict[int, Any]],
    path: Path,
    opset: int | None,
) -> tuple[float, int]:
    """Export ``module`` to ``path``; return onnxruntime's max |difference| from PyTorch on ``args``
    and the graph's ONNX opset."""
    import onnxruntime as ort

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter is chatty about deprecations inside torch
        program = torch.onnx.export(
            module,
            args,
            str(path),
            dynamo=True,
            input_names=names,
            output_names=[output],
            dynamic_shapes=dynamic,
            opset_version=opset,
            external_data=False,
            verbose=False,
        )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {n: a.numpy() for n, a in zip(names, args)})[0]
    with torch.inference_mode():
        want = module(*args)
    return float((torch.from_numpy(got) - want).abs().max()), int(program.model.opset_imports[""])


def export_onnx(
    model_path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    opset: int | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Export the towers of the dual encoder at ``model_path`` into ``out``; returns export.json's content."""
    require_onnx()
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ExportError(f"{out}: directory exists and is not empty (pass overwrite=True / --overwrite to replace it)")
    source = load_dual_encoder(model_path)
    model = source.model.eval().float()
    size = source.preprocess.image_size
    batch = torch.export.Dim("batch", min=1)
    sequence = torch.export.Dim("sequence", min=1, max=source.max_length)
    pixels = torch.randn(2, 3, size, size)
    ids, mask = _example_text(source)

    with atomic_directory(out) as tmp:
        image_diff, used_opset = _export_one(
            ImageTower(model),
            (pixels,),
            ["pixel_values"],
            "image_embeds",
            {"pixel_values": {0: batch}},
            tmp / IMAGE_FILE,
            opset,
        )
        text_diff, _ = _export_one(
            TextTower(model),
            (ids, mask),
            ["input_ids", "attention_mask"],
            "text_embeds",
            {"input_ids": {0: batch, 1: sequence}, "attention_mask": {0: batch, 1: sequence}},
            tmp / TEXT_FILE,
            opset,
        )
        if max(image_diff, text_diff) > CHECK_TOLERANCE:
            raise ExportError(
                f"onnxruntime differs from PyTorch by {max(image_diff, text_diff):.2e} "
                f"(> {CHECK_TOLERANCE}); nothing written"
            )
        if source.tokenizer is not None:
            source.tokenizer.save(tmp / TOKENIZER_DIR)
        manifest = _manifest(source, image_diff, text_diff, used_opset)
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def _manifest(source: DualEncoderSource, image_diff: float, text_diff: float, opset: int) -> dict[str, Any]:
    """What a consumer in any language needs to feed the two graphs."""
    size, dim = source.preprocess.image_size, source.model.embed_dim
    embeds = {"dtype": "float32", "shape": ["batch", dim], "l2_normalized": True}
    preprocess = source.preprocess.to_dict()
    # HF checkpoints floor the centre-crop offsets, polymodal rounds them (see interop.preprocess).
    preprocess["crop_offsets"] = "floor" if source.kind == "hf-clip" else "round"
    tokenizer = source.tokenizer
    return {
        "format": "onnx",
        "polymodal_version": __version__,
        "torch_version": torch.__version__,
        "exporter": "torch.onnx.export(dynamo=True)",
        "opset": opset,
        "source": {"kind": source.kind, "path": str(source.path)},
        "embed_dim": dim,
        "image_encoder": {
            "file": IMAGE_FILE,
            "inputs": [{"name": "pixel_values", "dtype": "float32", "shape": ["batch", 3, size, size]}],
            "outputs": [{"name": "image_embeds", **embeds}],
            "preprocess": preprocess,
            "max_abs_diff": image_diff,
        },
        "text_encoder": {
            "file": TEXT_FILE,
            "inputs": [
                {"name": "input_ids", "dtype": "int64", "shape": ["batch", "sequence"]},
                {
                    "name": "attention_mask",
                    "dtype": "int64",
                    "shape": ["batch", "sequence"],
                    "values": "1 = token, 0 = padding",
                },
            ],
            "outputs": [{"name": "text_embeds", **embeds}],
            "max_length": source.max_length,
            "tokenizer": None
            if tokenizer is None
            else {"dir": TOKENIZER_DIR, "pad_id": tokenizer.pad_id, "padding": "right"},
            "max_abs_diff": text_diff,
        },
    }
