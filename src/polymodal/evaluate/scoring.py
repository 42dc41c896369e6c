"""Score predictions against references with 95% bootstrap CIs: shared by ``polymodal score`` and the suites.

Items that share an image (its captions, questions, statements) are not independent: their CIs come from
:func:`grouped_bootstrap_ci`, which resamples whole images (a cluster bootstrap); point estimates are unchanged.

Caption CIs: ROUGE-L and CIDEr-D resample per-image scores (CIDEr-D's document frequencies stay
those of the full set); BLEU is a corpus metric, so each resample recomputes it over the drawn
images, from per-image statistics counted once (exactly what a full BLEU pass over the resample
gives, at the cost of a sum). METEOR comes from one Java run over the set and has no CI.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np

from polymodal.metrics import bootstrap_ci, normalize_answer, vqa_accuracy
from polymodal.metrics import captioning as cap

Interval = tuple[float, float]


def grouped_bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    groups: Sequence[Hashable] | None = None,
    *,
    n_resamples: int = 1000,
    seed: int = 0,
) -> Interval:
    """95% CI of the mean of ``values`` by a cluster bootstrap: ``groups[i]`` is item i's independent unit (the image
    its caption, question or statement is about), and each resample draws whole groups with replacement and takes
    the mean over their items. Groups of one (``groups`` None) draw exactly as the item bootstrap does."""
    arr = np.asarray(values, dtype=np.float64)
    ids: dict[Hashable, int] = {}
    cluster = np.array([ids.setdefault(g, len(ids)) for g in (range(len(arr)) if groups is None else groups)])
    if len(cluster) != len(arr):
        raise ValueError(f"{len(arr)} values but {len(cluster)} groups")
    sums = np.bincount(cluster, weights=arr, minlength=len(ids))  # per group, in order of first appearance
    sizes = np.bincount(cluster, minlength=len(ids)).astype(np.float64)
    return bootstrap_ci(
        lambda idx: float(sums[idx].sum() / sizes[idx].sum()), n_items=len(ids), n_resamples=n_resamples, seed=seed
    )


def caption_scores(
    refs: Mapping[Any, Sequence[str]],
    preds: Mapping[Any, str],
    *,
    seed: int = 0,
    n_resamples: int = 1000,
    with_meteor: bool | None = False,
    with_ci: bool = True,
) -> tuple[dict[str, float], dict[str, Interval], dict[Any, float]]:
    """(metrics, ci95, per-image CIDEr-D) of raw captions; both sides are PTB-tokenised first.

    ``with_ci=False`` skips the bootstrap (an empty ci95), for callers that only need the values.

    Keys: BLEU-1..4, ROUGE-L, CIDEr-D, METEOR (when ``with_meteor``, or None and java + jar exist).
    """
    keys = list(preds)
    tok_refs = {i: [cap.tokenize(r) for r in refs[k]] for i, k in enumerate(keys)}
    tok_preds = {i: cap.tokenize(preds[k]) for i, k in enumerate(keys)}  # re-keyed by position, for resampling
    bleu_stats = cap.bleu_stats(tok_refs, tok_preds, 4)  # (N, 10) rows in the order of ``keys``
    metrics = {f"BLEU-{n + 1}": s for n, s in enumerate(cap.bleu_from_stats(bleu_stats.sum(axis=0)))}
    rouge = cap.rouge_l_per_item(tok_refs, tok_preds)
    cider = cap.cider_d_per_item(tok_refs, tok_preds)
    metrics["ROUGE-L"] = float(np.mean(list(rouge.values())))
    metrics["CIDEr-D"] = float(np.mean(list(cider.values())))
    if with_meteor is None:
        with_meteor = cap.meteor_available()
    if with_meteor:
        metrics["METEOR"] = cap.meteor(tok_refs, tok_preds)

    def bleu4(idx: np.ndarray) -> float:  # a repeated draw counts repeatedly, as its row is summed again
        return cap.bleu_from_stats(bleu_stats[idx].sum(axis=0))[3]

    if not with_ci:
        return metrics, {}, {k: cider[i] for i, k in enumerate(keys)}
    ci = {
        "ROUGE-L": bootstrap_ci(list(rouge.values()), n_resamples=n_resamples, seed=seed),
        "CIDEr-D": bootstrap_ci(list(cider.values()), n_resamples=n_resamples, seed=seed),
        "BLEU-4": bootstrap_ci(bleu4, n_items=len(keys), n_resamples=n_resamples, seed=seed),
    }
    return metrics, ci, {k: cider[i] for i, k in enumerate(keys)}


def mean_by_type(scores: Mapping[Any, float], types: Mapping[Any, str | None]) -> dict[str, float]:
    """Mean score per type (question type, statement type), sorted by type; untyped items are left out."""
    by_type: dict[str, list[float]] = {}
    for key, score in scores.items():
        kind = types.get(key)
        if kind:
            by_type.setdefault(kind, []).append(score)
    return {t: float(np.mean(v)) for t, v in sorted(by_type.items())}


def vqa_scores(
    preds: Mapping[Any, str],
    answers: Mapping[Any, Sequence[str]],
    types: Mapping[Any, str | None] | None = None,
    *,
    exact: bool = False,
    seed: int = 0,
    n_resamples: int = 1000,
    groups: Mapping[Any, Hashable] | None = None,
) -> tuple[dict[str, float], dict[str, Interval], dict[str, float], dict[Any, float]]:
    """(metrics, ci95, accuracy per type, per-question accuracy). ``groups``: question id -> the image it is about,
    whose questions the CI resamples together (without it, each question is its own unit).

    ``exact=False``: the official VQA accuracy over the (10) human answers; ``exact=True``:
    normalised exact match against the most frequent reference answer (datasets with one
    answer per question, where the 10-annotator formula would give 0 for a correct answer).
    """
    missing = [q for q in answers if q not in preds]
    if missing:
        raise ValueError(f"no prediction for question ids {missing[:5]} ({len(missing)} missing)")
    per_q: dict[Any, float] = {}
    for q, gts in answers.items():
        if exact:
            per_q[q] = float(normalize_answer(preds[q]) == normalize_answer(max(gts, key=list(gts).count)))
        else:
            per_q[q] = vqa_accuracy(preds[q], gts)
    per_type = mean_by_type(per_q, types or {})
    values = list(per_q.values())
    metrics = {"vqa_accuracy": float(np.mean(values)) if values else 0.0}
    metrics.update({f"vqa_accuracy_{t}": v for t, v in per_type.items()})
    units = None if groups is None else [groups[q] for q in per_q]
    ci = {"vqa_accuracy": grouped_bootstrap_ci(values, units, n_resamples=n_resamples, seed=seed)} if values else {}
    return metrics, ci, per_type, per_q
