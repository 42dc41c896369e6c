"""The chunk sizer: which call size a model's media embeddings take, learned from timed calls."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import polymodal
from polymodal.chunking import ChunkSizer


def run(sizer: ChunkSizer, items: int, seconds_per_item: dict[int, float]) -> list[int]:
    """The call sizes ``sizer`` picks for ``items`` items, each call reported as taking its size's cost."""
    calls = []
    while items:
        size = sizer.next_size(items)
        calls.append(size)
        sizer.record(size, size * seconds_per_item.get(size, 1.0))
        items -= size
    return calls


def test_explores_each_size_largest_first_then_takes_the_fastest_per_item() -> None:
    sizer = ChunkSizer(8, samples=2)
    assert sizer.sizes == [1, 2, 4, 8] and sizer.best() is None
    cost = {8: 3.0, 4: 1.0, 2: 2.0, 1: 5.0}  # seconds per item: 4 is the fastest
    calls = run(sizer, 8 * 3 + 4 * 3 + 2 * 3 + 1 * 3 + 20, cost)
    assert calls[:12] == [8] * 3 + [4] * 3 + [2] * 3 + [1] * 3  # one warm-up and two timed calls each
    assert calls[12:] == [4] * 5 and sizer.best() == 4
    assert sizer.measured() == {1: 0.2, 2: 0.5, 4: 1.0, 8: 1 / 3}


def test_warm_up_calls_and_remainders_do_not_count() -> None:
    sizer = ChunkSizer(6, samples=1)
    assert sizer.sizes == [1, 2, 4, 6]  # the limit itself is a size even when it is no power of two
    sizer.record(6, 0.001)  # a first call builds kernels: fast or slow, it is not a measurement
    assert sizer.best() is None
    sizer.record(6, 6.0)
    sizer.record(3, 0.0)  # a remainder (no candidate size)
    assert sizer.measured() == {6: 1.0}
    assert sizer.next_size(3) == 2  # explores what a small call can fill
    with pytest.raises(ValueError, match="limit must be >= 1"):
        ChunkSizer(0)


def test_a_call_explores_only_sizes_it_can_fill_and_later_calls_the_rest() -> None:
    sizer = ChunkSizer(32, samples=1)
    cost = {1: 4.0, 2: 3.0, 4: 2.0, 8: 1.5, 16: 0.5, 32: 1.0}
    for _ in range(4):  # calls of 8 items, as a server with 8 clients gets them
        run(sizer, 8, cost)
    assert sizer.best() == 8 and set(sizer.measured()) == {1, 2, 4, 8}
    run(sizer, 32 * 2 + 16 * 2, cost)  # then calls of more items time the larger sizes too
    assert sizer.best() == 16 and run(sizer, 40, cost) == [16, 16, 8]


def cost_of(calls: list[int], seconds_per_item: dict[int, float]) -> float:
    return sum(size * seconds_per_item[size] for size in calls)


def test_a_drift_carries_over_to_the_other_sizes_and_a_moved_fastest_size_is_found() -> None:
    """Other processes start (or stop) loading the cores: the chosen size's time per item moves, the other sizes'
    timings are scaled alike, and the sizes beside it, timed again, show where the fastest size moved."""
    sizer = ChunkSizer(8, samples=2, recheck=5)
    quiet = {8: 1.0, 4: 0.5, 2: 0.8, 1: 2.0}
    run(sizer, 8 * 3 + 4 * 3 + 2 * 3 + 1 * 3 + 40, quiet)
    assert sizer.best() == 4 and sizer.drifted == 0
    run(sizer, 40, {size: cost * 1.3 for size, cost in quiet.items()})  # within the drift: kept
    run(sizer, 4 * 1, {4: 5.0})  # one slow call (descheduled) is not a drift
    run(sizer, 4 * 2, quiet)
    assert sizer.best() == 4 and sizer.drifted == 0
    busy = {8: 3.0, 4: 2.0, 2: 1.5, 1: 4.0}  # 4x slower at 4, and now 2 is the fastest
    calls = run(sizer, 100, busy)
    assert sizer.drifted == 1 and sizer.best() == 2
    # Two drifted calls; the re-checks, spaced out while 4 held, come again within 4 x recheck calls.
    assert calls[:2] == [4, 4] and calls.index(2) <= 2 + 4 * 5 + 2
    assert sizer.measured()[2] == pytest.approx(1 / 1.5)
    calls = run(sizer, 100, quiet)  # the load goes away: 2 is 1.9x faster than when chosen
    assert sizer.drifted == 2 and sizer.best() == 4 and calls[-20:].count(4) >= 15
    with pytest.raises(ValueError, match="drift must be > 1"):
        ChunkSizer(8, drift=1.0)
    with pytest.raises(ValueError, match="samples and recheck must be >= 1"):
        ChunkSizer(8, samples=0)


