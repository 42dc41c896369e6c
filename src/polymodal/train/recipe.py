"""Recipes: one YAML file says what to train on what, and how.

```yaml
name: shapes-clip
model: {preset: shapes-clip, params: {embed_dim: 128}}
data:  {path: runs/demo/shapes, view: captions, image: {image_size: 64}}
task:  {kind: contrastive, loss: clip}
train: {steps: 600, batch_size: 64, lr: 1e-3}
```

``run_recipe`` reads the data, trains (or loads) the tokenizer, builds the model from its
preset with the data's vocabulary and image size, joins it with its task, trains it, and
leaves in the run directory: the resolved ``config.yaml``, ``metrics.jsonl``, checkpoints,
``bad_samples.jsonl`` (when samples were skipped), ``best/`` and ``model/`` (saved models with
their tokenizer and preprocessing).
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any, Literal

import torch
import yaml
from accelerate import PartialState
from accelerate.utils import set_seed
from pydantic import BaseModel, Field, model_validator
from pydantic_core import to_jsonable_python

from polymodal.config import Config, ConfigError, flatten_config, load_config
from polymodal.data.dataset import MultimodalDataset, label_from_vocab, qa_samples, statement_samples
from polymodal.data.errors import BadSampleLog
from polymodal.data.hard_negatives import WordSwapNegatives
from polymodal.data.readers import read_manifest
from polymodal.data.schema import Sample
from polymodal.data.text import TextTokenizer, train_tokenizer
from polymodal.data.transforms import Augment, ImagePipeline, ImagePreprocess
from polymodal.fsutil import write_atomic
from polymodal.hardware import normalize_precision
from polymodal.models import PRESETS, ComposedModel, build_model, load_model, parse_model_config
from polymodal.models.base import TOKENIZER_DIR, find_model_dir
from polymodal.modules.encoders import Encoder
from polymodal.train.checkpoint import list_checkpoints
from polymodal.train.config import TrainConfig
from polymodal.train.evaluate import make_evaluator
from polymodal.train.tasks import CaptionTask, ClassificationTask, ContrastiveTask, VQATask
from polymodal.train.trainer import Trainer, TrainResult

TASK_VIEWS = {"contrastive": "captions", "caption": "captions", "classification": "statements", "vqa": "qa"}


class ModelSection(Config):
    preset: str | None = Field(None, description="a name from `polymodal models presets`")
    params: dict[str, Any] = Field(default_factory=dict, description="arguments of the preset")
    config: dict[str, Any] | None = Field(None, description="a full model config instead of a preset")
    init_from: str | None = Field(None, description="a model dir or run dir whose weights to start from")
    init_map: dict[str, str] = Field(
        default_factory=dict,
        description="with init_from: this model's submodule -> the source model's submodule to copy it from "
        "(weights with the same names under each), for parts whose names differ",
    )
    freeze: dict[str, int] = Field(default_factory=dict, description="submodule -> trainable last blocks (0: frozen)")
    lrs: dict[str, float] = Field(default_factory=dict, description="submodule -> its own learning rate")
    cache: dict[str, int] = Field(
        default_factory=dict,
        description="frozen tower(s) -> samples whose outputs are kept: each distinct input costs one forward pass",
    )


class DataSection(Config):
    path: str = Field(description="a ShapesWorld directory or any directory holding the manifests")
    train: str = "train.jsonl"
    val: str | None = "val.jsonl"
    view: Literal["captions", "statements", "qa", "labels"] | None = Field(
        None, description="how rows become samples; default follows the task"
    )
    label_key: str | None = Field(None, description="for view 'labels': which entry of a dict label")
    image: ImagePreprocess = ImagePreprocess(image_size=64, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), crop="none")
    augment: Augment = Augment()
    max_length: int = Field(32, ge=4)
    tokenizer: str | None = Field(
        None, description="tokenizer dir or pretrained:minilm; default: train a word-level one on the data"
    )
    vocab_size: int = Field(1000, ge=16)
    max_val_samples: int = Field(512, ge=1)
    strict: bool = False
    image_memo_mb: float = Field(
        1024, ge=0, description="keep decoded images (without augmentation) in memory up to this many MiB per "
        "dataset, split among the DataLoader workers (each holds its own); 0: decode every time"
    )


class TaskSection(Config):
    kind: Literal["contrastive", "classification", "caption", "vqa"]
    loss: Literal["clip", "siglip"] = "clip"
    contrastive_weight: float = Field(0.0, ge=0)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    hard_negatives: list[list[str]] | None = Field(
        None, description="contrastive, clip loss: groups of interchangeable words; each caption with one swapped "
        "is an extra negative for its image (NegCLIP)",
    )

    @model_validator(mode="after")
    def _hard_negatives_fit(self) -> TaskSection:
        if self.hard_negatives is not None:
            if self.kind != "contrastive" or self.loss != "clip":
                raise ValueError("hard_negatives works with kind: contrastive and loss: clip only")
            WordSwapNegatives(self.hard_negatives)  # checks the groups
        return self


class Recipe(Config):
    name: str
    model: ModelSection
    data: DataSection
    task: TaskSection
    train: TrainConfig


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    recipe = load_config(Recipe, path, overrides)
    if (recipe.model.preset is None) == (recipe.model.config is None):
        raise ConfigError(f"{path}: model needs exactly one of 'preset' or 'config'")
    if recipe.model.preset is not None and recipe.model.preset not in PRESETS:
        raise ConfigError(f"{path}: model.preset {recipe.model.preset!r} is unknown; allowed: {', '.join(PRESETS.names())}")
    if recipe.model.init_map and not recipe.model.init_from:
        raise ConfigError(f"{path}: model.init_map needs model.init_from (the model to copy from)")
    if recipe.task.contrastive_weight > 0 and recipe.task.kind != "caption":
        raise ConfigError(f"{path}: task.contrastive_weight adds a CLIP loss to captioning (task.kind: caption); "
                          f"a {recipe.task.kind} task would ignore it")  # fmt: skip
    return recipe


# ----------------------------------------------------------------------------- data
def _read(data: DataSection, name: str, bad_log: BadSampleLog) -> list[Sample]:
    path = Path(data.path) / name
    return list(read_manifest(path, strict=data.strict, bad_log=bad_log, label_key=data.label_key))


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


def _answer_vocab(samples: list[Sample]) -> dict[str, int]:
    answers = sorted({qa.answer for s in samples for qa in s.qa})
    return {a: i for i, a in enumerate(answers)}


# ----------------------------------------------------------------------------- model
def _preset_config(recipe: Recipe, vocab_size: int, extra: dict[str, Any]) -> Any:
    builder = PRESETS.get(recipe.model.preset)  # type: ignore[arg-type]
    accepted = inspect.signature(builder).parameters
    derived = {"vocab_size": vocab_size, "image_size": recipe.data.image.image_size, "max_length": recipe.data.max_length, **extra}
    params = {k: v for k, v in derived.items() if k in accepted}
    unknown = set(recipe.model.params) - set(accepted)
    if unknown:
        raise ConfigError(f"model.params: {sorted(unknown)} not accepted by preset {recipe.model.preset!r}; allowed: {sorted(accepted)}")
    return builder(**{**params, **recipe.model.params})


# Tower prefixes across model kinds: DualEncoder/Captioner name towers ``image_encoder``/
# ``text_encoder``; FusionClassifier/VQAModel keep them in ``encoders.image``/``encoders.text``.
_TOWER_ALIASES = {"image_encoder.": "encoders.image.", "text_encoder.": "encoders.text.",
                  "encoders.image.": "image_encoder.", "encoders.text.": "text_encoder."}


def _map_tower_key(key: str) -> str:
    """``key`` with its tower prefix renamed to the other model kinds' spelling (else unchanged)."""
    for prefix, alias in _TOWER_ALIASES.items():
        if key.startswith(prefix):
            return alias + key[len(prefix):]
    return key


