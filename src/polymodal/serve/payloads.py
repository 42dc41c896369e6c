"""Turn request payloads (base64 strings, multipart uploads) into decoded images and checked sounds and clips, or
into 4xx errors that name the field; and images into the base64 PNGs a response carries."""

from __future__ import annotations

import base64
import binascii
import functools
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar, get_origin

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from PIL import Image
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from polymodal.data.audio import CHECK_RATE, decode_audio
from polymodal.data.errors import BadSampleError
from polymodal.data.image import decode_image
from polymodal.data.shapes import encode_png
from polymodal.data.video import VideoSampling, decode_video
from polymodal.serve.errors import ApiError, bad_media
from polymodal.serve.safety import MULTIPART, media_type
from polymodal.serve.schemas import MAX_ITEMS, EmbedRequest
from polymodal.serve.settings import ServeSettings

Options = TypeVar("Options", bound=BaseModel)
IMAGE_FIELD = "image"
MAX_FORM_FIELDS = 2000  # labels may come as one repeated form field per label


@dataclass
class Upload:
    """One media item of a request, still encoded: its modality and the field it came in (for error messages)."""

    modality: str
    field: str
    data: bytes
    filename: str | None = None  # a multipart part's file name, for error messages only


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
    return raw


async def decode_upload(data: bytes, field: str, max_pixels: int, filename: str | None = None) -> Image.Image:
    """Decode in a worker thread (decoding a large photo takes tens of ms) with the pixel limit applied."""
    try:
        return await run_in_threadpool(decode_image, data, max_pixels=max_pixels, source=field, field=field)
    except BadSampleError as e:
        raise bad_media(e, field, "image", f"{max_pixels:,} pixels", filename) from None


async def check_audio(data: bytes, field: str, max_seconds: float, filename: str | None = None) -> bytes:
    """The upload itself once it decodes as a sound no longer than ``max_seconds`` (the length is read from the
    header first). The model decodes it again at its own sample rate, which this layer does not know."""
    try:
        await run_in_threadpool(decode_audio, data, CHECK_RATE, max_seconds=max_seconds, source=field, field=field)
    except BadSampleError as e:
        raise bad_media(e, field, "audio", f"{max_seconds:g} s", filename) from None
    return data


async def check_video(data: bytes, field: str, bounds: VideoSampling, filename: str | None = None) -> bytes:
    """The upload itself once it opens as a clip within ``bounds`` (length, frame size, decoding time; one frame
    decoded); the model samples its own frames from it."""
    try:
        await run_in_threadpool(decode_video, data, bounds.model_copy(update={"frames": 1}), source=field, field=field)
    except BadSampleError as e:
        limit = f"{bounds.max_pixels:,} pixels" if e.kind == "too_large" else f"{bounds.max_seconds:g} s"
        raise bad_media(e, field, "video", limit, filename) from None
    return data


def video_bounds(settings: ServeSettings, model: VideoSampling) -> VideoSampling:
    """The tighter of the server's limits and those the model decodes clips with, so a checked clip also decodes."""
    return model.model_copy(
        update={
            "max_seconds": min(settings.max_video_seconds, model.max_seconds),
            "max_pixels": min(settings.max_pixels, model.max_pixels),
        }
    )


async def decode_media(upload: Upload, settings: ServeSettings, video: VideoSampling | None = None) -> object:
    """What the model embeds for ``upload``: a decoded image, or the checked bytes of a sound or a clip (within
    the model's ``video`` sampling bounds too); 4xx if it is bad."""
    if not upload.data:
        raise ApiError(422, f"bad_{upload.modality}", f"{upload.field}: {upload.modality} data is empty (0 bytes)")
    if upload.modality == "image":
        return await decode_upload(upload.data, upload.field, settings.max_pixels, upload.filename)
    if upload.modality == "video":
        bounds = video_bounds(settings, video or VideoSampling())
        return await check_video(upload.data, upload.field, bounds, upload.filename)
    return await check_audio(upload.data, upload.field, settings.max_audio_seconds, upload.filename)


