"""``polymodal eval MODEL --benchmark NAME[,NAME]``: standard benchmarks with CIs, robustness and provenance.

A benchmark the model or data is not eligible for is skipped with its reason (table and result file) and the others
run; the command still fails (exit 1, after writing what ran) when a benchmark named in --benchmark has no result or a
split named in --split was skipped: a script never reads a skipped benchmark as a pass."""

from __future__ import annotations

import re
from pathlib import Path

import typer
from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderResult
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from polymodal.cli.output import JsonOption, console, emit_json, err_console, fail
from polymodal.evaluate.prompts import TEMPLATES
from polymodal.evaluate.results import ResultFile, describe_epsilon, describe_skipped

# (header, justify, folds): names fold when the table is wider than the terminal, the benchmark first (it is read
# once per result, the metric labels row by row); numbers and splits never shrink.
COLUMNS = (
    ("benchmark", "left", True),
    ("split", "left", False),
    ("metric", "left", True),
    ("n", "right", False),
    ("value", "right", False),
    ("95% CI", "right", False),
)


class _Name:
    """A name that breaks after a hyphen or a space when its column is narrower than it (``shapes-audio-`` /
    ``zeroshot``); an indent stays with the first word."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pieces = re.findall(r" *[^- ]*[- ]+|[^- ]+$", text) or [text]

    @property
    def widest_piece(self) -> int:
        return max(cell_len(p.rstrip()) for p in self.pieces)

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement(self.widest_piece, cell_len(self.text))

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        lines = [""]
        for piece in self.pieces:
            if lines[-1].strip() and cell_len(lines[-1] + piece.rstrip()) > options.max_width:
                lines.append("")
            lines[-1] += piece
        yield Text("\n".join(line.rstrip() for line in lines), overflow="fold")


def _rows(doc: ResultFile) -> list[tuple[str, ...]]:
    """A row per result (headline, items scored, CI), its robustness under it, then a row per skipped split."""
    rows: list[tuple[str, ...]] = []
    for r in doc.results:
        n = f"{r.n:,}" if r.n is not None else "-"
        for name in (r.headline, *r.also):  # the others under the headline's row
            ci = r.ci95.get(name)
            interval = f"[{ci[0]:.4f}, {ci[1]:.4f}]" if ci else "-"
            where = (r.benchmark, r.split) if name == r.headline else ("", "")
            rows.append((*where, name, n, f"{r.metrics[name]:.4f}", interval))
        rob = r.robustness
        for name, curve in ((rob.corruptions if rob else None) or {}).items():
            severest = max(curve, key=int)
            rows.append(("", "", f"  {name}, severity {severest}", "", f"{curve[severest]:.4f}", ""))
        for modality, value in ((rob.missing_modality if rob else None) or {}).items():
            if modality != "none":
                rows.append(("", "", f"  without {modality}", "", f"{value:.4f}", ""))
        for epsilon, value in ((rob.adversarial if rob else None) or {}).items():
            if float(epsilon) > 0:
                rows.append(("", "", f"  PGD at {describe_epsilon(float(epsilon))}", "", f"{value:.4f}", ""))
    rows.extend((s.benchmark, s.split, "skipped", "", "-", "-") for s in doc.skipped)
    return rows


def _notes(doc: ResultFile) -> list[str]:
    """What the table cannot say in a cell: why a split was skipped, why a robustness curve was not run."""
    notes = [f"skipped {line}" for line in describe_skipped(doc.skipped)]
    not_run: dict[tuple[str, str, str], list[str]] = {}
    for r in doc.results:
        for curve, reason in ((r.robustness.skipped if r.robustness else None) or {}).items():
            not_run.setdefault((r.benchmark, curve, reason), []).append(r.split)
    notes += [
        f"robustness to {curve} not run for {b} ({', '.join(splits)}): {why}"
        for (b, curve, why), splits in not_run.items()
    ]
    return notes


def _widths(rows: list[tuple[str, ...]], width: int) -> list[tuple[int, int]]:
    """(least, most) width of each column for a table ``width`` wide: numbers and splits whole; the names as wide as
    the room left allows, the benchmark giving way first, never narrower than their longest unbroken piece."""
    texts = [[header, *(row[index] for row in rows)] for index, (header, _, _) in enumerate(COLUMNS)]
    natural = [max(cell_len(text) for text in column) for column in texts]
    least = [
        max(_Name(text).widest_piece for text in column) if folds else natural[index]
        for index, (column, (_, _, folds)) in enumerate(zip(texts, COLUMNS))
    ]
    folding = [index for index, (_, _, folds) in enumerate(COLUMNS) if folds]
    room = width - (3 * len(COLUMNS) + 1) - sum(w for index, w in enumerate(natural) if index not in folding)
    most = list(natural)
    for position, index in enumerate(folding):
        later = sum(natural[i] for i in folding[position + 1 :])
        most[index] = max(least[index], min(natural[index], room - later))
        room -= most[index]
    return list(zip(least, most))


def _table(doc: ResultFile, width: int) -> Table:
    """The results as a table ``width`` columns wide (80 in a pipe or a CI log) with every number whole; wider only
    when the names broken at every hyphen and space still do not fit."""
    rows = _rows(doc)
    notes = _notes(doc)
    # Text, not str: paths and reasons are shown as they are, never read as rich markup.
    table = Table(
        title=Text(doc.provenance.model),
        title_justify="left",
        caption=Text("\n".join(notes)) if notes else None,
        caption_justify="left",
    )
    # Rich narrows a table by cutting its widest columns, numbers and words alike: the widths are chosen here.
    for (header, justify, folds), (least, most) in zip(COLUMNS, _widths(rows, width)):
        table.add_column(header, justify=justify, no_wrap=not folds, min_width=least, max_width=most)
    for row in rows:
        table.add_row(*(_Name(cell) if folds else Text(cell) for cell, (_, _, folds) in zip(row, COLUMNS)))
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
    out: Path = typer.Option(
        None, "--out", help="Write the result file (JSON) here; generated images go beside it, in OUT_STEM-generated/."
    ),
    templates: str = typer.Option(
        None, "--templates", help=f"Prompt template set for zero-shot: {', '.join(TEMPLATES)}."
    ),
    robustness: bool = typer.Option(False, "--robustness", help="Add missing-modality and corruption curves."),
    adversarial: str = typer.Option(
        None,
        "--adversarial",
        help="Attack radii, e.g. 1/255,4/255: zero-shot image accuracy and image-caption retrieval on images moved "
        "by PGD within each (slow: about --attack-steps + 1 passes per radius).",
    ),
    attack_steps: int = typer.Option(
        None, "--attack-steps", min=1, help="PGD steps of --adversarial's attack [default: 10]."
    ),
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
    from polymodal.evaluate.context import ATTACK_STEPS
    from polymodal.evaluate.results import dump_results, to_json
    from polymodal.evaluate.runner import media_dir_for, parse_benchmarks, parse_epsilons, run_eval

    try:
        names = parse_benchmarks(benchmark)
    except ValueError as e:
        fail(str(e), as_json=json, code=2)
    try:
        epsilons = parse_epsilons(adversarial) if adversarial is not None else []
    except ValueError as e:
        fail(f"--adversarial: {e}", as_json=json, code=2)
    if attack_steps is not None and not epsilons:
        fail(
            "--attack-steps sets --adversarial's attack: give the radii too (--adversarial 1/255,4/255)",
            as_json=json,
            code=2,
        )
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
            epsilons=epsilons,
            attack_steps=attack_steps or ATTACK_STEPS,
            seed=seed,
            batch_size=batch_size,
            n_resamples=resamples,
            meteor=meteor,
            progress=progress,
            precision=precision,
            judges=judges,
            media_dir=media_dir_for(out) if out is not None else None,
        )
    except (BadSampleError, FileNotFoundError, ValueError) as e:
        fail(str(e), as_json=json)
    if out is not None:
        try:
            dump_results(doc, out)
        except OSError as e:
            fail(f"cannot write {out}: {e}", as_json=json)
    if json:
        emit_json(to_json(doc))
    else:
        console.print(_table(doc, console.width), crop=False)  # narrower than its names: wrapped, never cut
        if out is not None:
            console.print(f"results: {out}", highlight=False)
    missed = _not_run(doc, names, splits)
    if missed:
        if not json:
            err_console.print(f"[red]error:[/] asked for but not run: {', '.join(missed)}", highlight=False)
        raise typer.Exit(1)


def _not_run(doc: ResultFile, names: list[str], splits: list[str] | None) -> list[str]:
    """The benchmarks named that have no result, and the named splits skipped (a default split the data lacks is
    not something the user asked for)."""
    ran = {r.benchmark for r in doc.results}
    missed = [name for name in names if name not in ran]
    missed += [f"{s.benchmark} {s.split}" for s in doc.skipped if splits and s.split in splits and s.benchmark in ran]
    return missed
