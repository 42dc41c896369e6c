"""TransformerDecoder's own parts: the layout of its KV cache.

What every registered decoder obeys (teacher forcing equals stepping, masks, padding, every generation
strategy against slow references) is tested once for all of them in ``test_generation_contract.py``.
"""

from __future__ import annotations

import torch

from polymodal.modules.heads.decoder import DecoderCache
from tests.modules.test_generation_contract import memory_batch, tiny_decoder


def test_kv_cache_projects_the_memory_once_and_grows_by_the_new_positions() -> None:
    decoder = tiny_decoder("transformer")  # width 16, 2 heads (head_dim 8), 2 blocks
    memory, mask = memory_batch()  # (B=3, S=5, 8)
    cache = decoder.init_cache(memory, mask)
    assert isinstance(cache, DecoderCache) and cache.length == 0 and len(cache.layers) == 2
    for block, layer in zip(decoder.blocks, cache.layers):
        assert layer.cross_k.shape == layer.cross_v.shape == (3, 2, 5, 8)  # (B, H, S, head_dim)
        k, v = block.cross_attn.keys_values(memory)
        assert torch.equal(layer.cross_k, k) and torch.equal(layer.cross_v, v)
        assert layer.self_k is None and layer.self_v is None  # nothing decoded yet
    cross = [(layer.cross_k, layer.cross_v) for layer in cache.layers]
    ids = torch.randint(3, 12, (3, 4))
    _, cache = decoder.forward_step(ids[:, :3], memory, mask, cache)
    _, cache = decoder.forward_step(ids[:, 3:], memory, mask, cache)
    assert cache.length == 4
    for layer, (k, v) in zip(cache.layers, cross):
        assert layer.cross_k is k and layer.cross_v is v  # projected on the first step only, then carried
        assert layer.self_k.shape == layer.self_v.shape == (3, 2, 4, 8)  # (B, H, positions so far, head_dim)
    # Beam search moves rows: every cached tensor keeps its batch in dim 0.
    rows = torch.tensor([2, 0, 0])
    moved = cache.reorder(rows)
    assert moved.length == 4
    for old, new in zip(cache.layers, moved.layers):
        for field in ("cross_k", "cross_v", "self_k", "self_v"):
            assert torch.equal(getattr(new, field), getattr(old, field)[rows]), field