async def png_base64(images: list[Image.Image]) -> list[str]:
    """Base64 PNGs without metadata (equal pixels, equal strings), encoded in a worker thread."""

    def encode() -> list[str]:
        return [base64.b64encode(encode_png(image)).decode("ascii") for image in images]

    return await run_in_threadpool(encode)


def validate(model: type[Options], data: object) -> Options:
    """Validate like FastAPI does for a body, so the error comes out in the same shape."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise RequestValidationError([{**err, "loc": ("body", *err["loc"])} for err in e.errors()]) from None


async def read_json(request: Request) -> object:
    try:
        return json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ApiError(422, "invalid_json", f"body is not valid JSON: {e}") from None


async def read_media_request(
    request: Request, options: type[Options], with_media: type[BaseModel], fields: tuple[str, ...] = (IMAGE_FIELD,)
) -> tuple[Options, Upload]:
    """A media endpoint's body: JSON (``with_media``: options + one base64 field of ``fields``) or multipart
    (options as form fields + one file part named after one of ``fields``). Returns the options and the upload,
    still encoded: the endpoint checks the model takes that modality before anything is decoded."""
    names = " or ".join(repr(f) for f in fields)
    if media_type(request.headers.get("content-type")) == MULTIPART:
        async with request.form(max_files=1, max_fields=MAX_FORM_FIELDS) as form:  # closes spooled uploads
            given = [key for key in fields if key in form]
            part = form.get(given[0]) if len(given) == 1 else None
            if not isinstance(part, UploadFile):
                raise ApiError(422, "invalid_request", f"multipart body needs one file part named {names}")
            upload = Upload(given[0], given[0], await part.read(), part.filename)
            values = {key: _form_value(options, key, form.getlist(key)) for key in form if key not in fields}
        return validate(options, values), upload
    full = validate(with_media, await read_json(request))
    (field,) = [f for f in fields if getattr(full, f, None) is not None]  # with_media's validator allows one
    upload = Upload(field, field, decode_base64(getattr(full, field), field))
    return options.model_validate(full.model_dump(exclude=set(fields))), upload


async def read_embed_request(request: Request, fields: dict[str, str]) -> tuple[list[str], list[Upload]]:
    """/embed's body: JSON (texts and lists of base64 per media field) or multipart (``texts`` form fields and
    file parts named after the media fields, each repeatable). ``fields``: field name -> modality."""
    filenames: dict[str, list[str | None]] = {}  # multipart parts carry their file names
    if media_type(request.headers.get("content-type")) == MULTIPART:
        async with request.form(max_files=len(fields) * MAX_ITEMS, max_fields=MAX_ITEMS) as form:
            unknown = sorted(set(form) - {"texts", *fields})
            if unknown:
                expected = ", ".join(["texts", *fields])
                raise ApiError(422, "invalid_request", f"{unknown[0]}: unknown part; expected {expected}")
            texts, parts = form.getlist("texts"), {name: form.getlist(name) for name in fields}
            if any(not isinstance(t, str) for t in texts) or any(isinstance(v, str) for p in parts.values() for v in p):
                raise ApiError(422, "invalid_request", f"texts must be text fields, {', '.join(fields)} file parts")
            data = {name: [await v.read() for v in vs] for name, vs in parts.items()}  # type: ignore[union-attr]
            filenames = {name: [v.filename for v in vs] for name, vs in parts.items()}  # type: ignore[union-attr]
        # The same checks as JSON (counts, at least one item), with a placeholder for each file part.
        body = validate(EmbedRequest, {"texts": texts, **{name: [""] * len(v) for name, v in data.items()}})
    else:
        body = validate(EmbedRequest, await read_json(request))
        data = {name: [decode_base64(v, f"{name}[{i}]") for i, v in enumerate(getattr(body, name))] for name in fields}
    uploads = [
        Upload(fields[name], f"{name}[{i}]", raw, filenames.get(name, [None] * len(items))[i])
        for name, items in data.items()
        for i, raw in enumerate(items)
    ]
    return body.texts, uploads


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
