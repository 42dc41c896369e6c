"""Weights in safetensors: no pickle, so loading a file never executes code.

safetensors refuses tensors that share storage (tied embeddings); we save each storage once
and accept the tied keys as "missing" on load, since ``load_state_dict`` fills them through
the tie.
"""

from __future__ import annotations

import os

from safetensors.torch import load_file, save_file
from torch import Tensor, nn


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
    load_state(model, load_file(str(path)), path)


def load_state(model: nn.Module, state: dict[str, Tensor], path: str | os.PathLike) -> None:
    """Load a state dict read from ``path`` into ``model``, exactly (tied keys aside)."""
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if k not in tied_keys(model)]
    if missing or unexpected:
        raise ValueError(
            f"{path}: weights do not match the model (missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''})"
        )
