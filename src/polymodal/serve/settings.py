"""Server settings: one small, validated object that ``create_app`` and ``polymodal serve`` share."""

from __future__ import annotations

from dataclasses import dataclass, field

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class ServeSettings:
    """How the server behaves; the defaults are the safe ones (no key only makes sense on loopback).

    ``max_upload_bytes`` bounds every request body (checked while it streams in, so a missing or lying
    Content-Length does not help); ``max_pixels`` bounds decoded images (checked from the header, before the
    pixels are decoded, so a small decompression bomb is refused cheaply); ``max_audio_seconds`` bounds uploaded
    sounds the same way (a few kB of FLAC silence can say it lasts an hour), and ``max_video_seconds`` clips.
    ``max_generate_images`` (texts x n) and ``max_generate_steps`` bound one /generate request, so that a single
    request cannot hold the model for minutes. ``max_queue_ms`` bounds waiting: when the work queued ahead of a
    request would hold it up longer, it is answered 503 with ``Retry-After`` instead of waiting seconds.
    ``body_timeout_seconds``: a request body from which nothing arrives for that long is answered 408.
    """

    api_key: str | None = None
    max_upload_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 40_000_000  # e.g. 8000 x 5000; far above any photo the model resizes to 224 px anyway
    max_audio_seconds: float = 60.0  # models crop clips to a few seconds; longer uploads only cost decoding
    max_video_seconds: float = 600.0  # a clip is embedded from 8 frames: a longer one only costs seeking
    batch_size: int = 32  # most items one model call takes from the queue
    max_wait_ms: float = 5.0  # how long the first request waits for company before its batch runs
    max_queue_ms: float | None = 1000.0  # admission budget: a request the queue would hold longer gets 503 at once
    max_generate_images: int = 16
    max_generate_steps: int = 200
    cors_origins: tuple[str, ...] = field(default_factory=tuple)  # empty: no CORS headers at all
    body_timeout_seconds: float = 30.0  # a stalled upload is not held longer than this between two reads

    def __post_init__(self) -> None:
        for name in ("max_upload_bytes", "max_pixels", "batch_size", "max_generate_images", "max_generate_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_audio_seconds", "max_video_seconds", "body_timeout_seconds"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.max_queue_ms is not None and not self.max_queue_ms > 0:
            raise ValueError(f"max_queue_ms must be > 0 (or None: no admission control), got {self.max_queue_ms}")
        if self.max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {self.max_wait_ms}")
        if self.api_key is not None and not self.api_key.strip():
            raise ValueError("api_key must not be empty (leave it unset to disable authentication)")
