"""Export models for other runtimes. ONNX: the two towers of a dual encoder (see :mod:`.onnx`)."""

from polymodal.export.onnx import MANIFEST_FILE, export_onnx
from polymodal.export.runtime import OnnxDualEncoder
from polymodal.export.source import ExportError, load_dual_encoder

__all__ = ["MANIFEST_FILE", "ExportError", "OnnxDualEncoder", "export_onnx", "load_dual_encoder"]
