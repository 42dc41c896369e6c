"""``polymodal models``: what can be built, read from the registries themselves."""

from __future__ import annotations

import typer
from rich.table import Table

from polymodal.cli.output import JsonOption, console, emit_json


def _catalogue() -> dict[str, list[dict]]:
    from polymodal.data.processors import PROCESSORS
    from polymodal.models import PRESETS
    from polymodal.modules.encoders import ENCODERS
    from polymodal.modules.fusion import FUSIONS
    from polymodal.modules.heads import DECODERS, HEADS
    from polymodal.modules.losses import LOSSES

    return {
        "presets": PRESETS.describe(),
        "processors": PROCESSORS.describe(),
        "encoders": ENCODERS.describe(),
        "fusion": FUSIONS.describe(),
        "heads": HEADS.describe(),
        "decoders": DECODERS.describe(),
        "losses": LOSSES.describe(),
    }


def models(
    kind: str = typer.Argument(
        None, help="Only this kind: presets, processors, encoders, fusion, heads, decoders or losses."
    ),
    json: bool = JsonOption,
) -> None:
    """List what models are built from: presets, processors, encoders, fusion modules, heads, decoders, losses."""
    catalogue = _catalogue()
    if kind is not None:
        if kind not in catalogue:
            from polymodal.cli.output import fail

            fail(f"unknown kind {kind!r}; choose from {', '.join(catalogue)}", as_json=json, code=2)
        catalogue = {kind: catalogue[kind]}
    if json:
        emit_json(catalogue)
        return
    for section, rows in catalogue.items():
        table = Table(title=section, title_justify="left", show_lines=False)
        table.add_column("name", style="bold cyan", no_wrap=True)
        table.add_column("summary")
        table.add_column("parameters (default)")
        for row in rows:
            params = ", ".join(p["name"] + ("" if p["required"] else f"={p['default']}") for p in row["params"])
            table.add_row(row["name"], row["summary"], params)
        console.print(table)
