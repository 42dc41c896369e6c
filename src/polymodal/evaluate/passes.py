"""The scoring passes every benchmark is made of: zero-shot classification, linear probes, retrieval,
captioning, VQA, statement classification and text-to-image generation.

Each pass takes already-loaded items and an optional ``image_fn`` (a corruption) and returns a
:class:`PassResult`. ``full=False`` asks only for the metrics (no CIs, examples or details): robustness
curves rerun a pass many times and only read its headline metric.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from polymodal.backends import Backend
from polymodal.backends.base import embed
from polymodal.data.image import decode_image
from polymodal.data.shapes import encode_png
from polymodal.evaluate.context import Attack, EvalContext, ImageFn, ImageRef, ItemRef, batches
from polymodal.evaluate.generation import FD_NAME as FD_METRIC
from polymodal.evaluate.generation import SceneChecker, frechet_efficientnet_distance, scene_of
from polymodal.evaluate.probe import probe_predictions
from polymodal.evaluate.prompts import zero_shot_classifier
from polymodal.evaluate.results import MAX_EXAMPLES, Confusion, Details, Example, Retrieved
from polymodal.evaluate.scoring import caption_scores, grouped_bootstrap_ci, mean_by_type, vqa_scores
from polymodal.fsutil import write_atomic
from polymodal.metrics import bootstrap_ci, confusion_matrix, precision_recall_f1
from polymodal.metrics.generation import clip_score as clip_score_of_embeddings
from polymodal.metrics.generation import scene_scores
from polymodal.metrics.retrieval import map_at_k, metrics_from_ranks, retrieval_ranks


@dataclass
class PassResult:
    metrics: dict[str, float]
    ci95: dict[str, tuple[float, float]] = field(default_factory=dict)
    details: Details = field(default_factory=Details)
    examples: list[Example] = field(default_factory=list)
    n: int | None = None  # outcomes the pass's first metric averages (a full pass only): its CI's sample size
    unit: str | None = None  # what n counts (UNITS, "captions", "questions" ...)


SHOWN = ("image", "audio", "video", "text")  # the modalities an Example names by path (or words)
UNITS = {"image": "images", "audio": "sounds", "video": "clips", "text": "texts"}  # what n counts, per modality


def _path(ref: ImageRef) -> str | None:
    """The item (image, sound, clip) as an absolute path for examples (None for bytes or decoded values)."""
    return ref if isinstance(ref, str) else None


def _shown(modality: str, ref: ItemRef) -> dict[str, str | None]:
    """The example field showing an item: its path under the modality's name (its words for text)."""
    return {modality: _path(ref)} if modality in SHOWN else {}


def merge(*runs: PassResult) -> PassResult:
    """Passes over one split as one result: all metrics, CIs and details, the examples shared out evenly; ``n`` is
    the first pass's (benchmarks list the pass of their headline metric first)."""
    details = Details()
    for run in runs:
        for name, value in run.details:
            if value is None:
                continue
            if isinstance(value, dict):
                value = {**(getattr(details, name) or {}), **value}
            setattr(details, name, value)
    if len(runs) == 1:
        return runs[0]
    share = MAX_EXAMPLES // len(runs)
    return PassResult(
        {k: v for run in runs for k, v in run.metrics.items()},
        {k: v for run in runs for k, v in run.ci95.items()},
        details,
        [e for run in runs for e in run.examples[:share]],
        runs[0].n,
        runs[0].unit,
    )


# ---------------------------------------------------------------------------- zero-shot classification


def _check_attack(modality: str, image_fn: ImageFn | None) -> None:
    if modality != "image":
        raise ValueError(f"an attack moves images; these items are {modality}")
    if image_fn is not None:
        raise ValueError("an attack moves clean images, not corrupted ones")