def build_recipe_model(recipe: Recipe, vocab_size: int, extra: dict[str, Any]) -> ComposedModel:
    if recipe.model.config is not None:
        model = build_model(parse_model_config(recipe.model.config, "model.config"))
    else:
        model = build_model(_preset_config(recipe, vocab_size, extra))
    if recipe.model.init_from:
        try:
            source = load_model(find_model_dir(recipe.model.init_from))
        except FileNotFoundError as e:
            raise ConfigError(f"model.init_from: {e}") from None
        # Transfer: copy every tensor whose name (as is, or with its tower prefix renamed to this
        # model kind's) and shape match, so e.g. CLIP towers initialise a fusion/VQA model.
        own = model.state_dict()
        transferred = {}
        source_state = source.state_dict()
        for key, value in source_state.items():
            for name in (key, _map_tower_key(key)):
                if name in own and own[name].shape == value.shape:
                    transferred[name] = value
                    break
        transferred.update(_mapped_weights(recipe.model.init_map, own, source_state))
        if not transferred:
            raise ConfigError(f"model.init_from {recipe.model.init_from}: no tensor matches this model by name and shape")
        model.load_state_dict(transferred, strict=False)
        model.transfer_report = {  # type: ignore[attr-defined]
            "source": str(recipe.model.init_from), "transferred": len(transferred), "total": len(own),
            "not_transferred": sorted(set(own) - set(transferred)),
        }
    for path, trainable_blocks in recipe.model.freeze.items():
        module = _submodule(model, path, "model.freeze")
        if hasattr(module, "freeze"):
            module.freeze(unfreeze_last=trainable_blocks)
        else:  # a container of towers (``encoders``): freeze each the same way (fully frozen ones stay in eval mode)
            module.requires_grad_(False)
            for encoder in _encoders_in(module):
                encoder.freeze(unfreeze_last=trainable_blocks)
    for path, max_items in recipe.model.cache.items():
        encoders = _encoders_in(_submodule(model, path, "model.cache"))
        if not encoders:
            raise ConfigError(f"model.cache.{path}: holds no encoder (tower) to cache")
        for encoder in encoders:
            if not encoder.frozen:
                raise ConfigError(f"model.cache.{path}: only a frozen tower can cache its outputs; add model.freeze: {{{path}: 0}}")
            encoder.cache_outputs(max_items)
    return model


