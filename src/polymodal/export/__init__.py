"""Export models for other runtimes. ONNX: the image, text, audio and video towers of an embedding model (see
:mod:`.onnx`)."""

from polymodal.export.onnx import MANIFEST_FILE, export_onnx
from polymodal.export.runtime import OnnxDualEncoder, OnnxEmbedder
from polymodal.export.source import ExportError, load_dual_encoder, load_export_source

__all__ = [
    "MANIFEST_FILE",
    "ExportError",
    "OnnxDualEncoder",
    "OnnxEmbedder",
    "export_onnx",
    "load_dual_encoder",
    "load_export_source",
]
