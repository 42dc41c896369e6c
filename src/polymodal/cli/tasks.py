"""``polymodal classify | caption | ask``: one-shot tasks on image files, over :func:`polymodal.load`.

Without ``--model`` the offline default ``polymodal-base`` is used. A model that cannot do the task (e.g.
``caption`` with a dual encoder) is refused in one line with exit code 2. Given many files, ``classify`` and
``caption`` answer for every good one and report each bad one with its reason, then exit 1 if any was bad.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape
from rich.table import Table

from polymodal.cli.output import JsonOption, console, emit_json, err_console, fail, with_progress

if TYPE_CHECKING:
    from polymodal.api import Model

ModelOption = typer.Option(
    None, "--model", "-m", help="Model directory, run directory, HF id or polymodal-base (default)."
)
BatchOption = typer.Option(32, "--batch-size", min=1, help="Images per forward pass.")
PrecisionOption = typer.Option(
    "auto", "--precision", help="auto (bf16 where the CPU runs it natively, else fp32), fp32, bf16 or fp16 (CUDA)."
)


ExportOption = typer.Option(
    None,
    "--export",
    help="The model's ONNX export (polymodal export), or auto (exported once into the cache): each embedding tower "
    "runs in onnxruntime where that measures faster here.",
)


def load_model_or_fail(
    model: str | None,
    *,
    batch_size: int = 32,
    precision: str = "auto",
    as_json: bool = False,
    export: Path | None = None,
) -> Model:
    """``polymodal.load(model)``, with any loading problem turned into one clear line and exit code 1; with
    ``export``, a line per tower saying where it runs."""
    from polymodal.api import load

    try:
        loaded = load(model, batch_size=batch_size, precision=precision, export=export)
    except ModuleNotFoundError as e:
        fail(
            f"cannot load {model or 'polymodal-base'}: {e} "
            "(is the extra installed? pip install 'polymodal[pretrained]')",
            as_json=as_json,
        )
    except (OSError, ImportError, ValueError, KeyError) as e:
        fail(f"cannot load model {model or 'polymodal-base'}: {e}", as_json=as_json)
    for modality, precision in loaded.tower_precisions.items():
        err_console.print(f"{modality} tower in {precision.precision}: {precision.reason}", highlight=False)
    for choice in loaded.tower_runtimes.values():
        err_console.print(choice.describe(), highlight=False)
    return loaded


def file_problem(path: Path) -> str | None:
    """Why ``path`` cannot be an input file, found without opening it (a FIFO would block a read), or None."""
    from polymodal.data.errors import path_problem

    if path.is_dir():
        return f"a directory; give its files (e.g. {path}/*{path.suffix or '.png'})"
    problem = path_problem(path)
    return None if problem is None else problem[0]


def check_files(paths: list[Path], as_json: bool) -> None:
    for path in paths:
        if (problem := file_problem(path)) is not None:
            fail(f"{path}: {problem}", as_json=as_json)


def require(loaded: Model, capability: str, task: str, as_json: bool) -> None:
    """Exit 2 before any file is decoded when the model cannot do ``task`` at all."""
    from polymodal.backends import TaskNotSupported

    if capability not in loaded.capabilities:
        fail(str(TaskNotSupported(loaded.backend, task)), as_json=as_json, code=2)


def decode_images(paths: list[Path], bad: dict[int, str], positions: Sequence[int] | None = None) -> dict[int, Any]:
    """Each file (of ``positions``, default all) not already in ``bad`` decoded once, as the API decodes a path;
    undecodable ones join ``bad``."""
    from polymodal.api.inputs import to_image
    from polymodal.data.errors import BadSampleError

    images: dict[int, Any] = {}
    for i in range(len(paths)) if positions is None else positions:
        path = paths[i]
        if i in bad:
            continue
        try:
            images[i] = to_image(str(path))
        except (OSError, ValueError) as e:
            bad[i] = e.reason if isinstance(e, BadSampleError) else str(e)
    return images


def run_batches(
    task: str,
    fn: Callable[[list[Any]], Sequence[Any]],
    items: dict[int, Any],
    batch_size: int,
    bad: dict[int, str],
    as_json: bool,
) -> dict[int, Any]:
    """``fn`` over ``items`` a batch at a time. Items the model decodes itself (sounds, by path) can turn out bad
    only inside ``fn``: such a file joins ``bad`` and its batch runs again without it."""
    from polymodal.data.errors import BadSampleError

    out: dict[int, Any] = {}
    keys = list(items)
    for start in range(0, len(keys), batch_size):
        batch = keys[start : start + batch_size]
        while batch:
            try:
                results = run_task(
                    task, functools.partial(fn, [items[k] for k in batch]), as_json, reraise=BadSampleError
                )
            except BadSampleError as e:
                named = [k for k in batch if isinstance(items[k], str) and e.source == items[k]]
                if not named:  # not about one of the files: the whole command fails, as before
                    fail(f"{task}: {e}", as_json=as_json)
                bad[named[0]] = e.reason
                batch.remove(named[0])
                continue
            out.update(zip(batch, results))
            break
    return out


def report(task: str, paths: list[Path], bad: dict[int, str], as_json: bool) -> None:
    """Each bad file on stderr (with --json, its entry says it instead), then a count of them."""
    if not bad:
        return
    if not as_json:
        for i in sorted(bad):
            err_console.print(f"[bold red]error:[/] {escape(f'{paths[i]}: {bad[i]}')}", highlight=False, soft_wrap=True)
    noun = "file" if len(paths) == 1 else "files"
    err_console.print(f"{task}: {len(bad)} of {len(paths)} {noun} could not be read", highlight=False)


def precheck(task: str, paths: list[Path], as_json: bool, keyed: Callable[[Path], str] | None = None) -> dict[int, str]:
    """The files that cannot be inputs (missing, directories, devices), by position; when none is left, they are
    reported (each JSON entry under ``keyed(path)``, default "image") and the command exits 1 before the model
    loads."""
    bad = {i: problem for i, path in enumerate(paths) if (problem := file_problem(path)) is not None}
    if len(bad) == len(paths):
        if as_json:
            emit_json([{(keyed or (lambda _: "image"))(p): str(p), "error": bad[i]} for i, p in enumerate(paths)])
        report(task, paths, bad, as_json)
        raise typer.Exit(1)
    return bad


def run_task(task: str, fn, as_json: bool, reraise: type[Exception] | None = None):  # type: ignore[no-untyped-def]
    """Call ``fn``; unsupported tasks exit 2, bad inputs exit 1, each as one line (``reraise``: errors of that
    type are the caller's to handle)."""
    from polymodal.backends import TaskNotSupported

    try:
        return fn()
    except TaskNotSupported as e:
        fail(str(e), as_json=as_json, code=2)
    except (OSError, ValueError) as e:  # BadSampleError (undecodable image) is a ValueError
        if reraise is not None and isinstance(e, reraise):
            raise
        fail(f"{task}: {e}", as_json=as_json)


def classify(
    images: list[Path] = typer.Argument(..., help="Image, sound or video files (told apart by extension)."),
    labels: str = typer.Option(..., "--labels", "-l", help="Comma-separated class names, e.g. 'cat,dog,bird'."),
    model: str = ModelOption,
    templates: str = typer.Option(
        "simple", "--templates", help="Prompt template set (see polymodal.evaluate.prompts)."
    ),
    top_k: int = typer.Option(None, "--top-k", min=1, help="Show only the k most probable labels."),
    batch_size: int = BatchOption,
    precision: str = PrecisionOption,
    json: bool = JsonOption,
) -> None:
    """Zero-shot classification: which of --labels each image, sound or clip shows, with probabilities."""
    names = [x.strip() for x in labels.split(",") if x.strip()]
    if len(names) < 2:
        fail(f"--labels needs at least two comma-separated labels, got {labels!r}", as_json=json, code=2)
    from polymodal.evaluate.prompts import resolve_templates

    try:
        resolve_templates(templates)  # before the model loads
    except ValueError as e:
        fail(f"--templates: {e}", as_json=json, code=2)
    from polymodal.api.inputs import modality_of
    from polymodal.backends import EMBED
    from polymodal.data.readers.base import embedded_kind
    from polymodal.evaluate.passes import UNITS

    bad = precheck("classify", images, json, keyed=lambda path: modality_of(str(path)))
    loaded = load_model_or_fail(model, batch_size=batch_size, precision=precision, as_json=json)
    require(loaded, EMBED, "classify", json)
    # A sound or a clip by its extension (a clip's sound track to a model of sounds only), else an image.
    kinds = [embedded_kind(modality_of(str(p)), loaded.accepts()) for p in images]
    for i, kind in enumerate(kinds):
        if i not in bad and kind not in loaded.accepts():
            bad[i] = f"{loaded.name} does not embed {UNITS[kind]}"
    results: dict[int, list[tuple[str, float]]] = {}
    good = [i for i in range(len(images)) if i not in bad]
    pictures = [i for i in good if kinds[i] == "image"]
    for start in range(0, len(pictures), batch_size):  # a batch of files decoded at a time, never a whole folder
        decoded = decode_images(images, bad, pictures[start : start + batch_size])  # once each: bad ones join `bad`
        if decoded:
            ranked = run_task(
                "classify",
                lambda decoded=decoded: loaded.classify(
                    list(decoded.values()), names, modality="image", templates=templates, top_k=top_k
                ),
                json,
            )
            results.update(zip(decoded, ranked))
    for kind in ("audio", "video"):  # decoded by the model, a batch at a time
        files = {i: str(images[i]) for i in good if kinds[i] == kind}
        if files:
            classify_files = functools.partial(
                loaded.classify, labels=names, modality=kind, templates=templates, top_k=top_k
            )
            results.update(run_batches("classify", classify_files, files, batch_size, bad, json))
    payload = [
        {kinds[i]: str(p), "error": bad[i]}
        if i in bad
        else {kinds[i]: str(p), "predictions": [{"label": lab, "score": round(s, 6)} for lab, s in results[i]]}
        for i, p in enumerate(images)
    ]
    if json:
        emit_json(payload)
    else:
        table = Table(box=None)
        table.add_column("file", overflow="fold")  # the whole path, folded, not cut short in a narrow terminal
        for name in ("label", "probability", "top"):
            table.add_column(name)
        for row in payload:
            if "error" in row:
                continue  # on stderr, below
            preds = row["predictions"]
            rest = ", ".join(f"{p['label']} {p['score']:.2f}" for p in preds[1:4])
            path = next(v for k, v in row.items() if k != "predictions")
            table.add_row(escape(path), escape(preds[0]["label"]), f"{preds[0]['score']:.3f}", escape(rest))
        if results:
            console.print(table)
    report("classify", images, bad, json)
    if bad:
        raise typer.Exit(1)


def caption(
    images: list[Path] = typer.Argument(
        ..., help="Files of the kind the captioner describes: images, sounds or clips."
    ),
    model: str = ModelOption,
    max_new_tokens: int = typer.Option(30, "--max-new-tokens", min=1),
    beams: int = typer.Option(1, "--beams", min=1, help="Beam width (1 = greedy)."),
    batch_size: int = BatchOption,
    precision: str = PrecisionOption,
    segment_seconds: float = typer.Option(
        None,
        "--segment-seconds",
        help="Describe each clip or sound S seconds at a time: a timeline of captions with their times, "
        "consecutive equal ones as one span (an image captioner reads each segment's middle frame).",
    ),
    every_segment: bool = typer.Option(
        False, "--every-segment", help="With --segment-seconds: a line per segment, equal captions not merged."
    ),
    json: bool = JsonOption,
) -> None:
    """Describe each image (or sound, clip: what the captioner reads) in a sentence (needs a captioning model)."""
    from polymodal.backends import CAPTION

    if segment_seconds is not None and not segment_seconds > 0:
        fail(f"--segment-seconds must be > 0, got {segment_seconds}", as_json=json, code=2)
    if every_segment and segment_seconds is None:
        fail("--every-segment needs --segment-seconds", as_json=json, code=2)
    bad = precheck("caption", images, json)
    loaded = load_model_or_fail(model, batch_size=batch_size, precision=precision, as_json=json)
    require(loaded, CAPTION, "caption", json)
    if segment_seconds is not None:
        options = {"max_new_tokens": max_new_tokens, "num_beams": beams, "merge": not every_segment}
        caption_timelines(loaded, images, segment_seconds, options, bad, json)
        return
    items = {i: str(p) for i, p in enumerate(images) if i not in bad}  # decoded by the model a batch at a time
    texts = run_batches(
        "caption",
        lambda batch: loaded.caption(batch, max_new_tokens=max_new_tokens, num_beams=beams),
        items,
        batch_size,
        bad,
        json,
    )
    payload = [
        {"image": str(p), "error": bad[i]} if i in bad else {"image": str(p), "caption": texts[i]}
        for i, p in enumerate(images)
    ]
    if json:
        emit_json(payload)
    else:
        for row in payload:
            if "caption" in row:
                line = f"[bold]{escape(row['image'])}[/]: {escape(row['caption'])}"
                console.print(line, highlight=False, soft_wrap=True)
    report("caption", images, bad, json)
    if bad:
        raise typer.Exit(1)


MAX_CLI_SEGMENTS = 100_000  # a clip of 24 h in segments under a second: almost surely a mistyped --segment-seconds


def caption_timelines(
    loaded: Model, paths: list[Path], seconds: float, options: dict[str, Any], bad: dict[int, str], as_json: bool
) -> None:
    """``caption --segment-seconds``: each clip or sound's timeline of captions, a file at a time under a progress
    bar and printed when it is done (an interruption keeps those); an image, or a file the captioner cannot decode,
    is a bad file. A clip that ends before its header says is a warning line."""
    import warnings

    from polymodal.api.inputs import modality_of
    from polymodal.api.timeline import clock
    from polymodal.data.errors import BadSampleError

    kinds = [modality_of(str(p)) for p in paths]
    timelines: dict[int, list[Any]] = {}
    for i, path in enumerate(paths):
        if i in bad:
            continue
        if kinds[i] == "image":
            bad[i] = "an image is one picture: --segment-seconds cuts clips and sounds"
            continue

        def work(progress: Any, path: Path = path) -> list[Any]:
            return loaded.caption_segments(
                str(path), seconds, progress=progress, max_segments=MAX_CLI_SEGMENTS, **options
            )

        try:
            with warnings.catch_warnings(record=True) as said:
                warnings.simplefilter("always")
                timelines[i] = run_task(
                    "caption",
                    lambda work=work, path=path: with_progress(not as_json, f"caption {path.name}", work, "segments"),
                    as_json,
                    reraise=ValueError,  # a bad file, or one of more segments than the cap: that file's error
                )
        except ValueError as e:
            bad[i] = e.reason if isinstance(e, BadSampleError) else str(e)
            continue
        for warning in said:
            err_console.print(f"[yellow]warning:[/] {escape(str(warning.message))}", highlight=False, soft_wrap=True)
        if not as_json:
            console.print(f"[bold]{escape(str(path))}[/]", highlight=False, soft_wrap=True)
            for t in timelines[i]:
                span = f"{clock(t.start)}-{clock(t.end)}"
                console.print(f"  {span:>15}  {escape(t.caption)}", highlight=False, soft_wrap=True)
    if as_json:
        emit_json(
            [
                {kinds[i]: str(p), "error": bad[i]}
                if i in bad
                else {kinds[i]: str(p), "segments": [t.as_dict() for t in timelines[i]]}
                for i, p in enumerate(paths)
            ]
        )
    report("caption", paths, bad, as_json)
    if bad:
        raise typer.Exit(1)


def ask(
    image: Path = typer.Argument(..., help="An image file (or a sound, a clip: what the model answers about)."),
    questions: list[str] = typer.Argument(..., help="One or more questions about it."),
    model: str = ModelOption,
    precision: str = PrecisionOption,
    json: bool = JsonOption,
) -> None:
    """Answer questions about an image (needs a VQA model)."""
    check_files([image], json)
    loaded = load_model_or_fail(model, precision=precision, as_json=json)
    answers = run_task("ask", lambda: loaded.answer(str(image), list(questions)), json)
    payload = [{"image": str(image), "question": q, "answer": a} for q, a in zip(questions, answers)]
    if json:
        emit_json(payload)
        return
    for row in payload:
        console.print(f"{escape(row['question'])} -> [bold]{escape(row['answer'])}[/]", highlight=False, soft_wrap=True)
