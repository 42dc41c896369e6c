"""Where a Hugging Face checkpoint lives: a local directory, or a Hub id resolved to one.

Everything downstream reads files from one local directory, so a Hub id and a directory take
the same code path. With no network a Hub id fails here, with a message that says what to do.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

HF_CONFIG_FILE = "config.json"
# Files a model needs at inference; a Hub download fetches only these (never optimizer states).
_HUB_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "*.bin"]


class HFLoadError(ValueError):
    """A Hugging Face checkpoint could not be found or read."""


def resolve_model_dir(id_or_dir: str | os.PathLike[str]) -> Path:
    """A local directory as is; a Hub id (``openai/clip-vit-base-patch32``) downloaded (or taken
    from the local Hugging Face cache) and returned as its snapshot directory."""
    path = Path(id_or_dir)
    if path.is_dir():
        return path
    name = str(id_or_dir)
    if path.exists() or name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise HFLoadError(f"{name}: not a model directory")
    from huggingface_hub import snapshot_download

    try:
        # Prefer safetensors: when a repo has both, the .bin pickles are skipped.
        return Path(snapshot_download(name, allow_patterns=_HUB_PATTERNS, ignore_patterns=["*.msgpack", "*.h5"]))
    except Exception as e:  # offline, unknown repo, gated repo ... all end the same way for the user
        raise HFLoadError(
            f"{name}: not a local directory, and it could not be fetched from the Hugging Face Hub "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'no details'}). "
            f"On a machine with network run `hf download {name} --local-dir DIR` and pass DIR instead."
        ) from None


def read_hf_config(directory: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The ``config.json`` of a transformers checkpoint, or None when the directory is not one
    (no config.json, or a polymodal model's config.json)."""
    path = Path(directory) / HF_CONFIG_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise HFLoadError(f"{path}: invalid JSON ({e})") from None
    if not isinstance(data, dict) or "polymodal_version" in data or "model_type" not in data:
        return None
    return data
