"""``polymodal score captions|vqa``: standard metrics with 95% CIs for prediction files made by any model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from polymodal.cli.output import JsonOption, console, emit_json, fail

app = typer.Typer(
    help="Score prediction files (COCO captions, VQAv2) with standard metrics and 95% CIs.", no_args_is_help=True
)

ResamplesOption = typer.Option(1000, "--resamples", min=1, help="Bootstrap resamples for the 95% CIs.")
SeedOption = typer.Option(0, "--seed", help="Bootstrap seed (same seed, same CIs).")


def _show(title: str, metrics: dict[str, float], ci: dict[str, tuple[float, float]], n: int, unit: str) -> None:
    table = Table(title=f"{title} ({n} {unit})", title_justify="left")
    for column in ("metric", "value", "95% CI"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for name, value in metrics.items():
        low_high = ci.get(name)
        table.add_row(name, f"{value:.4f}", f"[{low_high[0]:.4f}, {low_high[1]:.4f}]" if low_high else "-")
    console.print(table)


def _payload(metrics: dict[str, float], ci: dict[str, tuple[float, float]], **extra: Any) -> dict[str, Any]:
    return {"metrics": metrics, "ci95": {k: list(v) for k, v in ci.items()}, **extra}


@app.command("captions")
def captions(
    refs: Path = typer.Argument(..., help="COCO captions annotations JSON, or a list of {image_id, caption}."),
    preds: Path = typer.Argument(..., help="Predictions: [{image_id, caption}, ...]."),
    meteor: bool = typer.Option(True, "--meteor/--no-meteor", help="METEOR too, when java and the jar exist."),
    resamples: int = ResamplesOption,
    seed: int = SeedOption,
    json: bool = JsonOption,
) -> None:
    """BLEU-1..4, ROUGE-L, CIDEr-D (and METEOR when java exists) over the predicted images."""
    from polymodal.data.errors import BadSampleError
    from polymodal.evaluate.score_files import load_caption_preds, load_caption_refs
    from polymodal.evaluate.scoring import caption_scores
    from polymodal.metrics.captioning import meteor_available

    try:
        references = load_caption_refs(refs)
        predictions = load_caption_preds(preds, references)
    except BadSampleError as e:
        fail(str(e), as_json=json)
    use_meteor = meteor and meteor_available()
    metrics, ci, _ = caption_scores(references, predictions, seed=seed, n_resamples=resamples, with_meteor=use_meteor)
    notes = [] if use_meteor or not meteor else ["METEOR skipped: needs `java` on PATH and meteor-1.5.jar"]
    if json:
        emit_json(_payload(metrics, ci, n_images=len(predictions), notes=notes))
        return
    _show("Caption metrics", metrics, ci, len(predictions), "images")
    for note in notes:
        console.print(f"[yellow]{note}[/]")


@app.command("vqa")
def vqa(
    annotations: Path = typer.Argument(..., help="VQAv2 annotations JSON (v2_mscoco_*_annotations.json)."),
    preds: Path = typer.Argument(..., help="Predictions: [{question_id, answer}, ...], one per annotated question."),
    resamples: int = ResamplesOption,
    seed: int = SeedOption,
    json: bool = JsonOption,
) -> None:
    """VQA accuracy (official formula over the 10 human answers), overall and per answer type."""
    from polymodal.data.errors import BadSampleError
    from polymodal.evaluate.score_files import load_vqa_preds, load_vqa_refs
    from polymodal.evaluate.scoring import vqa_scores

    try:
        answers, types, images = load_vqa_refs(annotations)
        predictions = load_vqa_preds(preds, answers)
    except BadSampleError as e:
        fail(str(e), as_json=json)
    # An image's questions are resampled together (a cluster bootstrap), as `eval` does, when every one names it.
    groups = images if len(images) == len(answers) else None
    metrics, ci, per_type, _ = vqa_scores(predictions, answers, types, seed=seed, n_resamples=resamples, groups=groups)
    n_images = len(set(images.values())) if groups else None
    if json:
        emit_json(_payload(metrics, ci, per_answer_type=per_type, n_questions=len(predictions), n_images=n_images))
        return
    _show("VQA accuracy", metrics, ci, len(predictions), "questions")
    if groups:
        console.print(f"intervals resample the {n_images:,} images, each with all its questions", highlight=False)
