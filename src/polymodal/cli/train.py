"""``polymodal train RECIPE``: train a recipe, or resume a killed run exactly."""

from __future__ import annotations

from pathlib import Path

import typer

from polymodal.cli.output import JsonOption, console, emit_json, fail


def train(
    recipe: Path = typer.Argument(..., help="A recipe YAML (see recipes/)."),
    set_: list[str] = typer.Option([], "--set", help="Override a recipe value: key.path=value (repeatable)."),
    out: Path = typer.Option(None, "--out", help="Run directory (default: runs/<recipe name>)."),
    resume: Path = typer.Option(None, "--resume", help="Continue the run in this directory from its last checkpoint."),
    json: bool = JsonOption,
) -> None:
    """Train a model from a recipe; checkpoints, metrics and the best model go to the run directory.

    Multi-process: `accelerate launch --multi_gpu --num_processes 2 -m polymodal train RECIPE`
    (on a CPU-only machine too, where `--multi_gpu` starts gloo processes).
    """
    from polymodal.config import ConfigError
    from polymodal.train.recipe import load_recipe, run_recipe
    from polymodal.train.trainer import end_distributed

    try:
        cfg = load_recipe(recipe, set_)
    except ConfigError as e:
        fail(str(e), as_json=json, code=2)
    run_dir = resume or out or Path("runs") / cfg.name
    if resume is not None and not resume.is_dir():
        fail(f"--resume {resume}: no such run directory", as_json=json, code=2)
    try:
        result = run_recipe(cfg, run_dir, resume=resume is not None, progress=not json)
    except (ConfigError, FileNotFoundError, ValueError) as e:
        fail(str(e), as_json=json)
    end_distributed()
    payload = {
        "run_dir": str(run_dir),
        "steps": result.step,
        "stopped_early": result.stopped_early,
        "best_metric": result.best_metric,
        "best_step": result.best_step,
        "samples_per_second": round(result.samples_per_second, 1),
        "last_losses": result.last_losses,
        "transfer": result.transfer,
    }
    if json:
        emit_json(payload)
        return
    if result.transfer is not None:
        t = result.transfer
        new = t["not_transferred"]
        listed = f" (trained from scratch: {', '.join(new[:6])}{' ...' if len(new) > 6 else ''})" if new else ""
        console.print(f"initialised {t['transferred']}/{t['total']} tensors from {t['source']}{listed}", highlight=False)
    console.print(f"[bold green]done[/] {run_dir}: {result.step} steps, "
                  f"{result.samples_per_second:,.0f} samples/s, best {cfg.train.metric or 'metric'} = {result.best_metric}")
