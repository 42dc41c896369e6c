"""The named benchmarks of ``polymodal eval``: where each finds its files and which passes it runs.

A benchmark loads one split into a :class:`LoadedSplit`, whose ``score(image_fn, drop, full)`` runs the
scoring passes of :mod:`polymodal.evaluate.passes`. The runner calls it once for the result and,
with ``--robustness``, again per corruption severity and per dropped modality.

Layouts on disk (``--data PATH``) are described in ``docs/evaluation.md`` and in each loader.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from polymodal.backends import CAPTION, EMBED
from polymodal.data.readers import read_class_folders, read_karpathy, read_manifest, read_vqa
from polymodal.data.readers.cifar import cifar_classes, cifar_files, read_cifar
from polymodal.data.schema import Sample
from polymodal.evaluate import passes
from polymodal.evaluate.context import EvalContext, ImageFn
from polymodal.evaluate.prompts import resolve_templates
from polymodal.models import FusionClassifier, QuestionAnswerer

# (image_fn, drop, full) -> PassResult
Scorer = Callable[[ImageFn | None, str | None, bool], passes.PassResult]


@dataclass
class LoadedSplit:
    benchmark: str
    split: str
    headline: str
    score: Scorer
    drops: tuple[str, ...] = ()  # modalities the model can be evaluated without


@dataclass(frozen=True)
class Benchmark:
    name: str
    splits: tuple[str, ...]  # default splits
    load: Callable[[EvalContext, str], LoadedSplit]
    summary: str


def _data(ctx: EvalContext, name: str) -> Path:
    if ctx.data is None:
        raise ValueError(f"benchmark {name} needs --data PATH (see docs/evaluation.md for the layout)")
    if not ctx.data.exists():
        raise FileNotFoundError(f"--data {ctx.data}: no such file or directory")
    return ctx.data


def _templates(ctx: EvalContext, default: str) -> list[str]:
    return resolve_templates(ctx.templates or default)


def _read(ctx: EvalContext, samples: list[Sample]) -> list[Sample]:
    """Record the media files of ``samples`` as read, for the dataset hash."""
    ctx.read(*(s.image for s in samples if isinstance(s.image, str)))
    return samples


# ------------------------------------------------------------------------------------------ ShapesWorld


def _shapes_split(ctx: EvalContext, name: str, split: str) -> list[Sample]:
    manifest = _data(ctx, name) / f"{split}.jsonl"
    if not manifest.is_file():
        raise FileNotFoundError(
            f"{manifest}: no such file; --data must be a ShapesWorld directory (polymodal data shapes OUT)"
        )
    ctx.read(manifest)
    return _read(ctx, list(read_manifest(manifest, strict=True)))


def _load_shapes_zeroshot(ctx: EvalContext, split: str) -> LoadedSplit:
    from polymodal.data.shapes import COLORS, SHAPES

    ctx.require(EMBED, "shapes-zeroshot")
    # One-object images only: the label names the single object, so the prompt can be right.
    samples = [s for s in _shapes_split(ctx, "shapes-zeroshot", split) if len(s.metadata.get("objects", [])) == 1]
    if not samples:
        raise ValueError(f"{ctx.data}/{split}.jsonl: no one-object images to classify")
    classnames = [f"{c} {s}" for c in COLORS for s in SHAPES]
    labels = [classnames.index(s.metadata["label"]["color_shape"]) for s in samples]
    images = [s.image for s in samples]
    templates = _templates(ctx, "shapes")

    def parts(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
        # colour-shape class index = colour * n_shapes + shape
        n = len(SHAPES)
        return {
            "color_accuracy": float(np.mean(y_true // n == y_pred // n)),
            "shape_accuracy": float(np.mean(y_true % n == y_pred % n)),
        }

    def score(image_fn: ImageFn | None, drop: str | None, full: bool) -> passes.PassResult:
        return passes.zero_shot(ctx, images, labels, classnames, templates, image_fn, full, extra=parts)

    return LoadedSplit("shapes-zeroshot", split, "accuracy", score)


def _captions(samples: list[Sample]) -> tuple[list[str], list[int]]:
    texts, owner = [], []
    for i, s in enumerate(samples):
        texts.extend(s.text)
        owner.extend([i] * len(s.text))
    return texts, owner


def _retrieval_split(ctx: EvalContext, name: str, split: str, samples: list[Sample]) -> LoadedSplit:
    """Retrieval when the model embeds, captioning when it captions; both when it does both."""
    can = ctx.backend.capabilities
    if EMBED not in can and CAPTION not in can:
        ctx.require(EMBED, name)
    images = [s.image for s in samples]
    texts, owner = _captions(samples)
    refs = [s.text for s in samples]

    def score(image_fn: ImageFn | None, drop: str | None, full: bool) -> passes.PassResult:
        runs = []
        if EMBED in can:
            runs.append(passes.retrieval(ctx, images, texts, owner, image_fn, full))
        # A robustness rerun (full=False) only needs the headline, which retrieval already gives.
        if CAPTION in can and (full or EMBED not in can):
            runs.append(passes.captioning(ctx, images, refs, image_fn, full))
        if len(runs) == 1:
            return runs[0]
        ret, cap = runs  # one result: retrieval details, half the examples from each pass
        return passes.PassResult(
            {**ret.metrics, **cap.metrics}, {**ret.ci95, **cap.ci95}, ret.details, ret.examples[:8] + cap.examples[:8]
        )

    return LoadedSplit(name, split, "t2i_R@1" if EMBED in can else "CIDEr-D", score)


def _load_shapes_retrieval(ctx: EvalContext, split: str) -> LoadedSplit:
    ctx.require(EMBED, "shapes-retrieval")
    return _retrieval_split(ctx, "shapes-retrieval", split, _shapes_split(ctx, "shapes-retrieval", split))


def _load_shapes_caption(ctx: EvalContext, split: str) -> LoadedSplit:
    ctx.require(CAPTION, "shapes-caption")
    samples = _shapes_split(ctx, "shapes-caption", split)
    images, refs = [s.image for s in samples], [s.text for s in samples]

    def score(image_fn: ImageFn | None, drop: str | None, full: bool) -> passes.PassResult:
        return passes.captioning(ctx, images, refs, image_fn, full)

    return LoadedSplit("shapes-caption", split, "CIDEr-D", score)


def _questions(samples: list[Sample]) -> passes.Questions:
    qs = passes.Questions([s.image for s in samples], [], [], [], [])
    for i, s in enumerate(samples):
        for qa in s.qa:
            qs.image_index.append(i)
            qs.questions.append(qa.question)
            qs.answers.append(list(qa.answers))
            qs.types.append(qa.type)
    return qs


def _vqa_split(ctx: EvalContext, name: str, split: str, qs: passes.Questions, exact: bool) -> LoadedSplit:
    from polymodal.backends import ANSWER

    ctx.require(ANSWER, name)
    drops: tuple[str, ...] = ()
    if ctx.is_polymodal and isinstance(ctx.saved.model, QuestionAnswerer):
        drops = tuple(ctx.saved.model.modalities)  # a polymodal model runs with a modality marked absent

    def score(image_fn: ImageFn | None, drop: str | None, full: bool) -> passes.PassResult:
        return passes.vqa(ctx, qs, exact, image_fn, drop, full)

    return LoadedSplit(name, split, "vqa_accuracy", score, drops)


def _load_shapes_vqa(ctx: EvalContext, split: str) -> LoadedSplit:
    # One reference answer per question: exact match (the 10-annotator formula would score 0).
    return _vqa_split(ctx, "shapes-vqa", split, _questions(_shapes_split(ctx, "shapes-vqa", split)), exact=True)


def _load_shapes_statements(ctx: EvalContext, split: str) -> LoadedSplit:

    if not ctx.is_polymodal or not isinstance(ctx.saved.model, FusionClassifier):
        raise ValueError(f"benchmark shapes-statements needs a polymodal fusion classifier; {ctx.model} is not one")
    samples = _shapes_split(ctx, "shapes-statements", split)
    st = passes.Statements([s.image for s in samples], [], [], [], [])
    for i, s in enumerate(samples):
        for statement in s.statements:
            st.image_index.append(i)
            st.texts.append(statement.text)
            st.labels.append(int(statement.label))
            st.types.append(statement.type)

    def score(image_fn: ImageFn | None, drop: str | None, full: bool) -> passes.PassResult:
        return passes.statements(ctx, st, image_fn, drop, full)

    return LoadedSplit("shapes-statements", split, "accuracy", score, tuple(ctx.saved.model.modalities))


# ------------------------------------------------------------------------------------------ standard sets


def _classification_split(
    ctx: EvalContext, name: str, split: str, samples: list[Sample], classnames: list[str]
) -> LoadedSplit:
    ctx.require(EMBED, name)
    images = [s.image for s in samples]
    labels = [int(s.metadata["class_index"]) for s in samples]
    # Folder and file names use "_" for spaces ("maple_tree"); prompts need the words.
    prompts = [c.replace("_", " ") for c in classnames]
    templates = _templates(ctx, "imagenet")

    def score(image_fn: ImageFn | None, drop: str | None, full: bool) -> passes.PassResult:
        return passes.zero_shot(ctx, images, labels, prompts, templates, image_fn, full)

    return LoadedSplit(name, split, "accuracy", score)


def _load_imagefolder(ctx: EvalContext, split: str) -> LoadedSplit:
    from polymodal.data.readers.classfolders import class_folders

    root = _data(ctx, "imagefolder")
    if split != "all":  # DATA/<split>/<class>/...; "all" is DATA/<class>/...
        root = root / split
        if not root.is_dir():
            raise FileNotFoundError(f"{root}: no such split folder (use --split all for DATA/<class>/<image>)")
    classes = class_folders(root)
    if not classes:
        raise ValueError(f"{root}: no class folders (expected {root}/<class name>/<image>)")
    samples = _read(ctx, list(read_class_folders(root, strict=True, classes=classes)))
    if not samples:
        raise ValueError(f"{root}: no images in the class folders")
    return _classification_split(ctx, "imagefolder", split, samples, classes)


def _cifar_loader(variant: str) -> Callable[[EvalContext, str], LoadedSplit]:
    def load(ctx: EvalContext, split: str) -> LoadedSplit:
        root = _data(ctx, variant)
        ctx.read(*cifar_files(root, variant, split))  # type: ignore[arg-type]
        samples = list(read_cifar(root, variant, split, strict=True))  # type: ignore[arg-type]
        return _classification_split(ctx, variant, split, samples, cifar_classes(root, variant))  # type: ignore[arg-type]

    return load


def _karpathy_loader(
    name: str, json_name: str, image_dirs: tuple[str, ...]
) -> Callable[[EvalContext, str], LoadedSplit]:
    def load(ctx: EvalContext, split: str) -> LoadedSplit:
        root = _data(ctx, name)
        annotations = root / json_name if root.is_dir() else root
        base = annotations.parent
        image_root = next((base / d for d in image_dirs if (base / d).is_dir()), base)
        ctx.read(annotations)
        samples = _read(ctx, list(read_karpathy(annotations, image_root, split=split, strict=True)))
        if not samples:
            raise ValueError(f"{annotations}: no images in split {split!r}")
        return _retrieval_split(ctx, name, split, samples)

    return load


def _load_vqav2(ctx: EvalContext, split: str) -> LoadedSplit:
    root = _data(ctx, "vqav2")
    questions = root / f"v2_OpenEnded_mscoco_{split}_questions.json"
    annotations = root / f"v2_mscoco_{split}_annotations.json"
    image_dir = root / split if (root / split).is_dir() else root
    ctx.read(questions, annotations)
    samples = _read(ctx, list(read_vqa(questions, image_dir, annotations, strict=True, subtype=split)))
    return _vqa_split(ctx, "vqav2", split, _questions(samples), exact=False)


SHAPES_SPLITS = ("test", "test_novel")
BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in [
        Benchmark("shapes-zeroshot", SHAPES_SPLITS, _load_shapes_zeroshot, "zero-shot colour-shape classification"),
        Benchmark("shapes-retrieval", SHAPES_SPLITS, _load_shapes_retrieval, "image<->caption retrieval"),
        Benchmark("shapes-caption", SHAPES_SPLITS, _load_shapes_caption, "captioning: BLEU, ROUGE-L, CIDEr-D"),
        Benchmark("shapes-vqa", SHAPES_SPLITS, _load_shapes_vqa, "VQA exact match, per question type"),
        Benchmark("shapes-statements", SHAPES_SPLITS, _load_shapes_statements, "true/false statements (fusion)"),
        Benchmark("imagefolder", ("all",), _load_imagefolder, "zero-shot classification over class folders"),
        Benchmark("cifar10", ("test",), _cifar_loader("cifar10"), "zero-shot CIFAR-10 (binary version)"),
        Benchmark("cifar100", ("test",), _cifar_loader("cifar100"), "zero-shot CIFAR-100 (binary version)"),
        Benchmark(
            "flickr30k",
            ("test",),
            _karpathy_loader("flickr30k", "dataset_flickr30k.json", ("flickr30k-images", "images")),
            "Karpathy-split retrieval + captioning",
        ),
        Benchmark(
            "coco-karpathy",
            ("test",),
            _karpathy_loader("coco-karpathy", "dataset_coco.json", ()),
            "Karpathy-split retrieval + captioning",
        ),
        Benchmark("vqav2", ("val2014",), _load_vqav2, "VQA accuracy (10 human answers) per answer type"),
    ]
}
