"""The saved-model directory: the one place that writes and reads it.

    config.json         {"polymodal_version", "format", "config": <model config>}
    model.safetensors   the weights (no pickle: loading never executes code)
    processors.json     modality -> the settings its processor was trained with
    tokenizer/          the text processor's tokenizer (when the model reads or writes text)
    towers/N/           the configs of Hugging Face towers loaded from a local directory (their weights are above)
    answers.json        answer or class -> output index (models that classify over a vocabulary)

``config.json`` also says what a classifier's outputs mean, as its head was trained (``"outputs"``: ``classes``,
``multilabel`` or ``regression``); a directory without it (saved before it was recorded) holds ``classes``.

A directory is written atomically as a whole: into a temporary sibling, then renamed into place. A format-1
directory (``dual_encoder``/``vqa`` kinds, ``preprocess.json``) loads through :mod:`polymodal.models.legacy`.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from polymodal.config import ConfigError
from polymodal.data.processors import Processor, TextProcessor, build_processor
from polymodal.data.text import TextTokenizer
from polymodal.data.transforms import PREPROCESS_FILE
from polymodal.fsutil import UnreadableFileError, atomic_directory, read_json
from polymodal.models.base import ComposedModel, build_model
from polymodal.models.config import parse_model_config
from polymodal.models.legacy import legacy_processor_settings, upgrade_state
from polymodal.modules.encoders.hf import architecture_only
from polymodal.modules.losses import learned_scale
from polymodal.version import __version__
from polymodal.weights import load_state, read_weights, save_weights

# Of the directory; format 1 is read through polymodal.models.legacy. 3: settings a format-2 reader does not know
# (audio features' level_dbfs, towers/N configs of Hugging Face towers): an older polymodal says to upgrade.
FORMAT = 3
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
PROCESSORS_FILE = "processors.json"
ANSWERS_FILE = "answers.json"
# What a classifier's outputs are, by the loss its head was trained with: logits of classes, one of which is the
# answer (cross-entropy: softmax); logits of labels, each on or off (bce: a sigmoid per label); values (mse).
CLASSES, MULTILABEL, REGRESSION = "classes", "multilabel", "regression"
TOWERS_DIR = "towers"  # the configs of Hugging Face towers loaded from local directories
HF_TOWERS = ("hf_text", "hf_image", "hf_audio")  # encoders whose params.path names a transformers directory
MODEL_DIR_SCHEME = "model:"  # a tower path inside the saved directory
OUTPUTS = (CLASSES, MULTILABEL, REGRESSION)


def save_model(
    directory: str | os.PathLike,
    model: ComposedModel,
    processors: Mapping[str, Processor],
    answers: Mapping[str, int] | None = None,
    outputs: str | None = None,
    logit_scales: Mapping[str, float | torch.Tensor | torch.nn.Module] | None = None,
) -> Path:
    """Write config, weights, processors (with their files) and answers to ``directory``, atomically; ``outputs``
    (one of ``OUTPUTS``) records what a classifier's outputs mean, as its head was trained. ``logit_scales``: each
    contrastive pair's learned temperature (``"image-text"`` -> a number, or the loss that learned it), which
    zero-shot probabilities use; a training loop's losses hold it, not the model."""
    if outputs is not None and outputs not in OUTPUTS:
        raise ValueError(f"outputs must be one of {', '.join(OUTPUTS)}, got {outputs!r}")
    if model.config is None:
        raise ValueError(
            f"{type(model).__name__} was composed by hand, without a config; build it with "
            "build_model() to save it as a directory"
        )
    missing = [m for m in model.modalities if m not in processors]
    if missing:  # load_model still reads it back; polymodal.load and the CLI could not feed those towers
        warnings.warn(
            f"{directory}: saved without a processor for {', '.join(missing)} (given: "
            f"{', '.join(sorted(processors)) or 'none'}): polymodal.load and the CLI cannot prepare its inputs; "
            "pass the processors the towers were trained with",
            stacklevel=2,
        )
    config = model.config
    if logit_scales is not None:
        scales = {pair: _scale(pair, value) for pair, value in logit_scales.items()}
        config = config.model_copy(update={"logit_scales": {**config.logit_scales, **scales}})
    target = Path(directory)
    with atomic_directory(target) as tmp:
        meta: dict[str, Any] = {"polymodal_version": __version__, "format": FORMAT}
        if outputs is not None:
            meta["outputs"] = outputs
        meta["config"] = _bundle_tower_configs(config.model_dump(mode="json"), tmp)
        (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2))
        save_weights(model, tmp / WEIGHTS_FILE)
        (tmp / PROCESSORS_FILE).write_text(json.dumps({m: p.settings() for m, p in processors.items()}, indent=2))
        for processor in processors.values():
            processor.save_files(tmp)
        if answers is not None:
            (tmp / ANSWERS_FILE).write_text(json.dumps(dict(answers), indent=1))
    return target


