"""What the endpoints do, apart from HTTP: every model call goes through the micro-batcher's one thread."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from polymodal.api import Model
from polymodal.api.timeline import TimedCaption
from polymodal.backends import ANSWER, CAPTION, EMBED, GENERATE, PREDICT, TaskNotSupported
from polymodal.data.errors import BadSampleError
from polymodal.fit import rows_table
from polymodal.serve.batching import MicroBatcher
from polymodal.serve.errors import ApiError
from polymodal.serve.playable import PlayableVideos
from polymodal.serve.schemas import MAX_SEGMENTS, CaptionOptions
from polymodal.serve.search import SearchIndex

# Endpoint -> what it needs: a model capability, and for search/items an index.
ENDPOINT_NEEDS: dict[str, tuple[str | None, bool]] = {
    "/embed": (EMBED, False),
    "/classify": (EMBED, False),
    "/search": (EMBED, True),
    "/items/{item_id}/image": (None, True),
    "/items/{item_id}/audio": (None, True),
    "/items/{item_id}/video": (None, True),
    "/caption": (CAPTION, False),
    "/answer": (ANSWER, False),
    "/generate": (GENERATE, False),
    "/predict": (PREDICT, False),
}


class Service:
    """The model (and index) behind the server, with batched async methods the endpoints await."""

    def __init__(self, model: Model, index: SearchIndex | None, batcher: MicroBatcher) -> None:
        self.model = model
        if hasattr(model.backend, "store"):  # a fitted predictor: uploads are not kept in the feature store
            model.backend.store = False
        self.index = index
        self.batcher = batcher
        self.playable = PlayableVideos()

    # -- what works -------------------------------------------------------------------------------------------
    def endpoints(self) -> dict[str, bool]:
        works = {
            path: (cap is None or cap in self.model.capabilities) and (not needs_index or self.index is not None)
            for path, (cap, needs_index) in ENDPOINT_NEEDS.items()
        }
        works["/classify"] &= "text" in self.model.accepts(EMBED)  # labels are embedded as texts
        return works

    def require(self, endpoint: str, task: str, modality: str | None = None) -> None:
        """A 400 naming what the model can do (with ``modality``: also that it takes that modality for the task), a
        404 when the endpoint needs an index and there is none, or a 503 when the model's queue is over its budget."""
        capability, needs_index = ENDPOINT_NEEDS[endpoint]
        if capability is not None:
            self.batcher.admit()  # 503 before any decoding when the queue is over its time budget
        if capability is not None and capability not in self.model.capabilities:
            raise ApiError(400, "not_supported", str(TaskNotSupported(self.model.backend, task)))
        if capability is not None and modality is not None and modality not in self.model.accepts(capability):
            refused = TaskNotSupported(self.model.backend, task, modality, self.model.accepts(capability))
            raise ApiError(400, "not_supported", str(refused))
        if needs_index and self.index is None:
            raise ApiError(404, "no_index", "this server has no index: start it with --index DIR")

    # -- model calls ------------------------------------------------------------------------------------------
    async def embed(self, modality: str, items: Sequence[Any]) -> np.ndarray:
        """(N, D) embeddings of texts, decoded images or checked sound and clip bytes; one batch per modality."""
        rows = await self.batcher.run(("embed", modality), items, lambda batch: list(self.model.embed(modality, batch)))
        return _stack(rows, self.model.embed_dim)

    async def classify(
        self, item: Any, modality: str, labels: list[str], templates: str | list[str], top_k: int | None
    ) -> list[tuple[str, float]]:
        # Requests with the same labels and templates share one call: the label embeddings are computed once.
        template_key = templates if isinstance(templates, str) else tuple(templates)
        key = ("classify", modality, tuple(labels), template_key, top_k)

        def run(items: list[Any]) -> list[list[tuple[str, float]]]:
            return self.model.classify(items, labels, modality=modality, templates=templates, top_k=top_k)

        (ranked,) = await self._checked(key, [item], run)
        return ranked

    async def caption(self, item: Any, max_new_tokens: int, num_beams: int) -> str:
        def run(items: list[Any]) -> list[str]:
            return self.model.caption(items, max_new_tokens=max_new_tokens, num_beams=num_beams)

        (text,) = await self._checked(("caption", max_new_tokens, num_beams), [item], run)
        return text

    async def caption_segments(self, clip: bytes, options: CaptionOptions) -> list[TimedCaption]:
        """A clip's timeline of captions (``Model.caption_segments``), one request per model call."""

        def run(clips: list[bytes]) -> list[list[TimedCaption]]:
            return [
                self.model.caption_segments(
                    one,
                    options.segment_seconds,  # type: ignore[arg-type]
                    max_new_tokens=options.max_new_tokens,
                    num_beams=options.num_beams,
                    merge=not options.every_segment,
                    max_segments=MAX_SEGMENTS,
                )
                for one in clips
            ]

        key = ("caption_segments", *options.model_dump().items())  # requests asking alike share a call
        (timeline,) = await self._checked(key, [clip], run)
        return timeline

    async def answer(self, item: Any, question: str) -> str:
        def run(pairs: list[tuple[Any, str]]) -> list[str]:
            return self.model.answer([p[0] for p in pairs], [p[1] for p in pairs])

        (text,) = await self._checked("answer", [(item, question)], run)
        return text

    async def generate(
        self, texts: list[str], n: int, steps: int, guidance: float, seed: int, sampler: str
    ) -> list[list[Image.Image]]:
        """``n`` images per text. Requests with the same options share model calls (``Model.generate`` batches
        their texts); a text's images do not depend on what else is in the call, so a request gets the same pixels
        alone or batched, up to float rounding."""

        def run(batch: list[str]) -> list[list[Image.Image]]:
            images = self.model.generate(batch, n=n, steps=steps, guidance=guidance, seed=seed, sampler=sampler)
            return [images[i * n : (i + 1) * n] for i in range(len(batch))]

        return await self._checked(("generate", n, steps, guidance, seed, sampler), texts, run)

    async def predict(self, rows: list[dict[str, Any]], root: Path) -> list[tuple[Any, Any, list[BadSampleError]]]:
        """Per row (its media files under ``root``): the prediction, the class probabilities (None for regression)
        and the cells the predictor could not read. One model call per request: each has its own ``root``."""
        problem = self.model.predict_problem
        regression = problem is not None and problem.kind == "regression"

        def run(batch: list[dict[str, Any]]) -> list[tuple[Any, Any, list[BadSampleError]]]:
            result = self.model.predict(rows_table(batch, root, source="request"))
            bad: dict[int | None, list[BadSampleError]] = {}
            for error in result.bad:
                bad.setdefault(error.row, []).append(error)
            return [
                (label, None if regression else [float(p) for p in values], bad.get(number, []))
                for label, values, number in zip(result.labels, result.values, result.row_numbers)
            ]

        return await self.batcher.run(("predict", str(root)), rows, run)

    async def _checked(self, key: Hashable, items: list[Any], run: Callable[[list[Any]], list[Any]]) -> list[Any]:
        """The batched model call; a ValueError it raises (labels, templates or generation options the model cannot
        take) is the client's 422, a BadSampleError (an upload the model cannot decode) answered like one the checks
        refused."""
        try:
            return await self.batcher.run(key, items, run)
        except BadSampleError:
            raise
        except ValueError as e:
            raise ApiError(422, "invalid_request", str(e)) from None

    async def search(self, modality: str, query: Any, k: int, kind: str | None) -> list[Any]:
        """Hits for one query (a text or a decoded media item): embedded and searched in one batched call, so a
        query queues once. Index calls run on the model thread: the index (FAISS + SQLite) only sees one thread."""
        assert self.index is not None
        index = self.index

        def run(queries: list[Any]) -> Sequence[Any]:
            vectors = _stack(list(self.model.embed(modality, queries)), self.model.embed_dim)
            return index.search_vectors(vectors, k=k, kind=kind)

        (hits,) = await self.batcher.run(("search", modality, k, kind), [query], run)
        return hits

    async def media_path(self, item_id: int, modality: str) -> Path | None:
        assert self.index is not None
        index = self.index
        (path,) = await self.batcher.run(
            ("media_path", modality), [item_id], lambda ids: [index.media_path(i, modality) for i in ids], admit=False
        )
        return path

    async def index_size(self) -> int:
        assert self.index is not None
        index = self.index
        (size,) = await self.batcher.run("index_size", [None], lambda nones: [len(index)] * len(nones), admit=False)
        return size


def _stack(rows: list[np.ndarray], dim: int | None) -> np.ndarray:
    return np.stack(rows) if rows else np.zeros((0, dim or 0), dtype=np.float32)  # (N, D)
