"""``polymodal export MODEL --format onnx --out DIR``: an embedding model's towers (image, text, audio, video) as ONNX
graphs, with int8 variants and the default chosen by measurement; ``polymodal export DIR --choose`` chooses again on
this machine."""

from __future__ import annotations

from pathlib import Path

import typer

from polymodal.cli.output import JsonOption, console, emit_json, fail

FORMATS = ("onnx",)


def export(
    model: Path = typer.Argument(
        ...,
        help="A polymodal embedding model (towers over image, text, audio, video) or a Hugging Face CLIPModel "
        "directory; with --choose, an export directory.",
    ),
    format: str = typer.Option("onnx", "--format", help="Export format (only onnx for now)."),
    out: Path = typer.Option(None, "--out", help="Directory to write (atomically); not with --choose."),
    opset: int = typer.Option(
        None, "--opset", help="ONNX opset, 18 or later (default: 23, the first with an Attention operator)."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a non-empty --out directory."),
    quantize: bool = typer.Option(True, "--quantize/--no-quantize", help="Also write each tower's int8 variants."),
    default: str = typer.Option(
        "auto",
        "--default",
        help="The variant the runtime loads: auto (per tower, the fastest that keeps cosine >= 0.999 to PyTorch "
        "fp32 on every sample and held-out row, measured now), fp32, int8, int8-avx2, int8-mixed or int8-block.",
    ),
    choose: bool = typer.Option(
        False, "--choose", help="Time the variants of the export MODEL on this machine and record the default again."
    ),
    check_texts: Path = typer.Option(
        None,
        "--check-texts",
        help="A UTF-8 file, one text per line, added to the held-out texts every variant must stay accurate on.",
    ),
    check_images: Path = typer.Option(
        None, "--check-images", help="A directory of images added to the held-out images (as --check-texts)."
    ),
    json: bool = JsonOption,
) -> None:
    """Export each tower (image, text, audio, video) to <modality>_encoder.onnx (+ its int8 variants), export.json.

    Batch size (and text length) are dynamic; audio features have the saved clip length.
    Video clips have the saved frames per clip, a shorter clip padded and masked.
    Each graph is checked against PyTorch with onnxruntime before anything is written; each variant is timed
    and its cosine to PyTorch's fp32 embeddings of a fixed sample and of a held-out check set recorded.
    """
    if format not in FORMATS:
        fail(f"unknown --format {format!r}; supported: {', '.join(FORMATS)}", as_json=json, code=2)
    from polymodal.export.variants import CHECK_FILE, SAMPLE_FILE, VARIANTS

    if default not in ("auto", *VARIANTS):
        fail(f"unknown --default {default!r}; supported: auto, {', '.join(VARIANTS)}", as_json=json, code=2)
    if (out is None) != choose:
        fail("give --out DIR to export, or --choose to choose again in an export", as_json=json, code=2)
    if choose and (check_texts is not None or check_images is not None):
        fail("--check-texts and --check-images need the model: give them when exporting", as_json=json, code=2)
    from polymodal.config import ConfigError
    from polymodal.export import ExportError, export_onnx
    from polymodal.export.onnx import PARTS, choose_again
    from polymodal.interop import HFLoadError

    try:
        if choose:
            out = model
            manifest = choose_again(model, default=default)
        else:
            manifest = export_onnx(
                model,
                out,
                opset=opset,
                overwrite=overwrite,
                quantize=quantize,
                default=default,
                check_texts=check_texts,
                check_images=check_images,
            )
    except (ExportError, HFLoadError, ConfigError, FileNotFoundError) as e:
        fail(str(e), as_json=json)
    towers = {modality: manifest[part] for modality, part in PARTS.items() if part in manifest}
    files = [v["file"] for tower in towers.values() for v in tower.get("variants", {"fp32": tower}).values()]
    files += [SAMPLE_FILE, *([CHECK_FILE] if (out / CHECK_FILE).is_file() else []), "export.json"]
    if json:
        emit_json({"out": str(out), "files": files, **manifest})
        return
    diff = max(tower["max_abs_diff"] for tower in towers.values())
    if not choose:
        console.print(
            f"[bold green]exported[/] {manifest['source']['kind']} {model} -> {out}: {', '.join(files)} "
            f"(embed_dim {manifest['embed_dim']}, onnxruntime vs PyTorch max |diff| {diff:.1e})",
            highlight=False,
        )
    for modality, tower in towers.items():
        held_out = tower.get("check_set", {}).get("rows")
        note = f" (held-out check set: {held_out} rows)" if held_out else ""
        console.print(f"{modality}: default {tower.get('default', 'fp32')}{note}", highlight=False)
        console.print(f"  {'variant':10} {'items/s':>9} {'sample worst':>13} {'held-out worst':>15} {'mean':>8}")
        for name, v in tower.get("variants", {}).items():
            held = (
                f"{v['heldout_cosine_min']:15.5f} {v['heldout_cosine_mean']:8.5f}" if "heldout_cosine_min" in v else ""
            )
            console.print(f"  {name:10} {v['items_per_second']:9.1f} {v['cosine_min']:13.5f} {held}", highlight=False)
