"""Recipes: one YAML file says what to train on what, and how.

```yaml
name: shapes-clip
model: {preset: shapes-clip, params: {embed_dim: 128}}
data:  {path: runs/demo/shapes, view: captions, image: {image_size: 64}}
objective: {kind: contrastive, loss: clip}
train: {steps: 600, batch_size: 64, lr: 1e-3}
```

The recipes polymodal ships live in ``polymodal/recipes/`` and load by name (``load_recipe("shapes-clip")``).
:func:`polymodal.train.run.run_recipe` trains one.
"""

from __future__ import annotations

import warnings
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from polymodal.config import Config, ConfigError, apply_overrides, load_yaml, override_key
from polymodal.config.base import nested_errors, unknown_key, validate
from polymodal.data.hard_negatives import WordSwapNegatives
from polymodal.data.processors import PROCESSORS
from polymodal.data.transforms import Augment, ImagePreprocess
from polymodal.models import PRESETS
from polymodal.train.config import TrainConfig

# How rows become samples, by objective kind (a recipe may choose another with ``data.view``).
OBJECTIVE_VIEWS = {
    "contrastive": "captions",
    "caption": "captions",
    "classification": "statements",
    "vqa": "qa",
    "matching": "captions",
    "masked_lm": "captions",
    "diffusion": "captions",
    "adversarial": "captions",
}
GENERATING = ("diffusion", "adversarial")  # objectives whose target is the image
# Modalities whose processing the data section sets itself (data.image, data.augment, data.max_length ...), not
# data.processors.
DATA_SECTION_MODALITIES = ("image", "text")


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
    path: str = Field(description="the data's directory (a ShapesWorld one, ...): train and val are read from it")
    train: str = Field(
        "train.jsonl",
        description="the training split: a manifest (.jsonl, .csv) or any dataset `polymodal data check` reads "
        "(class folders, WebDataset shards, a COCO or Karpathy JSON, ESC-50, a Kinetics, AudioCaps or Clotho CSV, "
        "MSR-VTT, VQAv2), relative to path",
    )
    val: str | None = Field("val.jsonl", description="the validation split, as train; none: no validation")
    train_options: dict[str, Any] = Field(
        default_factory=dict,
        description="options of train's reader: split (a Karpathy JSON, MSR-VTT), folds (ESC-50), split_list "
        "(UCF101 class folders), image_root, image_dir, annotations, audio_dir, video_dir (paths relative to path)",
    )
    val_options: dict[str, Any] = Field(default_factory=dict, description="options of val's reader, as train_options")
    val_share: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="validate on this share of the training rows instead of a val split (the rows are chosen by "
        "their ids, so a resumed run holds out the same ones)",
    )
    view: Literal["captions", "statements", "qa", "labels"] | None = Field(
        None, description="how rows become samples; default follows the objective"
    )
    label_key: str | None = Field(None, description="for view 'labels': which entry of a dict label")
    image: ImagePreprocess = ImagePreprocess(image_size=64, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), crop="none")
    augment: Augment = Augment()
    max_length: int = Field(32, ge=4)
    tokenizer: str | None = Field(
        None, description="tokenizer dir or pretrained:minilm; default: train a word-level one on the data"
    )
    vocab_size: int = Field(1000, ge=16)
    processors: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="settings of the processors of modalities beyond image and text (modality -> settings; "
        "`polymodal models processors` lists them)",
    )
    max_val_samples: int = Field(512, ge=1)
    strict: bool = False
    image_memo_mb: float = Field(
        1024,
        ge=0,
        description="keep prepared media (without augmentation) in memory up to this many MiB per dataset, split "
        "among the DataLoader workers (each holds its own); 0: prepare every time",
    )

    @field_validator("path")
    @classmethod
    def _home(cls, value: str) -> str:
        """``~/data`` as the shell would expand it (``--set data.path=~/data`` reaches here unexpanded)."""
        return str(Path(value).expanduser()) if value.startswith("~") else value

    @model_validator(mode="before")
    @classmethod
    def _val_share_replaces_val(cls, data: Any) -> Any:
        """val_share holds out training rows instead of the val split: without a val given, val is none."""
        if isinstance(data, dict) and data.get("val_share") is not None:
            if data.get("val") is not None:
                raise ValueError(
                    f"val_share {data['val_share']} takes validation rows out of train, and val {data['val']!r} "
                    "is a validation split too: set val: null, or drop val_share"
                )
            data = {**data, "val": None}
        return data

    @field_validator("processors")
    @classmethod
    def _processors_exist(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """Each entry names a registered processor (beyond image and text) and holds settings it takes, so a
        misspelt modality or setting fails here, before any data is read, instead of training with defaults."""
        configurable = [name for name in PROCESSORS.names() if name not in DATA_SECTION_MODALITIES]
        errors = []
        for modality, settings in value.items():
            if modality not in configurable:
                hint = (
                    " (image and text: data.image and data.max_length)" if modality in DATA_SECTION_MODALITIES else ""
                )
                errors.append(unknown_key((modality,), settings, configurable, hint))
                continue
            settings_model = getattr(PROCESSORS.get(modality), "settings_model", None)
            if settings_model is not None:
                try:
                    settings_model.model_validate(settings)
                except ValidationError as e:
                    errors.extend(nested_errors(e, settings_model, (modality,)))
        if errors:
            raise ValidationError.from_exception_data("processors", errors)
        return value  # as written: the run's config.yaml keeps the recipe's own settings


class AdversarialExamplesSection(Config):
    """Adversarial training: each batch's images moved by PGD towards a higher loss before the step."""

    epsilon: float = Field(
        gt=0, le=1, description="how far each pixel may move, in units of its [0, 1] range (4/255 = 0.0157)"
    )
    steps: int = Field(3, ge=1, le=100, description="PGD steps per training batch (each a forward and backward)")
    step_size: float | None = Field(
        None, gt=0, description="per PGD step, in pixel units; default 2.5 * epsilon / steps"
    )
    clean_weight: float = Field(0.0, ge=0, description="also train on the clean images, their loss at this weight")


class ObjectiveSection(Config):
    kind: Literal[
        "contrastive", "classification", "caption", "vqa", "matching", "masked_lm", "diffusion", "adversarial"
    ] = Field(
        description="contrastive (CLIP/SigLIP), classification, caption, vqa, matching (image-text matching on a "
        "two-class fusion classifier), masked_lm (BERT-style pretraining of the text tower), diffusion (denoising "
        "training of a text-to-image diffusion model), adversarial (a text-to-image GAN: discriminator and "
        "generator steps)"
    )
    loss: Literal["clip", "siglip", "cross_entropy", "bce", "mse"] | None = Field(
        None,
        description="contrastive: clip (default) or siglip; classification: cross_entropy (default), bce "
        "(multi-label: a row's label is a list of class names) or mse (regression on numeric labels)",
    )
    pairs: list[tuple[str, str]] | None = Field(
        None, description="contrastive: modality pairs to align; default: every pair of the model's modalities"
    )
    contrastive_weight: float = Field(0.0, ge=0)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    empty_text_rate: float = Field(
        0.1, ge=0, lt=1, description="diffusion: share of rows trained with the empty text (classifier-free guidance)"
    )
    hard_negatives: list[list[str]] | None = Field(
        None,
        description="contrastive, clip loss: groups of interchangeable words; each caption with one swapped "
        "is an extra negative for its image (NegCLIP); adversarial: an extra mismatched pair for the discriminator",
    )
    adversarial_examples: AdversarialExamplesSection | None = Field(
        None,
        description="contrastive, classification, matching, caption, vqa: train on images moved by PGD within "
        "epsilon of the originals (robustness to small crafted changes); each PGD step costs a forward and backward",
    )

    @model_validator(mode="after")
    def _fits(self) -> ObjectiveSection:
        if self.hard_negatives:  # [] or null: none
            if not (self.kind == "adversarial" or (self.kind == "contrastive" and self.loss in (None, "clip"))):
                raise ValueError(
                    "hard_negatives works with kind: contrastive and loss: clip, or kind: adversarial "
                    "(objective.hard_negatives=null trains without them)"
                )
            WordSwapNegatives(self.hard_negatives)  # checks the groups
        if self.contrastive_weight > 0 and self.kind != "caption":
            raise ValueError(
                f"contrastive_weight adds a CLIP loss to captioning (kind: caption); "
                f"a {self.kind} objective would ignore it"
            )
        allowed = {"contrastive": ("clip", "siglip"), "classification": ("cross_entropy", "bce", "mse")}
        if self.loss is not None and self.loss not in allowed.get(self.kind, ()):
            raise ValueError(
                f"loss {self.loss!r} does not go with kind {self.kind!r}; allowed: "
                f"{', '.join(allowed.get(self.kind, ())) or 'none (the objective has its own)'}"
            )
        if self.adversarial_examples is not None and self.kind in ("masked_lm", "diffusion", "adversarial"):
            raise ValueError(
                f"adversarial_examples attack a model's images: objective.kind {self.kind} has no loss on them to "
                "raise (drop objective.adversarial_examples)"
            )
        if self.pairs is not None and self.kind not in ("contrastive", "matching"):
            raise ValueError("pairs are for kind: contrastive or matching")
        if self.kind == "matching" and self.pairs is not None and len(self.pairs) != 1:
            raise ValueError("matching takes one modality pair")
        return self


class Recipe(Config):
    name: str
    model: ModelSection
    data: DataSection
    objective: ObjectiveSection
    train: TrainConfig

    @model_validator(mode="after")
    def _model_fits(self) -> Recipe:
        if (self.model.preset is None) == (self.model.config is None):
            raise ValueError("model needs exactly one of 'preset' or 'config'")
        if self.model.preset is not None and self.model.preset not in PRESETS:
            raise ValueError(f"model.preset {self.model.preset!r} is unknown; allowed: {', '.join(PRESETS.names())}")
        if self.model.init_map and not self.model.init_from:
            raise ValueError("model.init_map needs model.init_from (the model to copy from)")
        image = self.data.image
        if self.objective.kind in GENERATING and (set(image.mean) != {0.5} or set(image.std) != {0.5}):
            raise ValueError(
                f"objective.kind {self.objective.kind} generates pixels in [-1, 1]: data.image needs "
                f"mean [0.5, 0.5, 0.5] and std [0.5, 0.5, 0.5] (got mean {list(image.mean)}, std {list(image.std)})"
            )
        return self


def upgrade_recipe_dict(data: dict[str, Any]) -> dict[str, Any]:
    """A recipe dict written before the objective section was named ``objective`` (it was ``task``)."""
    if "task" in data and "objective" not in data:
        data = {("objective" if k == "task" else k): v for k, v in data.items()}
    return data


def packaged_recipes() -> list[str]:
    """Names of the recipes that ship with polymodal."""
    return sorted(
        p.name.removesuffix(".yaml")
        for p in resources.files("polymodal").joinpath("recipes").iterdir()
        if p.name.endswith(".yaml")
    )


def recipe_path(name_or_path: str | Path) -> Path:
    """A recipe file: the path itself when it exists, else the packaged recipe of that name."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    packaged = resources.files("polymodal").joinpath("recipes") / f"{path.name.removesuffix('.yaml')}.yaml"
    if path.parent == Path(".") and packaged.is_file():
        return Path(str(packaged))
    raise ConfigError(
        f"{name_or_path}: no such recipe file, and no packaged recipe of that name "
        f"(packaged: {', '.join(packaged_recipes())})"
    )


class RecipeAdjusted(UserWarning):
    """A recipe value :func:`load_recipe` changed to fit an override; the message says which, and how to choose."""


def upgrade_overrides(overrides: list[str]) -> list[str]:
    """``task.*`` overrides (the objective section's name before it was ``objective``) as ``objective.*``."""
    return [("objective" + o[4:]) if o.startswith("task.") else o for o in overrides]


WARMUP_SHARE = 10  # a warmup lowered to fit a shortened run takes a tenth of its steps


def fit_warmup_to_steps(data: dict[str, Any], overrides: list[str], source: str) -> None:
    """Lower the recipe's ``train.warmup_steps`` to a tenth of ``train.steps`` when an override shortened the run
    below it (a quick ``--set train.steps=5``), so the schedule still decays, with a :class:`RecipeAdjusted`
    warning; when the overrides set both, they are the user's own and are left for validation to refuse."""
    keys = {override_key(o) for o in overrides}
    train = data.get("train")
    if "train.steps" not in keys or "train.warmup_steps" in keys or not isinstance(train, dict):
        return
    steps, warmup = train.get("steps"), train.get("warmup_steps")
    if isinstance(steps, int) and isinstance(warmup, int) and 1 <= steps < warmup:
        train["warmup_steps"] = steps // WARMUP_SHARE
        warnings.warn(
            RecipeAdjusted(
                f"train.warmup_steps lowered from {warmup} ({source}) to {train['warmup_steps']}, a tenth of the "
                f"--set train.steps={steps}; --set train.warmup_steps to choose another"
            ),
            stacklevel=3,
        )


def load_recipe(name_or_path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read a recipe file (or a packaged recipe by name), apply ``key=value`` overrides, validate. A warmup longer
    than an overridden ``train.steps`` is shortened to it (see :func:`fit_warmup_to_steps`)."""
    path = recipe_path(name_or_path)
    data = upgrade_recipe_dict(load_yaml(path))
    overrides = upgrade_overrides(overrides or [])
    if overrides:
        data = apply_overrides(data, overrides)
        fit_warmup_to_steps(data, overrides, str(path))
    return validate(Recipe, data, str(path), overrides)
