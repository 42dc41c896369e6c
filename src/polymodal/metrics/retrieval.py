"""Cross-modal retrieval metrics (Karpathy protocol) computed in blocks.

One pass over blocks of image queries scores both directions from the same similarity block:
the (B, N_text) block ranks that block's images over all texts (image -> text), and adds to
each text's running count of images scoring above its own image (text -> image). Only the
ranks are kept, so a 100k x 100k similarity matrix never sits in memory.

Ranks are 1-based: rank = 1 + number of candidates scoring strictly higher than the relevant
one. With several captions per image, image -> text counts a hit at K if ANY of the image's
captions ranks <= K, and its median/mean rank use the best-ranked caption (the usual
"Karpathy split" protocol, as in VSE++/CLIP evaluations).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class RetrievalRanks:
    """Per-query ranks, kept so callers can bootstrap or inspect failures.

    ``text_to_image``: (N_text,) rank of each text's image among all images.
    ``image_to_text``: (N_image, C) ranks of each image's captions among all texts, sorted
    ascending per row and padded with ``-1`` where an image has fewer than C captions.
    """

    text_to_image: np.ndarray
    image_to_text: np.ndarray


def retrieval_ranks(
    image_emb: np.ndarray | torch.Tensor,
    text_emb: np.ndarray | torch.Tensor,
    text_to_image: Sequence[int] | np.ndarray,
    chunk_size: int = 512,
) -> RetrievalRanks:
    """Compute ranks for both directions with dot-product similarity, ``chunk_size`` images at a time.

    Embeddings are used as given: L2-normalise them first for cosine similarity.
    Peak extra memory is about ``2 * chunk_size * N_text * 4`` bytes (two fp32 blocks).
    """
    images = torch.as_tensor(image_emb, dtype=torch.float32)
    texts = torch.as_tensor(text_emb, dtype=torch.float32)
    texts = texts.to(images.device)  # works on whichever device the image embeddings live
    owner = torch.as_tensor(np.asarray(text_to_image), dtype=torch.long, device=images.device)
    n_img, n_txt = images.shape[0], texts.shape[0]
    _check_inputs(images, texts, owner)
    captions = _captions_per_image(owner, n_img)  # (N_image, C), -1 padded

    # Similarity of each text to its own image; the block loop counts rivals above it.
    own_score = torch.cat(
        [
            (texts[i : i + chunk_size] * images[owner[i : i + chunk_size]]).sum(dim=1)
            for i in range(0, n_txt, chunk_size)
        ]
    )  # (N_text,), in chunks so no (N_text, D) gathered copy of the images is made
    t2i_above = torch.zeros(n_txt, dtype=torch.long, device=images.device)
    i2t_ranks = torch.full(captions.shape, -1, dtype=torch.long, device=images.device)

    # Two reusable (chunk, N_text) buffers: similarities and a 0/1 float "beats" mask. Writing
    # comparisons straight into a float buffer and summing it is ~10x faster than summing a
    # bool tensor on CPU. fp32 counts are exact up to 2**24, so beyond that count in fp64.
    sims_buf = torch.empty(min(chunk_size, n_img), n_txt, device=images.device)
    beats_buf = torch.empty_like(sims_buf, dtype=torch.float32 if n_txt < 2**24 else torch.float64)
    with torch.no_grad():
        for start in range(0, n_img, chunk_size):
            stop = min(start + chunk_size, n_img)
            sims = torch.matmul(images[start:stop], texts.T, out=sims_buf[: stop - start])  # (B, N_text)
            beats = beats_buf[: stop - start]

            block_caps = captions[start:stop]  # (B, C) text indices of this block's images

            # text -> image: images of this block that beat each text's own image.
            torch.gt(sims, own_score, out=beats)
            t2i_above += beats.sum(dim=0).long()
            # The own image was compared with a separately computed score; rounding may make
            # it beat itself, so take that comparison back out.
            rows, slots = (block_caps >= 0).nonzero(as_tuple=True)
            own_texts = block_caps[rows, slots]
            t2i_above[own_texts] -= (sims[rows, own_texts] > own_score[own_texts]).long()

            # image -> text: rank each caption slot against all texts of the same row.
            rel = sims.gather(1, block_caps.clamp(min=0))  # (B, C)
            for c in range(block_caps.shape[1]):
                torch.gt(sims, rel[:, c : c + 1], out=beats)
                above = beats.sum(dim=1).long()  # (B,)
                i2t_ranks[start:stop, c] = torch.where(block_caps[:, c] >= 0, above + 1, -1)

    i2t = i2t_ranks.cpu().numpy()
    # Sort valid ranks ascending, keeping the -1 padding at the end of each row.
    i2t = np.sort(np.where(i2t < 0, np.iinfo(np.int64).max, i2t), axis=1)
    i2t[i2t == np.iinfo(np.int64).max] = -1
    return RetrievalRanks(text_to_image=(t2i_above + 1).cpu().numpy(), image_to_text=i2t)


def metrics_from_ranks(ranks: RetrievalRanks, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Recall@K (fraction in [0, 1]), median/mean rank and mAP for both directions."""
    t2i = ranks.text_to_image.astype(np.float64)
    i2t = ranks.image_to_text
    best = i2t[:, 0].astype(np.float64)  # rank of each image's best caption
    out: dict[str, float] = {}
    for k in ks:
        out[f"t2i_R@{k}"] = float(np.mean(t2i <= k))
        out[f"i2t_R@{k}"] = float(np.mean(best <= k))
    out["t2i_median_rank"] = float(np.median(t2i))
    out["t2i_mean_rank"] = float(np.mean(t2i))
    out["i2t_median_rank"] = float(np.median(best))
    out["i2t_mean_rank"] = float(np.mean(best))
    # One relevant item: AP = 1 / rank.
    out["t2i_mAP"] = float(np.mean(1.0 / t2i))
    out["i2t_mAP"] = float(np.mean(average_precision_from_ranks(i2t)))
    return out


