"""Frozen encoders: they stay in eval mode, and a CachedEncoder wrapping one memoises its outputs per input sample."""

from __future__ import annotations

import copy
import gc
import weakref

import pytest
import torch

from polymodal.config import ConfigError
from polymodal.modules.encoders import (
    ConvImageEncoder,
    EfficientNetLite0,
    Encoder,
    EncoderOutput,
    TransformerTextEncoder,
)
from polymodal.modules.encoders.cache import CachedEncoder, FeatureCache


def frozen_efficientnet(seed: int = 0) -> EfficientNetLite0:
    torch.manual_seed(seed)
    encoder = EfficientNetLite0()
    encoder.freeze(0)
    return encoder


def cached(encoder: Encoder, max_items: int) -> CachedEncoder:
    """What ``cache_towers`` puts in a model in place of a frozen tower."""
    return CachedEncoder(encoder, FeatureCache.for_encoder(encoder, max_items))


def test_a_frozen_encoder_stays_in_eval_mode_and_keeps_its_batchnorm_statistics() -> None:
    encoder = frozen_efficientnet()
    stats = encoder._bn0.running_mean.clone()
    encoder.train()  # what a trainer does to the whole model every step
    assert not encoder.training and not any(m.training for m in encoder.modules())
    encoder(torch.randn(4, 3, 32, 32) * 5)
    torch.testing.assert_close(encoder._bn0.running_mean, stats, rtol=0, atol=0)
    wrapper = cached(encoder, 10)
    wrapper.train()  # the wrapper is as frozen as its tower: it stays in eval mode too, and keeps the statistics
    assert wrapper.frozen and not any(m.training for m in wrapper.modules())
    wrapper(torch.randn(4, 3, 32, 32) * 5)
    torch.testing.assert_close(encoder._bn0.running_mean, stats, rtol=0, atol=0)
    encoder.unfreeze()
    encoder.train()
    assert encoder.training
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
    wrapper = cached(encoder, 100)
    cache = wrapper.store
    assert (wrapper.modality, wrapper.output_dim, wrapper.blocks()) == (
        encoder.modality,
        encoder.output_dim,
        encoder.blocks(),
    )
    first = wrapper(x)
    order = torch.tensor([5, 0, 3, 3, 1, 2, 4])  # shuffled, with a repeat
    again = wrapper(x[order])
    assert (cache.misses, cache.hits, len(cache)) == (6, 7, 6)
    torch.testing.assert_close(first.tokens, reference.tokens, rtol=0, atol=0)
    torch.testing.assert_close(again.tokens, reference.tokens[order], rtol=0, atol=0)
    torch.testing.assert_close(again.pooled, reference.pooled[order], rtol=0, atol=0)
    assert again.mask is None and first.grid == again.grid == reference.grid == (2, 2)  # all stored, grid kept
    new = torch.randn(2, 3, 64, 64)
    mixed = wrapper(torch.cat([x[:1], new]))  # one stored sample, two new ones: only the new ones are computed
    assert cache.misses == 8
    torch.testing.assert_close(mixed.tokens[1:], encoder(new).tokens)  # the tower itself is not cached


def test_the_store_is_bounded_and_evicts_the_least_recently_used() -> None:
    wrapper = cached(frozen_efficientnet(seed=11), 3)
    cache = wrapper.store
    xs = torch.randn(4, 1, 3, 32, 32)
    for x in xs[:3]:
        wrapper(x)
    wrapper(xs[0])  # the first is now the most recent
    wrapper(xs[3])  # evicts the second
    assert len(cache) == 3
    misses = cache.misses
    wrapper(xs[0])
    assert cache.misses == misses
    wrapper(xs[1])
    assert cache.misses == misses + 1


def test_text_masks_are_part_of_the_key_and_returned() -> None:
    torch.manual_seed(0)
    encoder = TransformerTextEncoder(vocab_size=50, width=32, depth=1, heads=2, max_length=8)
    encoder.freeze(0)
    ids = torch.randint(4, 50, (2, 6))
    mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    reference = encoder(ids, mask)
    wrapper = cached(encoder, 10)
    out = wrapper(ids, mask)
    torch.testing.assert_close(out.pooled, reference.pooled, rtol=0, atol=0)
    assert torch.equal(out.mask, mask)
    other = wrapper(ids, torch.ones_like(mask))  # same ids, different mask: a different sample
    assert wrapper.store.misses == 3
    assert not torch.allclose(other.pooled[1], reference.pooled[1])


