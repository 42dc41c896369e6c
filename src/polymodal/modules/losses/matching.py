"""Image-text matching (ITM) with in-batch hard negatives, as in ALBEF and BLIP.

For each image a negative text is drawn with probability proportional to
``softmax(similarity)`` over the other texts of the batch (and for each text a negative image
likewise), so the matching head trains on the pairs the contrastive model finds hardest.
The loss never builds fused features itself: it asks a ``pair_logits`` callable, supplied by the
model, for the ITM head's 2-way logits of chosen (image index, text index) pairs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

PairLogits = Callable[[Tensor, Tensor], Tensor]
"""``pair_logits(image_idx, text_idx) -> (N, 2)``: ITM logits of the N pairs, class 1 = match."""


def sample_hard_negatives(
    similarity: Tensor, ids: Tensor | None = None, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Draw one hard negative text per image and one hard negative image per text.

    ``similarity`` is (B, B) image->text scores (already divided by the temperature, as the
    contrastive logits are); ``ids`` (B,) optionally marks rows that show the same content
    (e.g. several captions of one image), which are then never drawn as each other's
    negatives. Returns ``(neg_text_for_image, neg_image_for_text)``, both (B,) indices.
    """
    if similarity.dim() != 2 or similarity.size(0) != similarity.size(1):
        raise ValueError(f"ITM similarity must be square (B, B); got {tuple(similarity.shape)}")
    batch = similarity.size(0)
    with torch.no_grad():
        if ids is None:
            same = torch.eye(batch, dtype=torch.bool, device=similarity.device)
        else:
            same = ids.view(-1, 1) == ids.view(1, -1)  # (B, B)
        if bool(same.all(dim=1).any()):
            raise ValueError("ITM needs at least one negative per row: every pair in some row is a positive")
        # Masking with -inf before the softmax gives probabilities proportional to softmax(sim)
        # with the positives zeroed, renormalised over the remaining candidates.
        scores = similarity.detach().float().masked_fill(same, float("-inf"))
        neg_text = torch.multinomial(scores.softmax(dim=1), 1, generator=generator).squeeze(1)  # (B,)
        neg_image = torch.multinomial(scores.T.softmax(dim=1), 1, generator=generator).squeeze(1)  # (B,)
    return neg_text, neg_image


class ItmLoss(nn.Module):
    """Cross entropy of the ITM head over B positive and 2B hard-negative pairs.

    ``forward(similarity, pair_logits, ids=None, generator=None) -> loss``. Pairs are scored in
    one call, in the order: positives ``(i, i)``, then ``(i, neg_text[i])``, then
    ``(neg_image[j], j)``; labels are 1 for the first B and 0 for the rest (ALBEF's layout).
    Pass a seeded ``generator`` to make the sampling reproducible.
    """

    def forward(
        self,
        similarity: Tensor,
        pair_logits: PairLogits,
        ids: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        neg_text, neg_image = sample_hard_negatives(similarity, ids, generator)
        batch = similarity.size(0)
        rows = torch.arange(batch, device=similarity.device)
        image_idx = torch.cat([rows, rows, neg_image])  # (3B,)
        text_idx = torch.cat([rows, neg_text, rows])  # (3B,)
        logits = pair_logits(image_idx, text_idx)  # (3B, 2)
        if logits.shape != (3 * batch, 2):
            raise ValueError(f"pair_logits must return ({3 * batch}, 2) logits; got {tuple(logits.shape)}")
        labels = torch.zeros(3 * batch, dtype=torch.long, device=logits.device)
        labels[:batch] = 1  # the positives come first
        return F.cross_entropy(logits, labels)
