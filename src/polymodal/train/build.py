"""What a recipe trains: its model config (from a preset or written out), the model started from other weights
with its towers frozen and cached as asked, and its objective."""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from torch import nn

from polymodal.config import ConfigError, format_validation_errors
from polymodal.data.processors import AudioProcessor
from polymodal.data.text import TextTokenizer
from polymodal.models import (
    PRESETS,
    AdversarialGenerator,
    Captioner,
    ComposedModel,
    DiffusionGenerator,
    FusionClassifier,
    QuestionAnswerer,
    build_model,
    parse_model_config,
)
from polymodal.models.config import ModelConfig
from polymodal.models.transfer import TransferReport, cache_towers, freeze_towers, submodule, transfer_weights
from polymodal.modules.losses import LOSSES
from polymodal.train.config import metric_direction
from polymodal.train.objectives import (
    AdversarialExamples,
    AdversarialObjective,
    AnswerObjective,
    CaptionObjective,
    ClassificationObjective,
    ContrastiveObjective,
    DiffusionObjective,
    MaskedLMObjective,
    MatchingObjective,
)
from polymodal.train.recipe import Recipe
from polymodal.train.validation import validation_metrics

# Where the preset arguments the data decides come from, for an error when model.params sets one otherwise.
DECIDED_BY = {
    "vocab_size": "the tokenizer (data.tokenizer, model.init_from's, or one trained with data.vocab_size)",
    "image_size": "data.image.image_size",
    "max_length": "data.max_length",
    "audio_channels": "data.processors.audio (n_mels, or n_mfcc with kind: mfcc)",
    "num_classes": "the training labels",
    "num_answers": "the training answers",
}


def recipe_model_config(recipe: Recipe, vocab_size: int | None, derived: dict[str, Any] | None = None) -> ModelConfig:
    """The model config a recipe names: written out in ``model.config``, or its preset called with the values
    the data decides (vocabulary and image size, text length, the audio features' bands, number of classes or
    answers) and ``model.params``. ``vocab_size`` None: the tokenizer is not known yet (``data.vocab_size`` stands
    in, unchecked). ``model.params`` may repeat a value the data decides, not change it."""
    if recipe.model.config is not None:
        return parse_model_config(recipe.model.config, "model.config")  # type: ignore[no-any-return]
    builder = PRESETS.get(recipe.model.preset)  # type: ignore[arg-type]
    accepted = inspect.signature(builder).parameters
    from_data = {
        "vocab_size": recipe.data.vocab_size if vocab_size is None else vocab_size,
        "image_size": recipe.data.image.image_size,
        "max_length": recipe.data.max_length,
        **_audio_channels(recipe),
        **(derived or {}),
    }
    unknown = set(recipe.model.params) - set(accepted)
    if unknown:
        raise ConfigError(
            f"model.params: {sorted(unknown)} not accepted by preset {recipe.model.preset!r}; "
            f"allowed: {sorted(accepted)}"
        )
    unknowable = {"vocab_size"} if vocab_size is None else set()
    for key in sorted(set(recipe.model.params) & set(from_data) - unknowable):
        if recipe.model.params[key] != from_data[key]:
            raise ConfigError(
                f"model.params.{key}: {recipe.model.params[key]!r}, but {DECIDED_BY.get(key, 'the data')} sets it "
                f"to {from_data[key]!r} for this run: leave {key} out of model.params"
            )
    given = {k: v for k, v in from_data.items() if k in accepted} | recipe.model.params
    try:
        return builder(**given)  # type: ignore[no-any-return]
    except ValidationError as e:  # a model.params value the preset passes into its config: named as a config error
        source = f"model.params of preset {recipe.model.preset}"
        raise ConfigError(format_validation_errors(e, source, title="model config it builds")) from None


def check_model_fits_data(config: ModelConfig, recipe: Recipe, vocab_size: int, classes: dict[str, int] | None) -> None:
    """What the data decided against what a written-out ``model.config`` says, before any batch runs (a mismatch
    would otherwise fail mid-run in torch, or train logits no label names): text towers and decoders that hold
    every token id and text length, and one output per class or answer."""
    where = "model.config" if recipe.model.config is not None else f"preset {recipe.model.preset}"
    problems = []
    towers = {f"encoders.{m}": c.params for m, c in config.encoders.items()}
    decoder = getattr(config, "decoder", None)
    if decoder is not None:
        towers["decoder"] = {"vocab_size": decoder.vocab_size, "max_length": decoder.max_length}
    for name, params in towers.items():
        if isinstance(params.get("vocab_size"), int) and params["vocab_size"] < vocab_size:
            problems.append(
                f"{where}.{name} has vocab_size {params['vocab_size']}, but the tokenizer has {vocab_size} tokens: "
                f"set it to {vocab_size} (or leave it out of a preset's params: the data decides it)"
            )
        if isinstance(params.get("max_length"), int) and params["max_length"] < recipe.data.max_length:
            problems.append(
                f"{where}.{name} takes texts of up to {params['max_length']} tokens, but data.max_length is "
                f"{recipe.data.max_length}: lower data.max_length or raise the tower's max_length"
            )
    wanted = {"num_classes": len(classes or {}), "num_answers": max(2, len(classes or {}))}
    for field, count in wanted.items():
        given = getattr(config, field, None)
        if classes is not None and isinstance(given, int) and given != count:
            names = ", ".join(sorted(classes)[:8]) + (", ..." if len(classes) > 8 else "")
            problems.append(f"{where} has {field} {given}, but the labels have {len(classes)} ({names}): set {count}")
    if problems:
        raise ConfigError("; ".join(problems))


