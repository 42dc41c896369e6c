"""A brute-force in-memory index implementing ``polymodal.serve.SearchIndex``, and a model-call spy."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from polymodal.api import Model


@dataclass
class FakeHit:
    id: int
    score: float
    kind: str
    path: str | None
    text: str | None
    metadata: dict[str, Any] = field(default_factory=dict)


class FakeIndex:
    """Images and texts with their vectors; exact search with numpy (the obvious reference)."""

    def __init__(self, vectors: np.ndarray, items: list[FakeHit], model_identity: str | None) -> None:
        self.vectors = vectors  # (N, D)
        self.items = items
        self.model_identity = model_identity
        self.search_tuning = None  # exact search: nothing to tune

    @classmethod
    def build(cls, model: Model, images: Sequence[Path], texts: Sequence[str] = ()) -> FakeIndex:
        vectors = (
            np.concatenate([model.embed_image(list(images)), model.embed_text(list(texts))])
            if texts
            else model.embed_image(list(images))
        )
        items = [FakeHit(i, 0.0, "image", str(p), None, {"file": p.name}) for i, p in enumerate(images)]
        items += [FakeHit(len(images) + i, 0.0, "text", None, t) for i, t in enumerate(texts)]
        return cls(vectors, items, model.identity)

    def __len__(self) -> int:
        return len(self.items)

    def search_vectors(self, vectors: np.ndarray, *, k: int, kind: str | None = None) -> list[list[FakeHit]]:
        out = []
        for scores in vectors @ self.vectors.T:  # (Q, N)
            order = [i for i in np.argsort(-scores, kind="stable") if kind is None or self.items[i].kind == kind]
            out.append([FakeHit(**{**self.items[i].__dict__, "score": float(scores[i])}) for i in order[:k]])
        return out

    def media_path(self, item_id: int, modality: str) -> Path | None:
        if 0 <= item_id < len(self.items) and self.items[item_id].path is not None and modality == "image":
            return Path(self.items[item_id].path)
        return None
