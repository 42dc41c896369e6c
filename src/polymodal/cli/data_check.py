"""``polymodal data check PATH``: read and decode every sample, report what is bad."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table
from rich.text import Text

from polymodal.cli.output import JsonOption, console, emit_json, fail
from polymodal.data.check import CheckReport, check_dataset
from polymodal.data.errors import BadSampleError


def check(
    path: Path = typer.Argument(
        ...,
        help="Manifest (.jsonl/.csv), class folders, a folder of media files, .tar shard(s), COCO/Karpathy/VQA JSON.",
    ),
    strict: bool = typer.Option(False, "--strict", help="Stop at the first bad sample and exit non-zero."),
    json: bool = JsonOption,
    bad_samples: Path | None = typer.Option(None, "--bad-samples", help="Write every bad sample to this JSONL file."),
    image_root: Path | None = typer.Option(None, "--image-root", help="Image folder of a COCO/Karpathy/VQA JSON."),
) -> None:
    """Validate a dataset: structure, paths, and every image, sound and clip decoded."""
    reader_kw = {"image_root": image_root} if image_root is not None else {}
    try:
        report = check_dataset(path, strict=strict, progress=not json, bad_samples=bad_samples, **reader_kw)
    except ValueError as e:
        # BadSampleError (strict mode, or a whole-file error) names file, row and field;
        # a plain ValueError is an unknown format.
        fail(str(e), as_json=json)
    if json:
        emit_json(report.to_dict())
    else:
        _print(report)


def _print(report: CheckReport) -> None:
    # The path goes on its own unwrapped line: a table title would break it at the width.
    console.print(Text(f"{report.path} ({report.format})", style="bold"), soft_wrap=True)
    table = Table()
    table.add_column("")
    table.add_column("count", justify="right")
    table.add_row("good samples", str(report.samples))
    for name, count in report.modalities.items():
        table.add_row(f"  with {name}", str(count))
    table.add_row("bad samples", str(report.bad), style="red" if report.bad else None)
    for kind, count in sorted(report.bad_by_kind.items()):
        table.add_row(f"  {kind}", str(count))
    if report.duplicate_ids:
        table.add_row("duplicate ids", str(report.duplicate_ids), style="yellow")
    console.print(table)
    shown = report.bad_examples[:5]
    for example in shown:
        where = {k: example[k] for k in ("source", "row", "field")}
        # Text, not markup: field names like qa[0] must print as they are.
        console.print(
            Text("bad: ", style="red") + Text(str(BadSampleError(example["reason"], **where))), soft_wrap=True
        )
    if report.bad_samples_path:
        console.print(Text(f"all bad samples: {report.bad_samples_path}"), soft_wrap=True)
    elif report.bad > len(shown):
        console.print(Text(f"... and {report.bad - len(shown)} more (--bad-samples FILE lists them all)"))
