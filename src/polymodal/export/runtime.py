"""Run an exported dual encoder with onnxruntime alone (no PyTorch model needed)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from polymodal.data.text import TextTokenizer
from polymodal.data.transforms import ImagePreprocess
from polymodal.export.onnx import MANIFEST_FILE, ExportError, require_onnx
from polymodal.interop.preprocess import HFImagePreprocess


class OnnxDualEncoder:
    """``embed_images``/``embed_text`` over ``image_encoder.onnx``/``text_encoder.onnx``."""

    def __init__(self, directory: str | os.PathLike[str], threads: int | None = None) -> None:
        require_onnx()
        import onnxruntime as ort

        self.directory = Path(directory)
        path = self.directory / MANIFEST_FILE
        if not path.is_file():
            raise ExportError(f"{self.directory}: no {MANIFEST_FILE}; not an ONNX export directory")
        self.manifest: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        options = ort.SessionOptions()
        # The cores this process uses for torch (polymodal.hardware chooses them), not onnxruntime's own count of
        # the host's cores: no oversubscription beside torch or FAISS.
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1

        def session(part: str) -> Any:
            path = str(self.directory / self.manifest[part]["file"])
            return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])

        self.image_session, self.text_session = session("image_encoder"), session("text_encoder")
        pre = dict(self.manifest["image_encoder"]["preprocess"])
        floor = pre.pop("crop_offsets", "round") == "floor"
        self.preprocess = (HFImagePreprocess if floor else ImagePreprocess).from_dict(pre)
        tok = self.manifest["text_encoder"].get("tokenizer")
        self.tokenizer = TextTokenizer.load(self.directory / tok["dir"]) if tok else None
        self.max_length = int(self.manifest["text_encoder"]["max_length"])

    def embed_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """(N, 3, S, S) float32 -> (N, D)."""
        return self.image_session.run(None, {"pixel_values": np.ascontiguousarray(pixels, dtype=np.float32)})[0]

    def embed_ids(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """(N, T) int64 ids and 1/0 mask -> (N, D)."""
        feeds = {"input_ids": input_ids.astype(np.int64), "attention_mask": attention_mask.astype(np.int64)}
        return self.text_session.run(None, feeds)[0]

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self.embed_pixels(np.stack([self.preprocess.to_tensor(img).numpy() for img in images]))

    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        if self.tokenizer is None:
            raise ExportError(f"{self.directory}: the export has no tokenizer/; use embed_ids")
        ids, mask = self.tokenizer.encode_batch(list(texts), self.max_length)
        return self.embed_ids(ids.numpy(), mask.numpy())
