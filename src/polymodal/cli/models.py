"""``polymodal models``: what can be built, read from the registries themselves."""

from __future__ import annotations

from typing import Any

import typer
from pydantic import BaseModel
from rich.table import Table

from polymodal.cli.output import JsonOption, console, emit_json

# Where a recipe sets each processor's settings: image and text in the data section itself, others under
# data.processors.<modality>.
RECIPE_SETTINGS = {"image": "data.image", "text": "data.max_length, data.tokenizer"}


def _settings_params(model: type[BaseModel], prefix: str = "") -> list[dict[str, Any]]:
    """A settings model's keys as recipes write them (nested sections dotted: ``augment.gain_db``), with defaults."""
    from pydantic_core import to_jsonable_python

    from polymodal.config.base import first_model

    params = []
    for name, info in model.model_fields.items():
        nested = first_model(info.annotation)
        if nested is not None:
            params += _settings_params(nested, f"{prefix}{name}.")
            continue
        default = None if info.is_required() else to_jsonable_python(info.get_default(call_default_factory=True))
        params.append(
            {
                "name": prefix + name,
                "default": default,
                "required": info.is_required(),
                "type": getattr(info.annotation, "__name__", str(info.annotation)),
            }
        )
    return params


def _processors() -> list[dict[str, Any]]:
    """Each processor with the settings a recipe gives it (its ``settings_model``), and where the recipe does."""
    from polymodal.data.processors import PROCESSORS

    rows = []
    for row in PROCESSORS.describe():
        settings_model = getattr(PROCESSORS.get(row["name"]), "settings_model", None)
        where = RECIPE_SETTINGS.get(row["name"], f"data.processors.{row['name']}")
        if settings_model is not None:
            row["params"] = _settings_params(settings_model)
        rows.append({**row, "summary": f"{row['summary']} Recipe: {where}.", "recipe_key": where})
    return rows


def _catalogue() -> dict[str, list[dict]]:
    from polymodal.models import PRESETS
    from polymodal.modules.encoders import ENCODERS
    from polymodal.modules.fusion import FUSIONS
    from polymodal.modules.heads import DECODERS, HEADS
    from polymodal.modules.losses import LOSSES

    return {
        "presets": PRESETS.describe(),
        "processors": _processors(),
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