def zero_shot(
    ctx: EvalContext,
    items: Sequence[ItemRef],
    labels: Sequence[int],
    classnames: Sequence[str],
    templates: Sequence[str],
    image_fn: ImageFn | None = None,
    full: bool = True,
    extra: Callable[[np.ndarray, np.ndarray], dict[str, float]] | None = None,
    modality: str = "image",
    attack: Attack | None = None,
) -> PassResult:
    """Top-1/top-5 accuracy and macro F1 (over classes present) of item -> class-prompt similarity, for items of
    ``modality`` (images, sounds ...); with ``attack``, of images each moved against its true class first.

    ``extra(y_true, y_pred)`` adds benchmark-specific metrics computed from the class indices.
    """
    classes = zero_shot_classifier(ctx.embed_texts, classnames, templates)  # (C, D)
    if attack is not None:
        _check_attack(modality, image_fn)
        embedded = ctx.embed_attacked(items, labels, classes, attack)
    else:
        embedded = ctx.embed_media(modality, items, image_fn)
    logits = embedded @ classes.T  # (N, C)
    y_true, y_pred = np.asarray(labels), logits.argmax(dim=1).numpy()
    hits = (y_true == y_pred).astype(np.float64)
    metrics = {"accuracy": float(hits.mean())}
    if len(classnames) > 5:
        top5 = logits.topk(5, dim=1).indices.numpy()  # (N, 5)
        metrics["top5_accuracy"] = float((top5 == y_true[:, None]).any(axis=1).mean())
    # Macro F1 over the classes the split contains: a class with no test items has no defined recall.
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
            **_shown(modality, items[i]),
            prediction=classnames[y_pred[i]],
            reference=classnames[y_true[i]],
            correct=bool(hits[i]),
        )
        for i in range(min(MAX_EXAMPLES, len(items)))
    ]
    return PassResult(
        metrics,
        ci95={"accuracy": bootstrap_ci(hits, n_resamples=ctx.n_resamples, seed=ctx.seed)},
        details=Details(confusion=Confusion(classes=list(classnames), matrix=matrix.tolist()), per_class=per_class),
        examples=examples,
        n=len(items),
        unit=UNITS[modality],
    )


def fold_accuracies(hits: np.ndarray, folds: Sequence[int], prefix: str) -> dict[str, float]:
    """``{prefix}_fold{k}`` accuracy on each fold and ``{prefix}_fold_mean``, their mean (cross-validation)."""
    folds_arr = np.asarray(folds)
    out = {f"{prefix}_fold{k}": float(hits[folds_arr == k].mean()) for k in np.unique(folds_arr)}
    out[f"{prefix}_fold_mean"] = float(np.mean(list(out.values())))
    return out


def linear_probe(
    ctx: EvalContext,
    items: Sequence[ItemRef],
    labels: Sequence[int],
    folds: Sequence[int],
    n_classes: int,
    full: bool = True,
    modality: str = "image",
) -> PassResult:
    """Leave-one-fold-out logistic regression on the frozen embeddings of ``items``: ``probe_accuracy`` (every
    item scored by the probe trained on the other folds) and ``probe_accuracy_fold{k}``, ``_fold_mean``."""
    features = ctx.embed_media(modality, items)  # (N, D)
    y, folds_arr = np.asarray(labels), np.asarray(folds)
    if len(np.unique(folds_arr)) < 2:
        raise ValueError(f"a linear probe needs at least two folds (train on the others, test on one); got {folds[:1]}")
    predicted = np.zeros_like(y)
    for k in np.unique(folds_arr):
        test = folds_arr == k
        train_y = torch.as_tensor(y[~test])
        predicted[test] = probe_predictions(features[~test], train_y, features[test], n_classes).numpy()
    hits = (predicted == y).astype(np.float64)
    metrics = {"probe_accuracy": float(hits.mean()), **fold_accuracies(hits, folds, "probe_accuracy")}
    if not full:
        return PassResult(metrics)
    ci = {"probe_accuracy": bootstrap_ci(hits, n_resamples=ctx.n_resamples, seed=ctx.seed)}
    return PassResult(metrics, ci, n=len(hits), unit=UNITS[modality])


def train_test_probe(
    ctx: EvalContext,
    train_items: Sequence[ItemRef],
    train_labels: Sequence[int],
    items: Sequence[ItemRef],
    labels: Sequence[int],
    n_classes: int,
    full: bool = True,
    modality: str = "image",
) -> PassResult:
    """``probe_accuracy`` on ``items`` of a logistic regression fitted on the frozen embeddings of ``train_items``
    (a dataset's own train/test split, as UCF101's lists give it)."""
    train_x, test_x = ctx.embed_media(modality, train_items), ctx.embed_media(modality, items)  # (N, D) each
    predicted = probe_predictions(train_x, torch.as_tensor(train_labels), test_x, n_classes).numpy()
    hits = (predicted == np.asarray(labels)).astype(np.float64)
    metrics = {"probe_accuracy": float(hits.mean())}
    if not full:
        return PassResult(metrics)
    ci = {"probe_accuracy": bootstrap_ci(hits, n_resamples=ctx.n_resamples, seed=ctx.seed)}
    return PassResult(metrics, ci, n=len(hits), unit=UNITS[modality])


# ---------------------------------------------------------------------------- retrieval


