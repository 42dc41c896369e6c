"""polymodal: compose, pretrain, fine-tune, evaluate and serve multimodal models."""

from polymodal.version import __version__

__all__ = ["__version__"]


def __getattr__(name: str):  # noqa: ANN202 - lazy, so `import polymodal` stays cheap (no torch import)
    if name in ("load", "Model"):
        from polymodal import api

        return getattr(api, name)
    raise AttributeError(f"module 'polymodal' has no attribute {name!r}")
