"""``polymodal report RUN_DIR [RUN_DIR ...]``: Markdown + self-contained HTML report."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.text import Text

from polymodal.cli.output import JsonOption, console, emit_json, fail

if TYPE_CHECKING:
    from polymodal.report import WrittenReport


def report(
    inputs: list[Path] = typer.Argument(
        ..., metavar="RUN_DIR", help="Run directories and/or result files; one column per input."
    ),
    out: Path = typer.Option(
        None, "--out", help="Where report.md, report.html and report_assets/ go (default: the first input's directory)."
    ),
    title: str = typer.Option("polymodal report", "--title", help="Report title."),
    max_examples: int = typer.Option(8, "--max-examples", min=0, help="Examples shown per run and benchmark."),
    json: bool = JsonOption,
) -> None:
    """Report evaluation results (from `polymodal eval`) and training runs side by side.

    Writes report.md (+ report_assets/: PNGs, and FLAC clips of sound examples) and a self-contained report.html:
    metric tables with 95% CIs per benchmark and split, plots and example grids (spectrograms and players for
    sounds, strips of 8 frames for clips).
    """
    from polymodal.evaluate.results import ResultFileError
    from polymodal.report import write_report

    try:
        written = write_report(list(inputs), out, title=title, max_examples=max_examples)
    except ResultFileError as e:  # includes ReportError
        fail(str(e), as_json=json, code=2)
    payload = {
        "markdown": str(written.markdown),
        "html": str(written.html),
        "assets": written.assets,
        "clips": written.clips,
        "runs": written.runs,
        "warnings": written.warnings,
    }
    if json:
        emit_json(payload)
        return
    for warning in written.warnings:
        console.print(Text(f"warning: {warning}", style="yellow"), soft_wrap=True)
    console.print(Text(f"report for {len(written.runs)} run(s): {', '.join(written.runs)}"), soft_wrap=True)
    console.print(
        Text(f"  {written.html}\n  {written.markdown} (+ {_assets(written)} in report_assets/)"), soft_wrap=True
    )


def _assets(written: WrittenReport) -> str:
    """What report_assets/ holds: PNG pictures and, for sound examples, FLAC clips."""
    clips = f" and {written.clips} FLAC clips" if written.clips else ""
    return f"{written.assets} PNGs{clips}"
