"""A recipe's data: rows read (bad ones counted), the tokenizer, the label vocabulary, each modality's processor
and the training and validation datasets."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Collection, Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from polymodal.config import ConfigError
from polymodal.data.dataset import LabelFn, MultimodalDataset, label_from_vocab, qa_samples, statement_samples
from polymodal.data.errors import BadSampleError, BadSampleLog
from polymodal.data.hard_negatives import WordSwapNegatives
from polymodal.data.processors import (
    PROCESSORS,
    TOKENIZER_DIR,
    ImageProcessor,
    Processor,
    TextProcessor,
    processor_from_settings,
)
from polymodal.data.readers import FoundDataset, find_dataset
from polymodal.data.readers.webdataset import is_shard_pattern
from polymodal.data.schema import Sample
from polymodal.data.text import TextTokenizer, train_tokenizer
from polymodal.models import find_model_dir
from polymodal.models.saved import ANSWERS_FILE, CLASSES, MULTILABEL, REGRESSION
from polymodal.train.recipe import OBJECTIVE_VIEWS, DataSection, Recipe

# Reader options that name a file or folder: relative to data.path, as the splits are.
PATH_OPTIONS = ("split_list", "image_root", "image_dir", "annotations", "audio_dir", "video_dir")


def split_path(data: DataSection, name: str) -> Path:
    """Where the split ``name`` (data.train or data.val) is: under data.path unless absolute."""
    return Path(data.path) / Path(name).expanduser()


def split_options(data: DataSection, role: str) -> dict[str, Any]:
    """data.ROLE_options with the paths in them under data.path (unless absolute)."""
    options = dict(getattr(data, f"{role}_options"))
    for key in PATH_OPTIONS:
        if isinstance(options.get(key), str):
            options[key] = str(Path(data.path) / Path(options[key]).expanduser())
    return options


def find_split(data: DataSection, role: str) -> FoundDataset:
    """Split ``role`` (train or val) with its format found, or ConfigError naming data.ROLE."""
    path = split_path(data, getattr(data, role))
    if not path.exists() and not is_shard_pattern(path):
        raise ConfigError(f"data.{role}: {path}: no such file or folder")
    try:
        return find_dataset(path)
    except ValueError as e:
        raise ConfigError(f"data.{role}: {e}") from None


def describe_data(data: DataSection, read: dict[str, tuple[list[Sample], str]]) -> str:
    """What a run reads, for its first lines: ``read`` is role -> (rows, layout) of each split read."""
    parts = [
        f"{role} {len(rows):,} rows ({split_path(data, getattr(data, role))}, {layout})"
        for role, (rows, layout) in read.items()
    ]
    return "data: " + "; ".join(parts)


def read_rows(
    data: DataSection, role: str, bad_log: BadSampleLog, modalities: Collection[str] | None = None
) -> tuple[list[Sample], str]:
    """(the rows of split ``role`` (train or val), its layout: manifest, imagefolder, esc50 ...); with
    ``modalities`` (what the model reads), only their files must exist in a manifest's rows. A dataset in another
    layout is read by its own reader, with data.ROLE_options."""
    found = find_split(data, role)
    where = f"{found.path} ({found.format})"
    options = split_options(data, role)
    if found.format == "manifest":
        if options:
            raise ConfigError(f"data.{role}_options: {where} is a manifest, which takes no reader options")
        return list(found.open(data.strict, bad_log, label_key=data.label_key, checked_fields=modalities)), "manifest"
    if found.format == "mediafolder":
        raise ConfigError(
            f"data.{role}: {where} is a plain folder of media files, without labels or captions to train on; put "
            "them in class folders or list them in a manifest"
        )
    if data.label_key is not None:
        raise ConfigError(f"data.label_key picks an entry of a manifest's dict labels; {where} has no such labels")
    for fixed in ("strict", "bad_log"):
        if fixed in options:
            raise ConfigError(f"data.{role}_options: {fixed} is not a reader option here (data.strict sets it)")
    if found.format == "webdataset":  # rows name their media's place in the shards; the bytes are read per batch
        options = {"media_in_shard": True, **options}
    try:
        return list(found.open(data.strict, bad_log, **options)), found.format
    except TypeError as e:  # an option its reader lacks, or of the wrong kind (folds: 1 for [1])
        raise ConfigError(
            f"data.{role}_options {dict(getattr(data, f'{role}_options'))}: the {where} reader: {e}"
        ) from None


_NO_CLASS = object()  # hold_out: a row that goes by its id's hash alone


def hold_out(rows: list[Sample], share: float, by_class: bool = False) -> tuple[list[Sample], list[Sample]]:
    """(training rows, validation rows): ``share`` of ``rows`` validate, chosen by hashes of their ids (the same rows
    every run, whatever their order; rows sharing an id stay together). With ``by_class`` (a classifier's rows), each
    class's ids in hash order give floor(share x n) or one more (by a hash of the class, so the total stays near
    share of the rows), never a class's last id: a rare class is neither left out by chance nor over-drawn. Rows
    without a class (no label, or a list of them), or whose id has rows of two classes, go by the hash alone."""
    labels: dict[str, set[Any]] = {}
    for row in rows:
        classed = by_class and isinstance(row.label, Hashable) and row.label is not None
        labels.setdefault(row.id, set()).add(row.label if classed else _NO_CLASS)
    classes: dict[Any, list[str]] = {}
    held: set[str] = set()
    for row_id, found in labels.items():
        (label,) = found if len(found) == 1 else (_NO_CLASS,)  # an id under two classes goes by its hash
        if label is not _NO_CLASS:
            classes.setdefault(label, []).append(row_id)
        elif _hash_share(row_id) < share:
            held.add(row_id)
    for ids in classes.values():
        ranked = sorted(ids, key=lambda i: (_hash_share(i), i))
        # One more or not by a hash fixed by the class's first id (another hash than its rank: that one is low).
        take = math.floor(share * len(ranked) + _hash_share(f"class of {ranked[0]}"))
        held.update(ranked[: min(take, len(ranked) - 1)])
    train = [row for row in rows if row.id not in held]
    val = [row for row in rows if row.id in held]
    if not train or not val:
        raise ConfigError(
            f"data.val_share {share} of {len(rows)} training rows leaves {len(train)} to train on and {len(val)} to "
            "validate: give more rows or another share"
        )
    return train, val


def _hash_share(text: str) -> float:
    """A number in [0, 1) fixed by ``text``."""
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) / 2**32


def expand_view(samples: list[Sample], view: str) -> list[Sample]:
    if view == "statements":
        return statement_samples(samples)
    if view == "qa":
        return qa_samples(samples)
    return samples


def _corpus(samples: list[Sample]) -> list[str]:
    texts = []
    for s in samples:
        texts.extend(s.text)
        texts.extend(st.text for st in s.statements)
        texts.extend(qa.question for qa in s.qa)
        for qa in s.qa:
            texts.extend(qa.answers)
    return texts


def choose_tokenizer(recipe: Recipe, rows: list[Sample], run_dir: Path, resume: bool) -> tuple[TextTokenizer, bool]:
    """The run's tokenizer and whether it came from the run itself (a resumed run keeps its own): else the
    recipe's, else the one saved with ``model.init_from``'s model (token ids must mean what they meant to its text
    tower), else one trained on the training texts."""
    own = run_dir / TOKENIZER_DIR
    if resume and own.is_dir():
        return TextTokenizer.load(own), True
    if recipe.data.tokenizer:
        from polymodal.pretrained.locate import resolve_pretrained

        return TextTokenizer.load(resolve_pretrained(recipe.data.tokenizer)), False
    if recipe.model.init_from:
        try:
            source = find_model_dir(recipe.model.init_from) / TOKENIZER_DIR
        except FileNotFoundError:
            source = None  # the model build reports the missing model with the field's name
        if source is not None and source.is_dir():
            return TextTokenizer.load(source), False
    return train_tokenizer(_corpus(rows), vocab_size=recipe.data.vocab_size, kind="wordlevel"), False


@dataclass
class Labels:
    """What the rows' labels become: class ids through ``vocab`` (answers or class names), and the preset
    arguments that follow from it (``num_answers``/``num_classes``)."""

    fn: LabelFn | None = None
    vocab: dict[str, int] | None = None
    preset_args: dict[str, Any] | None = None


def labels_for(recipe: Recipe, rows: list[Sample], view: str, run_dir: Path, resume: bool) -> Labels:
    if recipe.objective.kind == "vqa":
        saved = run_dir / ANSWERS_FILE
        if resume and saved.is_file():
            vocab = json.loads(saved.read_text())
        else:
            answers = sorted({qa.answer for s in rows for qa in s.qa})
            vocab = {a: i for i, a in enumerate(answers)}
        return Labels(label_from_vocab(vocab), vocab, {"num_answers": max(2, len(vocab))})
    if recipe.objective.kind == "classification" and view == "labels":
        loss = recipe.objective.loss
        if loss == "mse":
            return Labels(numeric_label, None, {"num_classes": 1})
        names = [str(x) for s in rows for x in (s.label if isinstance(s.label, list) else [s.label]) if x is not None]
        vocab = {c: i for i, c in enumerate(sorted(set(names)))}
        label_fn = multi_hot(vocab) if loss == "bce" else label_from_vocab(vocab)
        return Labels(label_fn, vocab, {"num_classes": len(vocab)})
    if recipe.objective.kind in ("contrastive", "caption", "matching", "masked_lm"):
        return Labels(no_label)  # the objective learns from pairs; whatever labels the rows carry are not read
    return Labels()


# What a classification run's outputs mean, by its loss (saved with the model, for ``Model.predict``).
LOSS_OUTPUTS = {None: CLASSES, "cross_entropy": CLASSES, "bce": MULTILABEL, "mse": REGRESSION}
# The class names of objectives whose classes are fixed: a statement is false (0) or true (1); a pair matches (1).
FIXED_CLASSES = {"statements": {"false": 0, "true": 1}, "matching": {"mismatch": 0, "match": 1}}


def saved_outputs(recipe: Recipe, view: str, labels: Labels) -> tuple[dict[str, int] | None, str | None]:
    """What a run saves with its model about the outputs: the class (or answer) names, and what the outputs mean
    (``classes``, ``multilabel``, ``regression``; None where the model does not classify)."""
    kind = recipe.objective.kind
    if kind == "matching":
        return FIXED_CLASSES["matching"], CLASSES
    if kind != "classification":
        return labels.vocab, None
    if labels.vocab is None and view == "statements":
        return FIXED_CLASSES["statements"], CLASSES
    return labels.vocab, LOSS_OUTPUTS[recipe.objective.loss]


def no_label(sample: Sample) -> None:
    return None


def numeric_label(sample: Sample) -> float | None:
    """A regression target: the row's label as a number (a bad sample if it is not one)."""
    if sample.label is None:
        return None
    try:
        return float(sample.label)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise BadSampleError(
            f"label {sample.label!r} is not a number (loss: mse is regression)",
            source=sample.source,
            row=sample.row,
            field="label",
            sample_id=sample.id,
            kind="bad_label",
        ) from None