def model_inputs(config: ModelConfig) -> list[str]:
    """The modalities a model reads: its towers', and a captioner's target texts or a generator's target images."""
    target = "text" if config.kind == "captioner" else getattr(config, "target", None)
    return list(config.encoders) + ([target] if target is not None and target not in config.encoders else [])


def unused_processor_settings(recipe: Recipe) -> list[str]:
    """A note for each ``data.processors`` entry of a modality the recipe's model does not read (its settings are
    not used): a slip, or a recipe shared with a model of fewer towers (a unimodal baseline). Known from the recipe
    alone, before any data is read."""
    if not recipe.data.processors:
        return []
    modalities = model_inputs(recipe_model_config(recipe, None))
    model = f"preset {recipe.model.preset}" if recipe.model.preset else "model.config"
    return [
        f"note: data.processors.{modality} is not used: the model ({model}) has no {modality} tower; it reads "
        f"{', '.join(modalities)}"
        for modality in recipe.data.processors
        if modality not in modalities
    ]


def _audio_channels(recipe: Recipe) -> dict[str, int]:
    """``audio_channels``: the bands (mel or MFCC) of the recipe's audio features, which a preset's audio tower
    reads."""
    settings = recipe.data.processors.get("audio")
    if settings is None:
        return {}
    processor = AudioProcessor.from_settings(settings, Path(recipe.data.path))
    return {"audio_channels": processor.features.channels}


def accumulation_note(recipe: Recipe) -> str | None:
    """A note when ``train.accumulate`` meets a loss over in-batch negatives: each micro-batch's loss sees only its
    own ``batch_size`` items, so accumulating is not training with a larger batch there (open_clip's accum-freq
    recomputes the loss over the whole accumulated batch; polymodal does not)."""
    section, steps = recipe.objective, recipe.train.accumulate
    in_batch = section.kind in ("contrastive", "matching") or (section.kind == "caption" and section.contrastive_weight)
    if steps <= 1 or not in_batch:
        return None
    return (
        f"note: train.accumulate {steps}: each micro-batch's {section.kind} loss takes its negatives from its own "
        f"{recipe.train.batch_size} items, not from all {steps * recipe.train.batch_size} of an optimizer step; for "
        "more negatives raise train.batch_size"
    )


def build_recipe_model(recipe: Recipe, config: ModelConfig) -> tuple[ComposedModel, TransferReport | None]:
    """The model: built, started from ``model.init_from``'s weights, towers frozen, locked towers cached; the
    submodules ``model.lrs`` names checked to exist (the trainer gives them their rates)."""
    model = build_model(config)
    for path in recipe.model.lrs:
        submodule(model, path, "model.lrs")
    report = transfer_weights(model, recipe.model.init_from, recipe.model.init_map) if recipe.model.init_from else None
    freeze_towers(model, recipe.model.freeze)
    cache_towers(model, recipe.model.cache)
    return model, report


def contrastive_pairs(recipe: Recipe, modalities: list[str]) -> list[tuple[str, str]]:
    """The modality pairs a contrastive objective aligns: the recipe's, else every pair of the model's towers
    (``modalities``)."""
    pairs = recipe.objective.pairs or list(itertools.combinations(modalities, 2))
    for a, b in pairs:
        for modality in (a, b):
            if modality not in modalities:
                raise ConfigError(f"objective.pairs: {modality!r} is not a modality of the model ({modalities})")
    return [(a, b) for a, b in pairs]


def check_recipe_before_data(recipe: Recipe) -> ModelConfig:
    """What a recipe's own values decide, checked before any data is read (ConfigError): the preset's
    ``model.params``, ``objective.pairs``, and that ``train.metric`` is a metric the objective's validation
    reports. Returns the model config, its vocabulary not known yet (see :func:`recipe_model_config`)."""
    config = recipe_model_config(recipe, None)
    kind, metric = recipe.objective.kind, recipe.train.metric
    pairs = contrastive_pairs(recipe, list(config.encoders)) if kind in ("contrastive", "matching") else []
    if metric is not None:
        names = validation_metrics(kind, recipe.objective.loss, pairs)
        if metric not in names:
            loss = f" (loss {recipe.objective.loss})" if recipe.objective.loss else ""
            raise ConfigError(
                f"train.metric {metric!r} is not a metric of objective.kind {kind}{loss}; its validation reports "
                f"{', '.join(names)}"
            )
        mode, direction = recipe.train.metric_mode, metric_direction(metric)
        if mode is not None and mode != direction:
            raise ConfigError(
                f"train.metric_mode {mode} contradicts train.metric {metric}, which improves as it "
                f"{'falls' if direction == 'min' else 'rises'}: the best checkpoint would be the worst; drop "
                "train.metric_mode (it follows the metric)"
            )
    if recipe.objective.adversarial_examples is not None:
        check_adversarial_examples(recipe, list(config.encoders))
    return config


