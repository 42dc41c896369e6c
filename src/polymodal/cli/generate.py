"""``polymodal generate MODEL PROMPT...``: text-to-image into a folder of PNGs and a contact sheet.

``--out DIR`` receives ``PPP-II.png`` per image (prompt index, then image index, both from 0 and zero-padded),
``contact_sheet.png`` (one labelled row per prompt, the first ``SHEET_ROWS`` of them) and ``generate.json`` (model,
the options it used, prompts, files). The folder is written as a whole and atomically: a reader sees the old one or
the new one, never a mix, and a folder holding files ``generate`` did not write is refused rather than replaced.
"""

from __future__ import annotations

import inspect
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape
from rich.table import Table

from polymodal.cli.output import JsonOption, console, emit_json, err_console, fail
from polymodal.cli.tasks import PrecisionOption, load_model_or_fail, run_task

if TYPE_CHECKING:
    from PIL import Image

MANIFEST = "generate.json"
CONTACT_SHEET = "contact_sheet.png"
MIN_TILE = 128  # contact-sheet cells are at least this many pixels wide: a 32 px image is scaled up to be seen
LABEL_HEIGHT = 20
GAP = 4
SHEET_ROWS = 64  # a prompts file of thousands of lines still gets a sheet one can open
SAMPLING = ("steps", "guidance", "sampler")  # a diffusion model's sampling options


def sampling_options(loaded: Any) -> tuple[str, ...]:
    """The sampling options the model's generator reads: those its ``generate`` names (a GAN, drawing in one pass,
    names none); all of them when the generator cannot be seen."""
    generator = getattr(getattr(getattr(loaded.backend, "saved", None), "model", None), "generate", None)
    if generator is None:
        return SAMPLING
    return tuple(name for name in SAMPLING if name in inspect.signature(generator).parameters)


def image_name(prompt_index: int, image_index: int, prompt_digits: int = 3) -> str:
    return f"{prompt_index:0{prompt_digits}d}-{image_index:02d}.png"


def read_prompts(prompts: list[str], prompts_file: Path | None) -> list[str]:
    """The prompts on the command line, then those of ``prompts_file`` (one a line, blank lines skipped)."""
    out = list(prompts)
    if prompts_file is not None:
        try:
            lines = prompts_file.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"{prompts_file}: cannot read the prompts ({e})") from None
        from_file = [line.strip() for line in lines if line.strip()]
        if not from_file:
            raise ValueError(f"{prompts_file}: no prompts (one per line)")
        out.extend(from_file)
    if not out:
        raise ValueError("give at least one PROMPT, or --prompts FILE")
    return out


def contact_sheet(rows: list[tuple[str, list[Image.Image]]]) -> Image.Image:
    """A white sheet with one row of images per prompt, each row under its prompt; small images scaled up (nearest
    neighbour, so their pixels stay sharp)."""
    from PIL import Image, ImageDraw, ImageFont

    width, height = rows[0][1][0].size
    scale = max(1, math.ceil(MIN_TILE / width))
    tile_w, tile_h = width * scale, height * scale
    columns = max(len(images) for _, images in rows)
    sheet_w = GAP + columns * (tile_w + GAP)
    sheet = Image.new("RGB", (sheet_w, GAP + len(rows) * (LABEL_HEIGHT + tile_h + GAP)), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=13)
    for r, (prompt, images) in enumerate(rows):
        top = GAP + r * (LABEL_HEIGHT + tile_h + GAP)
        draw.text((GAP, top + 2), _fit(draw, prompt, font, sheet_w - 2 * GAP), fill="black", font=font)
        for c, image in enumerate(images):
            tile = image.resize((tile_w, tile_h), Image.Resampling.NEAREST)
            sheet.paste(tile, (GAP + c * (tile_w + GAP), top + LABEL_HEIGHT))
    return sheet


def _fit(draw: Any, text: str, font: Any, width: int) -> str:
    """``text``, cut short with an ellipsis where it would run past ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def check_out_dir(out: Path) -> None:
    """``out`` may be new, empty, or a folder ``generate`` wrote before (it is replaced); anything else is refused."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: not a directory")
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise ValueError(
            f"{out}: the folder holds files polymodal generate did not write; give a new or empty --out folder"
        )