def retrieval(
    ctx: EvalContext,
    items: Sequence[ItemRef],
    captions: Sequence[ItemRef],
    owner: Sequence[int],
    image_fn: ImageFn | None = None,
    full: bool = True,
    modality: str = "image",
    caption_modality: str = "text",
    map_at: int | None = None,
    item_groups: Sequence[Hashable] | None = None,
    attack: Attack | None = None,
) -> PassResult:
    """Item <-> caption retrieval (Karpathy protocol: an item query hits if any of its captions is in the top K);
    with ``attack``, of images each moved away from its own captions among all the captions first.

    Items are of ``modality``; captions (``owner[j]``: caption j's item) of ``caption_modality``: texts, or
    e.g. spoken captions. Metric names start with the two modalities' initials (``i2t``/``t2i``, ``a2t``/``t2a``);
    ``map_at`` adds mAP@K in both directions (K = 10 as the audio-retrieval papers report it). The CIs resample
    items with all their captions (a cluster bootstrap); ``item_groups[i]`` names a larger unit item i belongs to
    (the image a spoken caption describes), resampled whole instead.
    """
    forward, backward = f"{modality[0]}2{caption_modality[0]}", f"{caption_modality[0]}2{modality[0]}"
    caption_emb = (
        ctx.embed_texts(captions) if caption_modality == "text" else ctx.embed_media(caption_modality, captions)
    )  # (N_caption, D)
    if attack is not None:
        _check_attack(modality, image_fn)
        own: list[list[int]] = [[] for _ in items]
        for caption, item in enumerate(owner):
            own[item].append(caption)
        item_emb = ctx.embed_attacked(items, own, caption_emb, attack)
    else:
        item_emb = ctx.embed_media(modality, items, image_fn)  # (N_item, D)
    ranks = retrieval_ranks(item_emb, caption_emb, owner)
    found = metrics_from_ranks(ranks, ks=(1, 5, 10))
    if map_at is not None:
        found.update(map_at_k(ranks, map_at))
    # metrics_from_ranks names directions by images and texts; here they are the items' and captions' modalities.
    names = {"i2t": forward, "t2i": backward}
    metrics = {f"{names[k[:3]]}{k[3:]}": v for k, v in found.items()}
    metrics["rsum"] = sum(metrics[f"{d}_R@{k}"] for d in (forward, backward) for k in (1, 5, 10))
    if not full:
        return PassResult(metrics)
    best = ranks.image_to_text[:, 0]  # rank of each item's best caption
    units = list(range(len(items))) if item_groups is None else list(item_groups)
    ci = {
        f"{d}_R@{k}": grouped_bootstrap_ci((r <= k).astype(np.float64), g, n_resamples=ctx.n_resamples, seed=ctx.seed)
        for d, r, g in ((forward, best, units), (backward, ranks.text_to_image, [units[o] for o in owner]))
        for k in (1, 5, 10)
    }
    recall = {d: {str(k): metrics[f"{d}_R@{k}"] for k in (1, 5, 10)} for d in (forward, backward)}
    n_show = min(MAX_EXAMPLES, len(items))
    sims = item_emb[:n_show] @ caption_emb.T  # (n_show, N_caption)
    top = sims.topk(min(3, len(captions)), dim=1)
    owner_arr = np.asarray(owner)
    examples = []
    for i in range(n_show):
        own = int(np.flatnonzero(owner_arr == i)[0])
        retrieved = [
            Retrieved(**_shown(caption_modality, captions[j]), score=float(s))
            for s, j in zip(top.values[i].tolist(), top.indices[i].tolist())
        ]
        examples.append(
            Example(
                **_shown(modality, items[i]),
                reference=_path(captions[own]),
                prediction=_path(captions[top.indices[i, 0]]),
                correct=bool(owner_arr[top.indices[i, 0]] == i),
                retrieved=retrieved,
            )
        )
    # The headline is the caption -> item direction (t2i): one outcome per caption query.
    unit = "captions" if caption_modality == "text" else UNITS[caption_modality]
    return PassResult(metrics, ci, Details(recall_at_k=recall), examples, len(captions), unit)


# ---------------------------------------------------------------------------- captioning


def captioning(
    ctx: EvalContext,
    items: Sequence[ItemRef],
    references: Sequence[Sequence[str]],
    image_fn: ImageFn | None = None,
    full: bool = True,
    modality: str = "image",
) -> PassResult:
    """BLEU-1..4, ROUGE-L, CIDEr-D (and METEOR when java exists) of the model's greedy captions of ``items``."""
    preds = [c for chunk in ctx.map_media(ctx.backend.caption, modality, items, image_fn) for c in chunk]
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
        Example(**_shown(modality, items[i]), prediction=preds[i], reference=references[i][0])
        for i in range(min(MAX_EXAMPLES, len(items)))
    ]
    return PassResult(metrics, ci, Details(), examples, len(items), UNITS[modality])


