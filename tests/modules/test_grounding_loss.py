"""The token-to-region grounding loss: FILIP's token-wise best match, contrasted over the batch."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from polymodal.modules.losses.grounding import grounding_loss, token_max_similarity


def _inputs(rows: int = 4, tokens: int = 3, keys: int = 5, dim: int = 6, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    query_mask = torch.ones(rows, tokens, dtype=torch.bool)
    query_mask[-1, 2:] = False
    key_mask = torch.ones(rows, keys, dtype=torch.bool)
    key_mask[0, 3:] = False
    return torch.randn(rows, tokens, dim, generator=g), query_mask, torch.randn(rows, keys, dim, generator=g), key_mask


def test_similarity_is_each_real_tokens_best_real_key_averaged() -> None:
    q, qm, k, km = _inputs()
    sim = token_max_similarity(q, qm, k, km)
    for i in range(4):
        for j in range(4):
            words, cells = F.normalize(q[i][qm[i]], dim=-1), F.normalize(k[j][km[j]], dim=-1)
            torch.testing.assert_close(sim[i, j], (words @ cells.T).amax(1).mean())


def test_texts_made_of_their_own_clips_cells_score_lowest() -> None:
    q, qm, k, km = _inputs()
    grounded = k[:, :3].clone()  # each text's tokens are cells of its own clip
    qm = torch.ones(4, 3, dtype=torch.bool)
    own = grounding_loss(grounded, qm, k, km)
    shuffled = grounding_loss(grounded[[1, 2, 3, 0]], qm, k, km)
    assert own < 0.1 < shuffled


def test_a_direction_every_key_shares_changes_nothing() -> None:
    q, qm, k, km = _inputs()
    shared = 5.0 * torch.randn(6)
    torch.testing.assert_close(grounding_loss(q, qm, k + shared, km), grounding_loss(q, qm, k, km))


def test_pairs_from_the_same_source_are_not_negatives() -> None:
    q, qm, k, km = _inputs(rows=2)
    both = torch.tensor([[False, True], [True, False]])
    loss = grounding_loss(q, qm, k, km, same_source=both)
    torch.testing.assert_close(loss, torch.tensor(0.0))  # each row's only candidate is its own clip
    assert grounding_loss(q, qm, k, km) > 0


def test_one_row_gives_a_zero_that_keeps_the_graph_and_bad_calls_are_refused() -> None:
    q, qm, k, km = _inputs(rows=1)
    q.requires_grad_(True)
    loss = grounding_loss(q, qm, k, km)
    loss.backward()
    assert loss.item() == 0.0 and q.grad is not None
    q, qm, k, km = _inputs()
    with pytest.raises(ValueError, match="3 key rows"):
        grounding_loss(q, qm, k[:3], km[:3])
    with pytest.raises(ValueError, match="temperature"):
        grounding_loss(q, qm, k, km, temperature=0.0)
