"""What the endpoints do, apart from HTTP: every model call goes through the micro-batcher's one thread."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from polymodal.api import Model
from polymodal.backends import ANSWER, CAPTION, EMBED, TaskNotSupported
from polymodal.serve.batching import MicroBatcher
from polymodal.serve.errors import ApiError
from polymodal.serve.search import SearchIndex

# Endpoint -> what it needs: a model capability, and for search/items an index.
ENDPOINT_NEEDS: dict[str, tuple[str | None, bool]] = {
    "/embed": (EMBED, False),
    "/classify": (EMBED, False),
    "/search": (EMBED, True),
    "/items/{item_id}/image": (None, True),
    "/caption": (CAPTION, False),
    "/answer": (ANSWER, False),
}


class Service:
    """The model (and index) behind the server, with batched async methods the endpoints await."""

    def __init__(self, model: Model, index: SearchIndex | None, batcher: MicroBatcher) -> None:
        self.model = model
        self.index = index
        self.batcher = batcher

    # -- what works -------------------------------------------------------------------------------------------
    def endpoints(self) -> dict[str, bool]:
        return {
            path: (cap is None or cap in self.model.capabilities) and (not needs_index or self.index is not None)
            for path, (cap, needs_index) in ENDPOINT_NEEDS.items()
        }

    def require(self, endpoint: str, task: str) -> None:
        """A 400 naming what the model can do, or a 404 when the endpoint needs an index and there is none."""
        capability, needs_index = ENDPOINT_NEEDS[endpoint]
        if capability is not None and capability not in self.model.capabilities:
            raise ApiError(400, "not_supported", str(TaskNotSupported(self.model.backend, task)))
        if needs_index and self.index is None:
            raise ApiError(404, "no_index", "this server has no index: start it with --index DIR")

    # -- model calls ------------------------------------------------------------------------------------------
    async def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        rows = await self.batcher.run("embed_text", texts, lambda batch: list(self.model.embed_text(batch)))
        return _stack(rows, self.model.embed_dim)

    async def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        rows = await self.batcher.run("embed_image", images, lambda batch: list(self.model.embed_image(batch)))
        return _stack(rows, self.model.embed_dim)

    async def classify(
        self, image: Image.Image, labels: list[str], templates: str | list[str], top_k: int | None
    ) -> list[tuple[str, float]]:
        # Requests with the same labels and templates share one call: the label embeddings are computed once.
        key = ("classify", tuple(labels), templates if isinstance(templates, str) else tuple(templates), top_k)

        def run(images: list[Image.Image]) -> list[list[tuple[str, float]]]:
            return self.model.classify(images, labels, templates=templates, top_k=top_k)

        try:
            (ranked,) = await self.batcher.run(key, [image], run)
        except ValueError as e:  # Model.classify's checks of labels and templates: the client's to fix
            raise ApiError(422, "invalid_request", str(e)) from None
        return ranked

    async def caption(self, image: Image.Image, max_new_tokens: int, num_beams: int) -> str:
        def run(images: list[Image.Image]) -> list[str]:
            return self.model.caption(images, max_new_tokens=max_new_tokens, num_beams=num_beams)

        try:
            (text,) = await self.batcher.run(("caption", max_new_tokens, num_beams), [image], run)
        except ValueError as e:  # generation options this model cannot take (e.g. longer than its max_length)
            raise ApiError(422, "invalid_request", str(e)) from None
        return text

    async def answer(self, image: Image.Image, question: str) -> str:
        def run(pairs: list[tuple[Image.Image, str]]) -> list[str]:
            return self.model.answer([p[0] for p in pairs], [p[1] for p in pairs])

        (text,) = await self.batcher.run("answer", [(image, question)], run)
        return text

    async def search(self, vector: np.ndarray, k: int, kind: str | None) -> list[Any]:
        """Hits for one (D,) query vector.

        Index calls run on the model thread too: the index (FAISS + SQLite) is then only ever used from one thread.
        """
        assert self.index is not None
        index = self.index
        (hits,) = await self.batcher.run(
            ("search", k, kind), [vector], lambda vectors: index.search_vectors(np.stack(vectors), k=k, kind=kind)
        )
        return hits

    async def image_path(self, item_id: int) -> Path | None:
        assert self.index is not None
        index = self.index
        (path,) = await self.batcher.run("image_path", [item_id], lambda ids: [index.image_path(i) for i in ids])
        return path

    async def index_size(self) -> int:
        assert self.index is not None
        index = self.index
        (size,) = await self.batcher.run("index_size", [None], lambda nones: [len(index)] * len(nones))
        return size


def _stack(rows: list[np.ndarray], dim: int | None) -> np.ndarray:
    return np.stack(rows) if rows else np.zeros((0, dim or 0), dtype=np.float32)  # (N, D)
