"""``polymodal data ...``: generate the built-in benchmark, validate datasets."""

from __future__ import annotations

import typer

from polymodal.cli.data_check import check
from polymodal.cli.data_shapes import shapes, shapes_video

app = typer.Typer(help="Datasets: generate ShapesWorld, validate a manifest or folder.", no_args_is_help=True)
app.command("shapes")(shapes)
app.command("shapes-video")(shapes_video)
app.command("check")(check)
