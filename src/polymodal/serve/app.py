"""The REST server: ``create_app(model, index, settings)`` -> a FastAPI app with the web page at ``/``.

Endpoints: ``GET /health``, ``POST /embed``, ``POST /classify``, ``POST /search``, ``GET /items/{id}/image``,
``GET /items/{id}/audio``, ``GET /items/{id}/video``, ``POST /caption``, ``POST /answer``, ``POST /generate``, and
``POST /predict`` for a fitted table predictor (``polymodal fit``) or a fusion classifier. Images, sounds and clips
are all media: a request names its item's modality by its field (``image``, ``audio``, ``video``), the model says
which modalities it takes.
The OpenAPI schema is at ``/openapi.json``; the interactive docs UI is off because it would load scripts from a CDN.
"""

from __future__ import annotations

import asyncio
import mimetypes
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel

from polymodal.api import Model
from polymodal.api.model import check_generate_options
from polymodal.fit.columns import COLUMN_KINDS
from polymodal.hardware import ThreadBudget, release_idle_threads
from polymodal.serve.batching import MicroBatcher
from polymodal.serve.errors import ApiError, install_error_handlers
from polymodal.serve.payloads import (
    Upload,
    decode_base64,
    decode_media,
    png_base64,
    read_embed_request,
    read_json,
    read_media_request,
    thumbnail,
    validate,
)
from polymodal.serve.rows import bad_cell, predictor_rows
from polymodal.serve.safety import JSON, MULTIPART, RequestGuard, SecurityHeaders, api_key_dependency, media_type
from polymodal.serve.schemas import (
    AUDIO_DOC,
    IMAGE_DOC,
    QUERY_MEDIA,
    SOURCE_MEDIA,
    VIDEO_DOC,
    AnswerOptions,
    AnswerRequest,
    AnswerResponse,
    Batching,
    CaptionOptions,
    CaptionRequest,
    CaptionResponse,
    ClassifyOptions,
    ClassifyRequest,
    ClassifyResponse,
    EmbedRequest,
    EmbedResponse,
    ErrorResponse,
    GeneratedImage,
    GenerateRequest,
    GenerateResponse,
    Health,
    IndexInfo,
    LabelScore,
    Limits,
    PredictedRow,
    PredictorColumn,
    PredictorInfo,
    PredictRequest,
    PredictResponse,
    Runtime,
    SearchHit,
    SearchOptions,
    SearchRequest,
    SearchResponse,
    TimedCaptionOut,
    TowerRuntimeInfo,
)
from polymodal.serve.search import SearchIndex
from polymodal.serve.service import Service
from polymodal.serve.settings import ServeSettings
from polymodal.serve.traffic import ActiveRequests, Traffic
from polymodal.version import __version__

STATIC = Path(__file__).parent / "static"
THUMBNAIL_SIZE = 256
# Sound and video files by extension; browsers play these from /items/{id}/audio and /items/{id}/video (mimetypes
# lacks some, e.g. FLAC, MKV).
MEDIA_TYPES = {
    "audio": {
        "wav": "audio/wav",
        "flac": "audio/flac",
        "ogg": "audio/ogg",
        "opus": "audio/ogg",
        "mp3": "audio/mpeg",
        "aiff": "audio/aiff",
        "aif": "audio/aiff",
        "m4a": "audio/mp4",
        "mp4": "audio/mp4",  # a clip's sound track, indexed as a sound: played by <audio>
        "m4v": "audio/mp4",
        "webm": "audio/webm",
        "mka": "audio/x-matroska",
    },
    "video": {
        "mp4": "video/mp4",
        "m4v": "video/mp4",
        "webm": "video/webm",
        "mkv": "video/x-matroska",
        "mov": "video/quicktime",
        "avi": "video/x-msvideo",
    },
}
EMBED_FIELDS = {"images": "image", "audio": "audio", "videos": "video"}  # /embed's media fields -> their modality
# Body routes and the media types they take; everything else is refused with 415 before it is read.
CONTENT_TYPES = {
    "/embed": (JSON, MULTIPART),
    "/search": (JSON, MULTIPART),
    "/classify": (JSON, MULTIPART),
    "/caption": (JSON, MULTIPART),
    "/answer": (JSON, MULTIPART),
    "/generate": (JSON,),
    "/predict": (JSON,),
}
_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": text}
    for status, text in [
        (400, "Not supported by this model"),
        (401, "Missing or wrong API key"),
        (404, "Not found"),
        (413, "Too large"),
        (415, "Wrong Content-Type"),
        (422, "Invalid request"),
    ]
}


