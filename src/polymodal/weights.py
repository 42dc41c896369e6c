"""Weights in safetensors: no pickle, so loading a file never executes code.

safetensors refuses tensors that share storage (tied embeddings); we save each storage once
and accept the tied keys as "missing" on load, since ``load_state_dict`` fills them through
the tie.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from polymodal.fsutil import PICKLED_OBJECTS, UnreadableFileError


def _storage_id(tensor: Tensor) -> tuple[int, int]:
    return tensor.untyped_storage().data_ptr(), tensor.storage_offset()


def tied_keys(model: nn.Module) -> set[str]:
    """State-dict keys whose tensor shares storage with an earlier key."""
    seen: set[tuple[int, int]] = set()
    tied = set()
    for key, tensor in model.state_dict().items():
        ident = _storage_id(tensor)
        if tensor.numel() and ident in seen:
            tied.add(key)
        seen.add(ident)
    return tied


def save_weights(model: nn.Module, path: str | os.PathLike) -> None:
    skip = tied_keys(model)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if k not in skip}
    save_file(state, str(path))


def load_weights(model: nn.Module, path: str | os.PathLike) -> None:
    """Load ``path`` into ``model``; every non-tied key must be present and no key extra."""
    load_state(model, read_weights(path), path)


def load_state(model: nn.Module, state: dict[str, Tensor], path: str | os.PathLike) -> None:
    """Load a state dict read from ``path`` into ``model``, exactly (tied keys aside)."""
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if k not in tied_keys(model)]
    if missing or unexpected:
        raise ValueError(
            f"{path}: weights do not match the model (missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''})"
        )


def _safetensors_problem(path: Path, error: SafetensorError) -> str:
    """What is wrong with a safetensors file that did not load (the library's message names no file)."""
    reason = str(error).removeprefix("Error while deserializing header: ")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(64)
        if head[:1] == b"\x80" or (head.startswith(b"PK\x03\x04") and b"data.pkl" in head):  # a pickle, or torch.save
            return f"not a safetensors file: {PICKLED_OBJECTS}"
        if size < 8:
            return f"truncated ({size} bytes; a safetensors file starts with an 8-byte header length)"
        header_len = int.from_bytes(head[:8], "little")
        if 8 + header_len > size:
            # safetensors refuses headers over 100 MB: a length beyond that is not one
            kind = "truncated" if header_len <= 100_000_000 else "not a safetensors file"
            return f"{kind} ({size:,} bytes, less than the {header_len:,}-byte header it announces)"
        f.seek(8)
        try:
            header = json.loads(f.read(header_len))
            ends = [t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"]
        except (ValueError, TypeError, KeyError, IndexError, AttributeError):
            return f"corrupt (its header: {reason})"
    needed = 8 + header_len + max(ends, default=0)
    if size < needed:
        return f"truncated ({size:,} of its {needed:,} bytes)"
    return f"corrupt ({reason})"


def read_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; :class:`UnreadableFileError` says what is wrong with one that does not
    load (a pickle is refused unread)."""
    path = Path(path)
    try:
        return load_file(str(path))
    except SafetensorError as e:
        raise UnreadableFileError(path, _safetensors_problem(path, e)) from None