def multi_hot(vocab: dict[str, int]) -> LabelFn:
    """Multi-label targets: a row's label (one class name or a list of them) as a 0/1 vector over ``vocab``."""

    def label_fn(sample: Sample) -> list[float] | None:
        if sample.label is None:
            return None
        names = sample.label if isinstance(sample.label, list) else [sample.label]
        target = [0.0] * len(vocab)
        for name in names:
            if str(name) in vocab:
                target[vocab[str(name)]] = 1.0
        return target

    return label_fn


def processors_for(
    modalities: list[str], recipe: Recipe, tokenizer: TextTokenizer, training: bool
) -> dict[str, Processor]:
    """Each modality's processor: image and text from the data section, others from ``data.processors`` (whose
    settings may name a training-time ``augment``); without ``training``, every augmentation is dropped."""
    data = recipe.data
    out: dict[str, Processor] = {}
    for modality in modalities:
        if modality == "image":
            out[modality] = ImageProcessor(data.image, data.augment if training else None)
        elif modality == "text":
            out[modality] = TextProcessor(tokenizer, data.max_length)
        elif modality in PROCESSORS:
            settings = data.processors.get(modality, {})
            processor = processor_from_settings(modality, settings, Path(data.path), f"data.processors.{modality}")
            out[modality] = processor if training else processor.for_inference()
        else:
            raise ConfigError(
                f"the model has a {modality!r} tower but no processor is registered for it "
                f"(registered: {', '.join(PROCESSORS.names())})"
            )
    return out


