"""``polymodal train RECIPE``: train a recipe, or resume a killed run exactly."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import typer

from polymodal.cli.output import JsonOption, console, emit_json, fail

if TYPE_CHECKING:
    from polymodal.train.trainer import TrainResult


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
    from polymodal.train.recipe import load_recipe
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
        cfg = load_recipe(recipe, set_)
    except ConfigError as e:
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


def _report_error_and_exit(message: str, json: bool) -> NoReturn:
    """``fail`` for a rank of a distributed launch: the same message, then the launched process's exit."""
    from polymodal.train.trainer import exit_launched_process

    try:
        fail(message, as_json=json)
    except typer.Exit as stop:
        exit_launched_process(stop.exit_code)


def _report(result: TrainResult, run_dir: Path, metric: str | None, json: bool) -> None:
    """The run's summary: one JSON document with ``--json``, else a line (and what was transferred)."""
    payload = {
        "run_dir": str(run_dir),
        "steps": result.step,
        "stopped_early": result.stopped_early,
        "best_metric": result.best_metric,
        "best_step": result.best_step,
        "samples_per_second": round(result.samples_per_second, 1),
        "processes": result.processes,
        "last_losses": result.last_losses,
        "transfer": result.transfer,
        "machine": result.machine,
    }
    if json:
        emit_json(payload)
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
        f"[bold green]done[/] {run_dir}: {result.step} steps{processes}, "
        f"{result.samples_per_second:,.0f} samples/s{chosen}, best {metric or 'metric'} = {result.best_metric}"
    )


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
    for row in rows:
        console.print(
            f"{row['name']:<26} {row['model']:<14} {row['objective']:<15} {row['steps']} steps", highlight=False
        )