def _media_body(
    options: type[BaseModel], with_media: type[BaseModel], fields: dict[str, str], *, many: bool = False
) -> dict[str, Any]:
    """OpenAPI for an endpoint that parses its own body: base64 JSON or a multipart upload with one file part of
    ``fields`` (name -> description; ``many``: each file field repeatable, and none required)."""
    form = options.model_json_schema()
    file: dict[str, Any] = {"type": "string", "format": "binary"}
    parts = {
        name: {"type": "array", "items": file} if many else {**file, "description": doc} for name, doc in fields.items()
    }
    form["properties"] = {**parts, **form.get("properties", {})}
    if len(fields) == 1 and not many:
        form["required"] = [*fields, *form.get("required", [])]
    return {
        "requestBody": {
            "required": True,
            "content": {JSON: {"schema": with_media.model_json_schema()}, MULTIPART: {"schema": form}},
        }
    }


QUERY_DOCS = {"image": IMAGE_DOC, "audio": AUDIO_DOC, "video": VIDEO_DOC}


# async on purpose: FastAPI runs plain ``def`` dependencies in its thread pool, a thread hop per request for nothing.
async def _service(request: Request) -> Service:
    return request.app.state.service


async def _settings(request: Request) -> ServeSettings:
    return request.app.state.settings


router = APIRouter(responses=_ERRORS)


class _EmbedForm(BaseModel):
    texts: list[str] = []


@router.post(
    "/embed",
    response_model=EmbedResponse,
    summary="Embed texts, images, sounds and/or clips",
    openapi_extra=_media_body(_EmbedForm, EmbedRequest, dict.fromkeys(EMBED_FIELDS, ""), many=True),
)
async def embed(
    request: Request, service: Service = Depends(_service), settings: ServeSettings = Depends(_settings)
) -> EmbedResponse:
    service.require("/embed", "embed")
    texts, uploads = await read_embed_request(request, EMBED_FIELDS)
    for modality in {u.modality for u in uploads}:
        service.require("/embed", "embed", modality)
    video = service.model.video_sampling()
    decoded = await asyncio.gather(*(decode_media(u, settings, video) for u in uploads))  # side by side in threads
    vectors = {"text": (await service.embed("text", texts)).tolist() if texts else []}
    for modality in EMBED_FIELDS.values():
        items = [item for u, item in zip(uploads, decoded) if u.modality == modality]
        vectors[modality] = (await service.embed(modality, items)).tolist() if items else []
    return EmbedResponse(
        dim=service.model.embed_dim or 0,
        text_embeddings=vectors["text"],
        image_embeddings=vectors["image"],
        audio_embeddings=vectors["audio"],
        video_embeddings=vectors["video"],
    )


async def _media_item(upload: Upload, endpoint: str, task: str, service: Service, settings: ServeSettings) -> Any:
    """The decoded item of a checked upload, once the model is known to take its modality for ``task``."""
    service.require(endpoint, task, upload.modality)
    return await decode_media(upload, settings, service.model.video_sampling())


@router.post(
    "/classify",
    response_model=ClassifyResponse,
    summary="Zero-shot classify an image, a sound or a clip",
    openapi_extra=_media_body(ClassifyOptions, ClassifyRequest, QUERY_DOCS),
)
async def classify(
    request: Request, service: Service = Depends(_service), settings: ServeSettings = Depends(_settings)
) -> ClassifyResponse:
    service.require("/classify", "classify")
    if not service.endpoints()["/classify"]:  # it embeds, but no text tower embeds the labels
        raise ApiError(400, "not_supported", f"model {service.model.name} cannot classify by labels: no text tower")
    options, upload = await read_media_request(request, ClassifyOptions, ClassifyRequest, QUERY_MEDIA)
    item = await _media_item(upload, "/classify", "classify", service, settings)
    templates = options.templates
    if isinstance(templates, str) and "{}" in templates:
        templates = [templates]  # one custom template rather than the name of a template set
    labels = [label.strip() for label in options.labels]
    ranked = await service.classify(item, upload.modality, labels, templates, options.top_k)
    return ClassifyResponse(labels=[LabelScore(label=label, score=score) for label, score in ranked])


