"""The evaluation result file (``polymodal eval --out FILE``), as pydantic models.

``polymodal report`` reads the same file through the same models: :func:`load_results` validates one
(errors name the file, line or field), :func:`dump_results` writes one. Optional parts are left out of the JSON
when absent (not written as ``null``).

Shape::

    {"polymodal_eval": 1,
     "provenance": {"model", "model_hash", "data": {"path", "hash"}, "judges"?: {NAME: {"path", "hash"}}, "versions",
                    "seed", "command", "created"},
     "results": [{"benchmark", "split", "headline", "also"?, "n"?, "unit"?, "metrics", "ci95", "details", "robustness"?,
                  "examples"}],
     "skipped": [{"benchmark", "split", "reason"}]}
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from polymodal.config import format_validation_errors
from polymodal.fsutil import write_atomic

EVAL_KEY = "polymodal_eval"
FORMAT_VERSION = 1
MAX_EXAMPLES = 16


# What a result file is, for errors about files that are not one.
RESULT_FILE_IS = f"the JSON object `polymodal eval --out FILE` writes, with a top-level {EVAL_KEY!r} key"


class ResultFileError(ValueError):
    """A result file cannot be read or is invalid; the message names the file (and line or field)."""


class NotJSONError(ResultFileError):
    """The file is not JSON text; ``detail`` says why without naming the file (where it stops being JSON)."""

    def __init__(self, message: str, detail: str) -> None:
        super().__init__(message)
        self.detail = detail


class _Model(BaseModel):
    # Unknown keys are ignored rather than rejected: reports must keep working on files written by a
    # newer ``polymodal eval``.
    model_config = ConfigDict(extra="ignore")


class DataProvenance(_Model):
    path: str
    hash: str  # sha256 over the files the benchmark read


class JudgeProvenance(_Model):
    path: str  # as given to --judge NAME=PATH
    hash: str  # as model_hash: sha256 over its model directory's files (a named model: its identity)


class Provenance(_Model):
    model: str
    model_hash: str
    data: DataProvenance
    judges: dict[str, JudgeProvenance] | None = None  # the models a benchmark scored with (scene checker, CLIP)
    versions: dict[str, str | None] = Field(default_factory=dict)  # polymodal, torch, ... (None: not installed)
    seed: int | None = None
    command: str | None = None
    created: str | None = None  # ISO 8601, UTC
    machine: dict[str, Any] | None = None  # CPU, flags, and the precision the model ran in (and why)


def _numeric_keys(curves: dict[str, dict[str, float]] | None) -> dict[str, dict[str, float]] | None:
    """Curves are keyed by K or severity as strings ("1", "5"); they are plotted as numbers."""
    for name, curve in (curves or {}).items():
        for key in curve:
            try:
                float(key)
            except ValueError:
                raise ValueError(f"{name}: key {key!r} is not a number") from None
    return curves


def epsilon_key(epsilon: float) -> str:
    """An adversarial curve's key for ``epsilon``: a number to six significant figures ("0.0156863" for 4/255)."""
    return format(epsilon, ".6g")


def describe_epsilon(epsilon: float) -> str:
    """``4/255`` where epsilon is (close to) a whole number of 255ths, else the number."""
    levels = epsilon * 255
    return f"{round(levels)}/255" if abs(levels - round(levels)) < 1e-3 and round(levels) > 0 else f"{epsilon:g}"


class Confusion(_Model):
    classes: list[str]
    matrix: list[list[int]]  # row = true class, column = predicted class

    @model_validator(mode="after")
    def _square(self) -> Confusion:
        n = len(self.classes)
        if len(self.matrix) != n or any(len(row) != n for row in self.matrix):
            raise ValueError(f"matrix must be {n}x{n} to match {n} classes")
        return self


class Details(_Model):
    confusion: Confusion | None = None
    per_class: dict[str, float] | None = None
    per_question_type: dict[str, float] | None = None
    per_statement_type: dict[str, float] | None = None
    recall_at_k: dict[str, dict[str, float]] | None = None  # {"i2t": {"1": r, ...}, "t2i": {...}}

    _k_is_a_number = field_validator("recall_at_k")(_numeric_keys)


class Robustness(_Model):
    metric: str  # the headline metric every number here measures
    missing_modality: dict[str, float] | None = None  # {"none": full input, "image": image dropped, "text": ...}
    corruptions: dict[str, dict[str, float]] | None = None  # corruption -> severity ("0".."5") -> metric
    adversarial: dict[str, float] | None = None  # PGD epsilon (of the [0, 1] pixel range; "0": clean) -> metric
    attack: str | None = None  # how the adversarial curve's images were moved
    skipped: dict[str, str] | None = None  # curve -> why it was not run (image corruptions on sounds)

    _severity_is_a_number = field_validator("corruptions")(_numeric_keys)

    @field_validator("adversarial")
    @classmethod
    def _epsilon_is_a_number(cls, curve: dict[str, float] | None) -> dict[str, float] | None:
        _numeric_keys({"adversarial": curve or {}})
        return curve


