"""``polymodal serve``: the REST server and its web page, over one model and optionally an index."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from polymodal.cli.output import JsonOption, console, emit_json, err_console, fail


def serve(
    model_argument: str = typer.Argument(
        None, metavar="[MODEL]", help="A model or a `polymodal fit` predictor directory (the same as --model)."
    ),
    model: str = typer.Option(
        None,
        "--model",
        "-m",
        help="Model directory, `polymodal fit` predictor directory, HF id, or polymodal-base "
        "(default: the index's model with --index, else polymodal-base).",
    ),
    index: Path = typer.Option(
        None, "--index", "-i", help="Index directory (from `polymodal index build`) for /search."
    ),
    host: str = typer.Option(
        "127.0.0.1", "--host", help="Interface to bind; 0.0.0.0 exposes the server to the network."
    ),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="Port to listen on."),
    api_key: str = typer.Option(
        None,
        "--api-key",
        envvar="POLYMODAL_API_KEY",
        show_envvar=True,
        help="Require this key (Authorization: Bearer KEY or X-API-Key: KEY).",
    ),
    max_upload_mb: float = typer.Option(10.0, "--max-upload-mb", help="Largest request body, in MB."),
    max_pixels: int = typer.Option(40_000_000, "--max-pixels", help="Largest decoded image, width x height."),
    max_audio_seconds: float = typer.Option(60.0, "--max-audio-seconds", help="Longest uploaded sound, in seconds."),
    max_video_seconds: float = typer.Option(600.0, "--max-video-seconds", help="Longest uploaded clip, in seconds."),
    body_timeout_seconds: float = typer.Option(
        30.0, "--body-timeout-seconds", help="Answer 408 when nothing of a request body arrives for this long."
    ),
    max_generate_images: int = typer.Option(
        16, "--max-generate-images", help="Most images one /generate request may ask for (texts x n)."
    ),
    max_generate_steps: int = typer.Option(200, "--max-generate-steps", help="Most sampler steps of one /generate."),
    batch_size: int = typer.Option(32, "--batch-size", help="Most items per batched model call."),
    max_wait_ms: float = typer.Option(5.0, "--max-wait-ms", help="How long a request waits to share a batch."),
    max_queue_ms: float = typer.Option(
        1000.0,
        "--max-queue-ms",
        help="Admission budget: a request the queued work would hold up longer is answered 503 with Retry-After "
        "(0: admit everything).",
    ),
    log_file: Path = typer.Option(None, "--log-file", help="Also append the access log (one line per request) here."),
    access_log: bool = typer.Option(True, "--access-log/--no-access-log", help="Print one line per request."),
    precision: str = typer.Option(
        "auto", "--precision", help="auto (bf16 where the CPU or GPU runs it natively, else fp32), fp32 or bf16."
    ),
    device: str = typer.Option("cpu", "--device", help="Torch device for the model."),
    export: Path = typer.Option(
        None,
        "--export",
        help="The model's ONNX export (polymodal export), or auto (exported once into the cache): each embedding "
        "tower runs in onnxruntime where that measures faster here (timed at start; /health says which).",
    ),
    export_towers: str = typer.Option(
        "auto", "--export-towers", help="auto (each tower where faster) or all (every tower the export has)."
    ),
    cors_origin: list[str] = typer.Option(
        [], "--cors-origin", help="Allow browser calls from this origin (repeatable; default: no CORS)."
    ),
    json: bool = JsonOption,
) -> None:
    """Serve a model over HTTP: REST endpoints, an OpenAPI schema at /openapi.json and a web page at /.

    Binds 127.0.0.1 unless --host says otherwise. Examples:
    `polymodal serve --index runs/shapes-index` then open http://127.0.0.1:8000/;
    `polymodal serve runs/churn-predictor` serves a `polymodal fit` predictor (POST /predict, a form on the page).
    """
    if model_argument is not None and model is not None and model_argument != model:
        fail(f"give the model once: {model_argument!r} and --model {model!r} differ", as_json=json, code=2)
    model = model if model is not None else model_argument
    app, summary = build_server(
        model=model,
        index=index,
        host=host,
        port=port,
        api_key=api_key,
        max_upload_mb=max_upload_mb,
        max_pixels=max_pixels,
        max_audio_seconds=max_audio_seconds,
        max_video_seconds=max_video_seconds,
        body_timeout_seconds=body_timeout_seconds,
        max_generate_images=max_generate_images,
        max_generate_steps=max_generate_steps,
        batch_size=batch_size,
        max_wait_ms=max_wait_ms,
        max_queue_ms=max_queue_ms,
        precision=precision,
        device=device,
        export=export,
        export_towers=export_towers,
        cors_origins=tuple(cors_origin),
        as_json=json,
    )
    if json:
        emit_json(summary)
    else:
        from polymodal.hardware import threads_phrase

        working = ", ".join(path for path, ok in summary["endpoints"].items() if ok)
        console.print(
            f"[bold green]serving[/] {summary['model']} on [bold]{summary['url']}[/] ({working}); "
            f"{summary['precision']['precision']}, {threads_phrase(summary['threads']['threads'])}",
            highlight=False,
        )
        for modality, precision in app.state.service.model.tower_precisions.items():
            console.print(f"  {modality} tower in {precision.precision}: {precision.reason}", highlight=False)
        for choice in app.state.service.model.tower_runtimes.values():
            console.print(f"  {choice.describe()}", highlight=False)
    import gc

    import uvicorn

    from polymodal.serve.traffic import start_access_log

    # The model and libraries loaded so far live as long as this process: out of the collector's reach, a full
    # collection no longer walks them (it paused requests for tens of milliseconds). The process is the server's,
    # so this is done here, not in create_app, which other programs may call.
    gc.collect()
    gc.freeze()

    # Access lines are written by a thread of their own (uvicorn's would be written on the event loop).
    listener = start_access_log(log_file, terminal=access_log)
    try:
        uvicorn.run(app, host=host, port=port, log_level="info", access_log=False, server_header=False)
    finally:
        listener.stop()


def build_server(
    *,
    model: str | None,
    index: Path | None,
    host: str,
    port: int,
    api_key: str | None,
    max_upload_mb: float,
    max_pixels: int,
    max_audio_seconds: float,
    max_video_seconds: float,
    max_generate_images: int,
    max_generate_steps: int,
    batch_size: int,
    max_wait_ms: float,
    body_timeout_seconds: float = 30.0,
    max_queue_ms: float,
    precision: str,
    device: str,
    cors_origins: tuple[str, ...],
    as_json: bool,
    export: Path | None = None,
    export_towers: str = "auto",
) -> tuple[Any, dict[str, Any]]:
    """Everything ``serve`` does before listening: checks, loading, the app; exits with a message on errors."""
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        fail("the server needs fastapi and uvicorn: pip install 'polymodal[serve]'", as_json=as_json)
    from polymodal.api import load
    from polymodal.backends import DEFAULT_MODEL
    from polymodal.export.towers import TOWER_CHOICES
    from polymodal.hardware import ThreadBudget
    from polymodal.serve import ServeSettings, create_app
    from polymodal.serve.safety import bind_warning, listen_error
    from polymodal.serve.search import IndexDirectory

    if export_towers not in TOWER_CHOICES:
        fail(f"--export-towers {export_towers!r}: choose one of {', '.join(TOWER_CHOICES)}", as_json=as_json, code=2)
    if (cannot := listen_error(host, port)) is not None:  # before the model loads, not after
        fail(cannot, as_json=as_json)

    if not max_upload_mb > 0:
        fail(f"--max-upload-mb must be > 0, got {max_upload_mb:g}", as_json=as_json, code=2)
    try:
        settings = ServeSettings(
            api_key=api_key,
            max_upload_bytes=int(max_upload_mb * 1024 * 1024),
            max_pixels=max_pixels,
            max_audio_seconds=max_audio_seconds,
            max_video_seconds=max_video_seconds,
            body_timeout_seconds=body_timeout_seconds,
            max_generate_images=max_generate_images,
            max_generate_steps=max_generate_steps,
            batch_size=batch_size,
            max_wait_ms=max_wait_ms,
            max_queue_ms=None if max_queue_ms == 0 else max_queue_ms,
            cors_origins=cors_origins,
        )
    except ValueError as e:
        fail(str(e), as_json=as_json, code=2)
    opened = None
    if index is not None:
        try:
            opened = IndexDirectory(index)
        except (ValueError, OSError, RuntimeError) as e:  # faiss reports unreadable files as RuntimeError
            fail(f"--index {index}: {e}", as_json=as_json)
    model_ref = model or (opened.meta.model if opened is not None else DEFAULT_MODEL)
    try:
        threads = ThreadBudget(adaptive=True)  # a server runs for long: it follows the load other processes put on
        loaded = load(
            model_ref,
            device=device,
            precision=precision,
            batch_size=batch_size,
            export=export,
            export_towers=export_towers,
        )
        app = create_app(loaded, opened, settings, threads=threads)
    except (ValueError, OSError, ImportError) as e:
        fail(str(e), as_json=as_json)
    warning = bind_warning(host, settings.api_key)
    if warning:
        err_console.print(f"[bold red on yellow] WARNING [/] [bold]{warning}[/]", highlight=False)
    shown_host = f"[{host}]" if ":" in host else host
    summary = {
        "url": f"http://{shown_host}:{port}/",
        "model": loaded.name,
        "identity": loaded.identity,
        "index": None if opened is None else {"path": str(index), "items": len(opened)},
        "endpoints": app.state.service.endpoints(),
        "auth_required": settings.api_key is not None,
        "warning": warning,
        "precision": loaded.precision_choice.to_dict(),
        "threads": threads.choice.to_dict(),
        "tower_runtimes": {m: choice.to_dict() for m, choice in loaded.tower_runtimes.items()},
        "tower_precisions": {m: choice.to_dict() for m, choice in loaded.tower_precisions.items()},
    }
    return app, summary
