"""A persistent store of feature vectors keyed by what was featurized, so a second ``fit`` or a ``predict`` on the
same files and texts skips the pretrained towers.

One SQLite file (``$POLYMODAL_CACHE_DIR/features.sqlite``, default ``~/.cache/polymodal``): a row per (featurizer,
SHA-256 of the input's bytes) holding float32 bytes. SQLite makes every write atomic and lets several processes
share the file; a vector of the wrong size (another version's featurizer) is ignored and recomputed.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from polymodal.fsutil import default_cache_dir

STORE_FILE = "features.sqlite"


def digest_bytes(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def digest_file(path: str | os.PathLike[str]) -> bytes:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.digest()


class FeatureStore:
    """``get(featurizer, keys, dim)`` -> stored rows; ``put(featurizer, keys, vectors)``."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=60)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS features "
            "(featurizer TEXT, key BLOB, vector BLOB, PRIMARY KEY (featurizer, key))"
        )
        self._db.commit()

    @classmethod
    def default(cls) -> FeatureStore:
        return cls(default_cache_dir() / STORE_FILE)

    def get(self, featurizer: str, keys: Sequence[bytes], dim: int) -> dict[bytes, Tensor]:
        found: dict[bytes, Tensor] = {}
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), 500):  # SQLite's bound on parameters per statement
            chunk = unique[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                f"SELECT key, vector FROM features WHERE featurizer = ? AND key IN ({marks})", [featurizer, *chunk]
            )
            for key, blob in rows:
                if len(blob) == 4 * dim:
                    found[key] = torch.from_numpy(np.frombuffer(blob, dtype=np.float32).copy())
        return found

    def put(self, featurizer: str, keys: Sequence[bytes], vectors: Tensor) -> None:
        rows = [(featurizer, k, v.float().numpy().tobytes()) for k, v in zip(keys, vectors)]
        with self._db:
            self._db.executemany("INSERT OR REPLACE INTO features VALUES (?, ?, ?)", rows)

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM features").fetchone()[0])

    def close(self) -> None:
        self._db.close()


StoreChoice = FeatureStore | bool | None  # a store; True: the default one (the CLI's); False or None: none


@contextmanager
def opened_store(choice: StoreChoice) -> Iterator[FeatureStore | None]:
    """The store ``choice`` names, open for the block: ``True`` opens the default store (and closes it after), or
    warns and goes without one when its folder cannot be written."""
    if isinstance(choice, FeatureStore) or not choice:
        yield choice if isinstance(choice, FeatureStore) else None
        return
    try:
        store = FeatureStore.default()
    except (OSError, sqlite3.Error) as e:
        warnings.warn(f"no feature store ({e}): the towers run on every file", stacklevel=3)
        yield None
        return
    try:
        yield store
    finally:
        store.close()
