"""Metrics of generated images as plain functions: the Fréchet distance between Gaussian feature statistics,
CLIP score from paired embeddings, and attribute scores of scenes read back from images against prompted ones.

The Fréchet distance is computed in whatever feature space the caller embeds into; name it after that space
("FD (EfficientNet-Lite0)"): "FID" means Inception-v3 pool features specifically.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

SceneObject = tuple[str, str, str]  # (position, colour, shape)


def feature_statistics(features: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D) of (N, D) features, in float64."""
    x = np.asarray(features.detach().cpu() if isinstance(features, torch.Tensor) else features, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"features must be (N, D), got shape {x.shape}")
    if x.shape[0] < 2:
        raise ValueError(f"a covariance needs at least 2 feature vectors, got {x.shape[0]}")
    if not np.isfinite(x).all():
        raise ValueError("features hold NaN or infinite values")
    return x.mean(axis=0), np.cov(x, rowvar=False)


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix; rounding's tiny negative eigenvalues count as 0."""
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet (2-Wasserstein) distance between N(mu1, sigma1) and N(mu2, sigma2):
    ``|mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1^1/2 S2 S1^1/2)^1/2)``.

    The cross term is the trace of the root of a symmetric PSD matrix, so it comes from its eigenvalues: no
    complex parts and no singular-matrix failure when a covariance is rank-deficient (fewer samples than
    dimensions), where ``scipy.linalg.sqrtm(S1 @ S2)`` needs an eps on the diagonal.
    """
    mu1, mu2 = np.asarray(mu1, dtype=np.float64), np.asarray(mu2, dtype=np.float64)
    sigma1, sigma2 = np.asarray(sigma1, dtype=np.float64), np.asarray(sigma2, dtype=np.float64)
    d = mu1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(
            f"expected means (D,) and covariances (D, D) of one D; got {mu1.shape}, {sigma1.shape}, "
            f"{mu2.shape}, {sigma2.shape}"
        )
    root1 = _psd_sqrt(sigma1)
    cross = np.linalg.eigvalsh(root1 @ sigma2 @ root1)  # S1^1/2 S2 S1^1/2: symmetric PSD
    trace_root = float(np.sqrt(np.clip(cross, 0.0, None)).sum())
    distance = float(np.sum((mu1 - mu2) ** 2) + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_root)
    return max(distance, 0.0)  # rounding can leave -1e-12 for identical statistics


def frechet_distance_of_features(features1: np.ndarray | torch.Tensor, features2: np.ndarray | torch.Tensor) -> float:
    """The Fréchet distance between the Gaussians fitted to two (N, D) feature sets."""
    return frechet_distance(*feature_statistics(features1), *feature_statistics(features2))


def clip_scores(image_embeddings: np.ndarray | torch.Tensor, text_embeddings: np.ndarray | torch.Tensor) -> np.ndarray:
    """Per pair ``100 * max(cos(image_i, text_i), 0)`` (CLIPScore, Hessel et al. 2021, with torchmetrics' weight
    100 instead of the paper's 2.5); rows are L2-normalised here."""
    images = torch.as_tensor(image_embeddings, dtype=torch.float64)
    texts = torch.as_tensor(text_embeddings, dtype=torch.float64)
    if images.ndim != 2 or images.shape != texts.shape:
        raise ValueError(f"expected paired (N, D) embeddings, got {tuple(images.shape)} and {tuple(texts.shape)}")
    cos = torch.nn.functional.cosine_similarity(images, texts, dim=1)
    return (100.0 * cos.clamp(min=0.0)).numpy()


def clip_score(image_embeddings: np.ndarray | torch.Tensor, text_embeddings: np.ndarray | torch.Tensor) -> float:
    """The mean of :func:`clip_scores` over the pairs."""
    scores = clip_scores(image_embeddings, text_embeddings)
    if scores.size == 0:
        raise ValueError("clip_score needs at least one image-text pair")
    return float(scores.mean())


def scene_scores(read: Sequence[Sequence[SceneObject]], prompted: Sequence[Sequence[SceneObject]]) -> dict[str, float]:
    """How well scenes read from images match the prompted scenes, one (position, colour, shape) per object.

    Per image: ``count`` (as many objects read as prompted) and ``all_correct`` (exactly the prompted objects,
    nothing else). Per prompted object: ``cell`` (some object is read at its position: the layout alone),
    ``color`` / ``shape`` (the object read at its position has that colour / shape), ``present`` (an object of its
    colour and shape is read anywhere) and ``position`` (one is read at its position).
    """
    if len(read) != len(prompted):
        raise ValueError(f"{len(read)} read scenes for {len(prompted)} prompted ones")
    if not prompted:
        raise ValueError("scene_scores needs at least one scene")
    images = {"count": 0, "all_correct": 0}
    objects = {"cell": 0, "color": 0, "shape": 0, "present": 0, "position": 0}
    n_objects = 0
    for seen, wanted in zip(read, prompted):
        at = {position: (color, shape) for position, color, shape in seen}
        images["count"] += len(seen) == len(wanted)
        images["all_correct"] += set(seen) == set(wanted) and len(seen) == len(wanted)
        for position, color, shape in wanted:
            n_objects += 1
            found = at.get(position)
            objects["cell"] += found is not None
            objects["color"] += found is not None and found[0] == color
            objects["shape"] += found is not None and found[1] == shape
            objects["present"] += (color, shape) in at.values()
            objects["position"] += found == (color, shape)
    out = {f"{k}_accuracy" if k != "all_correct" else k: v / len(prompted) for k, v in images.items()}
    out |= {f"{k}_accuracy": v / max(n_objects, 1) for k, v in objects.items()}
    return {**out, "images": len(prompted), "objects": n_objects}
