"""Shared fixtures for the index and CLI task tests: a tiny saved dual encoder, folders of small images, and
index directories of synthetic vectors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from polymodal.index import IndexParams, store
from polymodal.index.vector_index import IndexMeta, write_index
from tests.tiny_models import save_tiny_model

NO_BOUND = 1e9  # ms: a latency bound for tests that assert recall, never timings


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model("dual_encoder", tmp_path_factory.mktemp("models") / "clip")


@pytest.fixture(scope="session")
def other_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Same architecture, other weights: a different identity."""
    return save_tiny_model("dual_encoder", tmp_path_factory.mktemp("models") / "clip-other", seed=1)


@pytest.fixture(scope="session")
def clip_model(tiny_clip: Path):  # type: ignore[no-untyped-def]
    import polymodal

    return polymodal.load(tiny_clip)


def write_images(folder: Path, n: int, *, seed: int = 0, prefix: str = "img") -> list[Path]:
    """``n`` distinct small PNGs (random blocks of colour) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        pixels = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8).repeat(10, 0).repeat(10, 1)  # (40, 40, 3)
        path = folder / f"{prefix}{i:03d}.png"
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """12 good images plus two bad files: text named .png and an empty .jpg."""
    folder = tmp_path / "photos"
    write_images(folder, 12)
    (folder / "broken.png").write_text("not an image")
    (folder / "empty.jpg").write_bytes(b"")
    return folder


def write_caption_manifest(folder: Path, n: int = 6) -> Path:
    """A JSONL manifest of ``n`` images with two captions each, plus a row pointing at a missing file."""
    paths = write_images(folder / "images", n)
    words = ["red", "blue", "green", "yellow", "purple", "cyan", "white", "black"]
    rows = [
        {"id": f"s{i}", "image": f"images/{p.name}", "text": [f"a {words[i % 8]} circle", f"two {words[i % 8]} stars"]}
        for i, p in enumerate(paths)
    ]
    rows.append({"id": "gone", "image": "images/missing.png", "text": ["lost"]})
    return write_manifest(folder / "captions.jsonl", rows)


def write_manifest(path: Path, rows: list[dict]) -> Path:
    """``rows`` as a JSONL manifest at ``path``."""
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def spread_vectors(n: int = 4000, dim: int = 32, seed: int = 0) -> np.ndarray:
    """(n, dim) unit vectors without clusters: IVF cells cut every neighbourhood, so nprobe=16 misses many."""
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute_recall(index, vectors: np.ndarray, queries: np.ndarray, exclude_self: np.ndarray | None, k: int = 10):  # type: ignore[no-untyped-def]
    """Recall@k of ``index`` against numpy brute force; with ``exclude_self`` each query's own id is dropped from
    both lists (the queries are in the index)."""
    extra = 0 if exclude_self is None else 1
    truth = np.argsort(-(queries @ vectors.T), axis=1)[:, : k + extra]  # (Q, k[+1])
    _, found = index.search(queries, k + extra)
    hits = 0
    for row, (t, f) in enumerate(zip(truth, found)):
        if exclude_self is not None:
            t = [i for i in t if i != exclude_self[row]][:k]
            f = [i for i in f if i != exclude_self[row]][:k]
        hits += len(set(t) & set(f))
    return hits / (k * len(queries))


def write_vectors(out: Path, vectors: np.ndarray, built) -> Path:  # type: ignore[no-untyped-def]
    """An index directory of ``built`` with one text item per vector."""
    meta = IndexMeta(
        model="m",
        model_name="m",
        identity="x",
        embed_dim=vectors.shape[1],
        type=built.type,
        params=built.params.to_dict(),
        next_id=len(vectors),
        tuning=built.tuning,
    )
    items = [store.Item("text", text=f"t{i}") for i in range(len(vectors))]
    write_index(out, meta, built.index, lambda conn: store.insert(conn, list(range(len(vectors))), items))
    return out


def write_pre_tuning_index(out: Path, vectors: np.ndarray, params: IndexParams) -> Path:
    """An index directory of ``vectors`` with ``params`` as written before tuning existed: no ``tuning`` record,
    no ``train_per_cell`` parameter."""
    from polymodal.index.tuning import build_tuned

    write_vectors(out, vectors, build_tuned(vectors, params, None))
    meta = json.loads((out / "index.json").read_text())
    del meta["tuning"], meta["params"]["train_per_cell"]
    (out / "index.json").write_text(json.dumps(meta))
    return out
