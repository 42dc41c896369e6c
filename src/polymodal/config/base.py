"""Config loading that fails before any work starts.

Every config section is a :class:`Config` (pydantic, unknown keys forbidden). Loading a YAML
file validates it whole and turns pydantic's errors into one :class:`ConfigError` whose
message names the file, the dotted field path, what was given and what is allowed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

C = TypeVar("C", bound="Config")


class Config(BaseModel):
    """Base for every config section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


def flatten_config(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr": 0.1}}`` -> ``{"train.lr": 0.1}`` (dotted paths, as ``--set`` writes them)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten_config(value, name + "."))  # an empty section adds nothing
        else:
            out[name] = value
    return out


class ConfigError(ValueError):
    """A recipe or override is invalid; the message is meant for the user as is."""


def _allowed(error: dict[str, Any]) -> str:
    ctx = error.get("ctx") or {}
    if "expected" in ctx:
        return f"allowed: {ctx['expected']}"
    if error["type"] == "extra_forbidden":
        return ""
    for key in ("gt", "ge", "lt", "le"):
        if key in ctx:
            op = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}[key]
            return f"allowed: {op} {ctx[key]}"
    return ""


def override_key(item: str) -> str:
    """The dotted key of a ``key.path=value`` override."""
    return item.split("=", 1)[0].strip()


def _from_overrides(loc: tuple[Any, ...], message: str, overrides: list[str]) -> list[str]:
    """The ``key=value`` overrides that set the field at ``loc``, a section holding it or a field inside it; for an
    error about the whole config (a check across sections), those whose key its message names."""
    path = ".".join(str(p) for p in loc)
    found = []
    for item in overrides:
        key = override_key(item)
        if not path:
            if key in message:
                found.append(item)
        elif key == path or key.startswith(path + ".") or path.startswith(key + "."):
            found.append(item)
    return found


def format_validation_errors(
    exc: ValidationError,
    source: str,
    model: type[BaseModel] | None = None,
    overrides: list[str] | None = None,
    *,
    title: str | None = None,
) -> str:
    """One line per error: the dotted field path, what is wrong, what was given and what is allowed. An error
    at a field that a ``--set`` override wrote (``overrides``: the ``key=value`` items) names that override, so
    a bad ``--set`` is not blamed on the file. The first line says what was validated: ``title``, else the name
    of ``model`` (whose fields an 'unknown key' error lists)."""
    lines = []
    from_set = 0
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"]) or "<root>"
        msg = err["msg"].removeprefix("Value error, ")  # a validator's own sentence says what is wrong
        culprits = _from_overrides(err["loc"], msg, overrides or [])
        if culprits:
            from_set += 1
            path += f" (from --set {', --set '.join(culprits)})"
        if err["type"] == "extra_forbidden":
            parent = err["loc"][:-1]
            known = _known_fields(model, parent) if model is not None else []
            msg = "unknown key" + (f"; known keys: {', '.join(known)}" if known else "")
        given = err.get("input")
        # A whole section (a model validator's input) is not repeated: the message names the values it is about;
        # nor is a string the message already quotes (a validator's "unknown decoder 'gru'").
        omit_given = (
            err["type"] in ("missing", "extra_forbidden", UNKNOWN_KEY)
            or isinstance(given, dict)
            or (isinstance(given, str) and repr(given) in msg)
        )
        given_txt = "" if omit_given else f" (got {given!r})"
        allowed = _allowed(err)
        lines.append(f"  {path}: {msg}{given_txt}" + (f"; {allowed}" if allowed and allowed not in msg else ""))
    if from_set == exc.error_count():
        origin = f"--set on {source}"
    elif from_set:
        origin = f"{source} and --set"
    else:
        origin = source
    what = title or (model.__name__ if model is not None else "config")
    return "\n".join([f"{origin}: invalid {what} ({exc.error_count()} error(s))", *lines])


# The error type of :func:`unknown_key` (pydantic's own, extra_forbidden, cannot carry the known keys).
UNKNOWN_KEY = "unknown_key"


def unknown_key(loc: tuple[Any, ...], given: Any, known: list[str], hint: str = "") -> InitErrorDetails:
    """An 'unknown key; known keys: ...' error at ``loc`` for a validator that checks keys itself."""
    detail = (f"; known keys: {', '.join(known)}" if known else "") + hint
    return InitErrorDetails(
        type=PydanticCustomError(UNKNOWN_KEY, "unknown key{detail}", {"detail": detail}), loc=loc, input=given
    )


def nested_errors(exc: ValidationError, model: type[BaseModel], prefix: tuple[Any, ...]) -> list[InitErrorDetails]:
    """``exc`` (from validating ``model``) as errors under ``prefix``, to raise again from a validator of the
    section holding it (``ValidationError.from_exception_data``); unknown keys name ``model``'s known keys."""
    out = []
    for err in exc.errors():
        if err["type"] == "extra_forbidden":
            out.append(unknown_key((*prefix, *err["loc"]), err["input"], _known_fields(model, err["loc"][:-1])))
            continue
        detail = InitErrorDetails(type=err["type"], loc=(*prefix, *err["loc"]), input=err["input"])
        if "ctx" in err:
            detail["ctx"] = err["ctx"]
        out.append(detail)
    return out


def _known_fields(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Field names of the (nested) model at ``loc``, for 'unknown key' hints."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        fields = getattr(current, "model_fields", None)
        if not fields or part not in fields:
            return []
        annotation = fields[part].annotation
        current = first_model(annotation)
        if current is None:
            return []
    return sorted(getattr(current, "model_fields", {}).keys())


def first_model(annotation: Any) -> Any:
    """The pydantic model an annotation holds (``AudioAugment | None`` -> AudioAugment), else None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = first_model(arg)
        if found is not None:
            return found
    return None


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: invalid YAML: {getattr(e, 'problem', e)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def _parse_value(text: str) -> Any:
    """``--set`` values are YAML scalars or flow collections: 3, 1e-4, true, [a, b], null."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides to a nested dict (a copy is returned)."""
    import copy

    out = copy.deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key.path=value")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        if not all(parts):
            raise ConfigError(f"override {item!r}: empty key in {key!r}")
        node = out
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
            node = child
        node[parts[-1]] = _parse_value(value)
    return out


def validate(model: type[C], data: dict[str, Any], source: str, overrides: list[str] | None = None) -> C:
    """``data`` as ``model``, or a ConfigError naming ``source`` (and the ``overrides`` behind a bad value)."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_errors(e, source, model, overrides)) from None


def load_config(model: type[C], path: str | os.PathLike, overrides: list[str] | None = None) -> C:
    """Read ``path`` (YAML), apply ``key=value`` overrides, validate into ``model``."""
    data = load_yaml(path)
    if overrides:
        data = apply_overrides(data, overrides)
    return validate(model, data, str(path), overrides)