# ---------------------------------------------------------------------------- VQA


@dataclass
class Questions:
    """Questions aligned by index about items of ``modality`` (images, clips ...); ``item_index`` says which of
    ``items`` each one is about."""

    items: Sequence[ItemRef]
    item_index: list[int]
    questions: list[str]
    answers: list[list[str]]
    types: list[str | None]
    modality: str = "image"


def _answer_batches(ctx: EvalContext, qs: Questions, image_fn: ImageFn | None, drop: str | None) -> list[str]:
    out: list[str] = []
    for chunk in batches(range(len(qs.questions)), ctx.batch_size):
        owners = [qs.item_index[i] for i in chunk]
        # The corruption index is the item's, so all questions about one image see the same noise.
        items = ctx.decode(qs.modality, [qs.items[k] for k in owners], owners, image_fn)
        questions = [qs.questions[i] for i in chunk]
        out.extend(
            ctx.backend.answer(items, questions) if drop is None else ctx.backend.answer(items, questions, drop=drop)
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
        groups=dict(zip(ids, qs.item_index)),  # the questions about one item are resampled together
    )
    if not full:
        return PassResult(metrics)
    examples = [
        Example(
            **_shown(qs.modality, qs.items[qs.item_index[i]]),
            text=qs.questions[i],
            prediction=preds[i],
            reference=max(qs.answers[i], key=qs.answers[i].count),
            correct=per_q[i] > 0,
        )
        for i in range(min(MAX_EXAMPLES, len(preds)))
    ]
    return PassResult(metrics, ci, Details(per_question_type=per_type), examples, len(preds), "questions")


# ---------------------------------------------------------------------------- fusion models


def _absent(drop: str | None, n: int) -> dict[str, torch.Tensor] | None:
    """Presence masks with ``drop`` absent for every item: the model ignores that modality."""
    return None if drop is None else {drop: torch.zeros(n, dtype=torch.bool)}


@dataclass
class Statements:
    """Texts about items with a class each, for fusion classifiers. ``items`` holds each item's references per
    modality (an image; a clip's frames and its sound track), aligned by index; ``item_index[j]`` says which item
    text j is about."""

    items: Mapping[str, Sequence[ItemRef]]
    item_index: list[int]
    texts: list[str]
    labels: list[int]
    types: list[str | None]  # what a false claim gets wrong (ShapesWorld: exists, position, ...), for per-type accuracy
    classes: Sequence[str] = ("false", "true")  # class index -> the name examples show
    unit: str = "statements"  # what is counted: statements, or the items themselves when each has one text


@torch.inference_mode()
def statements(
    ctx: EvalContext, st: Statements, image_fn: ImageFn | None = None, drop: str | None = None, full: bool = True
) -> PassResult:
    """Accuracy of a fusion classifier on (item, text) pairs, overall and per statement type; the model reads each
    of the item's modalities it has a tower for (a unimodal classifier, a speaker's voice or words alone, reads one).
    ``drop`` names a modality every pair is treated as lacking."""
    saved, predicted = ctx.saved, []
    for chunk in batches(range(len(st.texts)), ctx.batch_size):
        owners = [st.item_index[i] for i in chunk]
        inputs = {}
        for modality, refs in st.items.items():
            if modality in saved.model.encoders:
                # The corruption index is the item's, so all statements about one image see the same noise.
                items = ctx.decode(modality, [refs[k] for k in owners], owners, image_fn)
                inputs[modality] = saved.inputs(modality, items)
        if "text" in saved.model.encoders:
            inputs["text"] = saved.inputs("text", [st.texts[i] for i in chunk])
        logits = saved.model(inputs, _absent(drop, len(chunk)))
        predicted.extend(logits.argmax(-1).tolist())
    hits = (np.asarray(predicted) == np.asarray(st.labels)).astype(np.float64)
    per_type = mean_by_type(dict(enumerate(hits.tolist())), dict(enumerate(st.types)))
    metrics = {
        "accuracy": float(hits.mean()) if len(hits) else 0.0,
        **{f"accuracy_{t}": v for t, v in per_type.items()},
    }
    if not full:
        return PassResult(metrics)
    if not len(hits):
        return PassResult(metrics, n=0, unit=st.unit)
    examples = [
        Example(
            **{
                m: v for modality, refs in st.items.items() for m, v in _shown(modality, refs[st.item_index[i]]).items()
            },
            text=st.texts[i],
            prediction=st.classes[predicted[i]],
            reference=st.classes[st.labels[i]],
            correct=bool(hits[i]),
        )
        for i in range(min(MAX_EXAMPLES, len(hits)))
    ]
    # The statements about one item are resampled together (a cluster bootstrap).
    ci = {"accuracy": grouped_bootstrap_ci(hits, st.item_index, n_resamples=ctx.n_resamples, seed=ctx.seed)}
    return PassResult(metrics, ci, Details(per_statement_type=per_type or None), examples, len(hits), st.unit)


