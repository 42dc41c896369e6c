"""``polymodal demo``: the end-to-end walk-through on the built-in ShapesWorld data.

For now it prepares the data (``OUT/shapes``); training and evaluation steps join later.
"""

from __future__ import annotations

from pathlib import Path

import typer

from polymodal.cli.data_shapes import print_summary
from polymodal.cli.output import JsonOption, console, emit_json, fail
from polymodal.data.shapes import generate_shapesworld, is_complete, read_manifest


def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="Run directory; data goes to OUT/shapes."),
    n: int = typer.Option(2000, "--n", help="ShapesWorld images in train+val+test."),
    seed: int = typer.Option(0, "--seed", help="Seed for data generation."),
    json: bool = JsonOption,
) -> None:
    """Run the demo: generate ShapesWorld (reused when already complete with the same parameters)."""
    if n < 1:
        fail(f"--n must be at least 1, got {n}", as_json=json)
    data_dir = out / "shapes"
    image_size = 64
    if is_complete(data_dir, n, seed, image_size):
        manifest = read_manifest(data_dir) or {}
        summary = {**manifest, "out_dir": str(data_dir), "total": sum(manifest["counts"].values()),
                   "elapsed_seconds": None, "reused": True}  # fmt: skip
    else:
        try:
            summary = generate_shapesworld(data_dir, n, seed=seed, image_size=image_size, progress=not json)
        except OSError as e:
            fail(f"cannot write {data_dir}: {e}", as_json=json)
        summary["reused"] = False
    if json:
        emit_json({"data": summary})
        return
    if summary["reused"]:
        console.print(f"ShapesWorld already in {data_dir} (same parameters): reusing it.", highlight=False)
    print_summary(summary)
