"""Masked language modelling: BERT's token corruption and the loss on corrupted positions."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from polymodal.modules.losses.basic import token_cross_entropy


def mask_tokens(
    ids: Tensor,
    attention_mask: Tensor | None,
    vocab_size: int,
    mask_id: int,
    special_ids: Iterable[int],
    prob: float = 0.15,
    generator: torch.Generator | None = None,
    ignore_index: int = -100,
) -> tuple[Tensor, Tensor]:
    """Corrupt token ids for masked-LM training with BERT's 80/10/10 rule.

    Each real (``attention_mask`` True), non-special token is selected with probability
    ``prob``; a selected token becomes ``mask_id`` 80% of the time, a random non-special token
    10% of the time, and stays unchanged 10% of the time. Padding, special tokens and
    ``mask_id`` itself are never selected. Returns ``(inputs, labels)``, both shaped like
    ``ids``; ``labels`` holds the original id at selected positions and ``ignore_index``
    elsewhere. Pass a seeded ``generator`` (on ``ids.device``) for reproducible masks.
    """
    excluded = torch.tensor(sorted({*special_ids, mask_id}), dtype=ids.dtype, device=ids.device)
    candidates = ~torch.isin(ids, excluded)
    if attention_mask is not None:
        candidates &= attention_mask.bool()

    selected = (torch.rand(ids.shape, generator=generator, device=ids.device) < prob) & candidates
    labels = ids.masked_fill(~selected, ignore_index)

    # One uniform draw splits the selected tokens 80/10/10.
    draw = torch.rand(ids.shape, generator=generator, device=ids.device)
    to_mask = selected & (draw < 0.8)
    to_random = selected & (draw >= 0.8) & (draw < 0.9)

    allowed = torch.ones(vocab_size, dtype=torch.bool, device=ids.device)
    allowed[excluded[excluded < vocab_size]] = False
    pool = allowed.nonzero().squeeze(1)  # ids a random replacement may take
    random_ids = pool[torch.randint(len(pool), ids.shape, generator=generator, device=ids.device)]

    inputs = ids.masked_fill(to_mask, mask_id)
    inputs = torch.where(to_random, random_ids.to(ids.dtype), inputs)
    return inputs, labels


class MaskedLMLoss(nn.Module):
    """``forward(logits (B, T, V), labels (B, T)) -> loss``: mean cross entropy over the
    positions :func:`mask_tokens` selected (labels != ``ignore_index``); zero if none was."""

    def __init__(self, ignore_index: int = -100) -> None:
        super().__init__()
        self.ignore_index = ignore_index

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        return token_cross_entropy(logits, labels, self.ignore_index)
