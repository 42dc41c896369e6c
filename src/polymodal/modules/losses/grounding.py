"""Token-to-region grounding without region labels: FILIP's token-wise late-interaction contrast.

A text's similarity to a clip (or image) is, for each of its real tokens, the best cosine match among the clip's
real cells, averaged over the tokens; an InfoNCE over the batch then asks each text to pick its own clip. A word can
only raise its own pair's score by matching cells of its own clip that other clips lack, so its query learns to
find what it names: the binding a fusion that reads "where the red circle is" needs before any answer can teach it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def token_max_similarity(queries: Tensor, query_mask: Tensor, keys: Tensor, key_mask: Tensor) -> Tensor:
    """(B, B) similarities: row i's real query tokens each take their best cosine over row j's real keys, averaged.

    ``queries`` (B, L, D) with ``query_mask`` (B, L); ``keys`` (B, N, D) with ``key_mask`` (B, N); every row needs
    at least one real token and one real key.
    """
    q, k = F.normalize(queries.float(), dim=-1), F.normalize(keys.float(), dim=-1)
    cosine = torch.einsum("ild,jnd->ijln", q, k)  # (B, B, L, N)
    best = cosine.masked_fill(~key_mask[None, :, None, :], float("-inf")).amax(-1)  # (B, B, L)
    real = query_mask[:, None, :].to(best.dtype)
    return (best * real).sum(-1) / real.sum(-1)


def grounding_loss(
    queries: Tensor,
    query_mask: Tensor,
    keys: Tensor,
    key_mask: Tensor,
    same_source: Tensor | None = None,
    temperature: float = 0.07,
) -> Tensor:
    """Text-to-clip InfoNCE over :func:`token_max_similarity` / ``temperature``: row i's keys are its positive.

    ``same_source`` (B, B) bool marks pairs of rows that share one clip (two statements about it in a batch): those
    are not negatives. With fewer than two rows there is nothing to contrast and the loss is a zero that keeps the
    graph.
    """
    if queries.shape[0] != keys.shape[0]:
        raise ValueError(f"grounding_loss: {queries.shape[0]} query rows against {keys.shape[0]} key rows")
    if temperature <= 0:
        raise ValueError(f"grounding_loss: temperature must be > 0, got {temperature}")
    rows = queries.shape[0]
    if rows < 2:
        return (queries.sum() + keys.sum()) * 0.0
    # Keys centred on the batch's mean key: a direction every clip shares (a locked tower's background) tells no
    # clip apart, and uncentred the words' best cosines grow along it for every clip alike.
    real_keys = key_mask.unsqueeze(-1).to(keys.dtype)
    centre = (keys * real_keys).sum((0, 1)) / real_keys.sum().clamp_min(1.0)
    logits = token_max_similarity(queries, query_mask, keys - centre, key_mask) / temperature
    if same_source is not None:
        not_self = ~torch.eye(rows, dtype=torch.bool, device=logits.device)
        logits = logits.masked_fill(same_source & not_self, float("-inf"))
    return F.cross_entropy(logits, torch.arange(rows, device=logits.device))