class Retrieved(_Model):
    image: str | None = None
    audio: str | None = None  # absolute path
    video: str | None = None  # absolute path (a file, or a folder of frames)
    text: str | None = None
    score: float


class Example(_Model):
    image: str | None = None  # absolute path
    audio: str | None = None  # absolute path
    video: str | None = None  # absolute path (a file, or a folder of frames)
    text: str | None = None
    prediction: str | None = None
    reference: str | None = None
    correct: bool | None = None
    retrieved: list[Retrieved] | None = None


class Result(_Model):
    benchmark: str
    split: str
    headline: str
    also: list[str] = Field(default_factory=list)  # other metrics worth a row of their own (ESC-50's probe accuracy)
    n: int | None = Field(default=None, ge=0)  # how many outcomes the headline averages (and its CI resamples)
    unit: str | None = None  # what n counts: images, sounds, clips, captions, questions, statements, prompts
    metrics: dict[str, float]
    ci95: dict[str, tuple[float, float]] = Field(default_factory=dict)
    details: Details = Field(default_factory=Details)
    robustness: Robustness | None = None
    examples: list[Example] = Field(default_factory=list, max_length=MAX_EXAMPLES)

    @model_validator(mode="after")
    def _headline_is_a_metric(self) -> Result:
        for name in (self.headline, *self.also):
            if name not in self.metrics:
                role = "headline" if name == self.headline else "also"
                raise ValueError(f"{role} {name!r} is not a key of metrics {sorted(self.metrics)}")
        return self


class Skipped(_Model):
    """A benchmark split that was not run: the model cannot do what it scores, or the split has nothing of its kind."""

    benchmark: str
    split: str
    reason: str


class ResultFile(_Model):
    polymodal_eval: int = FORMAT_VERSION
    provenance: Provenance
    results: list[Result]
    skipped: list[Skipped] = Field(default_factory=list)


def describe_skipped(skipped: list[Skipped]) -> list[str]:
    """One line per benchmark and reason: ``shapes-caption (test, test_novel): benchmark shapes-caption needs ...``."""
    splits: dict[tuple[str, str], list[str]] = {}
    for entry in skipped:
        splits.setdefault((entry.benchmark, entry.reason), []).append(entry.split)
    return [f"{benchmark} ({', '.join(names)}): {reason}" for (benchmark, reason), names in splits.items()]


def to_json(doc: ResultFile) -> dict[str, Any]:
    """The plain-JSON form, optional parts left out."""
    return doc.model_dump(mode="json", exclude_none=True)


def dump_results(doc: ResultFile, path: str | os.PathLike) -> Path:
    """Write ``doc`` to ``path`` (parents created); write-then-rename so a reader never sees half a file."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(target, json.dumps(to_json(doc), indent=2, ensure_ascii=False) + "\n")


def is_result_document(data: Any) -> bool:
    """True for a parsed JSON document that claims to be a result file (valid or not)."""
    return isinstance(data, dict) and EVAL_KEY in data


def read_json(path: str | os.PathLike) -> Any:
    """Parse a JSON file or raise :class:`ResultFileError` naming the file, line and column."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ResultFileError(f"{path}: no such file") from None
    except UnicodeDecodeError as e:
        detail = f"not UTF-8 text ({e.reason} at byte {e.start})"
        raise NotJSONError(f"{path}: {detail}", detail) from None
    except json.JSONDecodeError as e:
        where = f"line {e.lineno}, column {e.colno}"
        raise NotJSONError(f"{path}, {where}: invalid JSON: {e.msg}", f"{where}: {e.msg}") from None


def parse_results(data: Any, source: str | os.PathLike) -> ResultFile:
    """Validate a parsed result document; errors name ``source`` and the field."""
    if not is_result_document(data):
        raise ResultFileError(f"{source}: not a polymodal result file ({RESULT_FILE_IS})")
    if data[EVAL_KEY] != FORMAT_VERSION:
        raise ResultFileError(
            f"{source}: field {EVAL_KEY!r}: unsupported version {data[EVAL_KEY]!r}; "
            f"this polymodal reads {FORMAT_VERSION}"
        )
    try:
        return ResultFile.model_validate(data)
    except ValidationError as e:
        raise ResultFileError(format_validation_errors(e, str(source), ResultFile)) from None


def load_results(path: str | os.PathLike) -> ResultFile:
    """Read and validate one result file. A file that is not JSON is said not to be a result file, unless it
    holds the result key: then it is a damaged one, and the error names the line."""
    path = Path(path)
    try:
        data = read_json(path)
    except NotJSONError as e:
        if f'"{EVAL_KEY}"' in path.read_text(encoding="utf-8", errors="replace"):
            raise
        raise ResultFileError(
            f"{path}: not a polymodal result file ({RESULT_FILE_IS}); it is not JSON: {e.detail}"
        ) from None
    return parse_results(data, path)