# ---------------------------------------------------------------------------- text-to-image generation


@dataclass
class GenerationSettings:
    """How a generation benchmark samples: one image per prompt, prompt ``i`` from seed ``seed * 1_000_000 + i``."""

    steps: int = 25
    guidance: float = 3.0
    sampler: str = "ddim"


def generation(
    ctx: EvalContext,
    prompts: Sequence[str],
    objects: Sequence[Sequence[dict]],
    real: Sequence[ImageRef],
    checker: SceneChecker,
    clip: Backend | None,
    settings: GenerationSettings,
    media_dir: Path | None = None,
    full: bool = True,
) -> PassResult:
    """One image per prompt, judged by what it shows: the scene checker's attribute accuracies (with the checker's
    own on the real images of the same rows beside them, ``real_*``), the CLIP score with ``clip`` (when given)
    and ``FD (EfficientNet-Lite0)`` against the real images. The first images are written to ``media_dir`` (when
    given) and shown as examples."""
    images: list[Image.Image] = []
    for chunk in batches(range(len(prompts)), ctx.batch_size):
        images += ctx.backend.generate(
            [prompts[i] for i in chunk],
            num_per_text=1,
            steps=settings.steps,
            guidance=settings.guidance,
            seed=[ctx.seed * 1_000_000 + i for i in chunk],
            sampler=settings.sampler,
        )
    size = images[0].size
    wanted = [scene_of(o) for o in objects]
    read = checker.read(images)
    metrics = {k: v for k, v in scene_scores(read, wanted).items() if k not in ("images", "objects")}
    real_images = [decode_image(ref).resize(size, Image.Resampling.BOX) for ref in real]
    real_read = checker.read(real_images)
    metrics |= {f"real_{k}": v for k, v in scene_scores(real_read, wanted).items() if k not in ("images", "objects")}
    if clip is not None:
        pairs = (embed(clip, "image", images), clip.embed_text(list(prompts)))
        metrics["clip_score"] = clip_score_of_embeddings(*pairs)
        metrics["real_clip_score"] = clip_score_of_embeddings(embed(clip, "image", real_images), pairs[1])
    metrics[FD_METRIC] = frechet_efficientnet_distance(images, real_images)
    if not full:
        return PassResult(metrics)
    # Each image's own scores, once: image metrics are means over images, object metrics over prompted objects.
    per_image = [scene_scores([seen], [prompted]) for seen, prompted in zip(read, wanted, strict=True)]
    objects_in = np.array([scores["objects"] for scores in per_image], dtype=np.float64)
    ci = {}
    for name in ("all_correct", "count_accuracy"):
        values = np.array([scores[name] for scores in per_image])
        ci[name] = bootstrap_ci(values, n_resamples=ctx.n_resamples, seed=ctx.seed)
    for name in ("cell_accuracy", "color_accuracy", "shape_accuracy", "position_accuracy"):
        hits = np.array([scores[name] for scores in per_image]) * objects_in
        ci[name] = bootstrap_ci(
            lambda idx, hits=hits: float(hits[idx].sum() / max(objects_in[idx].sum(), 1.0)),
            n_items=len(per_image),
            n_resamples=ctx.n_resamples,
            seed=ctx.seed,
        )
    examples = []
    if media_dir is not None:
        media_dir.mkdir(parents=True, exist_ok=True)
        for i in range(min(MAX_EXAMPLES, len(prompts))):
            path = media_dir / f"{i:04d}.png"
            write_atomic(path, encode_png(images[i]))
            seen = ", ".join(f"{color} {shape} in the {position}" for position, color, shape in read[i]) or "nothing"
            correct = set(read[i]) == set(wanted[i]) and len(read[i]) == len(wanted[i])
            examples.append(
                Example(
                    image=str(path.resolve()), text=prompts[i], prediction=f"checker reads: {seen}", correct=correct
                )
            )
    return PassResult(metrics, ci, Details(), examples, len(prompts), "prompts")
