"""``polymodal eval MODEL --benchmark NAME[,NAME]``: standard benchmarks with CIs, robustness and provenance."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from polymodal.cli.output import JsonOption, console, emit_json, err_console, fail


def _table(doc: dict) -> Table:
    table = Table(title=f"{doc['provenance']['model']}", title_justify="left")
    for column in ("benchmark", "split", "metric", "value", "95% CI"):
        table.add_column(column, justify="right" if column in ("value", "95% CI") else "left", no_wrap=True)
    for r in doc["results"]:
        h = r["headline"]
        ci = r.get("ci95", {}).get(h)
        table.add_row(
            r["benchmark"], r["split"], h, f"{r['metrics'][h]:.4f}", f"[{ci[0]:.4f}, {ci[1]:.4f}]" if ci else "-"
        )
        rob = r.get("robustness")
        for name, curve in (rob or {}).get("corruptions", {}).items():
            worst = curve[max(curve, key=int)]
            table.add_row("", "", f"  {name}, severity 5", f"{worst:.4f}", "")
        for modality, value in ((rob or {}).get("missing_modality") or {}).items():
            if modality != "none":
                table.add_row("", "", f"  without {modality}", f"{value:.4f}", "")
    return table


def eval_command(
    model: str = typer.Argument(
        ..., help="Model directory, run directory, Hugging Face directory or 'polymodal-base'."
    ),
    benchmark: str = typer.Option(
        ..., "--benchmark", "-b", help="Benchmark name(s), comma-separated (see docs/evaluation.md)."
    ),
    data: Path = typer.Option(None, "--data", help="Dataset location in the benchmark's layout."),
    split: str = typer.Option(None, "--split", help="Split(s), comma-separated (default: each benchmark's own)."),
    out: Path = typer.Option(None, "--out", help="Write the result file (JSON) here."),
    templates: str = typer.Option(
        None, "--templates", help="Prompt template set for zero-shot: simple, imagenet, shapes, audio."
    ),
    robustness: bool = typer.Option(False, "--robustness", help="Add missing-modality and corruption curves."),
    seed: int = typer.Option(0, "--seed", help="Seed for corruptions and the bootstrap."),
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="Images per model call."),
    resamples: int = typer.Option(1000, "--resamples", min=1, help="Bootstrap resamples for the 95% CIs."),
    meteor: bool = typer.Option(True, "--meteor/--no-meteor", help="METEOR for captioning when java exists (~20 s)."),
    precision: str = typer.Option(
        "auto",
        "--precision",
        help="auto (bf16 where the CPU runs it natively, else fp32), fp32 or bf16; recorded in the result file.",
    ),
    judge: list[str] = typer.Option(
        None,
        "--judge",
        help="NAME=PATH: a model a benchmark scores with (shapes-generation: checker=SCENE_CHECKER, clip=CLIP_MODEL).",
    ),
    json: bool = JsonOption,
) -> None:
    """Evaluate a model on standard benchmarks; every number comes with its provenance."""
    from polymodal.data.errors import BadSampleError
    from polymodal.evaluate.prompts import TEMPLATES
    from polymodal.evaluate.results import dump_results, to_json
    from polymodal.evaluate.runner import parse_benchmarks, run_eval

    try:
        names = parse_benchmarks(benchmark)
    except ValueError as e:
        fail(str(e), as_json=json, code=2)
    if templates is not None and templates not in TEMPLATES:
        fail(f"unknown template set {templates!r}; choose from {', '.join(TEMPLATES)}", as_json=json, code=2)
    splits = [s.strip() for s in split.split(",") if s.strip()] if split else None
    judges = {}
    for entry in judge or []:
        name, sep, path = entry.partition("=")
        if not sep or not name.strip() or not path.strip():
            fail(f"--judge {entry!r}: expected NAME=PATH (e.g. checker=runs/checker)", as_json=json, code=2)
        judges[name.strip()] = path.strip()
    progress = None if json else (lambda msg: err_console.print(f"[dim]{msg}[/]", highlight=False))
    try:
        doc = run_eval(
            model,
            names,
            data=data,
            splits=splits,
            templates=templates,
            with_robustness=robustness,
            seed=seed,
            batch_size=batch_size,
            n_resamples=resamples,
            meteor=meteor,
            progress=progress,
            precision=precision,
            judges=judges,
        )
    except (BadSampleError, FileNotFoundError, ValueError) as e:
        fail(str(e), as_json=json)
    if out is not None:
        try:
            dump_results(doc, out)
        except OSError as e:
            fail(f"cannot write {out}: {e}", as_json=json)
    payload = to_json(doc)
    if json:
        emit_json(payload)
        return
    console.print(_table(payload))
    if out is not None:
        console.print(f"results: {out}", highlight=False)
