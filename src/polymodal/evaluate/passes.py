"""The scoring passes every benchmark is made of: zero-shot classification, retrieval, captioning,
VQA and statement classification.

Each pass takes already-loaded items and an optional ``image_fn`` (a corruption) and returns a
:class:`PassResult`. ``full=False`` asks only for the metrics (no CIs, examples or details): robustness
curves rerun a pass many times and only read its headline metric.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from polymodal.evaluate.context import EvalContext, ImageFn, ImageRef, batches
from polymodal.evaluate.prompts import zero_shot_classifier
from polymodal.evaluate.results import MAX_EXAMPLES, Confusion, Details, Example, Retrieved
from polymodal.evaluate.scoring import caption_scores, mean_by_type, vqa_scores
from polymodal.metrics import bootstrap_ci, confusion_matrix, precision_recall_f1
from polymodal.metrics.retrieval import metrics_from_ranks, retrieval_ranks


@dataclass
class PassResult:
    metrics: dict[str, float]
    ci95: dict[str, tuple[float, float]] = field(default_factory=dict)
    details: Details = field(default_factory=Details)
    examples: list[Example] = field(default_factory=list)


def _path(ref: ImageRef) -> str | None:
    """The image as an absolute path for examples (None for bytes or decoded pixels)."""
    return ref if isinstance(ref, str) else None


# ---------------------------------------------------------------------------- zero-shot classification


def zero_shot(
    ctx: EvalContext,
    images: Sequence[ImageRef],
    labels: Sequence[int],
    classnames: Sequence[str],
    templates: Sequence[str],
    image_fn: ImageFn | None = None,
    full: bool = True,
    extra: Callable[[np.ndarray, np.ndarray], dict[str, float]] | None = None,
) -> PassResult:
    """Top-1/top-5 accuracy and macro F1 (over classes present) of image -> class-prompt similarity.

    ``extra(y_true, y_pred)`` adds benchmark-specific metrics computed from the class indices.
    """
    classes = zero_shot_classifier(ctx.embed_texts, classnames, templates)  # (C, D)
    logits = ctx.embed_images(images, image_fn) @ classes.T  # (N, C)
    y_true, y_pred = np.asarray(labels), logits.argmax(dim=1).numpy()
    hits = (y_true == y_pred).astype(np.float64)
    metrics = {"accuracy": float(hits.mean())}
    if len(classnames) > 5:
        top5 = logits.topk(5, dim=1).indices.numpy()  # (N, 5)
        metrics["top5_accuracy"] = float((top5 == y_true[:, None]).any(axis=1).mean())
    # Macro F1 over the classes the split contains: a class with no test images has no defined recall.
    metrics["macro_f1"] = precision_recall_f1(y_true, y_pred, "macro", labels=np.unique(y_true)).avg_f1
    all_classes = np.arange(len(classnames))
    if extra is not None:
        metrics.update(extra(y_true, y_pred))
    if not full:
        return PassResult(metrics)
    matrix = confusion_matrix(y_true, y_pred, labels=all_classes)
    support = matrix.sum(axis=1)
    per_class = {name: float(matrix[c, c] / support[c]) for c, name in enumerate(classnames) if support[c]}
    examples = [
        Example(
            image=_path(images[i]),
            prediction=classnames[y_pred[i]],
            reference=classnames[y_true[i]],
            correct=bool(hits[i]),
        )
        for i in range(min(MAX_EXAMPLES, len(images)))
    ]
    return PassResult(
        metrics,
        ci95={"accuracy": bootstrap_ci(hits, n_resamples=ctx.n_resamples, seed=ctx.seed)},
        details=Details(confusion=Confusion(classes=list(classnames), matrix=matrix.tolist()), per_class=per_class),
        examples=examples,
    )


# ---------------------------------------------------------------------------- retrieval


def retrieval(
    ctx: EvalContext,
    images: Sequence[ImageRef],
    texts: Sequence[str],
    owner: Sequence[int],
    image_fn: ImageFn | None = None,
    full: bool = True,
) -> PassResult:
    """Image <-> text retrieval (Karpathy protocol: an image query hits if any of its captions is in the top K)."""
    image_emb = ctx.embed_images(images, image_fn)  # (N_img, D)
    text_emb = ctx.embed_texts(texts)  # (N_txt, D)
    ranks = retrieval_ranks(image_emb, text_emb, owner)
    metrics = metrics_from_ranks(ranks, ks=(1, 5, 10))
    metrics["rsum"] = sum(metrics[f"{d}_R@{k}"] for d in ("i2t", "t2i") for k in (1, 5, 10))
    if not full:
        return PassResult(metrics)
    i2t_best = ranks.image_to_text[:, 0]  # rank of each image's best caption
    ci = {
        f"{d}_R@{k}": bootstrap_ci((r <= k).astype(np.float64), n_resamples=ctx.n_resamples, seed=ctx.seed)
        for d, r in (("i2t", i2t_best), ("t2i", ranks.text_to_image))
        for k in (1, 5, 10)
    }
    recall = {d: {str(k): metrics[f"{d}_R@{k}"] for k in (1, 5, 10)} for d in ("i2t", "t2i")}
    n_show = min(MAX_EXAMPLES, len(images))
    sims = image_emb[:n_show] @ text_emb.T  # (n_show, N_txt)
    top = sims.topk(min(3, len(texts)), dim=1)
    owner_arr = np.asarray(owner)
    examples = []
    for i in range(n_show):
        own = int(np.flatnonzero(owner_arr == i)[0])
        retrieved = [
            Retrieved(text=texts[j], score=float(s)) for s, j in zip(top.values[i].tolist(), top.indices[i].tolist())
        ]
        examples.append(
            Example(
                image=_path(images[i]),
                reference=texts[own],
                prediction=retrieved[0].text,
                correct=bool(owner_arr[top.indices[i, 0]] == i),
                retrieved=retrieved,
            )
        )
    return PassResult(metrics, ci, Details(recall_at_k=recall), examples)


# ---------------------------------------------------------------------------- captioning


def captioning(
    ctx: EvalContext,
    images: Sequence[ImageRef],
    references: Sequence[Sequence[str]],
    image_fn: ImageFn | None = None,
    full: bool = True,
) -> PassResult:
    """BLEU-1..4, ROUGE-L, CIDEr-D (and METEOR when java exists) of the model's greedy captions."""
    preds = [c for chunk in ctx.map_images(ctx.backend.caption, images, image_fn) for c in chunk]
    metrics, ci, _ = caption_scores(
        dict(enumerate(references)),
        dict(enumerate(preds)),
        seed=ctx.seed,
        n_resamples=ctx.n_resamples,
        with_meteor=None if full and ctx.meteor else False,
        with_ci=full,
    )
    if not full:
        return PassResult(metrics)
    examples = [
        Example(image=_path(images[i]), prediction=preds[i], reference=references[i][0])
        for i in range(min(MAX_EXAMPLES, len(images)))
    ]
    return PassResult(metrics, ci, Details(), examples)


