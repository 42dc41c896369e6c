"""What an export starts from: an embedding model over any of image, text, audio and video, with what its towers'
inputs need (tokenizer, image preprocessing, audio features, video processing), loaded from a polymodal model
directory or a Hugging Face CLIP checkpoint."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from polymodal.data.audio import AudioFeatures
from polymodal.data.text import TextTokenizer
from polymodal.data.transforms import ImagePreprocess
from polymodal.models import EmbeddingModel

if TYPE_CHECKING:
    from polymodal.data.processors import VideoProcessor

EXPORTABLE = ("audio", "image", "text", "video")


class ExportError(ValueError):
    """The model cannot be exported as asked; the message says why."""


class NotExportable(ExportError):
    """The model cannot be exported as it is built (its kind, or a tower the exporter cannot trace), whatever the
    machine or the moment: ``export="auto"`` remembers it rather than trying at each load."""


_stand_in_lock = threading.Lock()
_stand_in_users = 0  # how many without_notes have the root logger's stand-in handler in place


@contextlib.contextmanager
def without_notes(logger: str, *starts: str, below: int = logging.NOTSET) -> Iterator[None]:
    """Drops the records of ``logger`` (``""``: the root logger) below level ``below`` or whose message starts with
    one of ``starts`` while inside: notes of the exporter and the quantisers that do not apply to an export (it has
    no torchvision ops, and is quantised as it is) or narrate each node. Where the root logger has no handler it
    gets Python's last-resort one meanwhile, so a library's bare ``logging.warning`` or ``logging.basicConfig``
    prints as before without setting up logging for the whole process."""
    target = logging.getLogger(logger or None)

    def keep(record: logging.LogRecord) -> bool:
        return record.levelno >= below and not str(record.msg).startswith(starts)

    global _stand_in_users
    root = logging.getLogger()
    target.addFilter(keep)
    with _stand_in_lock:  # exports in two threads: the stand-in stays until the last of them leaves
        joins = _stand_in_users > 0 or not root.handlers
        if joins:
            if _stand_in_users == 0:
                root.addHandler(logging.lastResort)
            _stand_in_users += 1
    try:
        yield
    finally:
        target.removeFilter(keep)
        with _stand_in_lock:
            if joins:
                _stand_in_users -= 1
                if _stand_in_users == 0:
                    root.removeHandler(logging.lastResort)


@dataclass
class ExportSource:
    """A tower's inputs are known for each modality the model has: ``preprocess`` for image, ``tokenizer`` (None:
    ids only) and ``max_length`` for text, ``audio`` for audio, ``video`` (the inference processor) for video."""

    model: EmbeddingModel
    tokenizer: TextTokenizer | None
    preprocess: ImagePreprocess | None
    max_length: int | None  # longest token sequence the text tower accepts
    kind: str  # "polymodal" or "hf-clip"
    path: Path
    audio: AudioFeatures | None = None
    video: VideoProcessor | None = None

    @property
    def modalities(self) -> list[str]:
        return sorted(self.model.modalities)


DualEncoderSource = ExportSource  # the image-text case's former name


def load_export_source(path: str | os.PathLike[str]) -> ExportSource:
    """A polymodal embedding-model directory (or run directory) over any of audio, image and text, or a Hugging Face
    CLIPModel directory or Hub id (resolved to a local snapshot; a clear error when offline and not cached)."""
    from polymodal.interop import detect_hf_kind, load_clip, resolve_model_dir

    if str(path) == "polymodal-base":  # a name, not a directory or a Hub id: the Hub's advice would not apply
        raise NotExportable(
            "polymodal-base (the offline zero-shot model: EfficientNet-Lite0 labels read through MiniLM) cannot be "
            "exported yet; export an embedding model's directory or a Hugging Face CLIP"
        )
    path = resolve_model_dir(path)  # a directory as is; raises HFLoadError for anything else
    kind = detect_hf_kind(path)  # raises, listing what is supported, for other HF architectures
    if kind == "clip":
        clip = load_clip(path)
        return ExportSource(clip.model, clip.tokenizer, clip.preprocess, clip.max_length, "hf-clip", path)
    if kind is not None:
        raise NotExportable(f"{path}: a Hugging Face {kind} checkpoint; ONNX export supports dual encoders (CLIP) only")

    from polymodal.data.processors import AudioProcessor, ImageProcessor, VideoProcessor
    from polymodal.models import SavedModel, find_model_dir

    try:
        saved = SavedModel.load(find_model_dir(path))
    except FileNotFoundError as e:
        raise ExportError(str(e)) from None
    model = saved.model
    modalities = sorted(model.modalities)
    if not isinstance(model, EmbeddingModel) or not set(modalities) <= set(EXPORTABLE):
        raise NotExportable(
            f"{saved.path}: a {model.config.kind} model over {modalities}; ONNX export supports embedding models "
            f"over any of {', '.join(EXPORTABLE)}"
        )
    processors = {m: saved.processors.get(m) for m in modalities}
    missing = [m for m, p in processors.items() if p is None]
    if missing:
        raise ExportError(f"{saved.path}: no saved processor for {missing}; the export needs each tower's inputs")
    image, audio, video = processors.get("image"), processors.get("audio"), processors.get("video")
    return ExportSource(
        model,
        saved.tokenizer,
        image.preprocess if isinstance(image, ImageProcessor) else None,
        saved.text.max_length if "text" in modalities else None,
        "polymodal",
        saved.path,
        audio.features if isinstance(audio, AudioProcessor) else None,
        video.for_inference() if isinstance(video, VideoProcessor) else None,
    )


load_dual_encoder = load_export_source  # the image-text case's former name
