"""The named benchmarks of ``polymodal eval``: where each finds its files and which passes it runs.

A benchmark loads one split into a :class:`LoadedSplit`, whose ``score(image_fn, drop, full)`` runs the
scoring passes of :mod:`polymodal.evaluate.passes`. The runner calls it once for the result and,
with ``--robustness``, again per corruption severity and per dropped modality; with ``--adversarial``, a zero-shot
image classification's or image-caption retrieval's ``attacked(attack)`` scores its images moved by PGD.

Layouts on disk (``--data PATH``) are described in ``docs/evaluation.md`` and in each loader.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from polymodal.backends import ANSWER, CAPTION, EMBED, GENERATE
from polymodal.data.readers import (
    read_audiocaps,
    read_class_folders,
    read_clotho,
    read_esc50,
    read_karpathy,
    read_manifest,
    read_msrvtt,
    read_vqa,
)
from polymodal.data.readers.cifar import cifar_classes, cifar_files, read_cifar
from polymodal.data.schema import Sample
from polymodal.evaluate import passes
from polymodal.evaluate.context import Attack, EvalContext, ImageFn, ItemRef, NotApplicable
from polymodal.evaluate.prompts import class_words, resolve_templates
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
    media: str = "image"  # the modality of the items scored; corruption curves need images
    also: tuple[str, ...] = ()  # metrics beside the headline that the results table shows too
    attacked: Callable[[Attack], passes.PassResult] | None = None  # the headline pass on attacked images, if defined
    attack_goal: str = "the true class among the class prompts"  # what the attack raises the cross-entropy of


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
    ctx.read(*(ref for s in samples for ref in (s.image, s.audio, s.video) if isinstance(ref, str)))
    return samples


def _items(samples: list[Sample], modality: str) -> list[ItemRef]:
    """Each sample's reference of ``modality``; a sample without one is an error naming its row."""
    refs = [s.reference(modality) for s in samples]
    missing = next((s for s, ref in zip(samples, refs) if ref is None), None)
    if missing is not None:
        raise ValueError(f"{missing.where()}: sample {missing.id!r} has no {modality}")
    return refs


def _name(kind: str, modality: str) -> str:
    """ShapesWorld benchmark names: ``shapes-zeroshot`` for images, ``shapes-audio-zeroshot`` for sounds,
    ``shapes-video-retrieval`` for clips."""
    return f"shapes-{kind}" if modality == "image" else f"shapes-{modality}-{kind}"


# ------------------------------------------------------------------------------------------ ShapesWorld


def _shapes_manifest(ctx: EvalContext, name: str, split: str, prefix: str = "") -> Path:
    """``{prefix}{split}.jsonl`` (``speech_test.jsonl`` ...) in the ShapesWorld directory, recorded as read; a split
    the directory lacks is an error naming the splits it has."""
    from polymodal.data.shapes import SPLITS

    root = _data(ctx, name)
    manifest = root / f"{prefix}{split}.jsonl"
    if not manifest.is_file():
        present = [s for s in SPLITS if (root / f"{prefix}{s}.jsonl").is_file()]
        if not present:
            raise FileNotFoundError(
                f"{manifest}: no such file; --data must be a ShapesWorld directory (polymodal data shapes OUT)"
            )
        raise FileNotFoundError(
            f"{root}: no split {split!r} for {name} (no {manifest.name}); this directory has: {', '.join(present)}"
        )
    ctx.read(manifest)
    return manifest


def _shapes_split(ctx: EvalContext, name: str, split: str, prefix: str = "") -> list[Sample]:
    """The rows of ``{prefix}{split}.jsonl`` in the ShapesWorld directory."""
    manifest = _shapes_manifest(ctx, name, split, prefix)
    return _read(ctx, list(read_manifest(manifest, strict=True)))


