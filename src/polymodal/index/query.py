"""Search an index with texts, images, sounds or clips, embedding the queries with the index's own model."""

from __future__ import annotations

import os
from collections.abc import Sequence

from polymodal.api import ImageInput, MediaInput, Model, load
from polymodal.api.video import VideoInput
from polymodal.index.store import Hit
from polymodal.index.vector_index import VectorIndex, check_model_files


def open_for_search(
    path: str | os.PathLike, model: str | os.PathLike | Model | None = None
) -> tuple[VectorIndex, Model]:
    """The index at ``path`` and the model to embed queries with: the one recorded in the index, or ``model``
    (which must be the same model, by identity: another model's vectors live in another space)."""
    index = VectorIndex.open(path)
    try:
        if model is not None and not isinstance(model, Model):
            check_model_files(index.meta, model, path)
        loaded = model if isinstance(model, Model) else load(model if model is not None else index.meta.model)
        index.check_model(loaded.identity, loaded.name)
    except BaseException:
        index.close()
        raise
    return index, loaded


def search(
    index: VectorIndex, model: Model, modality: str, queries: object, k: int = 10, *, kind: str | None = None
) -> list[list[Hit]]:
    """Hits per query of ``modality`` (texts, images, sounds or clips: whatever ``model.embed`` takes), best first;
    ``kind`` keeps only items of that kind (``search(idx, m, "audio", clip, kind="text")``: sound -> text)."""
    return index.search(model.embed(modality, queries), k, kind=kind)


def search_text(
    index: VectorIndex, model: Model, texts: str | Sequence[str], k: int = 10, *, kind: str | None = None
) -> list[list[Hit]]:
    """Hits per query text (text -> image or sound search, or text -> text when the index holds texts)."""
    return search(index, model, "text", texts, k, kind=kind)


def search_image(
    index: VectorIndex, model: Model, images: ImageInput | Sequence[ImageInput], k: int = 10, *, kind: str | None = None
) -> list[list[Hit]]:
    """Hits per query image (image -> image, or image -> text with ``kind="text"``)."""
    return search(index, model, "image", images, k, kind=kind)


def search_audio(
    index: VectorIndex, model: Model, clips: MediaInput | Sequence[MediaInput], k: int = 10, *, kind: str | None = None
) -> list[list[Hit]]:
    """Hits per query sound (a path or encoded bytes): sound -> sound, text or image in the same space."""
    return search(index, model, "audio", clips, k, kind=kind)


def search_video(
    index: VectorIndex, model: Model, clips: VideoInput | Sequence[VideoInput], k: int = 10, *, kind: str | None = None
) -> list[list[Hit]]:
    """Hits per query clip (a path, encoded bytes or a decoded Clip): clip -> clip or segment, text or image."""
    return search(index, model, "video", clips, k, kind=kind)
