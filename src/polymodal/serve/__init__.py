"""``polymodal serve``: a REST server (FastAPI) with a web page, over one model and optionally an index."""

from polymodal.serve.app import create_app
from polymodal.serve.batching import MicroBatcher
from polymodal.serve.search import SearchIndex
from polymodal.serve.settings import ServeSettings

__all__ = ["MicroBatcher", "SearchIndex", "ServeSettings", "create_app"]