def test_a_load_that_comes_and_goes_costs_little() -> None:
    """Every change of load drifts, but only rescales the timings: no size is timed for it."""
    sizer = ChunkSizer(8)
    quiet = {8: 0.7, 4: 0.5, 2: 0.6, 1: 2.0}  # 2 close behind 4
    run(sizer, 200, quiet)
    spent = fastest = 0.0
    for phase in range(60):  # 3x slower every other 20 calls of 4: the fastest size stays 4
        cost = quiet if phase % 2 == 0 else {size: 3 * c for size, c in quiet.items()}
        calls = run(sizer, 4 * 20, cost)
        spent, fastest = spent + cost_of(calls, cost), fastest + 4 * 20 * cost[4]
    assert sizer.best() == 4 and sizer.drifted >= 50
    assert spent <= 1.03 * fastest


def test_the_sizes_beside_the_chosen_one_are_timed_again_less_often_while_it_stays() -> None:
    """One unlucky exploration (a burst of load, kernels still warming) must not hold for good."""
    sizer = ChunkSizer(8, samples=2, recheck=5)
    unlucky = {8: 3.0, 4: 1.0, 2: 0.9, 1: 2.0}  # 8 measured slow while exploring
    run(sizer, 8 * 3 + 4 * 3 + 2 * 3 + 1 * 3, unlucky)
    assert sizer.best() == 2
    steady = {8: 0.5, 4: 0.8, 2: 0.9, 1: 2.0}  # 8 is the fastest in truth
    calls = run(sizer, 100, steady)
    assert calls[:7] == [2] * 5 + [4, 1]  # one more call each for the sizes beside 2: 4 wins
    assert calls[7:14] == [4] * 5 + [8, 2] and sizer.best() == 8  # and 5 calls later, 8 beside it
    later = run(sizer, 8 * 200, steady)  # 8 from now on; 4 after 5, 10, 20, 40, 80 calls of 8
    assert later.count(4) <= 5 and sizer.best() == 8 and sizer.drifted == 0


def test_model_embeds_images_in_learned_chunks_with_rows_in_order(tiny_dual_encoder_dir) -> None:  # noqa: ANN001
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (20, 24, 3), dtype=np.uint8) for _ in range(31)]
    model = polymodal.load(tiny_dual_encoder_dir, batch_size=4)
    sized = model.embed_image(images)
    sizer = model.chunk_sizers["image"]
    assert set(sizer.measured()) == {1, 2, 4}  # 31 items: 4 calls each of 4, 2 and 1 (a warm-up, 3 timed), 3 more
    alone = np.concatenate([model.embed_image(image) for image in images[:5]])
    np.testing.assert_allclose(sized[:5], alone, atol=1e-5)
    np.testing.assert_allclose(model.embed_image(images), sized, atol=1e-5)
    assert "text" not in model.chunk_sizers  # texts are batched by token count


def test_call_sizes_are_learned_per_thread_count(tiny_dual_encoder_dir) -> None:  # noqa: ANN001
    """A server's thread budget follows the load; a size timed at one thread count says little about another."""
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (20, 24, 3), dtype=np.uint8) for _ in range(12)]
    model = polymodal.load(tiny_dual_encoder_dir, batch_size=4)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        model.embed_image(images)
        at_two = model.chunk_sizers["image"]
        torch.set_num_threads(1)
        model.embed_image(images)
        at_one = model.chunk_sizers["image"]
        assert at_one is not at_two and at_one.measured()  # learned anew at one thread
        torch.set_num_threads(2)
        model.embed_image(images[:1])
        assert model.chunk_sizers["image"] is at_two  # back at two threads: what was learned there
    finally:
        torch.set_num_threads(before)


def test_load_frees_the_loading_threads_idle_openmp_workers(tiny_dual_encoder_dir, monkeypatch) -> None:  # noqa: ANN001
    """A model loaded in one thread and used from another (a web framework's worker) must not run at half speed."""
    import polymodal.api.model as api_model

    calls: list[bool] = []
    monkeypatch.setattr(api_model, "release_idle_threads", lambda: calls.append(True) or True)
    polymodal.load(tiny_dual_encoder_dir)
    assert calls == [True]
