"""Load any supported model behind the one :class:`Backend` contract.

``load_backend`` accepts, in this order: the name of the offline default (``polymodal-base``), a polymodal model
directory or a training run directory (its ``best/`` or ``model/``), a Hugging Face model directory, or a
Hugging Face hub id (loaded from the local cache only when there is no network).
"""

from __future__ import annotations

import json
from pathlib import Path

from polymodal.backends.base import ANSWER, CAPTION, EMBED, GENERATE, PREDICT, Backend, TaskNotSupported
from polymodal.data.transforms import PREPROCESS_FILE
from polymodal.models.saved import CONFIG_FILE, PROCESSORS_FILE

DEFAULT_MODEL = "polymodal-base"

__all__ = [
    "ANSWER",
    "CAPTION",
    "DEFAULT_MODEL",
    "EMBED",
    "GENERATE",
    "PREDICT",
    "Backend",
    "TaskNotSupported",
    "load_backend",
]


def _is_polymodal_dir(directory: Path) -> bool:
    config = directory / CONFIG_FILE
    if not config.is_file():
        return False
    if any((directory / name).is_file() for name in (PROCESSORS_FILE, PREPROCESS_FILE)):
        return True  # files only polymodal writes: even with an unreadable config.json, loading it says so
    try:
        meta = json.loads(config.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and "polymodal_version" in meta


def _resolve(spec: str) -> tuple[str, Path | str | None]:
    """What ``spec`` names, before anything loads: ("default", None), ("polymodal", dir), ("hf", dir or hub id)."""
    if spec == DEFAULT_MODEL:
        return "default", None
    path = Path(spec).expanduser()
    if path.exists():
        for candidate in (path, path / "best", path / "model"):
            if _is_polymodal_dir(candidate):
                return "polymodal", candidate
        if (path / CONFIG_FILE).is_file():
            return "hf", path
        raise FileNotFoundError(
            f"{path}: no model here: expected a polymodal model or run directory (config.json with "
            f"polymodal_version, or best/ or model/ inside), or a Hugging Face model directory (config.json)"
        )
    if spec.count("/") == 1 and not spec.startswith((".", "/", "~")):
        return "hf", spec  # a hub id: transformers resolves it from the local cache when offline
    raise FileNotFoundError(
        f"{spec}: no such model directory, and not a Hugging Face hub id (org/name) or {DEFAULT_MODEL!r}"
    )


def load_backend(model: str | Path | None = None) -> Backend:
    """The model at ``model`` (a path, a hub id or ``polymodal-base``; None means ``polymodal-base``)."""
    kind, where = _resolve(DEFAULT_MODEL if model is None else str(model))
    if kind == "default":
        from polymodal.backends.conse import ConSEBackend

        return ConSEBackend.load()
    if kind == "polymodal":
        from polymodal.backends.polymodal_dir import PolymodalBackend

        return PolymodalBackend.load(where)  # type: ignore[arg-type]
    from polymodal.backends.hf import load_hf_backend

    return load_hf_backend(where)  # type: ignore[arg-type]


def model_identity(model: str | Path) -> str | None:
    """The identity ``load_backend(model)`` would report, from its files alone (nothing loads), so that a model
    another index or run was not built with is refused before a long load; None where only loading tells (the
    default model, a hub id)."""
    kind, where = _resolve(str(model))
    if kind == "polymodal":
        from polymodal.backends.polymodal_dir import directory_identity
        from polymodal.models import find_model_dir

        return directory_identity(find_model_dir(where))  # type: ignore[arg-type]
    if kind == "hf" and isinstance(where, Path):
        from polymodal.backends.hf import checkpoint_identity

        return checkpoint_identity(where)
    return None
