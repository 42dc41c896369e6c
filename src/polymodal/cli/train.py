"""``polymodal train RECIPE``: train a recipe, or resume a killed run exactly."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import typer
from rich.markup import escape

from polymodal.cli.output import JsonOption, console, emit_json, err_console, fail

if TYPE_CHECKING:
    from polymodal.train.recipe import Recipe
    from polymodal.train.trainer import TrainResult

INTERRUPTED_EXIT = 130  # a shell's code for a process stopped by Ctrl-C (128 + SIGINT)


def train(
    recipe: Path = typer.Argument(
        None,
        help="A recipe YAML, or the name of one polymodal ships (`polymodal train --list`); "
        "with --resume it may be left out: "
        "the run's own config.yaml is used.",
        show_default=False,
    ),
    set_: list[str] = typer.Option([], "--set", help="Override a recipe value: key.path=value (repeatable)."),
    out: Path = typer.Option(None, "--out", help="Run directory (default: runs/<recipe name>)."),
    resume: Path = typer.Option(None, "--resume", help="Continue the run in this directory from its last checkpoint."),
    list_: bool = typer.Option(False, "--list", help="List the recipes polymodal ships and exit."),
    json: bool = JsonOption,
) -> None:
    """Train a model from a recipe; checkpoints, metrics and the best model go to the run directory.

    Multi-process: `accelerate launch --multi_gpu --num_processes 2 -m polymodal train RECIPE`
    (on a CPU-only machine too, where `--multi_gpu` starts gloo processes).
    """
    from polymodal.config import ConfigError
    from polymodal.modules.losses.distributed import distributed_rank
    from polymodal.train.resume import CONFIG_NAME
    from polymodal.train.run import run_recipe
    from polymodal.train.trainer import end_distributed, exit_launched_process

    if list_:
        _list_recipes(json)
        return
    if resume is not None and not resume.is_dir():
        fail(f"--resume {resume}: no such run directory", as_json=json, code=2)
    if recipe is None:
        if resume is None:
            fail(
                "give a RECIPE to train (`polymodal train --list` names the packaged ones), "
                "or --resume RUN_DIR to continue a run",
                as_json=json,
                code=2,
            )
        recipe = resume / CONFIG_NAME  # the resolved recipe the run was started with
        if not recipe.is_file():
            fail(
                f"--resume {resume}: no {CONFIG_NAME} in it; give the RECIPE the run was started with",
                as_json=json,
                code=2,
            )
    try:
        cfg = _checked_recipe(recipe, set_, resume)
    except ValueError as e:  # a ConfigError, or a preset refusing its parameters
        fail(str(e), as_json=json, code=2)
    if resume is not None and out is not None and out.resolve() != resume.resolve():
        fail(
            f"--resume {resume} continues that run in place; --out {out} names another directory (drop --out)",
            as_json=json,
            code=2,
        )
    run_dir = resume or out or Path("runs") / cfg.name
    try:
        result = run_recipe(cfg, run_dir, resume=resume is not None, progress=not json)
    except KeyboardInterrupt as e:
        _report_interrupted(e, run_dir, json)
    except (ConfigError, FileNotFoundError, ValueError) as e:
        # Every rank reports its own error (they may differ); a launched one then leaves as below.
        if distributed_rank() is not None:
            _report_error_and_exit(str(e), json)
        fail(str(e), as_json=json)
    # Every rank of a launch gets here; one report (and one JSON document on stdout) is enough.
    reports = distributed_rank() in (None, 0)
    launched = end_distributed()
    code = 1
    try:
        if reports:
            _report(result, run_dir, cfg.train.metric, json)
        code = 0
    finally:
        if launched:  # a rank of `accelerate launch`: see exit_launched_process for why it skips the teardown
            exit_launched_process(code)


def _checked_recipe(recipe: Path, overrides: list[str], resume: Path | None) -> Recipe:
    """The recipe with its overrides, checked before any data is read (ValueError): on resume, that the
    overrides change nothing the run computes; then the recipe itself, and what its values decide of the model and
    its metric. What load_recipe adjusted to fit an override, and processor settings the model does not use, are
    said on stderr."""
    from polymodal.train.build import accumulation_note, check_recipe_before_data, unused_processor_settings
    from polymodal.train.recipe import RecipeAdjusted, load_recipe
    from polymodal.train.resume import check_resume_overrides

    if resume is not None:
        check_resume_overrides(resume, overrides)
    with warnings.catch_warnings(record=True) as notes:
        warnings.simplefilter("always", RecipeAdjusted)
        cfg = load_recipe(recipe, overrides)
    for note in notes:
        if issubclass(note.category, RecipeAdjusted):
            err_console.print(f"[bold]note:[/] {escape(str(note.message))}", highlight=False, soft_wrap=True)
        else:
            warnings.warn_explicit(note.message, note.category, note.filename, note.lineno)
    check_recipe_before_data(cfg)
    for note in [*unused_processor_settings(cfg), accumulation_note(cfg)]:
        if note is not None:
            err_console.print(escape(note), highlight=False, soft_wrap=True)
    return cfg


def _report_interrupted(stop: KeyboardInterrupt, run_dir: Path, json: bool) -> NoReturn:
    """Ctrl-C or SIGTERM: what the run keeps and how to resume it, then exit 128 + the signal (130 for Ctrl-C). The
    trainer says it for a stop at a step boundary (TrainingInterrupted); a Ctrl-C elsewhere (reading data, a second
    Ctrl-C) leaves the newest checkpoint."""
    from polymodal.modules.losses.distributed import distributed_rank
    from polymodal.train.checkpoint import list_checkpoints
    from polymodal.train.trainer import TrainingInterrupted, exit_launched_process

    newest = list_checkpoints(run_dir)
    step = newest[-1].step if newest else None
    code = INTERRUPTED_EXIT
    if isinstance(stop, TrainingInterrupted):
        message, code = str(stop), 128 + stop.signum  # as a shell reports a process the signal stopped
        if distributed_rank() not in (None, 0):  # every rank stopped at the same step: rank 0 says it
            exit_launched_process(code)
    elif step is not None:
        message = f"interrupted; {run_dir} keeps its checkpoint of step {step}: "
        message += f"resume with `polymodal train --resume {run_dir}`"
    else:
        message = f"interrupted before {run_dir} had a checkpoint: nothing to resume"
    if json:
        emit_json({"run_dir": str(run_dir), "interrupted": True, "checkpoint_step": step, "message": message})
    else:
        err_console.print(escape(message), highlight=False, soft_wrap=True)
    if distributed_rank() is not None:
        exit_launched_process(code)
    raise typer.Exit(code)


def _report_error_and_exit(message: str, json: bool, code: int = 1) -> NoReturn:
    """``fail`` for a rank of a distributed launch: the same message, then the launched process's exit."""
    from polymodal.train.trainer import exit_launched_process

    try:
        fail(message, as_json=json, code=code)
    except typer.Exit as stop:
        exit_launched_process(stop.exit_code)