def average_precision_from_ranks(sorted_ranks: np.ndarray, k: int | None = None) -> np.ndarray:
    """AP per row (AP@K with ``k``) from ascending 1-based ranks of the relevant items (-1 = padding).

    AP = mean over relevant items i (in rank order) of i / position_i, i.e. precision at each
    hit. Relevant items tied with each other cannot share a position: the i-th one sits at
    position p_i = max(rank_i, p_{i-1} + 1) = i + max_{j<=i}(rank_j - j). AP@K counts only the hits
    at positions <= K and still divides by the number of relevant items.
    """
    valid = sorted_ranks > 0  # (N, C); padding sits at the end of each row
    hit_number = np.cumsum(valid, axis=1)  # i for the i-th relevant item
    position = hit_number + np.maximum.accumulate(sorted_ranks - hit_number, axis=1)
    counted = valid if k is None else valid & (position <= k)
    precision = np.where(counted, hit_number / np.where(valid, position, 1), 0.0)
    return precision.sum(axis=1) / valid.sum(axis=1)


def map_at_k(ranks: RetrievalRanks, k: int = 10) -> dict[str, float]:
    """``t2i_mAP@K`` and ``i2t_mAP@K`` as the audio-retrieval papers report mAP@10 (DCASE task 6b, CLAP): a text
    query scores 1/rank when its one relevant item ranks <= K, else 0; an item query averages the precision at
    each of its captions ranked <= K over all of its captions."""
    return {
        f"t2i_mAP@{k}": float(np.mean(average_precision_from_ranks(ranks.text_to_image[:, None], k))),
        f"i2t_mAP@{k}": float(np.mean(average_precision_from_ranks(ranks.image_to_text, k))),
    }


def retrieval_metrics(
    image_emb: np.ndarray | torch.Tensor,
    text_emb: np.ndarray | torch.Tensor,
    text_to_image: Sequence[int] | np.ndarray,
    ks: Sequence[int] = (1, 5, 10),
    chunk_size: int = 512,
) -> dict[str, float]:
    """Image <-> text retrieval metrics with several captions per image.

    ``text_to_image[j]`` is the index of caption j's image. Returns ``t2i_R@K``/``i2t_R@K``
    (fractions), ``*_median_rank`` and ``*_mean_rank`` (1-based) and ``t2i_mAP``/``i2t_mAP``.
    """
    return metrics_from_ranks(retrieval_ranks(image_emb, text_emb, text_to_image, chunk_size), ks)


def _check_inputs(images: torch.Tensor, texts: torch.Tensor, owner: torch.Tensor) -> None:
    if images.ndim != 2 or texts.ndim != 2 or images.shape[1] != texts.shape[1]:
        raise ValueError(f"embeddings must be (N, D) with equal D; got {tuple(images.shape)} and {tuple(texts.shape)}")
    if owner.shape != (texts.shape[0],):
        raise ValueError(f"text_to_image must have one entry per text ({texts.shape[0]}); got {tuple(owner.shape)}")
    if len(owner) and (owner.min() < 0 or owner.max() >= images.shape[0]):
        raise ValueError(f"text_to_image values must be in [0, {images.shape[0]}); got [{owner.min()}, {owner.max()}]")


def _captions_per_image(owner: torch.Tensor, n_img: int) -> torch.Tensor:
    """(N_image, C) text indices per image, -1 padded; every image needs at least one caption."""
    counts = torch.bincount(owner, minlength=n_img)
    if (counts == 0).any():
        missing = (counts == 0).nonzero().squeeze(1)[:5].tolist()
        raise ValueError(f"images {missing} have no caption in text_to_image; every image needs one")
    order = torch.argsort(owner, stable=True)  # texts grouped by image
    slot = torch.arange(len(owner), device=owner.device) - torch.repeat_interleave(
        torch.cumsum(counts, 0) - counts, counts
    )
    table = torch.full((n_img, int(counts.max())), -1, dtype=torch.long, device=owner.device)
    table[owner[order], slot] = order
    return table