@router.post(
    "/caption",
    response_model=CaptionResponse,
    response_model_exclude_none=True,  # `segments` only when asked for
    summary="Caption an image (or a sound, a clip: what the captioner reads)",
    openapi_extra=_media_body(CaptionOptions, CaptionRequest, {m: QUERY_DOCS[m] for m in SOURCE_MEDIA}),
)
async def caption(
    request: Request, service: Service = Depends(_service), settings: ServeSettings = Depends(_settings)
) -> CaptionResponse:
    service.require("/caption", "caption")
    options, upload = await read_media_request(request, CaptionOptions, CaptionRequest, SOURCE_MEDIA)
    if options.segment_seconds is None:
        item = await _media_item(upload, "/caption", "caption", service, settings)
        return CaptionResponse(caption=await service.caption(item, options.max_new_tokens, options.num_beams))
    if upload.modality == "image":
        raise ApiError(422, "invalid_request", "segment_seconds cuts a clip or a recording: upload a video or audio")
    # A clip for a captioner of clips or of pictures (its segments' middle frames), a recording for one of sounds.
    reads = service.model.media("caption")
    if not (reads & {"video", "image"} if upload.modality == "video" else reads & {"audio"}):
        service.require("/caption", "caption", upload.modality)  # refused, saying what it reads
    clip = await decode_media(upload, settings, service.model.video_sampling())
    timeline = await service.caption_segments(clip, options)  # type: ignore[arg-type]
    return CaptionResponse(
        caption="; ".join(t.caption for t in timeline),
        segments=[TimedCaptionOut(**t.as_dict()) for t in timeline],  # type: ignore[arg-type]
    )


@router.post(
    "/answer",
    response_model=AnswerResponse,
    summary="Answer a question about an image (or a clip, for a question answerer of clips)",
    openapi_extra=_media_body(AnswerOptions, AnswerRequest, {m: QUERY_DOCS[m] for m in SOURCE_MEDIA}),
)
async def answer(
    request: Request, service: Service = Depends(_service), settings: ServeSettings = Depends(_settings)
) -> AnswerResponse:
    service.require("/answer", "answer questions")
    options, upload = await read_media_request(request, AnswerOptions, AnswerRequest, SOURCE_MEDIA)
    item = await _media_item(upload, "/answer", "answer questions about", service, settings)
    return AnswerResponse(answer=await service.answer(item, options.question))


@router.post(
    "/generate",
    response_model=GenerateResponse,
    summary="Generate images from text (needs a text-to-image model); seeded: the same request, the same images",
)
async def generate(
    body: GenerateRequest, service: Service = Depends(_service), settings: ServeSettings = Depends(_settings)
) -> GenerateResponse:
    service.require("/generate", "generate images")
    texts = body.prompts
    try:  # before batching: a request sharing a model call must not fail for another's mistake
        check_generate_options(
            texts, n=body.n, steps=body.steps, guidance=body.guidance, seed=body.seed, sampler=body.sampler
        )
    except ValueError as e:
        raise ApiError(422, "invalid_request", str(e)) from None
    total = len(texts) * body.n
    if total > settings.max_generate_images:
        raise ApiError(
            422,
            "too_many_images",
            f"{len(texts)} text(s) x n={body.n} = {total} images; this server makes at most "
            f"{settings.max_generate_images} per request",
        )
    if body.steps > settings.max_generate_steps:
        raise ApiError(
            422, "too_many_steps", f"steps={body.steps}: this server samples at most {settings.max_generate_steps}"
        )
    per_text = await service.generate(texts, body.n, body.steps, body.guidance, body.seed, body.sampler)
    encoded = await png_base64([image for images in per_text for image in images])
    return GenerateResponse(
        images=[
            GeneratedImage(text_index=t, image_index=i, text=texts[t], image=encoded[t * body.n + i])
            for t in range(len(texts))
            for i in range(body.n)
        ]
    )


