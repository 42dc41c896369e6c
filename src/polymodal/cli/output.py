"""Shared output helpers: rich for people, ``--json`` for machines, clear errors for both."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text

console = Console()
err_console = Console(stderr=True)

T = TypeVar("T")
ProgressFn = Callable[[int, int], None]  # (done, total)

JsonOption = typer.Option(False, "--json", help="Print machine-readable JSON instead of tables.")


def emit_json(payload: Any) -> None:
    sys.stdout.write(json.dumps(payload, indent=2, default=str, ensure_ascii=False) + "\n")


def fail(message: str, *, as_json: bool = False, code: int = 1) -> NoReturn:
    """Print an error the user can act on and exit non-zero (no traceback)."""
    if as_json:
        emit_json({"error": message})
    else:
        err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, markup=True, soft_wrap=True)
    raise typer.Exit(code)


class _RateColumn(ProgressColumn):
    """``done/total  N items/s`` (the total is unknown until the source has been counted)."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Any) -> Text:
        total = f"{task.total:,.0f}" if task.total is not None else "?"
        rate = f"{task.speed:,.1f} {self.unit}/s" if task.speed else f"- {self.unit}/s"
        return Text(f"{task.completed:,.0f}/{total}  {rate}", style="cyan")


def with_progress(show: bool, label: str, work: Callable[[ProgressFn | None], T], unit: str = "items") -> T:
    """Run ``work(progress_callback)`` under a rich progress bar on stderr, a line every 5% in a pipe or a CI log,
    or none when not ``show`` (--json)."""
    if not show:
        return work(None)
    if not err_console.is_terminal:  # a pipe or a CI log: a line every 5% instead of a bar nobody sees
        from polymodal.progress import ProgressReporter

        lines: list[ProgressReporter] = []

        def report(done: int, total: int) -> None:
            if not lines or lines[-1].total != total:  # the total is known once the source has been counted
                lines.append(ProgressReporter(label, total, stream=err_console.file, terminal=False))
            lines[-1].update(done)

        return work(report)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        _RateColumn(unit),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err_console, transient=False) as bar:
        task = bar.add_task(label, total=None)
        return work(lambda done, total: bar.update(task, completed=done, total=total))
