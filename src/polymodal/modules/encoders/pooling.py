"""Pooling a token sequence into one vector, shared by every encoder."""

from __future__ import annotations

from collections.abc import Collection

from torch import Tensor

from polymodal.modules.encoders.base import last_token, masked_mean


def check_choice(field: str, value: str, allowed: Collection[str]) -> str:
    """Return ``value`` if allowed, else raise an error naming the field and the choices."""
    if value not in allowed:
        raise ValueError(f"{field}={value!r} is not one of {', '.join(map(repr, allowed))}")
    return value


def pool_tokens(tokens: Tensor, mask: Tensor | None, pooling: str) -> Tensor:
    """(B, T, D) -> (B, D). ``cls``: first token; ``mean``: mean of real tokens; ``eos``: last real token."""
    if pooling == "cls":
        return tokens[:, 0]
    if pooling == "mean":
        return masked_mean(tokens, mask)
    if pooling == "eos":
        return last_token(tokens, mask)
    raise ValueError(f"pooling={pooling!r} is not one of 'cls', 'mean', 'eos'")
