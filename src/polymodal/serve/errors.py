"""Every error the server returns has one shape: ``{"error": {"code": str, "message": str}}``.

Client mistakes (bad JSON, base64, image or sound, a task the model cannot do, too large, wrong type) are 4xx with a
message that says what to fix; only real bugs become a 500, and those are logged with their traceback.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from polymodal.backends import TaskNotSupported
from polymodal.data.errors import BadSampleError
from polymodal.serve.batching import Overloaded

logger = logging.getLogger("polymodal.serve")

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    503: "overloaded",
}


class ApiError(Exception):
    """A client error with its HTTP status and a stable machine-readable code."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(code, message), status_code=status, headers=headers)


# Decode failures of the upload's size (a decompression bomb, an hour of audio) rather than of its bytes.
TOO_BIG = ("too_large", "too_long")


UPLOADED = "the uploaded file"
# How decoders name an upload they read from memory: libsndfile the file object (<_io.BytesIO object at 0x7f...>),
# PyAV no name at all ('<none>'). Neither tells the client anything, and the first leaks an address.
_IN_MEMORY = re.compile(r"<_io\.BytesIO object at 0x[0-9a-fA-F]+>|'<none>'")
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f]")


def upload_name(filename: str | None) -> str:
    """How a message names an upload: its file name as the client sent it (last path part, quoted, at most 80
    characters), or "the uploaded file"."""
    name = _UNPRINTABLE.sub("", (filename or "").replace("\\", "/").rsplit("/", 1)[-1]).strip()
    if not name:
        return UPLOADED
    return repr(name if len(name) <= 80 else f"{name[:77]}...")


def name_upload(reason: str, filename: str | None = None) -> str:
    """``reason`` with a decoder's in-memory file object replaced by the upload's name."""
    return _IN_MEMORY.sub(lambda _: upload_name(filename), reason)


def bad_media(error: BadSampleError, field: str, modality: str, limit: str, filename: str | None = None) -> ApiError:
    """A decoding failure as a client error naming the field (``bad_image``, ``bad_audio``) and, in the decoder's
    words, the upload (``filename``, or "the uploaded file"); one over the server's size or length ``limit``
    ("40,000,000 pixels", "60 s") is 413 and names it."""
    reason = name_upload(error.reason, filename)
    if reason == error.reason:  # the decoder did not name the file it read: the upload's name goes in front
        reason = f"{upload_name(filename)}: {reason}"
    if error.kind not in TOO_BIG:
        return ApiError(422, f"bad_{modality}", f"{field}: {reason}")
    # PIL may refuse a huge image before our own check does, quoting its own limit: name ours too.
    reason = reason if limit in reason else f"{reason} (this server's limit: {limit})"
    return ApiError(413, f"{modality}_{error.kind}", f"{field}: {reason}")


def _field_name(loc: Sequence[Any]) -> str:
    """``("body", "rows", 0, "note")`` -> ``rows[0].note``."""
    name = ""
    for part in loc:
        if part != "body":
            name += f"[{part}]" if isinstance(part, int) else f".{part}" if name else str(part)
    return name or "body"


def _validation_message(exc: RequestValidationError) -> str:
    """One part per field. A value that fits none of a union's types is one part: pydantic reports each type as an
    error of its own, at the field's location plus the type's name."""
    errors = exc.errors()
    by_parent: dict[tuple[Any, ...], int] = {}
    for err in errors:
        if str(err.get("type", "")).endswith("_type"):
            parent = tuple(err.get("loc", ()))[:-1]
            by_parent[parent] = by_parent.get(parent, 0) + 1
    parts: dict[str, str] = {}
    unions: dict[str, list[str]] = {}
    for err in errors:
        loc = tuple(err.get("loc", ()))
        if str(err.get("type", "")).endswith("_type") and by_parent.get(loc[:-1], 0) > 1:
            field = _field_name(loc[:-1])
            unions.setdefault(field, []).append(str(loc[-1]))
            parts[field] = f"expected {' or '.join(unions[field])}, got {type(err.get('input')).__name__}"
        else:
            parts.setdefault(_field_name(loc), str(err.get("msg", "invalid")))
    return "; ".join(f"{field}: {message}" for field, message in list(parts.items())[:5]) or "invalid request"


def install_error_handlers(app: FastAPI) -> None:
    """Route every exception to the one JSON error shape."""

    @app.exception_handler(ApiError)
    async def _api(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        invalid_json = any(err.get("type") == "json_invalid" for err in exc.errors())
        code = "invalid_json" if invalid_json else "invalid_request"
        return error_response(422, code, _validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(BadSampleError)
    async def _bad_sample(_: Request, exc: BadSampleError) -> JSONResponse:
        # An upload that passed the checks but not the model's own decoding: still the client's to fix.
        modality = exc.field or "input"
        status, code = (413, f"{modality}_{exc.kind}") if exc.kind in TOO_BIG else (422, f"bad_{modality}")
        return error_response(status, code, name_upload(str(exc)))

    @app.exception_handler(Overloaded)
    async def _overloaded(_: Request, exc: Overloaded) -> JSONResponse:
        return error_response(503, "overloaded", str(exc), {"Retry-After": str(exc.retry_after)})

    @app.exception_handler(TaskNotSupported)
    async def _unsupported(_: Request, exc: TaskNotSupported) -> JSONResponse:
        return error_response(400, "not_supported", str(exc))

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unexpected error serving %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(500, "internal_error", "internal server error (logged on the server)")