def _tower_paths(node: Any, visit: Any) -> Any:
    """``node`` (a config as JSON) with the directory (``params.path``) of every Hugging Face tower replaced by
    ``visit(path)``, however deep the tower sits (a frame tower under a video tower)."""
    if isinstance(node, list):
        return [_tower_paths(v, visit) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _tower_paths(v, visit) for k, v in node.items()}
    params = out.get("params")
    if out.get("name") in HF_TOWERS and isinstance(params, dict) and isinstance(params.get("path"), str):
        out["params"] = {**params, "path": visit(params["path"])}
    return out


def _bundle_tower_configs(config: dict[str, Any], target: Path) -> dict[str, Any]:
    """A tower loaded from a local directory keeps that directory's configs (its architecture and preprocessing,
    not its weights: those are in the model's) under ``towers/N``, so the saved model does not need it again."""
    copied: list[str] = []

    def bundle(path: str) -> str:
        source = Path(path)
        if not (source / "config.json").is_file():
            return path  # a named directory (pretrained:minilm, the package's) or a hub id: as given
        folder = target / TOWERS_DIR / str(len(copied))
        folder.mkdir(parents=True)
        for file in source.glob("*.json"):
            if not file.name.endswith(".index.json"):  # a sharded checkpoint's weight map: weights are ours
                shutil.copyfile(file, folder / file.name)
        copied.append(path)
        return f"{MODEL_DIR_SCHEME}{TOWERS_DIR}/{len(copied) - 1}"

    return _tower_paths(config, bundle)


def _with_tower_dirs(config: dict[str, Any], directory: Path) -> dict[str, Any]:
    """``model:towers/N`` tower paths of a saved config as directories inside ``directory``."""

    def resolve(path: str) -> str:
        return str(directory / path[len(MODEL_DIR_SCHEME) :]) if path.startswith(MODEL_DIR_SCHEME) else path

    return _tower_paths(config, resolve)


def _scale(pair: str, value: float | torch.Tensor | torch.nn.Module) -> float:
    if isinstance(value, torch.nn.Module):
        return learned_scale(value)
    scale = float(value.detach()) if isinstance(value, torch.Tensor) else float(value)
    if not scale > 0:
        raise ValueError(f"logit_scales[{pair!r}] must be > 0 (a multiplier of cosine similarities), got {scale}")
    return scale


def find_model_dir(path: str | os.PathLike) -> Path:
    """A saved model directory, given it or a run directory (its ``best/``, else ``model/``)."""
    path = Path(path)
    for candidate in (path, path / "best", path / "model"):
        if (candidate / CONFIG_FILE).is_file():
            return candidate
    raise FileNotFoundError(f"{path}: no saved model here (looked in ., best/, model/)")


def _read_meta(directory: Path) -> dict[str, Any]:
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{directory}: not a polymodal model directory (no {CONFIG_FILE})")
    meta = read_json(path)
    if not isinstance(meta, dict):
        raise ConfigError(f"{path}: expected an object")
    return meta


