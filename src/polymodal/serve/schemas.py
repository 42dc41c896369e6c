"""Request and response bodies; they are the OpenAPI schema at ``/openapi.json``.

Images, sounds and clips travel as base64 strings in JSON (a ``data:...;base64,`` URL prefix is accepted), or as
file parts in ``multipart/form-data`` (``image``, ``audio`` or ``video`` on classify, ``image`` or ``video`` on
caption, ``image`` on answer, ``images``, ``audio`` and ``videos`` on embed). Generated images come back as base64
PNG strings (/generate). /predict takes table rows as JSON, its media columns' files as base64 strings.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from polymodal.api.model import MAX_GUIDANCE, MAX_IMAGES_PER_TEXT, MAX_SEED, MAX_STEPS
from polymodal.fit.columns import COLUMN_KINDS, PROBLEMS
from polymodal.modules.generators.unet import SAMPLERS

MAX_ITEMS = 256  # texts, images or sounds in one /embed request
MAX_LABELS = 1000
MAX_K = 100
MAX_ROWS = 256  # table rows in one /predict request
MAX_GENERATE_TEXTS = 64  # prompts in one /generate request (the server's max_generate_images bounds texts x n too)
Text = Field(max_length=2000)
IMAGE_DOC = "Base64-encoded image file (PNG, JPEG, WebP ...), optionally a data: URL."
Base64Image = Field(description=IMAGE_DOC)
AUDIO_DOC = "Base64-encoded sound file (WAV, FLAC, OGG, MP3), optionally a data: URL."
VIDEO_DOC = "Base64-encoded video file (MP4, WebM, MKV, AVI, MOV), optionally a data: URL."
QUERY_MEDIA = ("image", "audio", "video")  # what a classify or search request may send as its one media item
SOURCE_MEDIA = ("image", "audio", "video")  # what /caption and /answer take: what the model describes or asks about
ItemKind = Literal["image", "text", "audio", "video"]


def _given(body: BaseModel, fields: tuple[str, ...]) -> list[str]:
    return [f for f in fields if getattr(body, f) is not None]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt field is an error, not silently ignored


# -- embed ---------------------------------------------------------------------------------------------------
class EmbedRequest(_Strict):
    texts: list[str] = Field(default_factory=list, max_length=MAX_ITEMS, description="Texts to embed.")
    images: list[str] = Field(default_factory=list, max_length=MAX_ITEMS, description="Base64-encoded images.")
    audio: list[str] = Field(default_factory=list, max_length=MAX_ITEMS, description="Base64-encoded sound files.")
    videos: list[str] = Field(default_factory=list, max_length=MAX_ITEMS, description="Base64-encoded video files.")

    @model_validator(mode="after")
    def _something(self) -> EmbedRequest:
        if not self.texts and not self.images and not self.audio and not self.videos:
            raise ValueError("give at least one of texts, images, audio or videos")
        return self


class EmbedResponse(BaseModel):
    dim: int
    text_embeddings: list[list[float]] = Field(description="(len(texts), dim) unit vectors.")
    image_embeddings: list[list[float]] = Field(description="(len(images), dim) unit vectors.")
    audio_embeddings: list[list[float]] = Field(default_factory=list, description="(len(audio), dim) unit vectors.")
    video_embeddings: list[list[float]] = Field(default_factory=list, description="(len(videos), dim) unit vectors.")


# -- classify ------------------------------------------------------------------------------------------------
class ClassifyOptions(_Strict):
    labels: list[str] = Field(min_length=2, max_length=MAX_LABELS, description="Candidate class names.")
    templates: str | list[str] = Field(
        "simple", description="A template set name or a list of prompt templates with one '{}' each."
    )
    top_k: int | None = Field(None, ge=1, le=MAX_LABELS, description="Return only the k most probable labels.")


class ClassifyRequest(ClassifyOptions):
    image: str | None = Field(None, description=IMAGE_DOC)
    audio: str | None = Field(None, description=AUDIO_DOC)
    video: str | None = Field(None, description=VIDEO_DOC)

    @model_validator(mode="after")
    def _one_item(self) -> ClassifyRequest:
        if len(_given(self, QUERY_MEDIA)) != 1:
            raise ValueError("give exactly one of image, audio or video")
        return self


class LabelScore(BaseModel):
    label: str
    score: float = Field(description="Probability under the model (the scores of all labels sum to 1).")


class ClassifyResponse(BaseModel):
    labels: list[LabelScore] = Field(description="Most probable first.")


# -- caption / answer ----------------------------------------------------------------------------------------
MAX_SEGMENTS = 1000  # captions one request may ask for: a 10-minute clip in 0.6-second segments


class CaptionOptions(_Strict):
    max_new_tokens: int = Field(30, ge=1, le=100)
    num_beams: int = Field(1, ge=1, le=8)
    segment_seconds: float | None = Field(
        None,
        gt=0,
        description="Describe a clip this many seconds at a time: `segments` holds each span's caption with its "
        f"times, consecutive equal captions merged (at most {MAX_SEGMENTS} segments; an image captioner reads each "
        "segment's middle frame).",
    )
    every_segment: bool = Field(False, description="With segment_seconds: every segment, equal captions not merged.")

    @model_validator(mode="after")
    def _segments_asked(self) -> CaptionOptions:
        if self.every_segment and self.segment_seconds is None:
            raise ValueError("every_segment needs segment_seconds")
        if self.segment_seconds is not None and not math.isfinite(self.segment_seconds):
            raise ValueError("segment_seconds must be a finite number")
        return self


class _SourceItem(BaseModel):
    """The one image, sound or clip /caption and /answer read: of the modality the model describes or asks about."""

    image: str | None = Field(None, description=IMAGE_DOC)
    audio: str | None = Field(None, description=AUDIO_DOC + " For a captioner or question answerer of sounds.")
    video: str | None = Field(None, description=VIDEO_DOC + " For a captioner or question answerer of clips.")

    @model_validator(mode="after")
    def _one_item(self) -> _SourceItem:
        if len(_given(self, SOURCE_MEDIA)) != 1:
            raise ValueError("give exactly one of image, audio or video")
        return self


class CaptionRequest(CaptionOptions, _SourceItem):
    pass


class TimedCaptionOut(BaseModel):
    start: float = Field(description="Seconds from the clip's start.")
    end: float
    caption: str


class CaptionResponse(BaseModel):
    caption: str = Field(
        description="The caption; with segment_seconds, the segments' captions in order, joined by '; '."
    )
    segments: list[TimedCaptionOut] | None = Field(None, description="With segment_seconds: the timeline.")


class AnswerOptions(_Strict):
    question: str = Field(min_length=1, max_length=1000)


class AnswerRequest(AnswerOptions, _SourceItem):
    pass


class AnswerResponse(BaseModel):
    answer: str


# -- generate ------------------------------------------------------------------------------------------------
Prompt = Annotated[str, Field(min_length=1, max_length=2000)]


class GenerateRequest(_Strict):
    text: str | None = Field(None, min_length=1, max_length=2000, description="One prompt.")
    texts: list[Prompt] | None = Field(
        None, min_length=1, max_length=MAX_GENERATE_TEXTS, description="Several prompts (instead of text)."
    )
    n: int = Field(1, ge=1, le=MAX_IMAGES_PER_TEXT, description="Images per prompt.")
    steps: int = Field(25, ge=1, le=MAX_STEPS, description="Sampling steps of a diffusion model (a GAN ignores them).")
    guidance: float = Field(3.0, ge=0, le=MAX_GUIDANCE, description="Classifier-free guidance scale; 1 turns it off.")
    seed: int = Field(0, ge=0, le=MAX_SEED, description="The same request and seed give the same images.")
    sampler: Literal[SAMPLERS] = Field("ddim", description="A diffusion model's sampler.")  # type: ignore[valid-type]

    @model_validator(mode="after")
    def _one_of(self) -> GenerateRequest:
        if len(_given(self, ("text", "texts"))) != 1:
            raise ValueError("give exactly one of text or texts")
        return self

    @property
    def prompts(self) -> list[str]:
        return [self.text] if self.text is not None else list(self.texts or [])


class GeneratedImage(BaseModel):
    text_index: int = Field(description="Which prompt (0 for a request with text).")
    image_index: int = Field(description="Which of its n images.")
    text: str
    image: str = Field(description="Base64-encoded PNG file.")


class GenerateResponse(BaseModel):
    images: list[GeneratedImage] = Field(description="n per prompt, prompt by prompt.")


# -- search --------------------------------------------------------------------------------------------------
class SearchOptions(_Strict):
    k: int = Field(10, ge=1, le=MAX_K)
    kind: ItemKind | None = Field(None, description="Only return items of this kind.")


class SearchRequest(SearchOptions):
    text: str | None = Field(None, max_length=2000, description="Text query.")
    image: str | None = Field(None, description="Base64-encoded image query.")
    audio: str | None = Field(None, description="Base64-encoded sound query (WAV, FLAC, OGG, MP3).")
    video: str | None = Field(None, description="Base64-encoded video query (MP4, WebM, MKV, AVI, MOV).")

    @model_validator(mode="after")
    def _one_query(self) -> SearchRequest:
        if len(_given(self, ("text", *QUERY_MEDIA))) != 1:
            raise ValueError("give exactly one of text, image, audio or video")
        return self


class SearchHit(BaseModel):
    id: int
    score: float = Field(description="Cosine similarity to the query.")
    kind: str = Field(description="The item's modality: 'image', 'audio', 'video' or 'text'.")
    path: str | None = None
    text: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    thumbnail_url: str | None = Field(
        None, description="Served by GET /items/{id}/image for images (and texts that describe one)."
    )
    audio_url: str | None = Field(
        None, description="Served by GET /items/{id}/audio for sounds (and texts that describe one)."
    )
    video_url: str | None = Field(
        None,
        description="Served by GET /items/{id}/video for clips (and texts that describe one); Range requests work.",
    )
    start: float | None = Field(None, description="A video segment's start, in seconds from the clip's start.")
    end: float | None = Field(None, description="A video segment's end, in seconds.")


class SearchResponse(BaseModel):
    hits: list[SearchHit]


# -- predict (a fitted table predictor) ----------------------------------------------------------------------
Cell = str | int | float | bool | None
ProblemKind = Literal[PROBLEMS]  # type: ignore[valid-type]
ColumnKind = Literal[COLUMN_KINDS]  # type: ignore[valid-type]


class PredictRequest(_Strict):
    rows: list[dict[str, Cell]] = Field(
        min_length=1,
        max_length=MAX_ROWS,
        description="Table rows: column -> value. Text, categorical and numeric columns take their value; image, "
        "audio and video columns a base64-encoded file (optionally a data: URL). A missing column is a missing "
        "value; the label column and ignored columns may be sent and are not read.",
    )
    bad_cells: Literal["refuse", "as_missing"] = Field(
        "refuse",
        description="A cell that cannot be read (a file that does not decode, a number that is not one): 'refuse' "
        "answers 422 naming it; 'as_missing' predicts its row without it and names it in the row's 'unread'.",
    )


class PredictedRow(BaseModel):
    row: int = Field(description="The row's index in the request.")
    prediction: str | float | list[str] = Field(
        description="The most probable class (binary, multiclass), the classes over 0.5 (multilabel) or the value "
        "(regression)."
    )
    probabilities: dict[str, float] | None = Field(
        None, description="Class -> probability (classification; independent per class for multilabel)."
    )
    unread: list[str] = Field(
        default_factory=list,
        description="With bad_cells 'as_missing': the row's cells that could not be read, each with why "
        "('rows[1].photo: ...'); the prediction is made without them.",
    )


class PredictResponse(BaseModel):
    problem: ProblemKind
    label: str = Field(description="The column the predictor predicts.")
    predictions: list[PredictedRow] = Field(description="One per request row, in order.")


class PredictorColumn(BaseModel):
    name: str
    kind: ColumnKind


class PredictorInfo(BaseModel):
    problem: ProblemKind
    label: str
    classes: list[str] = Field(description="The classes it predicts (empty for regression).")
    columns: list[PredictorColumn] = Field(description="The columns a row may hold; 'ignore' ones are not read.")


# -- health --------------------------------------------------------------------------------------------------
class IndexInfo(BaseModel):
    size: int
    model_identity: str | None = None
    search_tuning: str | None = Field(
        None, description="What the index's build measured and chose (recall@10, latency); None if not tuned."
    )


class Limits(BaseModel):
    max_upload_bytes: int
    max_pixels: int
    max_audio_seconds: float
    max_video_seconds: float
    batch_size: int
    max_wait_ms: float
    max_queue_ms: float | None = Field(description="Admission budget: longer waits are answered 503 (None: off).")
    max_generate_images: int = Field(description="Most images (texts x n) one /generate request may ask for.")
    max_generate_steps: int = Field(description="Most sampling steps one /generate request may ask for.")


class Batching(BaseModel):
    requests: int = Field(description="Requests served by the model thread so far.")
    model_calls: int = Field(description="Batched model calls they took (fewer than requests: batching works).")
    largest_batch: int
    rejected: int = Field(description="Requests answered 503 because the queue was over its time budget.")
    chunk_sizes: dict[str, int] = Field(
        default_factory=dict,
        description="Per media modality, the items per model call measured fastest on this machine so far.",
    )


class TowerRuntimeInfo(BaseModel):
    runtime: Literal["onnx", "torch"] = Field(description="onnxruntime (the export) or PyTorch (the model).")
    reason: str
    variant: str | None = Field(None, description="The export's variant onnxruntime runs (fp32, int8, ...).")
    torch_items_per_second: float | None = None
    onnx_items_per_second: float | None = None
    cosine_min: float | None = Field(
        None, description="onnxruntime against PyTorch fp32 on the timed sample, worst row."
    )
    torch_cosine_min: float | None = Field(
        None, description="PyTorch in the model's precision against PyTorch fp32 on that sample, worst row."
    )


class Runtime(BaseModel):
    precision: str = Field(description="fp32, bf16 or fp16: what the model runs in.")
    precision_reason: str
    threads: int | None = Field(description="Compute threads now (None: not managed by this server).")
    threads_reason: str | None
    towers: dict[str, TowerRuntimeInfo] = Field(
        default_factory=dict,
        description="Per embedding tower shared with the export given to --export: where it runs and why.",
    )
    tower_precisions: dict[str, str] = Field(
        default_factory=dict,
        description="Embedding towers that run in another precision than the model (fp32 where the model's "
        "auto-chosen bf16 strays from fp32 on that tower), with the reason.",
    )


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    model: str
    identity: str
    capabilities: list[str]
    media: dict[str, list[str]] = Field(description="Capability -> the modalities the model has towers for.")
    video_embedding: str | None = Field(
        None,
        description="How /embed, /classify and /search take clips: the video tower, the image tower per frame, "
        "or None (not at all).",
    )
    embed_dim: int | None
    endpoints: dict[str, bool] = Field(description="Endpoint path -> whether this server can serve it.")
    predictor: PredictorInfo | None = Field(None, description="The table predictor served (/predict), if it is one.")
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
