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
- ``ivfpq-rerank``: inverted lists of 4-bit PQ codes scanned with faiss's SIMD fast-scan kernels, then the best
  ``rerank`` x k candidates re-scored exactly on the full vectors (``IndexRefineFlat`` over
  ``IndexIVFPQFastScan``). Scanning a code costs a fraction of scoring a full vector, so a query can visit most
  cells: recall is what the visited cells hold, not what the codes keep. Memory is ``flat``'s plus ``dim / 16``
  bytes a vector; like HNSW it cannot remove vectors, so removal is a tombstone.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

INDEX_TYPES = ("auto", "flat", "hnsw", "ivf", "ivfpq", "ivfpq-rerank")
# Below this many vectors exact search is already fast (50k x 512 floats is ~25 MFLOP per query: a few ms on one
# core) and needs no training or tuning; above it, exact search grows linearly while ivfpq-rerank stays under a
# millisecond at recall@10 >= 0.95 and builds in seconds (100k x 512: 1 s, HNSW 28 s; docs/index.md).
AUTO_APPROXIMATE_THRESHOLD = 50_000
# From here on IVF-Flat: it trains and fills in ~1 min, reaches recall@10 >= 0.95 at p50 < 1 ms on clustered data
# and, unlike ivfpq-rerank, removes vectors for real; where it misses, the tuner moves on (docs/index.md).
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
    "ivfpq-rerank": ("nlist", "pq_m", "rerank", "nprobe"),
}
# A type's second search-time knob and its cap: the tuner doubles it from its default when no value of the first
# reaches the target (ivfpq-rerank: its codes can rank the true neighbours below the candidates re-scored).
WIDENING_KNOBS = {"ivfpq-rerank": ("rerank", 256)}
# The knobs a built index can change without a rebuild.
SEARCH_TIME_KNOBS = ("ef_search", "rerank", "nprobe")
# Bits per code of ivfpq-rerank: faiss's fast-scan kernels keep 4-bit codes' lookup tables in SIMD registers.
FAST_SCAN_BITS = 4


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
    nlist: int | None = None  # IVF cells; None -> 4 * sqrt(N) (ivf, ivfpq), sqrt(N) (ivfpq-rerank)
    pq_m: int | None = None  # PQ sub-vectors (bytes per vector at 8 bits); must divide dim; None -> default_pq_m
    nbits: int = 8  # bits per PQ code (ivfpq; ivfpq-rerank's are 4)
    rerank: int = 16  # ivfpq-rerank: candidates re-scored exactly per result wanted
    nprobe: int = 16  # IVF cells visited per query (ivf, ivfpq, ivfpq-rerank): the recall/latency knob
    train_per_cell: int = TRAIN_POINTS_PER_CENTROID  # vectors sampled per IVF cell to train k-means

    def __post_init__(self) -> None:
        if self.type not in INDEX_TYPES:
            raise ValueError(f"index type must be one of {', '.join(INDEX_TYPES)}, got {self.type!r}")
        for name in ("hnsw_m", "ef_construction", "ef_search", "nbits", "rerank", "nprobe", "train_per_cell"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IndexParams:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def resolve_type(kind: str, n: int) -> str:
    """The concrete type for ``kind`` at ``n`` vectors (``auto`` -> flat, ivfpq-rerank or ivf by size)."""
    if kind == "auto":
        return "flat" if n < AUTO_APPROXIMATE_THRESHOLD else "ivfpq-rerank" if n < AUTO_IVF_THRESHOLD else "ivf"
    return kind


def search_knob(kind: str) -> str | None:
    """The search-time parameter trading recall for latency (None for exact search)."""
    return KNOBS[kind][-1] if KNOBS[kind] else None


def is_ivf(kind: str) -> bool:
    """Whether ``kind`` is trained on the vectors it is built from (k-means cells)."""
    return kind in ("ivf", "ivfpq", "ivfpq-rerank")


def default_nlist(kind: str, n: int) -> int:
    """IVF cells for ``n`` vectors when not given: 4 * sqrt(N), the usual rule; ivfpq-rerank scans a cell's codes
    so cheaply that a cell's fixed cost dominates, so it takes sqrt(N) larger cells (docs/index.md)."""
    return int((1 if kind == "ivfpq-rerank" else 4) * math.sqrt(n))


def default_pq_m(dim: int) -> int:
    """PQ sub-quantisers when not given: dim / 8 (8 dimensions each), else the largest divisor of ``dim`` below it
    (faiss needs one that divides the dimension: 100 -> 10)."""
    return max(m for m in range(1, max(1, dim // 8) + 1) if dim % m == 0)


def new_index(kind: str, dim: int, params: IndexParams, train: np.ndarray | None = None) -> Any:
    """An empty FAISS index of concrete type ``kind`` (the IVF types are trained on ``train``, (N, D) float32)."""
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
    nlist = params.nlist or default_nlist(kind, n)
    nlist = max(1, min(nlist, n // min(39, params.train_per_cell)))
    quantizer = faiss.IndexFlatIP(dim)
    if kind == "ivf":
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        minimum = nlist
    else:
        pq_m = params.pq_m or default_pq_m(dim)
        nbits = FAST_SCAN_BITS if kind == "ivfpq-rerank" else params.nbits
        if dim % pq_m:
            raise ValueError(f"pq_m must divide the embedding dimension {dim}, got {pq_m}")
        if n < 2**nbits:
            raise ValueError(
                f"{kind} with {nbits}-bit codes needs at least {2**nbits} vectors to train its codebooks, "
                f"got {n}: use --type flat (exact, and fast at this size)" + (" or fewer bits" * (kind == "ivfpq"))
            )
        if kind == "ivfpq":
            index = faiss.IndexIVFPQ(quantizer, dim, nlist, pq_m, nbits, faiss.METRIC_INNER_PRODUCT)
        else:
            index = faiss.IndexIVFPQFastScan(quantizer, dim, nlist, pq_m, nbits, faiss.METRIC_INNER_PRODUCT)
            index.by_residual = False  # one lookup table a query, not one a cell: most cells are visited
        minimum = 2**nbits
    limit = max(nlist, minimum) * params.train_per_cell
    index.cp.min_points_per_centroid = min(index.cp.min_points_per_centroid, params.train_per_cell)
    if kind != "ivf":
        # The codebooks' k-means get `limit` points, >= 40 per centroid unless the index is tiny, where faiss's
        # warning (one per sub-quantiser) says only that: 270 vectors train 16 codes each.
        index.pq.cp.min_points_per_centroid = 1
    sample = train
    if n > limit:
        pick = np.random.default_rng(0).choice(n, size=limit, replace=False)
        sample = train[np.sort(pick)]
    index.train(np.ascontiguousarray(sample, dtype=np.float32))
    if kind == "ivfpq-rerank":
        # Positions in both the codes and the full vectors; the id map holds our ids and answers `reconstruct`.
        return faiss.IndexIDMap2(faiss.IndexRefineFlat(index))
    # A hash-table id -> list position map lets `reconstruct(id)` find a vector by our (non-contiguous) ids and
    # keeps `remove_ids` working.
    index.set_direct_map_type(faiss.DirectMap.Hashtable)
    return index


def apply_search_params(index: Any, kind: str, params: IndexParams) -> None:
    """Set the search-time knobs (efSearch, nprobe, rerank) on a built or loaded index."""
    faiss = _faiss()
    if kind == "hnsw":
        faiss.downcast_index(index.index).hnsw.efSearch = params.ef_search
    elif is_ivf(kind):
        faiss.extract_index_ivf(index).nprobe = params.nprobe
    if kind == "ivfpq-rerank":
        faiss.downcast_index(index.index).k_factor = float(params.rerank)


def rescore_for_fetch(index: Any, kind: str, rerank: int, k: int, fetch: int) -> None:
    """For a search of ``fetch`` results of which ``k`` are wanted (the rest make up for tombstones), have
    ivfpq-rerank re-score ``rerank`` x k candidates plus the extra, at most every vector: not ``rerank`` x ``fetch``,
    which grows with every removal."""
    if kind == "ivfpq-rerank" and fetch > 0:
        candidates = min(int(index.ntotal), rerank * k + (fetch - k))
        # faiss keeps the factor in float32 and truncates fetch x factor: half a candidate over, not one short.
        _faiss().downcast_index(index.index).k_factor = max(1.0, (candidates + 0.5) / fetch)


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
    """Whether FAISS can delete vectors from this type (HNSW graphs and the exact re-scoring of ivfpq-rerank
    cannot)."""
    return kind not in ("hnsw", "ivfpq-rerank")


def stored_ids(index: Any, kind: str) -> np.ndarray:
    """(N,) sorted ids of every vector in a built index of concrete type ``kind`` (tombstoned ones included: an
    HNSW graph keeps them)."""
    faiss = _faiss()
    if kind not in ("ivf", "ivfpq"):  # the others keep our ids in an id map
        return np.sort(faiss.vector_to_array(index.id_map))
    ivf = faiss.extract_index_ivf(index)
    lists = ivf.invlists
    parts = [
        faiss.rev_swig_ptr(lists.get_ids(cell), lists.list_size(cell)).copy()
        for cell in range(ivf.nlist)
        if lists.list_size(cell)
    ]
    return np.sort(np.concatenate(parts)) if parts else np.zeros(0, np.int64)