def check_adversarial_examples(recipe: Recipe, towers: Sequence[str]) -> None:
    """Adversarial training needs an image tower that sees the moved pixels at every step (ConfigError)."""
    if "image" not in towers:
        raise ConfigError(f"objective.adversarial_examples moves images; the model reads {', '.join(towers)}")
    cached = [path for path in recipe.model.cache if path in ("encoders", "encoders.image")]
    if cached:
        raise ConfigError(
            f"objective.adversarial_examples moves every image at every step, so a cache of the image tower's "
            f"outputs is never reused (and the attacked images would push the clean ones out): drop "
            f"model.cache.{cached[0]}"
        )


def with_adversarial_examples(recipe: Recipe, objective: nn.Module) -> nn.Module:
    """``objective`` trained on PGD-moved images when the recipe asks (objective.adversarial_examples), else itself
    (checked by :func:`check_recipe_before_data`)."""
    attack = recipe.objective.adversarial_examples
    if attack is None:
        return objective
    image = recipe.data.image
    return AdversarialExamples(
        objective,
        epsilon=attack.epsilon,
        steps=attack.steps,
        step_size=attack.step_size,
        clean_weight=attack.clean_weight,
        mean=image.mean,
        std=image.std,
    )


def make_objective(recipe: Recipe, model: ComposedModel, tokenizer: TextTokenizer) -> nn.Module:
    section = recipe.objective
    if section.kind == "contrastive":
        if model.config.kind != "embedding":
            raise ConfigError(
                f"objective.kind contrastive trains an embedding model (towers in one space, e.g. the shapes-clip "
                f"preset); the recipe builds {model.config.kind}"
            )
        return ContrastiveObjective(
            contrastive_pairs(recipe, model.modalities), lambda: LOSSES.build(section.loss or "clip")
        )
    if section.kind == "matching":
        if not isinstance(model, FusionClassifier) or model.config.num_classes != 2:
            raise ConfigError(
                "objective.kind matching trains a fusion classifier with num_classes: 2 "
                "(match / no match), e.g. the shapes-fusion preset"
            )
        return MatchingObjective(contrastive_pairs(recipe, model.modalities)[0])
    if section.kind == "masked_lm":
        if "text" not in model.encoders or tokenizer.mask_id is None:
            raise ConfigError(
                "objective.kind masked_lm needs a model with a 'text' tower and a tokenizer with a mask token"
            )
        specials = {i for i in (tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id) if i is not None}
        width = model.encoders["text"].output_dim
        return MaskedLMObjective(width, tokenizer.vocab_size, tokenizer.mask_id, sorted(specials))
    generators = {
        "diffusion": (DiffusionGenerator, "shapes-diffusion"),
        "adversarial": (AdversarialGenerator, "shapes-gan"),
    }
    if section.kind in generators:
        kind, preset = generators[section.kind]
        if not isinstance(model, kind):
            raise ConfigError(
                f"objective.kind {section.kind} trains a {kind.__name__} (e.g. the {preset} preset); "
                f"the recipe builds {model.config.kind}"
            )
        return DiffusionObjective(section.empty_text_rate) if section.kind == "diffusion" else AdversarialObjective()
    if section.kind == "classification":
        return ClassificationObjective(LOSSES.build(section.loss or "cross_entropy"))
    if section.kind == "caption":
        if not isinstance(model, Captioner):
            raise ConfigError(f"objective.kind caption trains a captioner; the recipe builds {model.config.kind}")
        if section.contrastive_weight > 0 and not model.contrastive:
            raise ConfigError(
                "objective.contrastive_weight needs a captioner with a text tower for the contrastive "
                "loss: model.params.contrastive=true (shapes-caption) or a 'text' encoder in model.config"
            )
        return CaptionObjective(contrastive_weight=section.contrastive_weight, label_smoothing=section.label_smoothing)
    if not isinstance(model, QuestionAnswerer):
        raise ConfigError(
            f"objective.kind vqa trains a question-answering model; the recipe builds {model.config.kind}"
        )
    if model.answer_mode != "classify":
        raise ConfigError("objective.kind vqa trains answer_mode classify; recipes do not feed generated answers yet")
    return AnswerObjective(model.answer_mode)
