"""The FAISS index types an index directory can hold, and the knobs each one has.

Every type scores by inner product on unit vectors (= cosine similarity):

- ``flat``: exact search (``IndexIDMap2`` over ``IndexFlatIP``); removal is real.
- ``hnsw``: graph search (``IndexIDMap2`` over ``IndexHNSWFlat``); fast and accurate, but HNSW cannot remove
  vectors, so removal is a tombstone kept beside the index (see :mod:`polymodal.index.vector_index`).
- ``ivf``: inverted lists of the full vectors (``IndexIVFFlat``): k-means cells trained on a sample, a query
  scores every vector in its ``nprobe`` nearest cells exactly. Trains and fills in a fraction of an HNSW build's
  time at a million vectors, removal is real, memory is the same as ``flat``.
- ``ivfpq``: inverted lists of product-quantised codes (``IndexIVFPQ``), trained on a sample; the smallest in
  memory (``m`` bytes per vector at 8 bits), with recall capped by the codes (~0.7-0.8 recall@10).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

INDEX_TYPES = ("auto", "flat", "hnsw", "ivf", "ivfpq")
# Below this many vectors exact search is already fast (50k x 512 floats is ~25 MFLOP per query: a few ms on one
# core) and needs no training or tuning; above it, exact search grows linearly while HNSW stays around a
# millisecond at recall@10 >= 0.95 (see docs/index.md for the measured figures).
AUTO_HNSW_THRESHOLD = 50_000
# From here on HNSW's build dominates (1M x 512 with M=16: ~10 min on 2 cores, and still only recall@10 0.87)
# while IVF-Flat trains and fills in ~1.5 min and reaches recall@10 >= 0.95 at p50 < 1 ms (docs/index.md).
AUTO_IVF_THRESHOLD = 500_000
# Vectors sampled to train the IVF coarse quantiser and the PQ codebooks: faiss warns below 39 per centroid.
TRAIN_POINTS_PER_CENTROID = 40
# The parameters that shape each type (what `index info` shows and the tuning record keeps); the last one of an
# approximate type is its search-time knob.
KNOBS = {
    "flat": (),
    "hnsw": ("hnsw_m", "ef_construction", "ef_search"),
    "ivf": ("nlist", "nprobe"),
    "ivfpq": ("nlist", "pq_m", "nbits", "nprobe"),
}


def _faiss() -> Any:
    try:
        import faiss
    except ImportError:  # pragma: no cover - exercised only without the extra
        raise ImportError("the vector index needs faiss: pip install 'polymodal[index]'") from None
    return faiss


@dataclass
class IndexParams:
    """Build and search options; the ones that do not apply to the chosen type are ignored (and recorded)."""

    type: str = "auto"
    hnsw_m: int = 32  # graph degree: more -> better recall, more memory and slower build
    ef_construction: int = 80  # candidate list while building
    ef_search: int = 64  # candidate list while searching: the recall/latency knob
    nlist: int | None = None  # IVF cells (ivf, ivfpq); None -> 4 * sqrt(N), the usual rule of thumb
    pq_m: int | None = None  # PQ sub-vectors (bytes per vector at 8 bits); None -> dim / 8, must divide dim
    nbits: int = 8  # bits per PQ code
    nprobe: int = 16  # IVF cells visited per query (ivf, ivfpq): the recall/latency knob
    train_per_cell: int = TRAIN_POINTS_PER_CENTROID  # vectors sampled per IVF cell to train k-means

    def __post_init__(self) -> None:
        if self.type not in INDEX_TYPES:
            raise ValueError(f"index type must be one of {', '.join(INDEX_TYPES)}, got {self.type!r}")
        for name in ("hnsw_m", "ef_construction", "ef_search", "nbits", "nprobe", "train_per_cell"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IndexParams:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def resolve_type(kind: str, n: int) -> str:
    """The concrete type for ``kind`` at ``n`` vectors (``auto`` -> flat, hnsw or ivf by size)."""
    if kind == "auto":
        return "flat" if n < AUTO_HNSW_THRESHOLD else "hnsw" if n < AUTO_IVF_THRESHOLD else "ivf"
    return kind


def search_knob(kind: str) -> str | None:
    """The search-time parameter trading recall for latency (None for exact search)."""
    return KNOBS[kind][-1] if KNOBS[kind] else None


def is_ivf(kind: str) -> bool:
    """Whether ``kind`` is trained on the vectors it is built from (k-means cells)."""
    return kind in ("ivf", "ivfpq")


def new_index(kind: str, dim: int, params: IndexParams, train: np.ndarray | None = None) -> Any:
    """An empty FAISS index of concrete type ``kind`` (``ivf``/``ivfpq`` are trained on ``train``, (N, D) float32)."""
    faiss = _faiss()
    if kind == "flat":
        return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
    if kind == "hnsw":
        graph = faiss.IndexHNSWFlat(dim, params.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        graph.hnsw.efConstruction = params.ef_construction
        return faiss.IndexIDMap2(graph)  # faiss's Python wrapper keeps `graph` alive with the map
    if is_ivf(kind):
        return _new_ivf(kind, dim, params, train)
    raise ValueError(f"not a concrete index type: {kind!r}")


def _new_ivf(kind: str, dim: int, params: IndexParams, train: np.ndarray | None) -> Any:
    faiss = _faiss()
    if train is None or len(train) == 0:
        raise ValueError(f"an {kind} index is trained on the vectors it is built from: there are none")
    n = len(train)
    # More cells than the sample can train leaves empty centroids; cap at one cell per `train_per_cell` points
    # (at most 39, below which faiss warns).
    nlist = params.nlist or int(4 * math.sqrt(n))
    nlist = max(1, min(nlist, n // min(39, params.train_per_cell)))
    quantizer = faiss.IndexFlatIP(dim)
    if kind == "ivf":
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        minimum = nlist
    else:
        pq_m = params.pq_m or max(1, dim // 8)
        if dim % pq_m:
            raise ValueError(f"pq_m must divide the embedding dimension {dim}, got {pq_m}")
        if n < 2**params.nbits:
            raise ValueError(
                f"ivfpq with nbits={params.nbits} needs at least {2**params.nbits} vectors to train its codebooks, "
                f"got {n}: use --type flat (exact, and fast at this size) or fewer bits"
            )
        index = faiss.IndexIVFPQ(quantizer, dim, nlist, pq_m, params.nbits, faiss.METRIC_INNER_PRODUCT)
        minimum = 2**params.nbits
    limit = max(nlist, minimum) * params.train_per_cell
    index.cp.min_points_per_centroid = min(index.cp.min_points_per_centroid, params.train_per_cell)
    sample = train
    if n > limit:
        pick = np.random.default_rng(0).choice(n, size=limit, replace=False)
        sample = train[np.sort(pick)]
    index.train(np.ascontiguousarray(sample, dtype=np.float32))
    # A hash-table id -> list position map lets `reconstruct(id)` find a vector by our (non-contiguous) ids and
    # keeps `remove_ids` working.
    index.set_direct_map_type(faiss.DirectMap.Hashtable)
    return index


def apply_search_params(index: Any, kind: str, params: IndexParams) -> None:
    """Set the search-time knobs (efSearch, nprobe) on a built or loaded index."""
    faiss = _faiss()
    if kind == "hnsw":
        faiss.downcast_index(index.index).hnsw.efSearch = params.ef_search
    elif is_ivf(kind):
        faiss.extract_index_ivf(index).nprobe = params.nprobe


@contextlib.contextmanager
def threads(count: int) -> Iterator[None]:
    """Run faiss with ``count`` OpenMP threads inside the block (per calling thread in OpenMP)."""
    faiss = _faiss()
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(count)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def can_remove(kind: str) -> bool:
    """Whether FAISS can delete vectors from this type (HNSW graphs cannot)."""
    return kind != "hnsw"


def stored_ids(index: Any, kind: str) -> np.ndarray:
    """(N,) sorted ids of every vector in a built index of concrete type ``kind`` (tombstoned ones included: an
    HNSW graph keeps them)."""
    faiss = _faiss()
    if not is_ivf(kind):
        return np.sort(faiss.vector_to_array(index.id_map))
    ivf = faiss.extract_index_ivf(index)
    lists = ivf.invlists
    parts = [
        faiss.rev_swig_ptr(lists.get_ids(cell), lists.list_size(cell)).copy()
        for cell in range(ivf.nlist)
        if lists.list_size(cell)
    ]
    return np.sort(np.concatenate(parts)) if parts else np.zeros(0, np.int64)