def test_autocast_and_plain_calls_are_stored_apart() -> None:
    wrapper = cached(frozen_efficientnet(seed=12), 10)
    x = torch.randn(2, 3, 32, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = wrapper(x)
    full = wrapper(x)
    assert low.tokens.dtype == torch.bfloat16 and full.tokens.dtype == torch.float32
    assert wrapper.store.misses == 4


def test_encoders_with_the_same_weights_share_one_store() -> None:
    a, b, other = (cached(frozen_efficientnet(seed), 10) for seed in (13, 13, 14))
    assert a.store is b.store and a.store is not other.store
    x = torch.randn(2, 3, 32, 32)
    a(x)
    misses = b.store.misses
    b(x)  # computed by a: a hit for b
    assert b.store.misses == misses
    assert FeatureCache.for_encoder(b.inner, 50) is b.store and b.store.max_items == 50  # the largest bound asked for


def test_a_store_outlives_its_encoders_only_inside_keep_alive() -> None:
    x = torch.randn(2, 3, 32, 32)

    def run_once() -> FeatureCache:  # one job of a chain: builds its model, uses it, drops it
        wrapper = cached(frozen_efficientnet(21), 10)
        wrapper(x)
        return wrapper.store

    with FeatureCache.keep_alive():
        first = weakref.ref(run_once())  # weak: only the block may keep the store alive
        gc.collect()
        assert first() is not None
        second = run_once()  # the next job on the same weights: served from the first job's store
        assert second is first() and (second.misses, second.hits) == (2, 2)
        del second
        with FeatureCache.keep_alive():  # a nested block ending does not release the outer one's stores
            pass
        gc.collect()
        assert first() is not None and run_once() is first()
    gc.collect()
    assert first() is None  # after the block the store went with its last encoder
    assert run_once().misses == 2


def test_only_a_frozen_encoder_caches() -> None:
    encoder = ConvImageEncoder(widths=[8, 16], depths=[1, 1])
    with pytest.raises(ValueError, match="only a frozen encoder"):
        FeatureCache.for_encoder(encoder, 10)
    with pytest.raises(ValueError, match="only a frozen encoder"):
        CachedEncoder(encoder, FeatureCache(10))
    encoder.freeze(0)
    wrapper = cached(encoder, 10)
    for p in encoder.parameters():  # unfrozen behind the cache's back
        p.requires_grad_(True)
    with pytest.raises(RuntimeError, match="must stay frozen"):
        wrapper(torch.randn(1, 3, 32, 32))
    encoder.freeze(0)
    wrapper.unfreeze()  # through the wrapper: the same parameters
    assert not encoder.frozen
    with pytest.raises(RuntimeError, match="must stay frozen"):
        wrapper(torch.randn(1, 3, 32, 32))
    with pytest.raises(ValueError, match="max_items"):
        FeatureCache(0)


def test_outputs_stored_under_inference_mode_never_reach_a_training_step() -> None:
    wrapper = cached(frozen_efficientnet(seed=15), 10)
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():  # an evaluation in the same process, on the same weights
        wrapper(x)
    head = torch.nn.Linear(1280, 1)
    head(wrapper(x).pooled).sum().backward()  # an inference tensor here would fail in backward
    assert head.weight.grad is not None and wrapper.store.misses == 2 * 2


def test_a_batch_larger_than_the_store_is_still_answered_in_full() -> None:
    encoder = frozen_efficientnet(seed=16)
    x = torch.randn(5, 3, 32, 32)
    reference = encoder(x)
    wrapper = cached(encoder, 2)
    out = wrapper(x)  # storing five samples in a store of two evicts three of them on the way
    # Computed in the call sizes the store measures fastest (4 + 1 here): equal up to batch-composition rounding.
    torch.testing.assert_close(out.pooled, reference.pooled)
    assert len(wrapper.store) == 2


def test_repeats_in_a_batch_are_computed_once_and_empty_or_grad_inputs_bypass_the_store() -> None:
    wrapper = cached(frozen_efficientnet(seed=17), 10)
    a, b = torch.randn(2, 1, 3, 32, 32)
    out = wrapper(torch.cat([a, a, a, b, a]))
    assert wrapper.store.misses == 2 and wrapper.store.hits == 3
    torch.testing.assert_close(out.pooled[0], out.pooled[4], rtol=0, atol=0)
    assert wrapper(torch.randn(0, 3, 32, 32)).pooled.shape == (0, 1280)
    x = torch.randn(1, 3, 32, 32, requires_grad=True)
    wrapper(x).pooled.sum().backward()  # a saliency map needs the input gradient: computed, not served
    assert x.grad is not None and wrapper.store.misses == 2 and len(wrapper.store) == 2


def test_new_weights_or_settings_never_get_another_encoders_outputs() -> None:
    wrapper = cached(frozen_efficientnet(seed=18), 10)
    old_store = wrapper.store
    x = torch.randn(2, 3, 32, 32)
    old = wrapper(x).pooled
    other = frozen_efficientnet(seed=19)
    wrapper.load_state_dict(other.state_dict())  # the wrapper's keys are the tower's own
    assert wrapper.store is not old_store and wrapper.store is FeatureCache.for_encoder(other, 10)
    torch.testing.assert_close(wrapper(x).pooled, other(x).pooled, rtol=0, atol=0)
    torch.testing.assert_close(wrapper(x).pooled, wrapper.inner(x).pooled, rtol=0, atol=0)
    assert not torch.equal(wrapper(x).pooled, old)  # (random-init outputs are tiny: compare exactly)
    stores = []
    for pooling in ("eos", "mean"):  # same weights, another setting: another store
        torch.manual_seed(0)
        text = TransformerTextEncoder(vocab_size=50, width=32, depth=1, heads=2, max_length=8, pooling=pooling)
        text.freeze(0)
        stores.append(cached(text, 10).store)
    assert stores[0] is not stores[1]


def test_unfrozen_by_hand_trains_normally_and_a_cached_encoder_can_be_copied() -> None:
    wrapper = cached(frozen_efficientnet(seed=20), 10)
    twin = copy.deepcopy(wrapper)  # EMA / SWA copies
    assert twin.store is wrapper.store and twin.inner is not wrapper.inner
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(twin(x).pooled, wrapper(x).pooled, rtol=0, atol=0)
    assert wrapper.store.misses == 1  # the twin computed it, the original was served
    encoder = wrapper.inner  # unwrapped: a plain tower again
    encoder.requires_grad_(True)
    encoder.train()
    assert encoder.training


# -- a cached tower inside a model ---------------------------------------------------------------


def small_embedding_model(seed: int):  # noqa: ANN201
    from polymodal.models import build_preset

    torch.manual_seed(seed)
    return build_preset("shapes-clip", vocab_size=40, image_size=32, max_length=8, image_encoder="cnn", embed_dim=16)


def test_a_model_with_a_cached_tower_saves_and_loads_like_one_without(tmp_path) -> None:
    from polymodal.data.processors import ImageProcessor
    from polymodal.data.transforms import ImagePreprocess
    from polymodal.models import load_model, save_model
    from polymodal.models.transfer import cache_towers, freeze_towers

    model = small_embedding_model(seed=30)
    with pytest.raises(ConfigError, match="only a frozen tower"):
        cache_towers(model, {"encoders.image": 10})
    freeze_towers(model, {"encoders.image": 0})
    keys = {k: v.clone() for k, v in model.state_dict().items()}
    tower = model.encoders["image"]
    cache_towers(model, {"encoders.image": 10})
    wrapper = model.encoders["image"]
    assert (
        isinstance(wrapper, CachedEncoder)
        and wrapper.inner is tower
        and not isinstance(model.encoders["text"], CachedEncoder)
    )
    assert list(model.state_dict()) == list(keys)  # no "inner." anywhere: same names, same order
    assert all(torch.equal(v, keys[k]) for k, v in model.state_dict().items())
    cache_towers(model, {"encoders.image": 10})  # already cached: left as is, not wrapped twice
    assert model.encoders["image"] is wrapper
    model.train()
    assert not wrapper.training and not tower.training and model.encoders["text"].training

    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        served = model.embed("image", x)
        assert wrapper.store.misses == 3
        torch.testing.assert_close(model.embed("image", x), served, rtol=0, atol=0)
        assert wrapper.store.hits == 3
    save_model(tmp_path / "m", model, {"image": ImageProcessor(ImagePreprocess(image_size=32))})
    loaded = load_model(tmp_path / "m").eval()
    assert list(loaded.state_dict()) == list(keys) and not isinstance(loaded.encoders["image"], CachedEncoder)
    with torch.no_grad():  # the store computed in its own call sizes: equal up to batch-composition rounding
        torch.testing.assert_close(loaded.embed("image", x), served)
    # And back: a cached model takes the state dict of an uncached one.
    model.load_state_dict(loaded.state_dict())
    assert model.encoders["image"] is wrapper


def test_loading_other_weights_into_a_cached_model_serves_the_new_weights_outputs() -> None:
    from polymodal.models.transfer import cache_towers, freeze_towers

    model, other = small_embedding_model(seed=31), small_embedding_model(seed=32)
    for m in (model, other):
        freeze_towers(m, {"encoders.image": 0})
        m.eval()
    cache_towers(model, {"encoders.image": 10})
    wrapper = model.encoders["image"]
    old_store = wrapper.store
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        old = model.embed("image", x)
        model.load_state_dict(other.state_dict())  # strict: every key of the uncached model matches
        new = model.embed("image", x)
        expected = other.embed("image", x)
    assert model.encoders["image"] is wrapper and wrapper.store is not old_store
    torch.testing.assert_close(new, expected, rtol=0, atol=0)
    assert not torch.allclose(new, old)
    assert wrapper.store.misses == 2 and old_store.misses == 2  # computed for the new weights, not served the old


class _WindowEncoder(Encoder):
    """A token per 4 real frames, as many as the batch's longest input needs (like a speaker tower's windows)."""

    modality = "audio"
    output_dim = 2

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> EncoderOutput:
        assert mask is not None
        counts = (mask.sum(dim=1) + 3) // 4  # (B,)
        windows = int(counts.max())
        token_mask = torch.arange(windows)[None, :] < counts[:, None]
        tokens = x[:, :2, : windows * 4 : 4].transpose(1, 2) * self.scale  # (B, windows, 2)
        return EncoderOutput(tokens, (tokens * token_mask[..., None]).sum(1), token_mask)


def test_tokens_whose_count_follows_the_batch_are_padded_and_masked() -> None:
    encoder = _WindowEncoder().requires_grad_(False)
    cached = CachedEncoder(encoder, FeatureCache(16))
    x = torch.randn(3, 2, 16)
    mask = torch.zeros(3, 16, dtype=torch.bool)
    for i, n in enumerate((16, 8, 4)):
        mask[i, :n] = True
    cached(x[1:], mask[1:])  # stores samples 1 and 2 from a batch whose longest needs 2 windows
    out, direct = cached(x, mask), encoder(x, mask)  # sample 0 needs 4 windows
    assert out.tokens.shape == direct.tokens.shape == (3, 4, 2)
    assert torch.equal(out.mask, direct.mask)
    assert torch.equal(out.tokens[out.mask], direct.tokens[direct.mask])
    assert torch.allclose(out.pooled, direct.pooled)


def test_new_samples_reach_the_encoder_in_the_call_sizes_the_store_measures() -> None:
    encoder = frozen_efficientnet(seed=40)
    wrapper = cached(encoder, 100)
    calls: list[int] = []
    encoder.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    wrapper.store.call_limit = 4
    x = torch.randn(7, 3, 32, 32)
    out = wrapper(x)
    assert calls == [4, 2, 1]  # explored largest first, 7 new samples each computed once
    (sizer,) = wrapper.store.sizers.values()
    assert wrapper.store.misses == 7 and sizer.measured() == {}  # first calls of a size: warm-up
    with torch.no_grad():
        torch.testing.assert_close(out.pooled, encoder(x).pooled)
    wrapper(torch.randn(7, 3, 32, 32))
    assert set(sizer.measured()) == {1, 2, 4}  # second calls: timed
    calls.clear()
    wrapper(torch.randn(7, 3, 48, 48))  # samples over twice as large: a sizer of their own, warming up
    first, second = wrapper.store.sizers.values()
    assert first is sizer and calls == [4, 2, 1] and second.measured() == {}
    wrapper(torch.randn(7, 3, 34, 34))  # within a factor of two: the first one's
    assert len(wrapper.store.sizers) == 2
