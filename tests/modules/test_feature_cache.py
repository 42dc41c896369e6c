"""Frozen encoders: they stay in eval mode, and their outputs can be cached per input sample."""

from __future__ import annotations

import pytest
import torch

from polymodal.modules.encoders import ConvImageEncoder, EfficientNetLite0, TransformerTextEncoder
from polymodal.modules.encoders.cache import FeatureCache


def frozen_efficientnet(seed: int = 0) -> EfficientNetLite0:
    torch.manual_seed(seed)
    encoder = EfficientNetLite0()
    encoder.freeze(0)
    return encoder


def test_a_frozen_encoder_stays_in_eval_mode_and_keeps_its_batchnorm_statistics() -> None:
    encoder = frozen_efficientnet()
    stats = encoder._bn0.running_mean.clone()
    encoder.train()  # what a trainer does to the whole model every step
    assert not encoder.training and not any(m.training for m in encoder.modules())
    encoder(torch.randn(4, 3, 32, 32) * 5)
    torch.testing.assert_close(encoder._bn0.running_mean, stats, rtol=0, atol=0)
    encoder.unfreeze()
    encoder.train()
    assert encoder.training and encoder.feature_cache is None
    encoder(torch.randn(4, 3, 32, 32) * 5)
    assert not torch.equal(encoder._bn0.running_mean, stats)  # training again: statistics move


def test_partly_unfrozen_encoder_still_trains_in_train_mode() -> None:
    encoder = EfficientNetLite0()
    encoder.freeze(unfreeze_last=2)
    encoder.train()
    assert not encoder.frozen and encoder.training


def test_cached_outputs_equal_the_encoder_and_cost_one_pass_per_distinct_input() -> None:
    encoder = frozen_efficientnet(seed=10)  # stores are shared by weights: each test its own weights
    x = torch.randn(6, 3, 64, 64)
    reference = encoder(x)
    encoder.cache_outputs(100)
    cache = encoder.feature_cache
    first = encoder(x)
    order = torch.tensor([5, 0, 3, 3, 1, 2, 4])  # shuffled, with a repeat
    again = encoder(x[order])
    assert (cache.misses, cache.hits, len(cache)) == (6, 7, 6)
    torch.testing.assert_close(first.tokens, reference.tokens, rtol=0, atol=0)
    torch.testing.assert_close(again.tokens, reference.tokens[order], rtol=0, atol=0)
    torch.testing.assert_close(again.pooled, reference.pooled[order], rtol=0, atol=0)
    assert again.mask is None and first.grid == again.grid == reference.grid == (2, 2)  # all stored, grid kept
    new = torch.randn(2, 3, 64, 64)
    mixed = encoder(torch.cat([x[:1], new]))  # one stored sample, two new ones: only the new ones are computed
    assert cache.misses == 8
    torch.testing.assert_close(mixed.tokens[1:], encoder.__class__.forward(encoder, new).tokens)


def test_the_store_is_bounded_and_evicts_the_least_recently_used() -> None:
    encoder = frozen_efficientnet(seed=11)
    encoder.cache_outputs(3)
    cache = encoder.feature_cache
    xs = torch.randn(4, 1, 3, 32, 32)
    for x in xs[:3]:
        encoder(x)
    encoder(xs[0])  # the first is now the most recent
    encoder(xs[3])  # evicts the second
    assert len(cache) == 3
    misses = cache.misses
    encoder(xs[0])
    assert cache.misses == misses
    encoder(xs[1])
    assert cache.misses == misses + 1


def test_text_masks_are_part_of_the_key_and_returned() -> None:
    torch.manual_seed(0)
    encoder = TransformerTextEncoder(vocab_size=50, width=32, depth=1, heads=2, max_length=8)
    encoder.freeze(0)
    ids = torch.randint(4, 50, (2, 6))
    mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    reference = encoder(ids, mask)
    encoder.cache_outputs(10)
    out = encoder(ids, mask)
    torch.testing.assert_close(out.pooled, reference.pooled, rtol=0, atol=0)
    assert torch.equal(out.mask, mask)
    other = encoder(ids, torch.ones_like(mask))  # same ids, different mask: a different sample
    assert encoder.feature_cache.misses == 3
    assert not torch.allclose(other.pooled[1], reference.pooled[1])