def _mapped_weights(init_map: dict[str, str], own: dict[str, torch.Tensor], source: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``model.init_map``: for each (target, origin) submodule pair, every source tensor under ``origin`` under
    its name below ``target``. A target tensor the source lacks (a bias the source layer has not) keeps its
    initialisation; a source tensor with no place, or another shape, is an error, not a silent half-transfer."""
    mapped = {}
    for target, origin in init_map.items():
        keys = [k for k in source if k.startswith(f"{origin}.")]
        if not keys:
            raise ConfigError(f"model.init_map.{target}: the source model has no weights under {origin!r}")
        for key in keys:
            name = target + key[len(origin):]
            if name not in own:
                raise ConfigError(f"model.init_map.{target}: this model has no {name!r} to take {key!r}")
            if source[key].shape != own[name].shape:
                raise ConfigError(f"model.init_map.{target}: {key!r} has shape {tuple(source[key].shape)}, "
                                  f"{name!r} wants {tuple(own[name].shape)}")  # fmt: skip
            mapped[name] = source[key]
    return mapped


def _submodule(model: torch.nn.Module, path: str, field: str) -> torch.nn.Module:
    try:
        return model.get_submodule(path)
    except AttributeError:
        towers = sorted(name for name, m in model.named_modules() if isinstance(m, Encoder))
        raise ConfigError(f"{field}.{path}: no such submodule; towers: {', '.join(towers)}") from None


def _encoders_in(module: torch.nn.Module) -> list[Encoder]:
    """``module`` itself if it is a tower, else the outermost towers inside it."""
    if isinstance(module, Encoder):
        return [module]
    return [e for child in module.children() for e in _encoders_in(child)]


def _init_tokenizer_dir(recipe: Recipe) -> Path | None:
    """The tokenizer saved with ``model.init_from``'s model, if it has one."""
    if not recipe.model.init_from:
        return None
    try:
        directory = find_model_dir(recipe.model.init_from) / TOKENIZER_DIR
    except FileNotFoundError:
        return None  # build_recipe_model reports the missing model with the field's name
    return directory if directory.is_dir() else None


def make_task(section: TaskSection) -> torch.nn.Module:
    from polymodal.modules.losses import LOSSES

    if section.kind == "contrastive":
        return ContrastiveTask(LOSSES.build(section.loss))
    if section.kind == "classification":
        return ClassificationTask()
    if section.kind == "caption":
        return CaptionTask(contrastive_weight=section.contrastive_weight, label_smoothing=section.label_smoothing)
    return VQATask()


# ----------------------------------------------------------------------------- run
CONFIG_NAME = "config.yaml"
# Settings a resumed run may change: they decide how fast it runs, what it logs and which checkpoints it keeps,
# not what it computes.
RESUME_MAY_CHANGE = frozenset({
    "train.num_workers", "train.threads", "train.log_every", "train.tensorboard", "train.checkpoint_every", "train.keep_last",
    "data.image_memo_mb",
})  # fmt: skip


# Recipe values that name files or directories: compared as paths (`./data/shapes` is `data/shapes`).
PATH_KEYS = frozenset({"data.path", "data.tokenizer", "model.init_from"})


def _recipe_field(recipe: Recipe, key: str) -> tuple[str, Any]:
    """What the dotted ``key`` is in this version's recipe schema: ``("field", default)`` (its default as it
    would be dumped), ``("entry", None)`` inside a free-form mapping (``model.params``), or ``("gone", None)``."""
    node: Any = recipe
    *parents, last = key.split(".")
    for part in parents:
        if isinstance(node, BaseModel) and part in type(node).model_fields:
            node = getattr(node, part)
        else:
            return ("entry", None) if isinstance(node, dict) else ("gone", None)
    if isinstance(node, BaseModel):
        if last not in type(node).model_fields:
            return "gone", None
        field = type(node).model_fields[last]
        if field.is_required():
            return "entry", None  # no default to assume for a run that did not record it
        return "field", to_jsonable_python(field.get_default(call_default_factory=True))
    return ("entry", None) if isinstance(node, dict) else ("gone", None)


def _same_setting(key: str, saved: Any, now: Any) -> bool:
    if key in PATH_KEYS and isinstance(saved, str) and isinstance(now, str):
        return Path(saved).resolve() == Path(now).resolve()
    if key == "train.precision" and isinstance(saved, (str, bool)) and isinstance(now, str):
        try:  # older runs wrote fp32 as "no"
            return normalize_precision("no" if saved is False else saved) == now
        except ValueError:
            return False
    return saved == now


def resume_config_differences(recipe: Recipe, saved_config: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """The settings (dotted keys, sorted) in which ``recipe`` differs from the config a run was started with,
    each with its value in the run and now (None where one side lacks it).

    A setting missing from the saved config was added to polymodal since: the run had its default. One only the
    saved config has was removed since and is ignored, unless it is an entry of a free-form mapping.
    """
    saved, now = flatten_config(saved_config), flatten_config(recipe.model_dump(mode="json"))
    changed: dict[str, tuple[Any, Any]] = {}
    for key in sorted(saved.keys() | now.keys()):
        if key in RESUME_MAY_CHANGE:
            continue
        if key in saved and key in now:
            differs = not _same_setting(key, saved[key], now[key])
        else:
            kind, default = _recipe_field(recipe, key)
            differs = kind == "entry" or (kind == "field" and key in now and now[key] != default)
        if differs:
            changed[key] = (saved.get(key), now.get(key))
    return changed


def check_resume_config(recipe: Recipe, run_dir: Path) -> None:
    """Refuse to resume ``run_dir`` with a recipe other than the one it was started with.

    A resumed run continues the same schedule from the same state; another ``train.steps``, learning rate or
    dataset would silently make it a different run (and overwrite the record of what it was).
    """
    saved_path = run_dir / CONFIG_NAME
    if not saved_path.is_file():
        return  # a run killed before it wrote its config: nothing to compare against
    try:
        saved_config = yaml.safe_load(saved_path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"--resume {run_dir}: {saved_path} is not valid YAML ({e})") from e
    if not isinstance(saved_config, dict):
        raise ConfigError(f"--resume {run_dir}: {saved_path} is not a recipe (a mapping at the top level)")
    changed = resume_config_differences(recipe, saved_config)
    if changed:
        shown = "; ".join(f"{k}: {was!r} in the run, {now!r} now" for k, (was, now) in list(changed.items())[:5])
        more = f" (and {len(changed) - 5} more)" if len(changed) > 5 else ""
        raise ConfigError(f"--resume {run_dir}: the recipe differs from the run's {saved_path} at {shown}{more}. "
                          "Resume with the recipe and --set values it was started with, or train into a new --out.")  # fmt: skip


def run_recipe(recipe: Recipe, run_dir: str | Path, resume: bool = False, progress: bool = True) -> TrainResult:
    run_dir = Path(run_dir)
    if not resume and list_checkpoints(run_dir):
        # A fresh run must not mix with an old one: pruning keeps the highest steps, so the old
        # checkpoints would win a later --resume.
        raise ConfigError(f"{run_dir} already holds a run's checkpoints; pass --resume {run_dir} or choose another --out")
    if resume:
        check_resume_config(recipe, run_dir)
    # Under a distributed launch this joins the process group, so the rank is known before anything is written:
    # only the main process writes the run's files. The others log their bad samples to their own file (each
    # decodes its own shard of the images; appends from two processes to one file could interleave).
    state = PartialState(cpu=not torch.cuda.is_available())
    is_main = state.is_main_process
    data = recipe.data
    view = data.view or TASK_VIEWS[recipe.task.kind]
    bad_log_name = "bad_samples.jsonl" if is_main else f"bad_samples.rank{state.process_index}.jsonl"
    bad_log = BadSampleLog(run_dir / bad_log_name, strict=data.strict)
    train_rows = _read(data, data.train, bad_log)
    if not train_rows:
        raise ConfigError(f"{Path(data.path) / data.train}: no usable samples")
    val_rows = _read(data, data.val, bad_log) if data.val else []

    tokenizer_dir = run_dir / "tokenizer"
    tokenizer_from_run = resume and tokenizer_dir.is_dir()
    if tokenizer_from_run:
        tokenizer = TextTokenizer.load(tokenizer_dir)
    elif data.tokenizer:
        from polymodal.pretrained.locate import resolve_pretrained

        tokenizer = TextTokenizer.load(resolve_pretrained(data.tokenizer))
    elif _init_tokenizer_dir(recipe) is not None:
        # Fine-tuning: token ids must mean what they meant to the pretrained text tower.
        tokenizer = TextTokenizer.load(_init_tokenizer_dir(recipe))  # type: ignore[arg-type]
    else:
        tokenizer = train_tokenizer(_corpus(train_rows), vocab_size=data.vocab_size, kind="wordlevel")

    extra: dict[str, Any] = {}
    label_fn = None
    answers: dict[str, int] | None = None
    if recipe.task.kind == "vqa":
        answers_path = run_dir / "answers.json"
        answers = json.loads(answers_path.read_text()) if resume and answers_path.is_file() else _answer_vocab(train_rows)
        extra["num_answers"] = max(2, len(answers))
        label_fn = label_from_vocab(answers)
    elif recipe.task.kind == "classification" and view == "labels":
        classes = sorted({str(s.label) for s in train_rows if s.label is not None})
        extra["num_classes"] = len(classes)
        answers = {c: i for i, c in enumerate(classes)}
        label_fn = label_from_vocab(answers)

    train_samples = expand_view(train_rows, view)
    val_samples = expand_view(val_rows, view)[: data.max_val_samples]
    pipeline = ImagePipeline.for_training(data.image, data.augment)
    # Each DataLoader worker fills its own memo (of every image, as sampling is random): share the bound out.
    memo_mb = data.image_memo_mb / max(1, recipe.train.num_workers)
    negatives = WordSwapNegatives(recipe.task.hard_negatives) if recipe.task.hard_negatives else None
    train_set = MultimodalDataset(
        train_samples, pipeline, tokenizer, text_mode="random", label_fn=label_fn,
        bad_log=bad_log, strict=data.strict, max_length=data.max_length, seed=recipe.train.seed,
        negative_text=negatives, image_memo_mb=memo_mb,
    )
    # Seeded before the model exists: its initial weights are part of what the seed must fix.
    set_seed(recipe.train.seed)
    model = build_recipe_model(recipe, tokenizer.vocab_size, extra)
    if recipe.task.contrastive_weight > 0 and getattr(model, "text_encoder", None) is None:
        raise ConfigError("task.contrastive_weight needs a captioner with a text tower for the contrastive loss: "
                          "model.params.contrastive=true (shapes-caption) or a contrastive_text_encoder in model.config")  # fmt: skip
    task = make_task(recipe.task)

    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(run_dir / CONFIG_NAME, yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False))
        if not tokenizer_from_run:
            tokenizer.save(tokenizer_dir)
        if answers is not None:
            write_atomic(run_dir / "answers.json", json.dumps(answers, indent=1))

    evaluator = None
    if val_samples:
        val_set = MultimodalDataset(
            val_samples, data.image, tokenizer, text_mode="first", label_fn=label_fn,
            bad_log=bad_log, strict=data.strict, max_length=data.max_length, image_memo_mb=data.image_memo_mb,
        )
        evaluator = make_evaluator(recipe.task.kind, val_set, tokenizer, batch_size=recipe.train.batch_size)

    def save(model_to_save: torch.nn.Module, where: Path) -> None:
        model_to_save.save(where, preprocess=data.image.to_dict(), tokenizer=tokenizer)  # type: ignore[operator]
        if answers is not None:  # the class vocabulary travels with the model
            (where / "answers.json").write_text(json.dumps(answers, indent=1))

    trainer = Trainer(
        model, task, train_set, recipe.train, run_dir,
        collate_fn=train_set.collate_fn, evaluate=evaluator, param_lrs=recipe.model.lrs or None,
        save_best=save, progress=progress,
    )
    if resume:
        trainer.resume()
    result = trainer.fit()
    result.transfer = getattr(model, "transfer_report", None)
    if trainer.is_main:
        save(model, run_dir / "model")
        summary = bad_log.summary()
        (run_dir / "train_summary.json").write_text(json.dumps({
            "steps": result.step, "stopped_early": result.stopped_early, "best_metric": result.best_metric,
            "best_step": result.best_step, "samples_per_second": result.samples_per_second,
            "last_losses": result.last_losses, "bad_samples": summary.total, "bad_samples_by_kind": summary.by_kind,
            "skipped_batches": result.skipped_batches, "transfer": result.transfer, "machine": result.machine,
        }, indent=2))
    return result
