"""Fréchet distance against independent references (closed form, scipy.linalg.sqrtm), CLIP score arithmetic and
the scene scores of generated images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import linalg

from polymodal.metrics.generation import (
    clip_score,
    clip_scores,
    feature_statistics,
    frechet_distance,
    frechet_distance_of_features,
    scene_scores,
)


def _random_covariance(rng: np.random.Generator, d: int, rank: int | None = None) -> np.ndarray:
    a = rng.normal(size=(d, rank or d))
    return a @ a.T / (rank or d)


def _sqrtm_reference(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray) -> float:
    """The usual implementation (pytorch-fid): scipy's sqrtm of S1 S2, its imaginary rounding dropped."""
    covmean = linalg.sqrtm(s1 @ s2)
    covmean = covmean.real if np.iscomplexobj(covmean) else covmean
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def test_diagonal_covariances_match_the_closed_form() -> None:
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    v1, v2 = rng.uniform(0.1, 3.0, size=6), rng.uniform(0.1, 3.0, size=6)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2)
    assert frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("d", [2, 16, 64])
def test_full_covariances_match_scipy_sqrtm(d: int) -> None:
    rng = np.random.default_rng(d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d) * 0.5
    s1, s2 = _random_covariance(rng, d), _random_covariance(rng, d)
    value = frechet_distance(mu1, s1, mu2, s2)
    assert value == pytest.approx(_sqrtm_reference(mu1, s1, mu2, s2), rel=1e-7)
    assert value == pytest.approx(frechet_distance(mu2, s2, mu1, s1), rel=1e-9)  # symmetric


def test_identical_statistics_give_zero_and_a_shift_gives_its_squared_length() -> None:
    rng = np.random.default_rng(1)
    features = rng.normal(size=(200, 8))
    mu, sigma = feature_statistics(features)
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-9)
    shifted = features + np.arange(8)  # same covariance, mean moved by (0, 1, ..., 7)
    assert frechet_distance_of_features(features, shifted) == pytest.approx(float(np.sum(np.arange(8) ** 2)))


def test_rank_deficient_covariances_from_fewer_samples_than_dimensions() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(10, 40)), rng.normal(size=(12, 40)) + 0.3
    mu1, s1 = feature_statistics(a)
    mu2, s2 = feature_statistics(b)
    assert np.linalg.matrix_rank(s1) < 40  # N - 1 = 9
    value = frechet_distance(mu1, s1, mu2, s2)
    assert np.isfinite(value) and value > 0
    # The reference needs pytorch-fid's eps on the diagonal here; both agree as eps goes to zero.
    eps = 1e-8 * np.eye(40)
    assert value == pytest.approx(_sqrtm_reference(mu1, s1 + eps, mu2, s2 + eps), rel=1e-4)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-8)


def test_feature_statistics_match_numpy_and_reject_bad_input() -> None:
    x = torch.randn(50, 5)
    mu, sigma = feature_statistics(x)
    assert np.allclose(mu, x.numpy().mean(0)) and np.allclose(sigma, np.cov(x.numpy().T))
    with pytest.raises(ValueError, match="at least 2"):
        feature_statistics(np.zeros((1, 5)))
    with pytest.raises(ValueError, match="NaN"):
        feature_statistics(np.full((3, 2), np.nan))
    with pytest.raises(ValueError, match="one D"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


def test_clip_score_is_100_times_the_clipped_cosine() -> None:
    images = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    texts = np.array([[3.0, 0.0], [0.0, -1.0], [1.0, 0.0]])  # cosines 1, -1 (clipped to 0), 1/sqrt(2)
    assert clip_scores(images, texts) == pytest.approx([100.0, 0.0, 100 / np.sqrt(2)])
    assert clip_score(images, texts) == pytest.approx((100.0 + 100 / np.sqrt(2)) / 3)
    with pytest.raises(ValueError, match="paired"):
        clip_score(images, texts[:2])


PROMPT = [("top left", "red", "circle"), ("center", "blue", "square")]


def test_scene_scores_of_a_perfect_reading() -> None:
    scores = scene_scores([PROMPT], [PROMPT])
    assert {k: scores[k] for k in scores if k.endswith("accuracy") or k == "all_correct"} == dict.fromkeys(
        [
            "count_accuracy",
            "all_correct",
            "cell_accuracy",
            "color_accuracy",
            "shape_accuracy",
            "present_accuracy",
            "position_accuracy",
        ],
        1.0,
    )
    assert scores["images"] == 1 and scores["objects"] == 2


def test_each_mistake_lowers_the_metric_it_concerns() -> None:
    wrong_colour = [("top left", "green", "circle"), ("center", "blue", "square")]
    s = scene_scores([wrong_colour], [PROMPT])
    assert (s["color_accuracy"], s["shape_accuracy"], s["position_accuracy"], s["present_accuracy"]) == (
        0.5,
        1.0,
        0.5,
        0.5,
    )
    assert s["count_accuracy"] == 1.0 and s["all_correct"] == 0.0 and s["cell_accuracy"] == 1.0  # layout right

    missing = [("center", "blue", "square")]
    s = scene_scores([missing], [PROMPT])
    assert s["count_accuracy"] == 0.0 and s["color_accuracy"] == 0.5 and s["shape_accuracy"] == 0.5
    assert s["all_correct"] == 0.0 and s["cell_accuracy"] == 0.5

    extra = [*PROMPT, ("bottom right", "pink", "heart")]
    s = scene_scores([extra], [PROMPT])
    assert s["count_accuracy"] == 0.0 and s["all_correct"] == 0.0
    assert s["color_accuracy"] == s["shape_accuracy"] == s["position_accuracy"] == 1.0

    moved = [("top right", "red", "circle"), ("center", "blue", "square")]
    s = scene_scores([moved], [PROMPT])
    assert s["present_accuracy"] == 1.0 and s["position_accuracy"] == 0.5 and s["color_accuracy"] == 0.5
    assert s["cell_accuracy"] == 0.5

    # Averages over images (count, all_correct) and over prompted objects (the rest).
    s = scene_scores([PROMPT, missing], [PROMPT, PROMPT])
    assert s["all_correct"] == 0.5 and s["position_accuracy"] == 0.75 and s["objects"] == 4
    with pytest.raises(ValueError, match="1 read scenes for 2"):
        scene_scores([PROMPT], [PROMPT, PROMPT])
