"""Vector index over a model's embeddings of images, sounds, clips (or their segments) and texts: build from a
folder or manifest (resumably), add, remove, search, re-tune.

An index is a directory (see :mod:`polymodal.index.vector_index` for its layout) tied to the model that built it:
queries are embedded with that model, and any other model is refused by its content identity. Needs faiss
(``pip install 'polymodal[index]'``).
"""

from polymodal.index.build import BuildResult, add_to_index, build_index
from polymodal.index.kinds import AUTO_APPROXIMATE_THRESHOLD, AUTO_IVF_THRESHOLD, INDEX_TYPES, IndexParams
from polymodal.index.query import open_for_search, search, search_audio, search_image, search_text, search_video
from polymodal.index.retune import tune_index
from polymodal.index.store import Hit, Item
from polymodal.index.tuning import TuningOptions
from polymodal.index.vector_index import IndexFormatError, ModelMismatchError, VectorIndex

__all__ = [
    "AUTO_APPROXIMATE_THRESHOLD",
    "AUTO_IVF_THRESHOLD",
    "INDEX_TYPES",
    "BuildResult",
    "Hit",
    "IndexFormatError",
    "IndexParams",
    "Item",
    "ModelMismatchError",
    "TuningOptions",
    "VectorIndex",
    "add_to_index",
    "build_index",
    "open_for_search",
    "search",
    "search_audio",
    "search_image",
    "search_text",
    "search_video",
    "tune_index",
]