def _best_phrase(result: TrainResult, metric: str | None) -> str:
    """'best recall@1 = 0.25 (step 300)', or why there is none."""
    if metric is None:
        return "no best metric (train.metric is not set)"
    if result.best_metric is None:
        return f"no {metric} yet (not evaluated)"
    return f"best {metric} = {result.best_metric:.4g} (step {result.best_step})"


def _report(result: TrainResult, run_dir: Path, metric: str | None, json: bool) -> None:
    """The run's summary: one JSON document with ``--json``, else a line (and what was transferred)."""
    bad = result.bad_samples
    payload = {
        "run_dir": str(run_dir),
        "already_complete": result.already_complete,
        "steps": result.step,
        "stopped_early": result.stopped_early,
        "best_metric": result.best_metric,
        "best_step": result.best_step,
        "samples_per_second": round(result.samples_per_second, 1),
        "processes": result.processes,
        "last_losses": result.last_losses,
        "transfer": result.transfer,
        "machine": result.machine,
        "bad_samples": bad.total if bad is not None else 0,
        "bad_samples_by_kind": bad.by_kind if bad is not None else {},
    }
    if json:
        emit_json(payload)
        return
    from polymodal.train.bad_samples import bad_samples_note

    if result.already_complete:
        ended = "stopped early" if result.stopped_early else "trained all its steps"
        console.print(
            f"{escape(str(run_dir))} is already complete: it {ended} ({result.step} steps), "
            f"{_best_phrase(result, metric)}; nothing to resume (train into a new --out to train again)",
            highlight=False,
            soft_wrap=True,
        )
        return
    if result.transfer is not None:
        t = result.transfer
        new = t["not_transferred"]
        listed = f" (trained from scratch: {', '.join(new[:6])}{' ...' if len(new) > 6 else ''})" if new else ""
        console.print(
            f"initialised {t['transferred']}/{t['total']} tensors from {t['source']}{listed}", highlight=False
        )
    from polymodal.hardware import threads_phrase

    processes = f" on {result.processes} processes" if result.processes > 1 else ""
    machine = result.machine
    chosen = (
        f" ({machine['precision']['precision']}, {threads_phrase(machine['threads']['threads'])})" if machine else ""
    )
    console.print(
        f"[bold green]done[/] {escape(str(run_dir))}: {result.step} steps{processes}, "
        f"{result.samples_per_second:,.0f} samples/s{chosen}, {_best_phrase(result, metric)}",
        highlight=False,
        soft_wrap=True,  # one line however narrow the terminal: a log or a script reads it whole
    )
    note = bad_samples_note(bad)
    if note is not None:
        console.print(escape(note), highlight=False, soft_wrap=True)


def _list_recipes(as_json: bool) -> None:
    from polymodal.train.recipe import load_recipe, packaged_recipes

    rows = []
    for name in packaged_recipes():
        recipe = load_recipe(name)
        model = recipe.model.preset or recipe.model.config.get("kind")  # type: ignore[union-attr]
        rows.append({"name": name, "model": model, "objective": recipe.objective.kind, "steps": recipe.train.steps})
    if as_json:
        emit_json(rows)
        return
    header = {"name": "recipe", "model": "model", "objective": "objective", "steps": "steps"}
    table = [header, *({k: str(v) for k, v in row.items()} for row in rows)]
    widths = {key: max(len(line[key]) for line in table) for key in header}
    for line in table:
        text = "  ".join(line[key].ljust(widths[key]) for key in ("name", "model", "objective"))
        console.print(f"{text}  {line['steps'].rjust(widths['steps'])}", highlight=False, soft_wrap=True)
