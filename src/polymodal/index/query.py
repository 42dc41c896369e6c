"""Search an index with text or images, embedding the queries with the index's own model."""

from __future__ import annotations

import os
from collections.abc import Sequence

from polymodal.api import ImageInput, Model, load
from polymodal.index.store import Hit
from polymodal.index.vector_index import VectorIndex


def open_for_search(
    path: str | os.PathLike, model: str | os.PathLike | Model | None = None
) -> tuple[VectorIndex, Model]:
    """The index at ``path`` and the model to embed queries with: the one recorded in the index, or ``model``
    (which must be the same model, by identity: another model's vectors live in another space)."""
    index = VectorIndex.open(path)
    try:
        loaded = model if isinstance(model, Model) else load(model if model is not None else index.meta.model)
        index.check_model(loaded.identity, loaded.name)
    except BaseException:
        index.close()
        raise
    return index, loaded


def search_text(
    index: VectorIndex, model: Model, texts: str | Sequence[str], k: int = 10, *, kind: str | None = None
) -> list[list[Hit]]:
    """Hits per query text (text -> image search, or text -> text when the index holds texts)."""
    return index.search(model.embed_text(texts), k, kind=kind)


def search_image(
    index: VectorIndex, model: Model, images: ImageInput | Sequence[ImageInput], k: int = 10, *, kind: str | None = None
) -> list[list[Hit]]:
    """Hits per query image (image -> image, or image -> text with ``kind="text"``)."""
    return index.search(model.embed_image(images), k, kind=kind)
