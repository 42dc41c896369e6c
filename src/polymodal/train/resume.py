"""Resuming a run: the recipe must be the one the run was started with, up to settings that only change how
fast it runs or what it logs."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic_core import to_jsonable_python

from polymodal.config import ConfigError, apply_overrides, flatten_config
from polymodal.hardware import normalize_precision
from polymodal.train.recipe import Recipe, upgrade_overrides, upgrade_recipe_dict

CONFIG_NAME = "config.yaml"
# Settings a resumed run may change: they decide how fast it runs, what it logs and which checkpoints it keeps,
# not what it computes.
RESUME_MAY_CHANGE = frozenset(
    {
        "train.num_workers",
        "train.threads",
        "train.log_every",
        "train.tensorboard",
        "train.checkpoint_every",
        "train.keep_last",
        "data.image_memo_mb",
    }
)


# Recipe values that name files or directories: compared as paths (`./data/shapes` is `data/shapes`).
PATH_KEYS = frozenset({"data.path", "data.tokenizer", "model.init_from"})


def with_absolute_paths(config: dict[str, Any]) -> dict[str, Any]:
    """A dumped recipe whose ``PATH_KEYS`` values that name existing files or directories are made absolute, so a
    run's config.yaml resumes from any working directory (others, such as ``pretrained:minilm``, stay)."""
    out = copy.deepcopy(config)
    for key in PATH_KEYS:
        section, name = key.split(".")
        value = out.get(section, {}).get(name)
        if isinstance(value, str) and Path(value).exists():
            out[section][name] = str(Path(value).resolve())
    return out


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
    if isinstance(saved, (int, float)) and not isinstance(saved, bool) and isinstance(now, str):
        try:  # a --set value YAML left a string (1e-3), which the recipe reads as a number
            return float(now) == saved
        except ValueError:
            return False
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
    saved = flatten_config(upgrade_recipe_dict(saved_config))
    now = flatten_config(recipe.model_dump(mode="json"))
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


def _saved_config(run_dir: Path) -> dict[str, Any] | None:
    """The config a run was started with (its config.yaml), or None for a run killed before it wrote one."""
    saved_path = run_dir / CONFIG_NAME
    if not saved_path.is_file():
        return None
    try:
        saved_config = yaml.safe_load(saved_path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"--resume {run_dir}: {saved_path} is not valid YAML ({e})") from e
    if not isinstance(saved_config, dict):
        raise ConfigError(f"--resume {run_dir}: {saved_path} is not a recipe (a mapping at the top level)")
    return saved_config


def check_resume_overrides(run_dir: Path, overrides: list[str]) -> None:
    """Refuse a ``--set`` that changes a setting of the run being resumed, before the recipe is validated: that
    the setting cannot change is the error to report, not what validating the changed recipe finds."""
    saved_config = _saved_config(run_dir)
    if saved_config is None:
        return
    saved = flatten_config(upgrade_recipe_dict(saved_config))
    for item in upgrade_overrides(overrides):
        for key, now in flatten_config(apply_overrides({}, [item])).items():
            if key in saved and key not in RESUME_MAY_CHANGE and not _same_setting(key, saved[key], now):
                raise ConfigError(
                    f"--resume {run_dir}: --set {item}: {key} cannot change on resume ({key}: {saved[key]!r} in the "
                    f"run, {now!r} now; see {run_dir / CONFIG_NAME}). A resumed run continues the schedule it "
                    f"started; only {', '.join(sorted(RESUME_MAY_CHANGE))} may change. Drop that --set, or train "
                    "into a new --out."
                )


def check_resume_config(recipe: Recipe, run_dir: Path) -> None:
    """Refuse to resume ``run_dir`` with a recipe other than the one it was started with.

    A resumed run continues the same schedule from the same state; another ``train.steps``, learning rate or
    dataset would silently make it a different run (and overwrite the record of what it was).
    """
    saved_path = run_dir / CONFIG_NAME
    saved_config = _saved_config(run_dir)
    if saved_config is None:
        return  # a run killed before it wrote its config: nothing to compare against
    if "task" in saved_config and "objective" not in saved_config:
        raise ConfigError(
            f"--resume {run_dir}: the run was started by a polymodal from before the modality-generic core, whose "
            "checkpoints name the weights otherwise; resume it with that version, or start it again here (its saved "
            "models in best/ and model/ load, and model.init_from can start from them)"
        )
    changed = resume_config_differences(recipe, saved_config)
    if changed:
        shown = "; ".join(f"{k}: {was!r} in the run, {now!r} now" for k, (was, now) in list(changed.items())[:5])
        more = f" (and {len(changed) - 5} more)" if len(changed) > 5 else ""
        raise ConfigError(
            f"--resume {run_dir}: the recipe differs from the run's {saved_path} at {shown}{more}. "
            "Resume with the recipe and --set values it was started with, or train into a new --out."
        )
