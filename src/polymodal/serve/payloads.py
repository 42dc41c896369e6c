"""Turn request payloads (base64 strings, multipart uploads) into decoded images, or into 4xx errors."""

from __future__ import annotations

import base64
import binascii
import functools
import io
import json
from pathlib import Path
from typing import TypeVar, get_origin

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from PIL import Image
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from polymodal.data.errors import BadSampleError
from polymodal.data.image import decode_image
from polymodal.serve.errors import ApiError, bad_image
from polymodal.serve.safety import MULTIPART, media_type

Options = TypeVar("Options", bound=BaseModel)
IMAGE_FIELD = "image"
MAX_FORM_FIELDS = 2000  # labels may come as one repeated form field per label


def decode_base64(data: str, field: str) -> bytes:
    """Standard base64 (whitespace and a ``data:...;base64,`` prefix allowed) -> bytes, or a 422."""
    if data.startswith("data:"):
        header, _, data = data.partition(",")
        if not header.endswith(";base64"):
            raise ApiError(422, "bad_base64", f"{field}: a data: URL must be base64-encoded (';base64,')")
    try:
        raw = base64.b64decode("".join(data.split()), validate=True)
    except (binascii.Error, ValueError) as e:
        raise ApiError(422, "bad_base64", f"{field}: not valid base64 ({e})") from None
    if not raw:
        raise ApiError(422, "bad_image", f"{field}: image data is empty (0 bytes)")
    return raw


async def decode_upload(data: bytes, field: str, max_pixels: int) -> Image.Image:
    """Decode in a worker thread (decoding a large photo takes tens of ms) with the pixel limit applied."""
    try:
        return await run_in_threadpool(decode_image, data, max_pixels=max_pixels, source=field, field=field)
    except BadSampleError as e:
        raise bad_image(e, field, max_pixels) from None


def validate(model: type[Options], data: object) -> Options:
    """Validate like FastAPI does for a body, so the error comes out in the same shape."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise RequestValidationError([{**err, "loc": ("body", *err["loc"])} for err in e.errors()]) from None


async def read_image_request(
    request: Request, options: type[Options], with_image: type[BaseModel], max_pixels: int
) -> tuple[Options, Image.Image]:
    """An image endpoint's body: JSON (``with_image``: options + base64 ``image``) or multipart (options as form
    fields + an ``image`` file part). Returns the options and the decoded image."""
    if media_type(request.headers.get("content-type")) == MULTIPART:
        async with request.form(max_files=1, max_fields=MAX_FORM_FIELDS) as form:  # closes spooled uploads
            upload = form.get(IMAGE_FIELD)
            if not isinstance(upload, UploadFile):
                raise ApiError(422, "invalid_request", f"multipart body needs a file part named {IMAGE_FIELD!r}")
            raw = await upload.read()
            fields = {key: _form_value(options, key, form.getlist(key)) for key in form if key != IMAGE_FIELD}
        parsed = validate(options, fields)
    else:
        try:
            body = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ApiError(422, "invalid_json", f"body is not valid JSON: {e}") from None
        full = validate(with_image, body)
        raw = decode_base64(getattr(full, IMAGE_FIELD), IMAGE_FIELD)
        parsed = options.model_validate(full.model_dump(exclude={IMAGE_FIELD}))
    if not raw:
        raise ApiError(422, "bad_image", f"{IMAGE_FIELD}: image data is empty (0 bytes)")
    return parsed, await decode_upload(raw, IMAGE_FIELD, max_pixels)


def _form_value(options: type[BaseModel], key: str, values: list[str | UploadFile]) -> object:
    """Repeated form fields become a list; one value of a list field is split on commas (``labels=cat,dog``)."""
    if any(isinstance(v, UploadFile) for v in values):
        raise ApiError(422, "invalid_request", f"{key}: expected a text field, got a file")
    texts = [str(v) for v in values]
    if len(texts) > 1:
        return texts
    field = options.model_fields.get(key)
    if field is not None and get_origin(field.annotation) is list:
        return [part.strip() for part in texts[0].split(",") if part.strip()]
    return texts[0]


@functools.lru_cache(maxsize=1024)
def _thumbnail(path: str, mtime_ns: int, max_size: int, max_pixels: int) -> bytes:
    # mtime_ns is part of the cache key only: a file replaced on disk gets a fresh thumbnail.
    image = decode_image(path, max_pixels=max_pixels)
    image.thumbnail((max_size, max_size))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


async def thumbnail(path: Path, max_size: int, max_pixels: int) -> bytes:
    """A JPEG at most ``max_size`` px on its longer side (cached; made in a worker thread)."""
    try:
        return await run_in_threadpool(_thumbnail, str(path), path.stat().st_mtime_ns, max_size, max_pixels)
    except FileNotFoundError:
        raise ApiError(404, "not_found", "the item's image file is gone from disk") from None
    except BadSampleError as e:
        raise ApiError(422, "bad_image", f"the item's image cannot be decoded: {e.reason}") from None