@dataclass
class RecipeData:
    train: MultimodalDataset
    val: MultimodalDataset | None
    processors: dict[str, Processor]  # as the model is saved with them (no augmentation)


def make_datasets(
    recipe: Recipe,
    modalities: list[str],
    tokenizer: TextTokenizer,
    train_rows: list[Sample],
    val_rows: list[Sample],
    view: str,
    labels: Labels,
    bad_log: BadSampleLog,
) -> RecipeData:
    data = recipe.data
    negatives = WordSwapNegatives(recipe.objective.hard_negatives) if recipe.objective.hard_negatives else None
    train_set = MultimodalDataset(
        expand_view(train_rows, view),
        processors_for(modalities, recipe, tokenizer, training=True),
        text_mode="random",
        label_fn=labels.fn,
        bad_log=bad_log,
        strict=data.strict,
        seed=recipe.train.seed,
        negative_text=negatives,
        # Each DataLoader worker fills its own memo (of every item, as sampling is random): share the bound out.
        memo_mb=data.image_memo_mb / max(1, recipe.train.num_workers),
    )
    processors = processors_for(modalities, recipe, tokenizer, training=False)
    val_samples = expand_view(val_rows, view)[: data.max_val_samples]
    val_set = None
    if val_samples:
        val_set = MultimodalDataset(
            val_samples,
            processors,
            text_mode="first",
            label_fn=labels.fn,
            bad_log=bad_log,
            strict=data.strict,
            memo_mb=data.image_memo_mb,
        )
    return RecipeData(train_set, val_set, processors)


def default_view(recipe: Recipe) -> str:
    return recipe.data.view or OBJECTIVE_VIEWS[recipe.objective.kind]
