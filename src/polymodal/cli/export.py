"""``polymodal export MODEL --format onnx --out DIR``: a dual encoder's towers as ONNX graphs."""

from __future__ import annotations

from pathlib import Path

import typer

from polymodal.cli.output import JsonOption, console, emit_json, fail

FORMATS = ("onnx",)


def export(
    model: Path = typer.Argument(..., help="A polymodal dual-encoder directory or a Hugging Face CLIPModel directory."),
    format: str = typer.Option("onnx", "--format", help="Export format (only onnx for now)."),
    out: Path = typer.Option(..., "--out", help="Directory to write (atomically)."),
    opset: int = typer.Option(None, "--opset", help="ONNX opset (default: the exporter's)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a non-empty --out directory."),
    json: bool = JsonOption,
) -> None:
    """Export the image and text towers to image_encoder.onnx / text_encoder.onnx + export.json.

    Batch size (and text length) are dynamic. Each graph is checked against PyTorch with
    onnxruntime before anything is written.
    """
    if format not in FORMATS:
        fail(f"unknown --format {format!r}; supported: {', '.join(FORMATS)}", as_json=json, code=2)
    from polymodal.config import ConfigError
    from polymodal.export import ExportError, export_onnx
    from polymodal.interop import HFLoadError

    try:
        manifest = export_onnx(model, out, opset=opset, overwrite=overwrite)
    except (ExportError, HFLoadError, ConfigError, FileNotFoundError) as e:
        fail(str(e), as_json=json)
    files = [manifest["image_encoder"]["file"], manifest["text_encoder"]["file"], "export.json"]
    if json:
        emit_json({"out": str(out), "files": files, **manifest})
        return
    diff = max(manifest["image_encoder"]["max_abs_diff"], manifest["text_encoder"]["max_abs_diff"])
    console.print(
        f"[bold green]exported[/] {manifest['source']['kind']} {model} -> {out}: {', '.join(files)} "
        f"(embed_dim {manifest['embed_dim']}, onnxruntime vs PyTorch max |diff| {diff:.1e})",
        highlight=False,
    )