@router.post(
    "/predict",
    response_model=PredictResponse,
    summary="Predict table rows with a fitted predictor (`polymodal fit`) or a fusion classifier; media as base64",
)
async def predict(
    body: PredictRequest, service: Service = Depends(_service), settings: ServeSettings = Depends(_settings)
) -> PredictResponse:
    service.require("/predict", "predict")
    problem = service.model.predict_problem
    assert problem is not None  # only a model that predicts passes require
    kinds = service.model.predict_columns
    # The request's media files live in a directory of its own, removed when it is answered.
    with tempfile.TemporaryDirectory(prefix="polymodal-predict-") as directory:
        as_missing = body.bad_cells == "as_missing"
        unread: list[list[str]] = []
        rows = await predictor_rows(
            body.rows, kinds, problem.label, Path(directory), settings, unread if as_missing else None
        )
        try:
            predicted = await service.predict(rows, Path(directory))
        except ValueError as e:  # a fusion classifier's rows none of which has an input it reads
            dropped = [cell for row in unread for cell in row]
            why = f" (left out as unreadable: {'; '.join(dropped[:3])})" if dropped else ""
            raise ApiError(422, "invalid_request", f"{e}{why}") from None
    for i, (label, values, bad) in enumerate(predicted):
        if bad and not as_missing:
            raise bad_cell(bad[0], kinds)
        if as_missing:
            unread[i] += [bad_cell(error, kinds).message for error in bad]
        if not np.isfinite(np.asarray(values if values is not None else label, dtype=float)).all():
            raise ApiError(
                422, "invalid_request", f"rows[{i}]: the prediction is not a finite number (extreme values?)"
            )
    return PredictResponse(
        problem=problem.kind,
        label=problem.label,
        predictions=[
            PredictedRow(
                row=i,
                prediction=label,
                probabilities=None if values is None else dict(zip(problem.classes, values)),
                unread=unread[i] if as_missing else [],
            )
            for i, (label, values, _) in enumerate(predicted)
        ],
    )


@router.post(
    "/search",
    response_model=SearchResponse,
    summary="Search the index by text, image, sound or clip",
    openapi_extra=_media_body(SearchOptions, SearchRequest, QUERY_DOCS),
)
async def search(
    request: Request, service: Service = Depends(_service), settings: ServeSettings = Depends(_settings)
) -> SearchResponse:
    service.require("/search", "search")
    options: SearchOptions
    if media_type(request.headers.get("content-type")) == MULTIPART:  # a file to search by, options as form fields
        options, upload = await read_media_request(request, SearchOptions, SearchRequest, QUERY_MEDIA)
    else:
        options = body = validate(SearchRequest, await read_json(request))
        if body.text is not None:
            hits = await service.search("text", body.text, body.k, body.kind)
            return SearchResponse(hits=[_hit(hit, request) for hit in hits])
        (field,) = [f for f in QUERY_MEDIA if getattr(body, f) is not None]
        upload = Upload(field, field, decode_base64(getattr(body, field), field))
    item = await _media_item(upload, "/search", "search by", service, settings)
    hits = await service.search(upload.modality, item, options.k, options.kind)
    return SearchResponse(hits=[_hit(hit, request) for hit in hits])


def _hit(hit: Any, request: Request) -> SearchHit:
    from polymodal.index.sources import media_file

    # Relative URLs, so the page works behind a proxy that mounts the server under another host name.
    media = media_file(hit.kind, hit.path)
    item_id = str(hit.id)
    played = {m: request.app.url_path_for(f"item_{m}", item_id=item_id) if media == m else None for m in MEDIA_TYPES}
    return SearchHit(
        id=hit.id,
        score=hit.score,
        kind=hit.kind,
        path=hit.path,
        text=hit.text,
        metadata=hit.metadata,
        thumbnail_url=(
            f"{request.app.url_path_for('item_image', item_id=item_id)}?max_size={THUMBNAIL_SIZE}"
            if media == "image"
            else None
        ),
        audio_url=played["audio"],
        video_url=played["video"],
        start=hit.metadata.get("start"),
        end=hit.metadata.get("end"),
    )