def _shapes_zeroshot(modality: str) -> Callable[[EvalContext, str], LoadedSplit]:
    name = _name("zeroshot", modality)

    def load(ctx: EvalContext, split: str) -> LoadedSplit:
        from polymodal.data.shapes import COLORS, SHAPES

        ctx.require(EMBED, name, modality)
        # One-object scenes only: the label names the single object, so the prompt can be right.
        scenes = _shapes_split(ctx, name, split)
        samples = [s for s in scenes if len(s.metadata.get("objects", [])) == 1]
        if not samples:
            raise NotApplicable(
                f"{ctx.data}/{split}.jsonl: none of its {len(scenes)} scenes has one object to classify"
            )
        classnames = [f"{c} {s}" for c in COLORS for s in SHAPES]
        labels = [classnames.index(s.metadata["label"]["color_shape"]) for s in samples]
        items = _items(samples, modality)
        templates = _templates(ctx, "shapes")

        def parts(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
            # colour-shape class index = colour * n_shapes + shape
            n = len(SHAPES)
            return {
                "color_accuracy": float(np.mean(y_true // n == y_pred // n)),
                "shape_accuracy": float(np.mean(y_true % n == y_pred % n)),
            }

        return _zero_shot_split(ctx, name, split, items, labels, classnames, templates, parts, modality)

    return load


def _captions(samples: list[Sample]) -> tuple[list[str], list[int]]:
    texts, owner = [], []
    for i, s in enumerate(samples):
        texts.extend(s.text)
        owner.extend([i] * len(s.text))
    return texts, owner


def _retrieval_split(
    ctx: EvalContext,
    name: str,
    split: str,
    samples: list[Sample],
    modality: str = "image",
    map_at: int | None = None,
) -> LoadedSplit:
    """Retrieval when the model embeds ``modality``, captioning when it captions it; both when it does both."""
    embeds, captions = ctx.takes(EMBED, modality), ctx.takes(CAPTION, modality)
    if not embeds and not captions:
        ctx.require(EMBED, name, modality)
    items = _items(samples, modality)
    texts, owner = _captions(samples)
    refs = [s.text for s in samples]

    def score(image_fn: ImageFn | None, drop: str | None, full: bool) -> passes.PassResult:
        runs = []
        if embeds:
            runs.append(passes.retrieval(ctx, items, texts, owner, image_fn, full, modality=modality, map_at=map_at))
        # A robustness rerun (full=False) only needs the headline, which retrieval already gives.
        if captions and (full or not embeds):
            runs.append(passes.captioning(ctx, items, refs, image_fn, full, modality=modality))
        return passes.merge(*runs)  # retrieval details, half the examples from each pass

    def attacked(attack: Attack) -> passes.PassResult:
        return passes.retrieval(ctx, items, texts, owner, None, False, modality=modality, map_at=map_at, attack=attack)

    return LoadedSplit(
        name,
        split,
        f"t2{modality[0]}_R@1" if embeds else "CIDEr-D",
        score,
        media=modality,
        attacked=attacked if embeds and modality == "image" else None,
        attack_goal="each image's own captions among the split's captions",
    )


def _shapes_retrieval(modality: str) -> Callable[[EvalContext, str], LoadedSplit]:
    name = _name("retrieval", modality)

    def load(ctx: EvalContext, split: str) -> LoadedSplit:
        ctx.require(EMBED, name, modality)
        samples = _shapes_split(ctx, name, split)
        loaded = _retrieval_split(ctx, name, split, samples, modality)
        if modality == "image" or not ctx.takes(EMBED, "image") or any(s.image is None for s in samples):
            return loaded
        # A model that embeds images too (one space for image, audio and text): image <-> sound of the same scene,
        # which emerges when only image-text and audio-text pairs were trained.
        images, sounds, own = _items(samples, "image"), _items(samples, modality), list(range(len(samples)))
        with_text = loaded.score

        def score(image_fn: ImageFn | None, drop: str | None, full: bool) -> passes.PassResult:
            cross = passes.retrieval(ctx, images, sounds, own, None, full, caption_modality=modality)
            return passes.merge(with_text(image_fn, drop, full), cross)

        loaded.score = score
        return loaded

    return load


def _shapes_caption(modality: str) -> Callable[[EvalContext, str], LoadedSplit]:
    name = _name("caption", modality)

    def load(ctx: EvalContext, split: str) -> LoadedSplit:
        ctx.require(CAPTION, name, modality)
        samples = _shapes_split(ctx, name, split)
        items, refs = _items(samples, modality), [s.text for s in samples]

        def score(image_fn: ImageFn | None, drop: str | None, full: bool) -> passes.PassResult:
            return passes.captioning(ctx, items, refs, image_fn, full, modality=modality)

        return LoadedSplit(name, split, "CIDEr-D", score, media=modality)

    return load


def _load_shapes_speech(ctx: EvalContext, split: str) -> LoadedSplit:
    """Spoken captions (``speech_{split}.jsonl``, one row per caption read aloud) against their words, and against
    the image they describe when the model embeds images too."""
    name = "shapes-speech-retrieval"
    ctx.require(EMBED, name, "audio")
    ctx.require(EMBED, name, "text")
    samples = _shapes_split(ctx, name, split, "speech_")
    speech = _items(samples, "audio")
    texts = [t[0] for t in _items(samples, "text")]  # one caption per row
    with_images = ctx.takes(EMBED, "image")
    images: list[ItemRef] = []
    image_owner: list[int] = []
    if with_images:
        index = {ref: i for i, ref in enumerate(dict.fromkeys(_items(samples, "image")))}
        images, image_owner = list(index), [index[s.image] for s in samples]  # type: ignore[index]

    # A row's clip and words describe its image, as its other captions' do: the CIs resample them by image.
    scenes = [s.image for s in samples]
    by_scene = scenes if all(scene is not None for scene in scenes) else None

    def score(image_fn: ImageFn | None, drop: str | None, full: bool) -> passes.PassResult:
        owner = list(range(len(texts)))
        runs = [passes.retrieval(ctx, speech, texts, owner, None, full, modality="audio", item_groups=by_scene)]
        if with_images:  # each image owns the clips of its captions: i2a / a2i
            runs.append(passes.retrieval(ctx, images, speech, image_owner, None, full, caption_modality="audio"))
        return passes.merge(*runs)

    return LoadedSplit(name, split, "t2a_R@1", score, media="audio")


def _questions(samples: list[Sample], modality: str = "image") -> passes.Questions:
    """Every question of ``samples`` about its item of ``modality``, with its answers and type."""
    qs = passes.Questions(_items(samples, modality), [], [], [], [], modality=modality)
    for i, s in enumerate(samples):
        for qa in s.qa:
            qs.item_index.append(i)
            qs.questions.append(qa.question)
            qs.answers.append(list(qa.answers))
            qs.types.append(qa.type)
    return qs


def _vqa_split(ctx: EvalContext, name: str, split: str, qs: passes.Questions, exact: bool) -> LoadedSplit:
    drops: tuple[str, ...] = ()
    if ctx.is_polymodal and isinstance(ctx.saved.model, QuestionAnswerer):
        drops = tuple(ctx.saved.model.modalities)  # a polymodal model runs with a modality marked absent

    def score(image_fn: ImageFn | None, drop: str | None, full: bool) -> passes.PassResult:
        return passes.vqa(ctx, qs, exact, image_fn, drop, full)

    return LoadedSplit(name, split, "vqa_accuracy", score, drops, media=qs.modality)


def _shapes_vqa(name: str, modality: str) -> Callable[[EvalContext, str], LoadedSplit]:
    """Questions about ShapesWorld scenes (or clips) for a model that answers about ``modality``; one reference
    answer per question: exact match (the 10-annotator formula would score 0)."""

    def load(ctx: EvalContext, split: str) -> LoadedSplit:
        ctx.require(ANSWER, name, modality)
        return _vqa_split(ctx, name, split, _questions(_shapes_split(ctx, name, split), modality), exact=True)

    return load


def _fusion_classifier(ctx: EvalContext, name: str, modalities: set[str], any_of: bool = False) -> FusionClassifier:
    """The model as a fusion classifier of ``modalities`` (``any_of``: of some of them and nothing else)."""
    model = ctx.saved.model if ctx.is_polymodal else None
    have = set(model.modalities) if isinstance(model, FusionClassifier) else set()
    fits = (have and have <= modalities) if any_of else modalities <= have
    if not fits:
        need = (" or " if any_of else " and ").join(sorted(modalities))
        raise NotApplicable(f"benchmark {name} needs a polymodal fusion classifier of {need}; {ctx.model} is not one")
    return model  # type: ignore[return-value]


def _shapes_statements(modality: str) -> Callable[[EvalContext, str], LoadedSplit]:
    """True/false statements about each item of ``modality`` (a scene's image, a clip) for a fusion classifier of
    it and text; ``--robustness`` adds the accuracy with each modality dropped."""
    name = _name("statements", modality)

    def load(ctx: EvalContext, split: str) -> LoadedSplit:
        model = _fusion_classifier(ctx, name, {modality, "text"})
        st = _statements_of(_shapes_split(ctx, name, split), [modality])

        def score(image_fn: ImageFn | None, drop: str | None, full: bool) -> passes.PassResult:
            return passes.statements(ctx, st, image_fn, drop, full)

        return LoadedSplit(name, split, "accuracy", score, tuple(model.modalities), media=modality)

    return load


def _statements_of(samples: list[Sample], modalities: list[str], skip_types: Collection[str] = ()) -> passes.Statements:
    """Every statement of ``samples`` about its item (its references of ``modalities``), true (1) or false (0),
    but those of a type in ``skip_types``."""
    st = passes.Statements({m: _items(samples, m) for m in modalities}, [], [], [], [])
    for i, s in enumerate(samples):
        for statement in s.statements:
            if statement.type in skip_types:
                continue
            st.item_index.append(i)
            st.texts.append(statement.text)
            st.labels.append(int(statement.label))
            st.types.append(statement.type)
    return st


def _labelled_clips(
    ctx: EvalContext,
    samples: list[Sample],
    modality: str,
    label: Callable[[Sample], str],
    types: Callable[[Sample], str | None],
    texts: bool = True,
) -> passes.Statements:
    """``samples`` as (item of ``modality``, text, class) for a classifier; ``label`` names each one's class,
    ``types`` the group each row's accuracy is also reported for. Without ``texts`` the classifier reads the
    items alone."""
    # Class index -> name as trained (answers.json), else the sorted label names, as training numbers them.
    classes = ctx.saved.answers or sorted({label(s) for s in samples})
    unknown = next((s for s in samples if label(s) not in classes), None)
    if unknown is not None:
        raise ValueError(f"{unknown.where()}: label {label(unknown)!r} is not one of the model's classes {classes}")
    return passes.Statements(
        items={modality: _items(samples, modality)},
        item_index=list(range(len(samples))),
        texts=[t[0] for t in _items(samples, "text")] if texts else [""] * len(samples),
        labels=[classes.index(label(s)) for s in samples],
        types=[types(s) for s in samples],
        classes=classes,
        unit=passes.UNITS[modality],  # one text per item: the items are what is counted
    )


def _load_shapes_sentiment(ctx: EvalContext, split: str) -> LoadedSplit:
    """Spoken sentences (``sentiment_{split}.jsonl``) whose label needs the words and how they are said: accuracy
    of an audio + text fusion classifier, and (``--robustness``) with each modality dropped; or of a unimodal
    baseline (audio alone, text alone)."""
    name = "shapes-sentiment"
    model = _fusion_classifier(ctx, name, {"audio", "text"}, any_of=True)  # the unimodal baselines too
    # Per delivery (sincere / sarcastic): where the words mislead.
    samples = _shapes_split(ctx, name, split, "sentiment_")
    st = _labelled_clips(ctx, samples, "audio", lambda s: str(s.label), lambda s: s.metadata.get("delivery"))

    def score(image_fn: ImageFn | None, drop: str | None, full: bool) -> passes.PassResult:
        return passes.statements(ctx, st, image_fn, drop, full)

    drops = tuple(model.modalities) if len(model.modalities) > 1 else ()
    return LoadedSplit(name, split, "accuracy", score, drops, media="audio")


def _load_shapes_speaker(ctx: EvalContext, split: str) -> LoadedSplit:
    """Who is speaking (``speech_{split}.jsonl``, label = the eSpeak voice): accuracy of an audio classifier, and
    per speaker."""
    name = "shapes-speaker"
    _fusion_classifier(ctx, name, {"audio"})
    samples = _shapes_split(ctx, name, split, "speech_")
    st = _labelled_clips(ctx, samples, "audio", lambda s: str(s.label), lambda s: str(s.label))

    def score(image_fn: ImageFn | None, drop: str | None, full: bool) -> passes.PassResult:
        return passes.statements(ctx, st, image_fn, drop, full)

    return LoadedSplit(name, split, "accuracy", score, media="audio")


def _first_action(sample: Sample) -> str:
    """The action of a ShapesWorld-moves clip's first event (``label.action``)."""
    label = sample.metadata.get("label")
    if not isinstance(label, dict) or "action" not in label:
        raise ValueError(
            f"{sample.where()}: no label.action; --data must be ShapesWorld moves (polymodal data shapes-video)"
        )
    return str(label["action"])


def _load_shapes_video_action(ctx: EvalContext, split: str) -> LoadedSplit:
    """What the first event of each clip is: a video classifier's accuracy (per action), or zero-shot for a model
    that embeds video and text (each clip against prompts of the ten actions, "a shape moves left")."""
    from polymodal.data.shapes_video import ACTIONS

    name = "shapes-video-action"
    model = ctx.saved.model if ctx.is_polymodal else None
    if isinstance(model, FusionClassifier):
        _fusion_classifier(ctx, name, {"video"}, any_of=True)  # the clip alone: no words to give the action away
        samples = _shapes_split(ctx, name, split)
        st = _labelled_clips(ctx, samples, "video", _first_action, _first_action, texts=False)

        def classify(image_fn: ImageFn | None, drop: str | None, full: bool) -> passes.PassResult:
            return passes.statements(ctx, st, image_fn, drop, full)

        return LoadedSplit(name, split, "accuracy", classify, media="video")
    ctx.require(EMBED, name, "video")
    samples = _shapes_split(ctx, name, split)
    unknown = next((s for s in samples if _first_action(s) not in ACTIONS), None)
    if unknown is not None:
        raise ValueError(f"{unknown.where()}: action {_first_action(unknown)!r} is not one of {', '.join(ACTIONS)}")
    labels = [ACTIONS.index(_first_action(s)) for s in samples]
    items, templates = _items(samples, "video"), _templates(ctx, "actions")

    def zero_shot(image_fn: ImageFn | None, drop: str | None, full: bool) -> passes.PassResult:
        return passes.zero_shot(ctx, items, labels, list(ACTIONS), templates, image_fn, full, modality="video")

    return LoadedSplit(name, split, "accuracy", zero_shot, media="video")


def _load_shapes_video_av(ctx: EvalContext, split: str) -> LoadedSplit:
    """Which shape made the sound (``av_{split}.jsonl``): two shapes act one after the other and only one event
    clicks, the same click for every shape, so "the red circle made the sound" needs the frames (who acted when) and
    the sound (when it clicked). Accuracy of a video + audio + text fusion classifier, per event heard (first,
    second), and (``--robustness``) with video or audio dropped; or of a baseline that reads one of them (and text).
    The rows' statements about who acted first and when the sound came (training aids) are not scored."""
    from polymodal.data.shapes_video import AV_TRAINING_AIDS

    name = "shapes-video-av"
    model = _fusion_classifier(ctx, name, {"video", "audio", "text"}, any_of=True)
    samples = _shapes_split(ctx, name, split, "av_")
    media = [m for m in ("video", "audio") if m in model.modalities] or ["video"]  # text alone reads no clip
    st = _statements_of(samples, media, skip_types=AV_TRAINING_AIDS)

    def score(image_fn: ImageFn | None, drop: str | None, full: bool) -> passes.PassResult:
        return passes.statements(ctx, st, image_fn, drop, full)

    # The clip's modalities are dropped in turn, not the text: without it the true and the false statement about a
    # clip are one input, so exactly half are right whatever the model.
    drops = tuple(m for m in model.modalities if m != "text") if len(model.modalities) > 1 else ()
    return LoadedSplit(name, split, "accuracy", score, drops, media="video")


# ------------------------------------------------------------------------------------------ standard sets


def _classification_split(
    ctx: EvalContext,
    name: str,
    split: str,
    samples: list[Sample],
    classnames: list[str],
    labels: list[int] | None = None,
    modality: str = "image",
    extra: Callable[[np.ndarray, np.ndarray], dict[str, float]] | None = None,
) -> LoadedSplit:
    """Zero-shot classification of ``samples`` (labels: ``metadata["class_index"]`` unless given; ``extra`` adds
    metrics from the true and predicted class indices)."""
    ctx.require(EMBED, name, modality)
    items = _items(samples, modality)
    labels = labels if labels is not None else [int(s.metadata["class_index"]) for s in samples]
    # Folder and file names use "_" for spaces ("maple_tree") or camel case ("ApplyEyeMakeup"); prompts need words.
    prompts = [class_words(c) for c in classnames]
    templates = _templates(ctx, {"audio": "audio", "video": "human_actions"}.get(modality, "imagenet"))

    return _zero_shot_split(ctx, name, split, items, labels, prompts, templates, extra, modality)


def _zero_shot_split(
    ctx: EvalContext,
    name: str,
    split: str,
    items: list[ItemRef],
    labels: list[int],
    class_texts: list[str],
    templates: list[str],
    extra: Callable[[np.ndarray, np.ndarray], dict[str, float]] | None,
    modality: str,
) -> LoadedSplit:
    """Zero-shot classification of ``items``, each class named by its words in ``templates``; images can be
    attacked too."""

    def score(image_fn: ImageFn | None, drop: str | None, full: bool) -> passes.PassResult:
        return passes.zero_shot(ctx, items, labels, class_texts, templates, image_fn, full, extra, modality)

    def attacked(attack: Attack) -> passes.PassResult:
        return passes.zero_shot(ctx, items, labels, class_texts, templates, None, False, extra, attack=attack)

    return LoadedSplit(
        name, split, "accuracy", score, media=modality, attacked=attacked if modality == "image" else None
    )


# Prompts per split: the first rows of the manifest (256 images take about a minute to sample on 2 CPU cores).
GENERATION_PROMPTS = 256


def _load_shapes_generation(ctx: EvalContext, split: str) -> LoadedSplit:
    """Text-to-image on ShapesWorld: each row's full-spec prompt ("a red circle in the top left and ..."), one
    image each, judged by ``--judge checker=`` (a scene checker trained on real images) and, when given,
    ``--judge clip=`` (an image-text embedding model, for the CLIP score); FD against the same rows' real images."""
    from polymodal.data.shapes import load_split
    from polymodal.evaluate.generation import SceneChecker, scene_prompt

    name = "shapes-generation"
    ctx.require(GENERATE, name)
    manifest = _shapes_manifest(ctx, name, split)
    rows = load_split(manifest.parent, split)[:GENERATION_PROMPTS]
    checker = SceneChecker.of_backend(ctx.judge_backend("checker", name))
    clip = ctx.judge_backend("clip", name) if "clip" in ctx.judges else None
    prompts = [scene_prompt(row["objects"]) for row in rows]
    real = [str(manifest.parent / row["image"]) for row in rows]
    media = None if ctx.media_dir is None else ctx.media_dir / f"{name}-{split}"
    settings = passes.GenerationSettings()

    def score(image_fn: ImageFn | None, drop: str | None, full: bool) -> passes.PassResult:
        objects = [row["objects"] for row in rows]
        return passes.generation(ctx, prompts, objects, real, checker, clip, settings, media, full)

    return LoadedSplit(name, split, "all_correct", score, media="text")


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
        raise ValueError(f"{root}: no images or sounds in the class folders")
    # Class folders hold images or sounds (UrbanSound8K-style); the first file says which.
    modality = "audio" if samples[0].audio is not None else "image"
    return _classification_split(ctx, "imagefolder", split, samples, classes, modality=modality)


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
    ctx.require(ANSWER, "vqav2", "image")
    ctx.read(questions, annotations)
    samples = _read(ctx, list(read_vqa(questions, image_dir, annotations, strict=True, subtype=split)))
    return _vqa_split(ctx, "vqav2", split, _questions(samples), exact=False)


# ------------------------------------------------------------------------------------------ audio sets


def _load_esc50(ctx: EvalContext, split: str) -> LoadedSplit:
    """ESC-50 (``--split esc10``: its ESC-10 subset): zero-shot over the categories and a linear probe on the
    frozen audio embeddings, both scored on each of the five folds (the probe trained on the other four)."""
    from polymodal.data.readers.esc50 import META

    if split not in ("all", "esc10"):
        raise ValueError(f"esc50 has the splits all and esc10, not {split!r}")
    ctx.require(EMBED, "esc50", "audio")
    root = _data(ctx, "esc50")
    ctx.read(root / META)
    samples = _read(ctx, list(read_esc50(root, strict=True, esc10=split == "esc10")))
    if not samples:
        raise ValueError(f"{root / META}: no clips in split {split!r}")
    names = {int(s.metadata["class_index"]): str(s.label) for s in samples}
    targets = sorted(names)  # ESC-10 keeps its ESC-50 targets: number the classes present
    labels = [targets.index(int(s.metadata["class_index"])) for s in samples]
    folds = [int(s.metadata["fold"]) for s in samples]
    classnames = [names[t] for t in targets]

    def per_fold(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
        return passes.fold_accuracies((y_true == y_pred).astype(np.float64), folds, "accuracy")

    zero_shot = _classification_split(ctx, "esc50", split, samples, classnames, labels, "audio", per_fold)
    items = _items(samples, "audio")

    def score(image_fn: ImageFn | None, drop: str | None, full: bool) -> passes.PassResult:
        zs = zero_shot.score(image_fn, drop, full)
        return passes.merge(zs, passes.linear_probe(ctx, items, labels, folds, len(targets), full, "audio"))

    return LoadedSplit("esc50", split, "accuracy", score, media="audio", also=("probe_accuracy",))


def _caption_csv_loader(
    name: str,
    read: Callable[..., Iterator[Sample]],
    csv_name: str,
    modality: str,
    map_at: int | None = None,
    splits: tuple[str, ...] | None = None,
) -> Callable[[EvalContext, str], LoadedSplit]:
    """AudioCaps, Clotho, MSR-VTT 1k-A: ``csv_name`` (formatted with the split) under ``--data``, read by ``read``;
    item (of ``modality``) <-> caption retrieval both ways (``map_at``: with mAP@K), and captioning when the model
    captions that modality. ``splits``: the only ones the file layout has."""

    def load(ctx: EvalContext, split: str) -> LoadedSplit:
        if splits is not None and split not in splits:
            raise ValueError(f"{name} has the split{'s' * (len(splits) > 1)} {', '.join(splits)}, not {split!r}")
        root = _data(ctx, name)
        csv_file = root / csv_name.format(split) if root.is_dir() else root
        if not csv_file.is_file():
            raise FileNotFoundError(f"{csv_file}: no such file (see docs/evaluation.md for the {name} layout)")
        ctx.read(csv_file)
        samples = _read(ctx, list(read(csv_file, strict=True)))
        if not samples:
            raise ValueError(f"{csv_file}: no clips")
        return _retrieval_split(ctx, name, split, samples, modality, map_at=map_at)

    return load


# ------------------------------------------------------------------------------------------ video sets

UCF101_SPLITS = ("split1", "split2", "split3")


def _load_ucf101(ctx: EvalContext, split: str) -> LoadedSplit:
    """UCF101 (``split1``: ``testlist01.txt``, classes numbered by ``classInd.txt``): zero-shot accuracy over the
    classes the lists name ("a video of a person apply eye makeup"), and with ``trainlist01.txt`` beside it a linear
    probe on the frozen video embeddings, fitted on the train list's clips and scored on the test list's."""
    from polymodal.data.readers.caption_csv import first_folder

    name = "ucf101"
    if split not in UCF101_SPLITS:
        raise ValueError(f"{name} has the splits {', '.join(UCF101_SPLITS)}, not {split!r}")
    ctx.require(EMBED, name, "video")
    root = _data(ctx, name)
    lists, videos = first_folder(root / "ucfTrainTestlist", root), first_folder(root / "UCF-101", root)
    number = split.removeprefix("split")
    test_list, train_list = lists / f"testlist0{number}.txt", lists / f"trainlist0{number}.txt"
    if not test_list.is_file():
        raise FileNotFoundError(f"{test_list}: no such file (see docs/evaluation.md for the {name} layout)")
    ctx.read(*(f for f in (test_list, train_list, lists / "classInd.txt") if f.is_file()))
    test = _read(ctx, list(read_class_folders(videos, strict=True, split_list=test_list)))
    train = (
        _read(ctx, list(read_class_folders(videos, strict=True, split_list=train_list))) if train_list.is_file() else []
    )
    if not test:
        raise ValueError(f"{test_list}: no clips")
    names = {int(s.metadata["class_index"]): str(s.label) for s in test + train}
    targets = sorted(names)  # the classes the lists name, in classInd.txt's order
    number_of = {t: i for i, t in enumerate(targets)}
    labels = [number_of[int(s.metadata["class_index"])] for s in test]
    zero_shot = _classification_split(ctx, name, split, test, [names[t] for t in targets], labels, "video")
    if not train:
        return zero_shot
    items, train_items = _items(test, "video"), _items(train, "video")
    train_labels = [number_of[int(s.metadata["class_index"])] for s in train]

    def score(image_fn: ImageFn | None, drop: str | None, full: bool) -> passes.PassResult:
        probe = passes.train_test_probe(ctx, train_items, train_labels, items, labels, len(targets), full, "video")
        return passes.merge(zero_shot.score(image_fn, drop, full), probe)

    return LoadedSplit(name, split, "accuracy", score, media="video", also=("probe_accuracy",))


SHAPES_SPLITS = ("test", "test_novel")
BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in [
        Benchmark("shapes-zeroshot", SHAPES_SPLITS, _shapes_zeroshot("image"), "zero-shot colour-shape classification"),
        Benchmark("shapes-retrieval", SHAPES_SPLITS, _shapes_retrieval("image"), "image<->caption retrieval"),
        Benchmark("shapes-caption", SHAPES_SPLITS, _shapes_caption("image"), "captioning: BLEU, ROUGE-L, CIDEr-D"),
        Benchmark(
            "shapes-vqa", SHAPES_SPLITS, _shapes_vqa("shapes-vqa", "image"), "VQA exact match, per question type"
        ),
        Benchmark("shapes-statements", SHAPES_SPLITS, _shapes_statements("image"), "true/false statements (fusion)"),
        Benchmark(
            "shapes-audio-zeroshot", SHAPES_SPLITS, _shapes_zeroshot("audio"), "zero-shot colour-shape of sounds"
        ),
        Benchmark(
            "shapes-audio-retrieval", SHAPES_SPLITS, _shapes_retrieval("audio"), "scene sound<->caption retrieval"
        ),
        Benchmark("shapes-audio-caption", SHAPES_SPLITS, _shapes_caption("audio"), "captioning of scene sounds"),
        Benchmark(
            "shapes-speech-retrieval", SHAPES_SPLITS, _load_shapes_speech, "spoken caption<->text (and <->image)"
        ),
        Benchmark("shapes-sentiment", SHAPES_SPLITS, _load_shapes_sentiment, "spoken sentiment (audio+text fusion)"),
        Benchmark("shapes-speaker", SHAPES_SPLITS, _load_shapes_speaker, "speaker identification of spoken captions"),
        Benchmark(
            "shapes-video-retrieval", SHAPES_SPLITS, _shapes_retrieval("video"), "ShapesWorld-moves clip<->caption"
        ),
        Benchmark("shapes-video-caption", SHAPES_SPLITS, _shapes_caption("video"), "captioning of clips' events"),
        Benchmark(
            "shapes-video-action",
            SHAPES_SPLITS,
            _load_shapes_video_action,
            "first event's action: classifier or zero-shot",
        ),
        Benchmark(
            "shapes-video-qa",
            SHAPES_SPLITS,
            _shapes_vqa("shapes-video-qa", "video"),
            "questions about clips' events, exact match",
        ),
        Benchmark(
            "shapes-video-statements",
            SHAPES_SPLITS,
            _shapes_statements("video"),
            "true/false statements on clips (fusion)",
        ),
        Benchmark(
            "shapes-video-av",
            SHAPES_SPLITS,
            _load_shapes_video_av,
            "which shape made the sound (video+audio+text fusion)",
        ),
        Benchmark(
            "shapes-generation",
            SHAPES_SPLITS,
            _load_shapes_generation,
            "text-to-image: attribute accuracy (scene checker), CLIP score, FD (EfficientNet-Lite0)",
        ),
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
        Benchmark("esc50", ("all",), _load_esc50, "five-fold zero-shot and linear probe on ESC-50"),
        Benchmark(
            "audiocaps",
            ("test",),
            _caption_csv_loader("audiocaps", read_audiocaps, "{}.csv", "audio", map_at=10),
            "audio<->caption retrieval, mAP@10",
        ),
        Benchmark(
            "clotho",
            ("evaluation",),
            _caption_csv_loader("clotho", read_clotho, "clotho_captions_{}.csv", "audio", map_at=10),
            "audio<->caption retrieval, mAP@10",
        ),
        Benchmark(
            "msrvtt",
            ("test",),
            _caption_csv_loader("msrvtt", read_msrvtt, "MSRVTT_JSFUSION_test.csv", "video", splits=("test",)),
            "MSR-VTT 1k-A text<->video retrieval, R@K and median rank",
        ),
        Benchmark("ucf101", ("split1",), _load_ucf101, "UCF101 zero-shot and linear probe on a split's lists"),
    ]
}
