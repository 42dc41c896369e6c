"""What the server needs from a vector index (``polymodal.index`` provides it; tests may use a fake)."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class SearchIndex(Protocol):
    """Search by query vectors; look an item's media file up by its id (the only files the server serves)."""

    model_identity: str | None  # the identity of the model whose vectors the index holds
    search_tuning: str | None  # what the last tuning (build, tune or add) measured and chose, in one line

    def __len__(self) -> int: ...

    def search_vectors(self, vectors: np.ndarray, *, k: int, kind: str | None = None) -> Sequence[Sequence[Any]]:
        """(Q, D) unit vectors -> per query, hits with id, score, kind, path, text, metadata; best first."""
        ...

    def media_path(self, item_id: int, modality: str) -> Path | None:
        """The file of ``modality`` (image, audio, video) registered for ``item_id``: the item's own, or the one a text
        item describes; None if there is no such item or its file is of another modality."""
        ...


class IndexDirectory:
    """A :class:`polymodal.index.VectorIndex` directory as a :class:`SearchIndex`.

    The index's SQLite connection may only be used by the thread that opened it, while the server uses the index
    from its model thread; so the directory is checked when this object is made (in the caller's thread, for a
    clear error at start-up) and then opened once per thread that uses it.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        try:
            from polymodal.index import VectorIndex
            from polymodal.index.tuning import summary as tuning_summary
        except ImportError:  # pragma: no cover - only without the extra
            raise ImportError("serving an index needs faiss: pip install 'polymodal[serve]'") from None
        self._open = VectorIndex.open
        self.path = Path(path)
        with VectorIndex.open(self.path) as probe:
            self.meta = probe.meta
        self.model_identity: str | None = self.meta.identity
        self.search_tuning: str | None = None if self.meta.tuning is None else tuning_summary(self.meta.tuning)
        self._local = threading.local()

    def _index(self) -> Any:
        index = getattr(self._local, "index", None)
        if index is None:
            index = self._local.index = self._open(self.path)
        return index

    def __len__(self) -> int:
        return len(self._index())

    def search_vectors(self, vectors: np.ndarray, *, k: int, kind: str | None = None) -> Sequence[Sequence[Any]]:
        return self._index().search(vectors, k, kind=kind)

    def media_path(self, item_id: int, modality: str) -> Path | None:
        from polymodal.index.sources import media_file

        # Item ids are 64-bit in FAISS and SQLite; a larger number cannot be an item (and would overflow SQLite).
        if not 0 <= item_id < 2**63:
            return None
        item = self._index().items([item_id]).get(item_id)
        if item is None or media_file(item.kind, item.path) != modality:
            return None
        return Path(item.path)  # type: ignore[arg-type]