@router.get(
    "/items/{item_id}/image",
    name="item_image",
    summary="An indexed item's image (by id only)",
    response_class=Response,
    responses={200: {"content": {"image/*": {}}, "description": "The image"}},
)
async def item_image(
    item_id: int,
    max_size: int | None = Query(None, ge=16, le=1024, description="Longest side of a JPEG thumbnail."),
    service: Service = Depends(_service),
    settings: ServeSettings = Depends(_settings),
) -> Response:
    path = await _item_file(item_id, "image", service)
    if max_size is not None:
        return Response(
            await thumbnail(path, max_size, settings.max_pixels),
            media_type="image/jpeg",
            headers={"Cache-Control": "private, max-age=3600"},
        )
    return _file_response(path, item_id, mimetypes.guess_type(path.name)[0])


@router.get(
    "/items/{item_id}/audio",
    name="item_audio",
    summary="An indexed item's sound file (by id only)",
    response_class=Response,
    responses={200: {"content": {"audio/*": {}}, "description": "The sound file, as indexed"}},
)
async def item_audio(item_id: int, service: Service = Depends(_service)) -> Response:
    return await _played_file(item_id, "audio", service)


@router.get(
    "/items/{item_id}/video",
    name="item_video",
    summary="An indexed item's video file (by id only; Range requests let a player seek)",
    response_class=Response,
    responses={
        200: {"content": {"video/*": {}}, "description": "The video file, as indexed"},
        206: {"content": {"video/*": {}}, "description": "The requested byte range of it"},
    },
)
async def item_video(item_id: int, service: Service = Depends(_service)) -> Response:
    return await _played_file(item_id, "video", service)


async def _played_file(item_id: int, modality: str, service: Service) -> Response:
    """A sound or video file with its content type; Starlette's FileResponse answers Range requests (206). A video
    browsers cannot play is sent as its H.264 copy (:mod:`polymodal.serve.playable`)."""
    path = await _item_file(item_id, modality, service)
    if modality == "video" and path.is_file():
        path = await asyncio.to_thread(service.playable.path_for, path)
    suffix = path.suffix.lower().lstrip(".")
    return _file_response(path, item_id, MEDIA_TYPES[modality].get(suffix) or MEDIA_TYPES["video"].get(suffix))


async def _item_file(item_id: int, modality: str, service: Service) -> Path:
    service.require(f"/items/{{item_id}}/{modality}", f"serve {modality} files")
    # The path comes from the index, never from the request: only registered files can be served.
    path = await service.media_path(item_id, modality)
    if path is None:
        raise ApiError(404, "not_found", f"no {modality} item with id {item_id} in the index")
    return path


def _file_response(path: Path, item_id: int, content_type: str | None) -> FileResponse:
    if not path.is_file():
        raise ApiError(404, "not_found", f"the file of item {item_id} is gone from disk")
    return FileResponse(path, media_type=content_type or "application/octet-stream")


