"""The REST server: ``create_app(model, index, settings)`` -> a FastAPI app with the web page at ``/``.

Endpoints: ``GET /health``, ``POST /embed``, ``POST /classify``, ``POST /search``, ``GET /items/{id}/image``,
``POST /caption``, ``POST /answer``. The OpenAPI schema is at ``/openapi.json``; the interactive docs UI is off
because it would load scripts from a CDN.
"""

from __future__ import annotations

import asyncio
import mimetypes
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel

from polymodal.api import Model
from polymodal.hardware import ThreadBudget
from polymodal.serve.batching import MicroBatcher
from polymodal.serve.errors import ApiError, install_error_handlers
from polymodal.serve.payloads import decode_base64, decode_upload, read_image_request, thumbnail
from polymodal.serve.safety import JSON, MULTIPART, RequestGuard, SecurityHeaders, api_key_dependency
from polymodal.serve.schemas import (
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
    Health,
    IndexInfo,
    LabelScore,
    Limits,
    Runtime,
    SearchHit,
    SearchRequest,
    SearchResponse,
)
from polymodal.serve.search import SearchIndex
from polymodal.serve.service import Service
from polymodal.serve.settings import ServeSettings
from polymodal.version import __version__

STATIC = Path(__file__).parent / "static"
THUMBNAIL_SIZE = 256
# Body routes and the media types they take; everything else is refused with 415 before it is read.
CONTENT_TYPES = {
    "/embed": (JSON,),
    "/search": (JSON,),
    "/classify": (JSON, MULTIPART),
    "/caption": (JSON, MULTIPART),
    "/answer": (JSON, MULTIPART),
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


def _image_body(options: type[BaseModel], with_image: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI for an endpoint that parses its own body: base64 JSON or a multipart upload."""
    form = options.model_json_schema()
    form["properties"] = {"image": {"type": "string", "format": "binary"}, **form.get("properties", {})}
    form["required"] = ["image", *form.get("required", [])]
    return {
        "requestBody": {
            "required": True,
            "content": {JSON: {"schema": with_image.model_json_schema()}, MULTIPART: {"schema": form}},
        }
    }


# async on purpose: FastAPI runs plain ``def`` dependencies in its thread pool, a thread hop per request for nothing.
async def _service(request: Request) -> Service:
    return request.app.state.service


async def _settings(request: Request) -> ServeSettings:
    return request.app.state.settings


router = APIRouter(responses=_ERRORS)


@router.post("/embed", response_model=EmbedResponse, summary="Embed texts and/or images")
async def embed(
    body: EmbedRequest, service: Service = Depends(_service), settings: ServeSettings = Depends(_settings)
) -> EmbedResponse:
    service.require("/embed", "embed")
    raw = [decode_base64(data, f"images[{i}]") for i, data in enumerate(body.images)]
    # Decoded side by side in the thread pool.
    images = await asyncio.gather(
        *(decode_upload(data, f"images[{i}]", settings.max_pixels) for i, data in enumerate(raw))
    )
    texts = await service.embed_texts(body.texts) if body.texts else None
    image_vectors = await service.embed_images(images) if images else None
    return EmbedResponse(
        dim=service.model.embed_dim or 0,
        text_embeddings=[] if texts is None else texts.tolist(),
        image_embeddings=[] if image_vectors is None else image_vectors.tolist(),
    )


@router.post(
    "/classify",
    response_model=ClassifyResponse,
    summary="Zero-shot classify an image",
    openapi_extra=_image_body(ClassifyOptions, ClassifyRequest),
)
async def classify(
    request: Request, service: Service = Depends(_service), settings: ServeSettings = Depends(_settings)
) -> ClassifyResponse:
    service.require("/classify", "classify")
    options, image = await read_image_request(request, ClassifyOptions, ClassifyRequest, settings.max_pixels)
    templates = options.templates
    if isinstance(templates, str) and "{}" in templates:
        templates = [templates]  # one custom template rather than the name of a template set
    ranked = await service.classify(image, [label.strip() for label in options.labels], templates, options.top_k)
    return ClassifyResponse(labels=[LabelScore(label=label, score=score) for label, score in ranked])


@router.post(
    "/caption",
    response_model=CaptionResponse,
    summary="Caption an image",
    openapi_extra=_image_body(CaptionOptions, CaptionRequest),
)
async def caption(
    request: Request, service: Service = Depends(_service), settings: ServeSettings = Depends(_settings)
) -> CaptionResponse:
    service.require("/caption", "caption")
    options, image = await read_image_request(request, CaptionOptions, CaptionRequest, settings.max_pixels)
    return CaptionResponse(caption=await service.caption(image, options.max_new_tokens, options.num_beams))


@router.post(
    "/answer",
    response_model=AnswerResponse,
    summary="Answer a question about an image",
    openapi_extra=_image_body(AnswerOptions, AnswerRequest),
)
async def answer(
    request: Request, service: Service = Depends(_service), settings: ServeSettings = Depends(_settings)
) -> AnswerResponse:
    service.require("/answer", "answer questions")
    options, image = await read_image_request(request, AnswerOptions, AnswerRequest, settings.max_pixels)
    return AnswerResponse(answer=await service.answer(image, options.question))


@router.post("/search", response_model=SearchResponse, summary="Search the index by text or image")
async def search(
    body: SearchRequest,
    request: Request,
    service: Service = Depends(_service),
    settings: ServeSettings = Depends(_settings),
) -> SearchResponse:
    service.require("/search", "search")
    if body.text is not None:
        vector = (await service.embed_texts([body.text]))[0]  # (D,)
    else:
        image = await decode_upload(decode_base64(body.image or "", "image"), "image", settings.max_pixels)
        vector = (await service.embed_images([image]))[0]
    hits = await service.search(vector, body.k, body.kind)
    return SearchResponse(hits=[_hit(hit, request) for hit in hits])


def _hit(hit: Any, request: Request) -> SearchHit:
    url = None
    if hit.path is not None:
        # Relative, so the page works behind a proxy that mounts the server under another host name.
        url = f"{request.app.url_path_for('item_image', item_id=str(hit.id))}?max_size={THUMBNAIL_SIZE}"
    return SearchHit(
        id=hit.id,
        score=hit.score,
        kind=hit.kind,
        path=hit.path,
        text=hit.text,
        metadata=hit.metadata,
        thumbnail_url=url,
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
    service.require("/items/{item_id}/image", "serve images")
    # The path comes from the index, never from the request: only registered files can be served.
    path = await service.image_path(item_id)
    if path is None:
        raise ApiError(404, "not_found", f"no image item with id {item_id} in the index")
    if max_size is not None:
        return Response(
            await thumbnail(path, max_size, settings.max_pixels),
            media_type="image/jpeg",
            headers={"Cache-Control": "private, max-age=3600"},
        )
    if not path.is_file():
        raise ApiError(404, "not_found", f"the image file of item {item_id} is gone from disk")
    return FileResponse(path, media_type=mimetypes.guess_type(path.name)[0] or "application/octet-stream")


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
        raise ValueError(
            f"the index was built with model {index.model_identity}, not with {model.name} "
            f"({model.identity}): rebuild it with this model or serve the model it was built with"
        )
    batcher = MicroBatcher(
        settings.batch_size, settings.max_wait_ms, before_batch=None if threads is None else threads.update
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        batcher.close()

    app = FastAPI(
        title="polymodal",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
        description="Embed, classify, search, caption and answer with a polymodal model.",
    )
    app.state.service = Service(model, index, batcher)
    app.state.settings = settings
    app.state.threads = threads
    install_error_handlers(app)
    # Middleware added last runs first: security headers wrap everything, CORS sees preflights before the guard.
    app.add_middleware(RequestGuard, max_body_bytes=settings.max_upload_bytes, content_types=CONTENT_TYPES)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type"],
        )
    app.add_middleware(SecurityHeaders)

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
    )
    index = (
        None
        if service.index is None
        else IndexInfo(size=await service.index_size(), model_identity=service.index.model_identity)
    )
    return Health(
        model=model.name,
        identity=model.identity,
        capabilities=sorted(model.capabilities),
        embed_dim=model.embed_dim,
        endpoints=service.endpoints(),
        index=index,
        auth_required=settings.api_key is not None,
        limits=Limits(
            max_upload_bytes=settings.max_upload_bytes,
            max_pixels=settings.max_pixels,
            batch_size=settings.batch_size,
            max_wait_ms=settings.max_wait_ms,
        ),
        batching=Batching(**asdict(service.batcher.stats)),
        runtime=runtime,
    )


async def _page() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html")