def load_model(directory: str | os.PathLike) -> ComposedModel:
    """The model saved in ``directory`` (any format); its weights must match its config exactly."""
    directory = Path(directory)
    meta = _read_meta(directory)
    if int(meta.get("format", 1)) > FORMAT:
        raise ConfigError(
            f"{directory}: saved in format {meta['format']} by polymodal {meta.get('polymodal_version')}; "
            f"this polymodal reads formats up to {FORMAT}: upgrade polymodal"
        )
    raw = meta.get("config", {})
    config = parse_model_config(_with_tower_dirs(raw, directory), str(directory / CONFIG_FILE))
    with architecture_only():  # the weights come from this directory, not from the towers' own checkpoints
        model = build_model(config)
    state = upgrade_state(raw, read_weights(directory / WEIGHTS_FILE))
    load_state(model, state, directory / WEIGHTS_FILE)
    return model


def load_processors(directory: str | os.PathLike) -> dict[str, Processor]:
    """The processors saved with the model in ``directory`` (read from a format-1 layout as well)."""
    directory = Path(directory)
    path = directory / PROCESSORS_FILE
    if path.is_file():
        settings = read_json(path)
        if not isinstance(settings, dict):
            raise UnreadableFileError(path, "not a JSON object (modality -> processor settings)")
    else:
        settings = legacy_processor_settings(
            _read_meta(directory).get("config", {}), directory / PREPROCESS_FILE, (directory / "tokenizer").is_dir()
        )
    return {modality: build_processor(modality, s, directory) for modality, s in settings.items()}


def load_answers(directory: str | os.PathLike) -> list[str] | None:
    """Output index -> answer (or class name), when the model classifies over a vocabulary."""
    path = Path(directory) / ANSWERS_FILE
    if not path.is_file():
        return None
    vocab: dict[str, int] = read_json(path)
    return [a for a, _ in sorted(vocab.items(), key=lambda kv: kv[1])]


def load_outputs(directory: str | os.PathLike) -> str:
    """What the classifier saved in ``directory`` outputs (one of ``OUTPUTS``): ``classes`` unless recorded."""
    path = Path(directory) / CONFIG_FILE
    outputs = _read_meta(Path(directory)).get("outputs", CLASSES)
    if outputs not in OUTPUTS:
        raise ConfigError(f"{path}: outputs is {outputs!r}; expected one of {', '.join(OUTPUTS)}")
    return str(outputs)


@dataclass
class SavedModel:
    """A loaded model directory: the model, in eval mode, with what inference needs."""

    model: ComposedModel
    processors: dict[str, Processor]
    answers: list[str] | None  # output index -> answer/class, for models classifying over a vocabulary
    path: Path
    outputs: str = CLASSES  # what a classifier's outputs mean (one of OUTPUTS), as its head was trained

    @classmethod
    def load(cls, directory: str | os.PathLike) -> SavedModel:
        directory = Path(directory)
        model = load_model(directory).eval()
        return cls(model, load_processors(directory), load_answers(directory), directory, load_outputs(directory))

    @property
    def text(self) -> TextProcessor:
        text = self.processors.get("text")
        if not isinstance(text, TextProcessor):
            raise ValueError(f"{self.path}: the model directory has no text processor (tokenizer/)")
        return text

    @property
    def tokenizer(self) -> TextTokenizer | None:
        text = self.processors.get("text")
        return text.tokenizer if isinstance(text, TextProcessor) else None

    def inputs(
        self, modality: str, refs: Sequence[Any], device: torch.device | str = "cpu"
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(x, mask)`` for the model from raw references (paths, PIL images, strings ...) of one modality."""
        if modality not in self.processors:
            raise ValueError(f"{self.path}: the model has no {modality!r} processor; it has {sorted(self.processors)}")
        x, mask = self.processors[modality].batch(refs)
        return x.to(device), None if mask is None else mask.to(device)