def test_autocast_and_plain_calls_are_stored_apart() -> None:
    encoder = frozen_efficientnet(seed=12)
    encoder.cache_outputs(10)
    x = torch.randn(2, 3, 32, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = encoder(x)
    full = encoder(x)
    assert low.tokens.dtype == torch.bfloat16 and full.tokens.dtype == torch.float32
    assert encoder.feature_cache.misses == 4


def test_encoders_with_the_same_weights_share_one_store() -> None:
    a, b, other = frozen_efficientnet(13), frozen_efficientnet(13), frozen_efficientnet(14)
    for encoder in (a, b, other):
        encoder.cache_outputs(10)
    assert a.feature_cache is b.feature_cache and a.feature_cache is not other.feature_cache
    x = torch.randn(2, 3, 32, 32)
    a(x)
    misses = b.feature_cache.misses
    b(x)  # computed by a: a hit for b
    assert b.feature_cache.misses == misses


def test_a_store_outlives_its_encoders_only_inside_keep_alive() -> None:
    import gc

    x = torch.randn(2, 3, 32, 32)

    def run_once() -> FeatureCache:  # one job of a chain: builds its model, uses it, drops it
        encoder = frozen_efficientnet(21)
        encoder.cache_outputs(10)
        encoder(x)
        return encoder.feature_cache

    with FeatureCache.keep_alive():
        first = run_once()
        gc.collect()
        second = run_once()  # the next job on the same weights: served from the first job's store
        assert second is first and (first.misses, first.hits) == (2, 2)
        with FeatureCache.keep_alive():  # a nested block ending does not release the outer one's stores
            pass
        gc.collect()
        assert run_once() is first
    del first, second
    gc.collect()
    assert run_once().misses == 2  # after the block the store went with its last encoder


def test_only_a_frozen_encoder_caches() -> None:
    encoder = ConvImageEncoder(widths=[8, 16], depths=[1, 1])
    with pytest.raises(ValueError, match="only a frozen encoder"):
        encoder.cache_outputs(10)
    encoder.freeze(0)
    encoder.cache_outputs(10)
    for p in encoder.parameters():  # unfrozen behind the cache's back
        p.requires_grad_(True)
    with pytest.raises(RuntimeError, match="must stay frozen"):
        encoder(torch.randn(1, 3, 32, 32))
    with pytest.raises(ValueError, match="max_items"):
        FeatureCache(0)


def test_outputs_stored_under_inference_mode_never_reach_a_training_step() -> None:
    encoder = frozen_efficientnet(seed=15)
    encoder.cache_outputs(10)
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():  # an evaluation in the same process, on the same weights
        encoder(x)
    head = torch.nn.Linear(1280, 1)
    head(encoder(x).pooled).sum().backward()  # an inference tensor here would fail in backward
    assert head.weight.grad is not None and encoder.feature_cache.misses == 2 * 2


def test_a_batch_larger_than_the_store_is_still_answered_in_full() -> None:
    encoder = frozen_efficientnet(seed=16)
    x = torch.randn(5, 3, 32, 32)
    reference = encoder(x)
    encoder.cache_outputs(2)
    out = encoder(x)  # storing five samples in a store of two evicts three of them on the way
    torch.testing.assert_close(out.pooled, reference.pooled, rtol=0, atol=0)
    assert len(encoder.feature_cache) == 2


def test_repeats_in_a_batch_are_computed_once_and_empty_or_grad_inputs_bypass_the_store() -> None:
    encoder = frozen_efficientnet(seed=17)
    encoder.cache_outputs(10)
    a, b = torch.randn(2, 1, 3, 32, 32)
    out = encoder(torch.cat([a, a, a, b, a]))
    assert encoder.feature_cache.misses == 2 and encoder.feature_cache.hits == 3
    torch.testing.assert_close(out.pooled[0], out.pooled[4], rtol=0, atol=0)
    assert encoder(torch.randn(0, 3, 32, 32)).pooled.shape == (0, 1280)
    x = torch.randn(1, 3, 32, 32, requires_grad=True)
    encoder(x).pooled.sum().backward()  # a saliency map needs the input gradient: computed, not served
    assert x.grad is not None and encoder.feature_cache.misses == 2


def test_new_weights_or_settings_never_get_another_encoders_outputs() -> None:
    encoder = frozen_efficientnet(seed=18)
    encoder.cache_outputs(10)
    x = torch.randn(2, 3, 32, 32)
    old = encoder(x).pooled
    encoder.load_state_dict(frozen_efficientnet(seed=19).state_dict())
    torch.testing.assert_close(encoder(x).pooled, EfficientNetLite0.forward(encoder, x).pooled, rtol=0, atol=0)
    assert not torch.equal(encoder(x).pooled, old)  # (random-init outputs are tiny: compare exactly)
    texts = []
    for pooling in ("eos", "mean"):  # same weights, another setting: another store
        torch.manual_seed(0)
        text = TransformerTextEncoder(vocab_size=50, width=32, depth=1, heads=2, max_length=8, pooling=pooling)
        text.freeze(0)
        text.cache_outputs(10)
        texts.append(text)
    assert texts[0].feature_cache is not texts[1].feature_cache


def test_unfrozen_by_hand_trains_normally_and_a_cached_encoder_can_be_copied() -> None:
    import copy

    encoder = frozen_efficientnet(seed=20)
    encoder.cache_outputs(10)
    twin = copy.deepcopy(encoder)  # EMA / SWA copies
    assert twin.feature_cache is encoder.feature_cache
    encoder.feature_cache = None
    encoder.requires_grad_(True)
    encoder.train()
    assert encoder.training