# ---------------------------------------------------------------------------- VQA


@dataclass
class Questions:
    """Questions aligned by index; ``image_index`` says which of ``images`` each one is about."""

    images: Sequence[ImageRef]
    image_index: list[int]
    questions: list[str]
    answers: list[list[str]]
    types: list[str | None]


def _answer_batches(ctx: EvalContext, qs: Questions, image_fn: ImageFn | None, drop: str | None) -> list[str]:
    out: list[str] = []
    for chunk in batches(range(len(qs.questions)), ctx.batch_size):
        refs = [qs.images[qs.image_index[i]] for i in chunk]
        # The corruption index is the image's, so all questions about one image see the same noise.
        imgs = [ctx.images([r], [qs.image_index[i]], image_fn)[0] for r, i in zip(refs, chunk)]
        questions = [qs.questions[i] for i in chunk]
        out.extend(
            ctx.backend.answer(imgs, questions) if drop is None else ctx.backend.answer(imgs, questions, drop=drop)
        )  # type: ignore[call-arg]
    return out


def vqa(
    ctx: EvalContext,
    qs: Questions,
    exact: bool,
    image_fn: ImageFn | None = None,
    drop: str | None = None,
    full: bool = True,
) -> PassResult:
    """VQA accuracy overall and per question type (``exact``: one reference answer, exact match)."""
    preds = _answer_batches(ctx, qs, image_fn, drop)
    ids = range(len(preds))
    metrics, ci, per_type, per_q = vqa_scores(
        dict(zip(ids, preds)),
        dict(zip(ids, qs.answers)),
        dict(zip(ids, qs.types)),
        exact=exact,
        seed=ctx.seed,
        n_resamples=ctx.n_resamples,
    )
    if not full:
        return PassResult(metrics)
    examples = [
        Example(
            image=_path(qs.images[qs.image_index[i]]),
            text=qs.questions[i],
            prediction=preds[i],
            reference=max(qs.answers[i], key=qs.answers[i].count),
            correct=per_q[i] > 0,
        )
        for i in range(min(MAX_EXAMPLES, len(preds)))
    ]
    return PassResult(metrics, ci, Details(per_question_type=per_type), examples)


# ---------------------------------------------------------------------------- fusion models


def _absent(drop: str | None, n: int) -> dict[str, torch.Tensor] | None:
    """Presence masks with ``drop`` absent for every item: the model ignores that modality."""
    return None if drop is None else {drop: torch.zeros(n, dtype=torch.bool)}


@dataclass
class Statements:
    images: Sequence[ImageRef]
    image_index: list[int]
    texts: list[str]
    labels: list[int]
    types: list[str | None]  # what a false claim gets wrong (ShapesWorld: exists, position, ...), for per-type accuracy


@torch.inference_mode()
def statements(
    ctx: EvalContext, st: Statements, image_fn: ImageFn | None = None, drop: str | None = None, full: bool = True
) -> PassResult:
    """Accuracy of a fusion classifier on true/false statements about images, overall and per statement type."""
    predicted: list[int] = []
    for chunk in batches(range(len(st.texts)), ctx.batch_size):
        imgs = [ctx.images([st.images[st.image_index[i]]], [st.image_index[i]], image_fn)[0] for i in chunk]
        saved = ctx.saved
        inputs = {"image": saved.inputs("image", imgs), "text": saved.inputs("text", [st.texts[i] for i in chunk])}
        logits = saved.model(inputs, _absent(drop, len(chunk)))
        predicted.extend(logits.argmax(-1).tolist())
    hits = (np.asarray(predicted) == np.asarray(st.labels)).astype(np.float64)
    per_type = mean_by_type(dict(enumerate(hits.tolist())), dict(enumerate(st.types)))
    metrics = {
        "accuracy": float(hits.mean()) if len(hits) else 0.0,
        **{f"accuracy_{t}": v for t, v in per_type.items()},
    }
    if not full or not len(hits):
        return PassResult(metrics)
    examples = [
        Example(
            image=_path(st.images[st.image_index[i]]),
            text=st.texts[i],
            prediction=str(bool(predicted[i])).lower(),
            reference=str(bool(st.labels[i])).lower(),
            correct=bool(hits[i]),
        )
        for i in range(min(MAX_EXAMPLES, len(hits)))
    ]
    ci = {"accuracy": bootstrap_ci(hits, n_resamples=ctx.n_resamples, seed=ctx.seed)}
    return PassResult(metrics, ci, Details(per_statement_type=per_type or None), examples)