def write_outputs(
    out: Path, prompts: list[str], images: list[Image.Image], n: int, manifest: dict[str, Any]
) -> dict[str, Any]:
    """The PNGs, the contact sheet and ``generate.json`` into ``out``, atomically; returns the manifest written."""
    from polymodal.data.shapes import encode_png
    from polymodal.fsutil import atomic_directory

    digits = max(3, len(str(len(prompts) - 1)))
    rows = [(prompt, images[t * n : (t + 1) * n]) for t, prompt in enumerate(prompts)]
    files = [
        {"prompt_index": t, "image_index": i, "prompt": prompt, "file": image_name(t, i, digits)}
        for t, (prompt, row) in enumerate(rows)
        for i in range(len(row))
    ]
    manifest = {**manifest, "images": files, "contact_sheet": CONTACT_SHEET}
    with atomic_directory(out) as tmp:
        for entry, image in zip(files, images):
            (tmp / entry["file"]).write_bytes(encode_png(image))
        (tmp / CONTACT_SHEET).write_bytes(encode_png(contact_sheet(rows[:SHEET_ROWS])))
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return manifest


def generate(
    ctx: typer.Context,
    model: str = typer.Argument(..., help="A text-to-image model directory or training run directory."),
    prompts: list[str] = typer.Argument(None, help="One or more prompts, e.g. 'a red circle above a blue square'."),
    prompts_file: Path = typer.Option(None, "--prompts", help="A text file of prompts, one per line."),
    n: int = typer.Option(1, "--n", "-n", help="Images per prompt."),
    steps: int = typer.Option(25, "--steps", help="Sampling steps (diffusion models; a GAN ignores them)."),
    guidance: float = typer.Option(3.0, "--guidance", help="Classifier-free guidance scale; 1 turns it off."),
    seed: int = typer.Option(0, "--seed", help="The same seed, prompt and options give the same pixels."),
    sampler: str = typer.Option("ddim", "--sampler", help="ddim, dpm_solver or ddpm."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the PNGs, contact_sheet.png and generate.json."),
    precision: str = PrecisionOption,
    json: bool = JsonOption,
) -> None:
    """Generate images from text prompts (needs a text-to-image model): PPP-II.png files and a contact sheet."""
    from polymodal.api.model import check_generate_options
    from polymodal.progress import ProgressReporter

    options = {"n": n, "steps": steps, "guidance": guidance, "seed": seed, "sampler": sampler}
    try:
        texts = check_generate_options(read_prompts(prompts or [], prompts_file), **options)  # type: ignore[arg-type]
        check_out_dir(out)
    except ValueError as e:
        fail(str(e), as_json=json, code=2)
    loaded = load_model_or_fail(model, precision=precision, as_json=json)
    # generate.json records the options the model used; those given that it ignores are named once. (Typer carries
    # its own copy of click, whose ParameterSource is not click's: the source is told by its name.)
    used = sampling_options(loaded)
    ignored = [
        o for o in SAMPLING if o not in used and getattr(ctx.get_parameter_source(o), "name", "DEFAULT") != "DEFAULT"
    ]
    if ignored:
        kind = getattr(loaded.backend.saved.model.config, "kind", "model")
        flags = ", ".join(f"--{o}" for o in ignored)
        err_console.print(
            f"note: {flags} {'does' if len(ignored) == 1 else 'do'} not apply to this model ({kind}: one pass, no "
            f"sampling): ignored, and left out of {MANIFEST}",
            highlight=False,
            markup=False,
            soft_wrap=True,  # one line, however narrow the terminal
        )
    images: list[Image.Image] = []
    with ProgressReporter("generate", len(texts) * n, enabled=not json, stream=err_console.file) as progress:
        per_call = loaded.texts_per_generate_call(n)  # progress after each of generate's own chunks
        for start in range(0, len(texts), per_call):
            chunk = texts[start : start + per_call]
            images.extend(run_task("generate", lambda chunk=chunk: loaded.generate(chunk, **options), json))
            progress.update(len(images))
    recorded = {k: v for k, v in options.items() if k not in SAMPLING or k in used}
    manifest = run_task(
        "generate",
        lambda: write_outputs(out, texts, images, n, {"model": loaded.source, "options": recorded, "prompts": texts}),
        json,
    )
    if json:
        emit_json(
            {
                **manifest,
                "out": str(out),
                "images": [{**e, "file": str(out / e["file"])} for e in manifest["images"]],
                "contact_sheet": str(out / CONTACT_SHEET),
            }
        )
        return
    table = Table("prompt", "images", box=None)
    for t, text in enumerate(texts):
        names = [e["file"] for e in manifest["images"] if e["prompt_index"] == t]
        table.add_row(escape(text), escape(", ".join(names)))
    console.print(table)
    count = f"{len(images)} image{'s' * (len(images) != 1)}"
    console.print(f"{count} and {CONTACT_SHEET} in {escape(str(out))}", highlight=False)
