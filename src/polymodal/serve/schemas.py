"""Request and response bodies; they are the OpenAPI schema at ``/openapi.json``.

Images travel as base64 strings in JSON (a ``data:image/...;base64,`` URL prefix is accepted), or as a file
part named ``image`` in ``multipart/form-data`` on the image endpoints (classify, caption, answer).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_ITEMS = 256  # texts or images in one /embed request
MAX_LABELS = 1000
MAX_K = 100
Text = Field(max_length=2000)
Base64Image = Field(description="Base64-encoded image file (PNG, JPEG, WebP ...), optionally a data: URL.")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt field is an error, not silently ignored


# -- embed ---------------------------------------------------------------------------------------------------
class EmbedRequest(_Strict):
    texts: list[str] = Field(default_factory=list, max_length=MAX_ITEMS, description="Texts to embed.")
    images: list[str] = Field(default_factory=list, max_length=MAX_ITEMS, description="Base64-encoded images.")

    @model_validator(mode="after")
    def _something(self) -> EmbedRequest:
        if not self.texts and not self.images:
            raise ValueError("give at least one of texts or images")
        return self


class EmbedResponse(BaseModel):
    dim: int
    text_embeddings: list[list[float]] = Field(description="(len(texts), dim) unit vectors.")
    image_embeddings: list[list[float]] = Field(description="(len(images), dim) unit vectors.")


# -- classify ------------------------------------------------------------------------------------------------
class ClassifyOptions(_Strict):
    labels: list[str] = Field(min_length=2, max_length=MAX_LABELS, description="Candidate class names.")
    templates: str | list[str] = Field(
        "simple", description="A template set name or a list of prompt templates with one '{}' each."
    )
    top_k: int | None = Field(None, ge=1, le=MAX_LABELS, description="Return only the k most probable labels.")


class ClassifyRequest(ClassifyOptions):
    image: str = Base64Image


class LabelScore(BaseModel):
    label: str
    score: float = Field(description="Probability under the model (the scores of all labels sum to 1).")


class ClassifyResponse(BaseModel):
    labels: list[LabelScore] = Field(description="Most probable first.")


# -- caption / answer ----------------------------------------------------------------------------------------
class CaptionOptions(_Strict):
    max_new_tokens: int = Field(30, ge=1, le=100)
    num_beams: int = Field(1, ge=1, le=8)


class CaptionRequest(CaptionOptions):
    image: str = Base64Image


class CaptionResponse(BaseModel):
    caption: str


class AnswerOptions(_Strict):
    question: str = Field(min_length=1, max_length=1000)


class AnswerRequest(AnswerOptions):
    image: str = Base64Image


class AnswerResponse(BaseModel):
    answer: str


# -- search --------------------------------------------------------------------------------------------------
class SearchRequest(_Strict):
    text: str | None = Field(None, max_length=2000, description="Text query.")
    image: str | None = Field(None, description="Base64-encoded image query.")
    k: int = Field(10, ge=1, le=MAX_K)
    kind: Literal["image", "text"] | None = Field(None, description="Only return items of this kind.")

    @model_validator(mode="after")
    def _one_query(self) -> SearchRequest:
        if (self.text is None) == (self.image is None):
            raise ValueError("give exactly one of text or image")
        return self


class SearchHit(BaseModel):
    id: int
    score: float = Field(description="Cosine similarity to the query.")
    kind: str = Field(description="'image' or 'text'.")
    path: str | None = None
    text: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    thumbnail_url: str | None = Field(None, description="Served by GET /items/{id}/image for image items.")


class SearchResponse(BaseModel):
    hits: list[SearchHit]


# -- health --------------------------------------------------------------------------------------------------
class IndexInfo(BaseModel):
    size: int
    model_identity: str | None = None


class Limits(BaseModel):
    max_upload_bytes: int
    max_pixels: int
    batch_size: int
    max_wait_ms: float


class Batching(BaseModel):
    requests: int = Field(description="Requests served by the model thread so far.")
    model_calls: int = Field(description="Batched model calls they took (fewer than requests: batching works).")
    largest_batch: int


class Runtime(BaseModel):
    precision: str = Field(description="fp32, bf16 or fp16: what the model runs in.")
    precision_reason: str
    threads: int | None = Field(description="Compute threads now (None: not managed by this server).")
    threads_reason: str | None


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    model: str
    identity: str
    capabilities: list[str]
    embed_dim: int | None
    endpoints: dict[str, bool] = Field(description="Endpoint path -> whether this server can serve it.")
    index: IndexInfo | None
    auth_required: bool
    limits: Limits
    batching: Batching
    runtime: Runtime


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorDetail
