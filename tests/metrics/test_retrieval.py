import numpy as np
import pytest

from polymodal.metrics import retrieval_metrics, retrieval_ranks


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _reference(images: np.ndarray, texts: np.ndarray, owner: np.ndarray, ks: tuple[int, ...]) -> dict[str, float]:
    """Full similarity matrix, explicit sorts and python loops: slow and obvious."""
    sims = images.astype(np.float64) @ texts.astype(np.float64).T  # (N_image, N_text)
    t2i_ranks, t2i_ap = [], []
    for j in range(texts.shape[0]):
        order = list(np.argsort(-sims[:, j]))
        rank = order.index(owner[j]) + 1
        t2i_ranks.append(rank)
        t2i_ap.append(1.0 / rank)
    i2t_best, i2t_ap = [], []
    for i in range(images.shape[0]):
        order = list(np.argsort(-sims[i]))
        relevant = {j for j in range(len(owner)) if owner[j] == i}
        hits, precisions = 0, []
        for position, j in enumerate(order, start=1):
            if j in relevant:
                hits += 1
                precisions.append(hits / position)
                if hits == 1:
                    i2t_best.append(position)
        i2t_ap.append(sum(precisions) / len(relevant))
    out = {}
    for k in ks:
        out[f"t2i_R@{k}"] = sum(r <= k for r in t2i_ranks) / len(t2i_ranks)
        out[f"i2t_R@{k}"] = sum(r <= k for r in i2t_best) / len(i2t_best)
    out.update(
        t2i_median_rank=float(np.median(t2i_ranks)),
        t2i_mean_rank=float(np.mean(t2i_ranks)),
        i2t_median_rank=float(np.median(i2t_best)),
        i2t_mean_rank=float(np.mean(i2t_best)),
        t2i_mAP=float(np.mean(t2i_ap)),
        i2t_mAP=float(np.mean(i2t_ap)),
    )
    return out


@pytest.mark.parametrize("chunk_size", [1, 7, 1000])
def test_chunked_matches_brute_force_with_uneven_caption_counts(chunk_size: int) -> None:
    rng = np.random.default_rng(0)
    n_img, d = 40, 16
    # 1 to 6 captions per image, shuffled so an image's captions are not contiguous.
    owner = np.repeat(np.arange(n_img), rng.integers(1, 7, n_img))
    owner = owner[rng.permutation(len(owner))]
    images = _unit(rng, n_img, d)
    # Texts near their image so ranks span the whole range, not just the tail.
    texts = images[owner] + rng.normal(scale=0.9, size=(len(owner), d)).astype(np.float32)
    texts /= np.linalg.norm(texts, axis=1, keepdims=True)
    ks = (1, 5, 10)
    ours = retrieval_metrics(images, texts, owner, ks=ks, chunk_size=chunk_size)
    expected = _reference(images, texts, owner, ks)
    assert ours.keys() == expected.keys()
    for key, value in expected.items():
        assert ours[key] == pytest.approx(value, abs=1e-12), key
    # Sanity: the data is neither trivial nor hopeless.
    assert 0.05 < ours["t2i_R@1"] < 0.95


def test_karpathy_five_captions_per_image_matches_brute_force() -> None:
    rng = np.random.default_rng(1)
    images = _unit(rng, 60, 32)
    owner = np.repeat(np.arange(60), 5)
    texts = _unit(rng, 300, 32)
    ours = retrieval_metrics(images, texts, owner, ks=(1, 5, 10, 50), chunk_size=16)
    expected = _reference(images, texts, owner, (1, 5, 10, 50))
    assert ours == pytest.approx(expected, abs=1e-12)


def test_perfect_embeddings_rank_first() -> None:
    images = np.eye(4, dtype=np.float32)
    texts = np.repeat(images, 2, axis=0)  # two exact captions per image
    ranks = retrieval_ranks(images, texts, np.repeat(np.arange(4), 2), chunk_size=3)
    np.testing.assert_array_equal(ranks.text_to_image, np.ones(8))
    # Each image's two captions tie at the top and each is beaten by nobody.
    np.testing.assert_array_equal(ranks.image_to_text, np.ones((4, 2)))
    metrics = retrieval_metrics(images, texts, np.repeat(np.arange(4), 2))
    assert metrics["t2i_R@1"] == metrics["i2t_R@1"] == metrics["i2t_mAP"] == 1.0


def test_image_without_caption_is_named() -> None:
    with pytest.raises(ValueError, match=r"images \[2\] have no caption"):
        retrieval_metrics(np.eye(3), np.eye(3)[:2], [0, 1])
    with pytest.raises(ValueError, match="one entry per text"):
        retrieval_metrics(np.eye(3), np.eye(3), [0, 1])


def test_torch_inputs_give_the_same_metrics_as_numpy() -> None:
    import torch

    rng = np.random.default_rng(2)
    images, texts = _unit(rng, 20, 8), _unit(rng, 40, 8)
    owner = np.repeat(np.arange(20), 2)
    from_numpy = retrieval_metrics(images, texts, owner, chunk_size=6)
    from_torch = retrieval_metrics(torch.from_numpy(images), torch.from_numpy(texts), torch.from_numpy(owner))
    assert from_torch == from_numpy


def test_map_at_10_matches_a_hand_computed_example() -> None:
    """Text queries: one relevant item each, AP@10 = 1/rank within the top 10 else 0. Item queries: precision at
    each of its captions ranked in the top 10, divided by its number of captions."""
    from polymodal.metrics.retrieval import RetrievalRanks, map_at_k

    ranks = RetrievalRanks(
        text_to_image=np.array([1, 2, 10, 11]),  # AP@10: 1, 1/2, 1/10, 0
        # item 0: captions at 1 and 3 -> (1/1 + 2/3) / 2; item 1: captions at 2, 12, padding -> (1/2 + 0) / 2;
        # item 2: two captions tied at rank 10 take positions 10 and 11 -> (1/10 + 0) / 2
        image_to_text=np.array([[1, 3, -1], [2, 12, -1], [10, 10, -1]]),
    )
    got = map_at_k(ranks, 10)
    assert got["t2i_mAP@10"] == pytest.approx((1 + 1 / 2 + 1 / 10 + 0) / 4)
    assert got["i2t_mAP@10"] == pytest.approx(((1 + 2 / 3) / 2 + (1 / 2) / 2 + (1 / 10) / 2) / 3)
    # Without a cut-off the same ranks give the plain AP the other metrics report.
    assert map_at_k(ranks, 100)["t2i_mAP@100"] == pytest.approx(np.mean([1, 1 / 2, 1 / 10, 1 / 11]))
