"""``polymodal data shapes OUT``: generate the ShapesWorld benchmark."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from polymodal.cli.output import JsonOption, console, emit_json, fail
from polymodal.data.shapes import generate_shapesworld, write_prompt_manifests


def shapes(
    out: Path = typer.Argument(..., help="Output directory (created if missing)."),
    n: int = typer.Option(1000, "--n", help="Images in train+val+test (80/10/10); test_novel adds n // 10."),
    seed: int = typer.Option(0, "--seed", help="Same seed, same bytes."),
    image_size: int = typer.Option(64, "--image-size", help="Image side in pixels (at least 32)."),
    workers: int = typer.Option(1, "--workers", help="Processes; the output does not depend on it."),
    sound: bool = typer.Option(False, "--sound", help="Also render each scene as a sound (sounds/*.flac)."),
    speech: bool = typer.Option(
        False, "--speech", help="Also read a caption per image aloud and make the spoken-sentiment task (eSpeak NG)."
    ),
    prompts: bool = typer.Option(
        False,
        "--prompts",
        help="Also write prompts_{split}.jsonl: each image with the caption naming every object's colour, shape and "
        "cell (text-to-image training and prompts).",
    ),
    json: bool = JsonOption,
) -> None:
    """Generate ShapesWorld: images (and with --sound/--speech their sounds and spoken captions),
    train/val/test/test_novel JSONL and a datasheet."""
    if n < 1:
        fail(f"--n must be at least 1, got {n}", as_json=json)
    if image_size < 32:
        fail(f"--image-size must be at least 32 pixels, got {image_size}", as_json=json)
    if workers < 1:
        fail(f"--workers must be at least 1, got {workers}", as_json=json)
    try:
        summary = generate_shapesworld(
            out, n, seed=seed, image_size=image_size, workers=workers, progress=not json, sound=sound, speech=speech
        )
        if prompts:
            summary["prompts"] = {split: str(path) for split, path in write_prompt_manifests(out).items()}
    except OSError as e:
        fail(f"cannot write {out}: {e}", as_json=json)
    except ImportError as e:
        fail(str(e), as_json=json)
    if json:
        emit_json(summary)
    else:
        print_summary(summary)


def _split_table(title: str, unit: str, counts: dict[str, int]) -> Table:
    """A table of how many ``unit`` (images, clips) each split holds."""
    table = Table(title=title, show_header=True)
    table.add_column("split")
    table.add_column(unit, justify="right")
    for split, count in counts.items():
        table.add_row(split, str(count))
    return table


def print_summary(summary: dict[str, Any]) -> None:
    """A people-readable table of a :func:`generate_shapesworld` summary."""
    table = _split_table(f"ShapesWorld in {summary['out_dir']}", "images", summary["counts"])
    table.add_row("[bold]total[/]", f"[bold]{summary['total']}[/]")
    console.print(table)
    console.print(f"shapes: {', '.join(summary['shapes'])}", highlight=False)
    console.print(f"colours: {', '.join(summary['colors'])}", highlight=False)
    console.print(f"held out (test_novel only): {', '.join(summary['held_out'])}", highlight=False)
    if summary.get("elapsed_seconds") is not None:
        rate = summary.get("images_per_second")
        console.print(f"generated in {summary['elapsed_seconds']:.2f} s ({rate} images/s)", highlight=False)


def shapes_video(
    out: Path = typer.Argument(..., help="Output directory (created if missing)."),
    n: int = typer.Option(1000, "--n", help="Clips in train+val+test (80/10/10); test_novel adds n // 10."),
    seed: int = typer.Option(0, "--seed", help="Same seed, same bytes."),
    size: int = typer.Option(64, "--size", help="Frame side in pixels (at least 32)."),
    frames: int = typer.Option(16, "--frames", help="Frames per clip (at least 4; 8 per second)."),
    workers: int = typer.Option(1, "--workers", help="Processes; the output does not depend on it."),
    sound: bool = typer.Option(
        False,
        "--sound",
        help="Give every clip a soundtrack (each event heard when it happens: timbre = shape, pitch = colour) and "
        "write as many audio-visual clips (av_{split}.jsonl: which shape made the sound?).",
    ),
    av: bool = typer.Option(
        False, "--av", help="Write the audio-visual clips without soundtracks on the other clips (faster than --sound)."
    ),
    json: bool = JsonOption,
) -> None:
    """Generate ShapesWorld moves: clips of shapes whose events happen in order, with captions, questions and
    statements about them (videos/*.mp4, train/val/test/test_novel JSONL)."""
    from polymodal.data.shapes_video import generate_shapesworld_video

    try:
        summary = generate_shapesworld_video(
            out, n, seed=seed, size=size, frames=frames, workers=workers, sound=sound, av=sound or av, progress=not json
        )
    except ValueError as e:
        fail(str(e), as_json=json)
    except (OSError, ImportError) as e:
        fail(f"cannot write {out}: {e}", as_json=json)
    if json:
        emit_json(summary)
        return
    print_video_summary(summary)


def print_video_summary(summary: dict[str, Any]) -> None:
    """A people-readable table of a :func:`generate_shapesworld_video` summary."""
    console.print(_split_table(f"ShapesWorld moves in {summary['out_dir']}", "clips", summary["counts"]))
    console.print(f"held out (test_novel only): {', '.join(summary['held_out'])}", highlight=False)
    console.print(
        f"generated in {summary['elapsed_seconds']:.2f} s ({summary['clips_per_second']} clips/s)", highlight=False
    )
