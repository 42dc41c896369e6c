import numpy as np
import pytest

from polymodal.metrics import bleu, bootstrap_ci


def test_mean_ci_is_deterministic_and_covers_the_mean() -> None:
    rng = np.random.default_rng(0)
    values = rng.random(500)
    low, high = bootstrap_ci(values, n_resamples=500, seed=3)
    assert bootstrap_ci(values, n_resamples=500, seed=3) == (low, high)
    assert bootstrap_ci(values, n_resamples=500, seed=4) != (low, high)
    assert low < values.mean() < high
    # Normal approximation: half-width ~ 1.96 * std / sqrt(n).
    half_width = 1.96 * values.std() / np.sqrt(len(values))
    assert (high - low) / 2 == pytest.approx(half_width, rel=0.15)


def test_callable_matches_per_item_form_for_a_mean() -> None:
    values = np.random.default_rng(1).random(200)
    by_values = bootstrap_ci(values, n_resamples=300, seed=0)
    by_callable = bootstrap_ci(lambda idx: float(values[idx].mean()), n_items=200, n_resamples=300, seed=0)
    # Both draw all resample indices from the same generator, but in different batch
    # shapes, so the intervals agree statistically rather than bit for bit.
    assert by_callable == pytest.approx(by_values, abs=0.02)


def test_corpus_metric_via_resampled_ids() -> None:
    refs = {i: ["a dog runs in the park", "a dog is running"] for i in range(30)}
    preds = {i: "a dog runs" if i % 2 else "a cat sleeps on the sofa" for i in range(30)}
    ids = list(refs)

    def bleu4(idx: np.ndarray) -> float:
        # Re-key by position so duplicated ids count twice.
        return bleu({p: refs[ids[i]] for p, i in enumerate(idx)}, {p: preds[ids[i]] for p, i in enumerate(idx)})[3]

    low, high = bootstrap_ci(bleu4, n_items=len(ids), n_resamples=100, seed=0)
    assert low <= bleu4(np.arange(len(ids))) <= high
    assert low < high


def test_bad_arguments_are_explained() -> None:
    with pytest.raises(ValueError, match="n_items"):
        bootstrap_ci(lambda idx: 0.0)
    with pytest.raises(ValueError, match="alpha"):
        bootstrap_ci([1.0, 2.0], alpha=1.5)
