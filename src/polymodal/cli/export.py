"""``polymodal export MODEL --format onnx --out DIR``: an embedding model's towers (image, text, audio, video) as ONNX
graphs."""

from __future__ import annotations

from pathlib import Path

import typer

from polymodal.cli.output import JsonOption, console, emit_json, fail

FORMATS = ("onnx",)


def export(
    model: Path = typer.Argument(
        ...,
        help="A polymodal embedding model (towers over image, text, audio, video) or a Hugging Face CLIPModel "
        "directory.",
    ),
    format: str = typer.Option("onnx", "--format", help="Export format (only onnx for now)."),
    out: Path = typer.Option(..., "--out", help="Directory to write (atomically)."),
    opset: int = typer.Option(None, "--opset", help="ONNX opset (default: the exporter's)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a non-empty --out directory."),
    json: bool = JsonOption,
) -> None:
    """Export each tower (image, text, audio, video) to <modality>_encoder.onnx, plus export.json.

    Batch size (and text length) are dynamic; audio features have the saved clip length.
    Video clips have the saved frames per clip, a shorter clip padded and masked.
    Each graph is checked against PyTorch with onnxruntime before anything is written.
    """
    if format not in FORMATS:
        fail(f"unknown --format {format!r}; supported: {', '.join(FORMATS)}", as_json=json, code=2)
    from polymodal.config import ConfigError
    from polymodal.export import ExportError, export_onnx
    from polymodal.export.onnx import PARTS
    from polymodal.interop import HFLoadError

    try:
        manifest = export_onnx(model, out, opset=opset, overwrite=overwrite)
    except (ExportError, HFLoadError, ConfigError, FileNotFoundError) as e:
        fail(str(e), as_json=json)
    towers = [manifest[part] for part in PARTS.values() if part in manifest]
    files = [tower["file"] for tower in towers] + ["export.json"]
    if json:
        emit_json({"out": str(out), "files": files, **manifest})
        return
    diff = max(tower["max_abs_diff"] for tower in towers)
    console.print(
        f"[bold green]exported[/] {manifest['source']['kind']} {model} -> {out}: {', '.join(files)} "
        f"(embed_dim {manifest['embed_dim']}, onnxruntime vs PyTorch max |diff| {diff:.1e})",
        highlight=False,
    )
