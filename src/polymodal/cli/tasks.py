"""``polymodal classify | caption | ask``: one-shot tasks on image files, over :func:`polymodal.load`.

Without ``--model`` the offline default ``polymodal-base`` is used. A model that cannot do the task (e.g.
``caption`` with a dual encoder) is refused in one line with exit code 2; unreadable inputs exit with 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.markup import escape
from rich.table import Table

from polymodal.cli.output import JsonOption, console, emit_json, err_console, fail

if TYPE_CHECKING:
    from polymodal.api import Model

ModelOption = typer.Option(
    None, "--model", "-m", help="Model directory, run directory, HF id or polymodal-base (default)."
)
BatchOption = typer.Option(32, "--batch-size", min=1, help="Images per forward pass.")
PrecisionOption = typer.Option(
    "auto", "--precision", help="auto (bf16 where the CPU runs it natively, else fp32), fp32, bf16 or fp16 (CUDA)."
)


ExportOption = typer.Option(
    None,
    "--export",
    help="The model's ONNX export (polymodal export), or auto (exported once into the cache): each embedding tower "
    "runs in onnxruntime where that measures faster here.",
)


def load_model_or_fail(
    model: str | None,
    *,
    batch_size: int = 32,
    precision: str = "auto",
    as_json: bool = False,
    export: Path | None = None,
) -> Model:
    """``polymodal.load(model)``, with any loading problem turned into one clear line and exit code 1; with
    ``export``, a line per tower saying where it runs."""
    from polymodal.api import load

    try:
        loaded = load(model, batch_size=batch_size, precision=precision, export=export)
    except ModuleNotFoundError as e:
        fail(
            f"cannot load {model or 'polymodal-base'}: {e} "
            "(is the extra installed? pip install 'polymodal[pretrained]')",
            as_json=as_json,
        )
    except (OSError, ImportError, ValueError, KeyError) as e:
        fail(f"cannot load model {model or 'polymodal-base'}: {e}", as_json=as_json)
    for modality, precision in loaded.tower_precisions.items():
        err_console.print(f"{modality} tower in {precision.precision}: {precision.reason}", highlight=False)
    for choice in loaded.tower_runtimes.values():
        err_console.print(choice.describe(), highlight=False)
    return loaded


def check_files(paths: list[Path], as_json: bool) -> None:
    for path in paths:
        if path.is_dir():
            fail(f"{path}: a directory; give its files (e.g. {path}/*.png)", as_json=as_json)
        if not path.is_file():
            fail(f"{path}: no such file", as_json=as_json)


def run_task(task: str, fn, as_json: bool):  # type: ignore[no-untyped-def]
    """Call ``fn``; unsupported tasks exit 2, bad inputs exit 1, each as one line."""
    from polymodal.backends import TaskNotSupported

    try:
        return fn()
    except TaskNotSupported as e:
        fail(str(e), as_json=as_json, code=2)
    except (OSError, ValueError) as e:  # BadSampleError (undecodable image) is a ValueError
        fail(f"{task}: {e}", as_json=as_json)


def classify(
    images: list[Path] = typer.Argument(..., help="Image files."),
    labels: str = typer.Option(..., "--labels", "-l", help="Comma-separated class names, e.g. 'cat,dog,bird'."),
    model: str = ModelOption,
    templates: str = typer.Option(
        "simple", "--templates", help="Prompt template set (see polymodal.evaluate.prompts)."
    ),
    top_k: int = typer.Option(None, "--top-k", min=1, help="Show only the k most probable labels."),
    batch_size: int = BatchOption,
    precision: str = PrecisionOption,
    json: bool = JsonOption,
) -> None:
    """Zero-shot classification: which of --labels each image shows, with probabilities."""
    names = [x.strip() for x in labels.split(",") if x.strip()]
    if len(names) < 2:
        fail(f"--labels needs at least two comma-separated labels, got {labels!r}", as_json=json, code=2)
    from polymodal.evaluate.prompts import resolve_templates

    try:
        resolve_templates(templates)  # before the model loads
    except ValueError as e:
        fail(f"--templates: {e}", as_json=json, code=2)
    check_files(images, json)
    loaded = load_model_or_fail(model, batch_size=batch_size, precision=precision, as_json=json)
    results = run_task(
        "classify", lambda: loaded.classify([str(p) for p in images], names, templates=templates, top_k=top_k), json
    )
    payload = [
        {"image": str(p), "predictions": [{"label": lab, "score": round(s, 6)} for lab, s in preds]}
        for p, preds in zip(images, results)
    ]
    if json:
        emit_json(payload)
        return
    table = Table(box=None)
    table.add_column("image", overflow="fold")  # the whole path, folded, not cut short in a narrow terminal
    for name in ("label", "probability", "top"):
        table.add_column(name)
    for row in payload:
        preds = row["predictions"]
        rest = ", ".join(f"{p['label']} {p['score']:.2f}" for p in preds[1:4])
        table.add_row(escape(row["image"]), escape(preds[0]["label"]), f"{preds[0]['score']:.3f}", escape(rest))
    console.print(table)


def caption(
    images: list[Path] = typer.Argument(..., help="Image files."),
    model: str = ModelOption,
    max_new_tokens: int = typer.Option(30, "--max-new-tokens", min=1),
    beams: int = typer.Option(1, "--beams", min=1, help="Beam width (1 = greedy)."),
    batch_size: int = BatchOption,
    precision: str = PrecisionOption,
    json: bool = JsonOption,
) -> None:
    """Describe each image in a sentence (needs a captioning model)."""
    check_files(images, json)
    loaded = load_model_or_fail(model, batch_size=batch_size, precision=precision, as_json=json)
    texts = run_task(
        "caption",
        lambda: loaded.caption([str(p) for p in images], max_new_tokens=max_new_tokens, num_beams=beams),
        json,
    )
    payload = [{"image": str(p), "caption": t} for p, t in zip(images, texts)]
    if json:
        emit_json(payload)
        return
    for row in payload:
        console.print(f"[bold]{escape(row['image'])}[/]: {escape(row['caption'])}", highlight=False, soft_wrap=True)


def ask(
    image: Path = typer.Argument(..., help="An image file."),
    questions: list[str] = typer.Argument(..., help="One or more questions about it."),
    model: str = ModelOption,
    precision: str = PrecisionOption,
    json: bool = JsonOption,
) -> None:
    """Answer questions about an image (needs a VQA model)."""
    check_files([image], json)
    loaded = load_model_or_fail(model, precision=precision, as_json=json)
    answers = run_task("ask", lambda: loaded.answer(str(image), list(questions)), json)
    payload = [{"image": str(image), "question": q, "answer": a} for q, a in zip(questions, answers)]
    if json:
        emit_json(payload)
        return
    for row in payload:
        console.print(f"{escape(row['question'])} -> [bold]{escape(row['answer'])}[/]", highlight=False, soft_wrap=True)