def create_app(
    model: Model,
    index: SearchIndex | None = None,
    settings: ServeSettings | None = None,
    threads: ThreadBudget | None = None,
) -> FastAPI:
    """The server for ``model`` (and ``index``, for /search and /items); see :class:`ServeSettings`. An adaptive
    ``threads`` budget follows the machine's load, re-checked before model calls on the batcher's thread."""
    settings = settings or ServeSettings()
    if index is not None and index.model_identity not in (None, model.identity):
        built_with = getattr(getattr(index, "meta", None), "model_name", None)  # an index directory names it
        named = f"{built_with} (identity {index.model_identity[:12]})" if built_with else index.model_identity
        raise ValueError(
            f"the index was built with model {named}, not with {model.name} (identity {model.identity[:12]}): "
            "rebuild it with this model or serve the model it was built with"
        )
    active = ActiveRequests()
    batcher = MicroBatcher(
        settings.batch_size,
        settings.max_wait_ms,
        before_batch=None if threads is None else threads.update,
        max_queue_ms=settings.max_queue_ms,
        active_requests=active,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # The model computes in the batcher's thread from now on; idle OpenMP workers left from loading it here
        # would halve its speed on small batches (see release_idle_threads).
        release_idle_threads()
        yield
        batcher.close()
        app.state.service.playable.close()

    app = FastAPI(
        title="polymodal",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
        description="Embed, classify, search, caption, answer and generate with a polymodal model, or predict table "
        "rows with a fusion classifier or a fitted predictor.",
    )
    app.state.service = Service(model, index, batcher)
    app.state.settings = settings
    app.state.threads = threads
    install_error_handlers(app)
    # Middleware added last runs first: security headers wrap everything, CORS sees preflights before the guard.
    app.add_middleware(
        RequestGuard,
        max_body_bytes=settings.max_upload_bytes,
        content_types=CONTENT_TYPES,
        body_timeout=settings.body_timeout_seconds,
    )
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type"],
        )
    app.add_middleware(SecurityHeaders)
    app.add_middleware(Traffic, active=active)

    app.add_api_route("/health", _health, methods=["GET"], response_model=Health, summary="What this server can do")
    auth = [Depends(api_key_dependency(settings.api_key))] if settings.api_key else []
    app.include_router(router, dependencies=auth)
    app.add_api_route("/", _page, methods=["GET"], include_in_schema=False)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


async def _health(
    request: Request, service: Service = Depends(_service), settings: ServeSettings = Depends(_settings)
) -> Health:
    model = service.model
    threads: ThreadBudget | None = request.app.state.threads
    runtime = Runtime(
        precision=model.precision,
        precision_reason=model.precision_choice.reason,
        threads=None if threads is None else threads.threads,
        threads_reason=None if threads is None else threads.choice.reason,
        towers={
            m: TowerRuntimeInfo(**{k: v for k, v in choice.to_dict().items() if k != "modality"})
            for m, choice in model.tower_runtimes.items()
        },
        tower_precisions={m: f"{c.precision}: {c.reason}" for m, c in model.tower_precisions.items()},
    )
    index = (
        None
        if service.index is None
        else IndexInfo(
            size=await service.index_size(),
            model_identity=service.index.model_identity,
            search_tuning=service.index.search_tuning,
        )
    )
    return Health(
        model=model.name,
        identity=model.identity,
        capabilities=sorted(model.capabilities),
        media={capability: sorted(model.media(capability)) for capability in sorted(model.capabilities)},
        video_embedding=model.video_embedding,
        embed_dim=model.embed_dim,
        endpoints=service.endpoints(),
        predictor=_predictor_info(model),
        index=index,
        auth_required=settings.api_key is not None,
        limits=Limits(
            max_upload_bytes=settings.max_upload_bytes,
            max_pixels=settings.max_pixels,
            max_audio_seconds=settings.max_audio_seconds,
            max_video_seconds=settings.max_video_seconds,
            batch_size=settings.batch_size,
            max_wait_ms=settings.max_wait_ms,
            max_queue_ms=settings.max_queue_ms,
            max_generate_images=settings.max_generate_images,
            max_generate_steps=settings.max_generate_steps,
        ),
        batching=Batching(**asdict(service.batcher.stats), chunk_sizes=_chunk_sizes(service.model)),
        runtime=runtime,
    )


def _chunk_sizes(model: Model) -> dict[str, int]:
    sizes = {modality: sizer.best() for modality, sizer in model.chunk_sizers.items()}
    return {modality: size for modality, size in sizes.items() if size is not None}


def _predictor_info(model: Model) -> PredictorInfo | None:
    problem = model.predict_problem
    if problem is None:
        return None
    return PredictorInfo(
        problem=problem.kind,
        label=problem.label,
        classes=list(problem.classes),
        # A fusion classifier's own modality beyond fit's kinds takes its value as written, like text.
        columns=[
            PredictorColumn(name=name, kind=kind if kind in COLUMN_KINDS else "text")
            for name, kind in model.predict_columns.items()
        ],
    )


async def _page() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html")
