"""The evaluation result file (``"polymodal_eval": 1``), validated before anything is drawn.

Extra keys are tolerated everywhere (newer writers may add fields); missing or mistyped
required fields raise :class:`ReportError` naming the file and the dotted field path, e.g.
``eval.json: invalid EvalFile ... results.0.headline: Field required``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from polymodal.config import format_validation_errors

EVAL_KEY = "polymodal_eval"
EVAL_VERSION = 1


class ReportError(ValueError):
    """An input cannot be reported on; the message is meant for the user as is."""


class _Lenient(BaseModel):
    # Unknown keys are ignored rather than rejected: a report must keep working on files
    # written by a newer ``polymodal eval``.
    model_config = ConfigDict(extra="ignore")


class DataRef(_Lenient):
    path: str
    hash: str


class Provenance(_Lenient):
    model: str
    model_hash: str
    data: DataRef
    versions: dict[str, str | None] = Field(default_factory=dict)  # None: package not installed
    seed: int | None = None
    command: str | None = None
    created: str | None = None


def _numeric_keys(curves: dict[str, dict[str, float]] | None) -> dict[str, dict[str, float]] | None:
    """Curves are keyed by K or severity as strings ("1", "5"); they are plotted as numbers."""
    for name, curve in (curves or {}).items():
        for key in curve:
            try:
                float(key)
            except ValueError:
                raise ValueError(f"{name}: key {key!r} is not a number") from None
    return curves


class Confusion(_Lenient):
    classes: list[str]
    matrix: list[list[int]]

    @model_validator(mode="after")
    def _square(self) -> Confusion:
        n = len(self.classes)
        if len(self.matrix) != n or any(len(row) != n for row in self.matrix):
            raise ValueError(f"matrix must be {n}x{n} to match {n} classes")
        return self


class Details(_Lenient):
    confusion: Confusion | None = None
    per_class: dict[str, float] | None = None
    per_question_type: dict[str, float] | None = None
    recall_at_k: dict[str, dict[str, float]] | None = None  # direction -> {K: recall}

    _k_is_a_number = field_validator("recall_at_k")(_numeric_keys)


class Robustness(_Lenient):
    metric: str
    missing_modality: dict[str, float] | None = None  # dropped modality ("none" = all present) -> metric
    corruptions: dict[str, dict[str, float]] | None = None  # corruption -> {severity: metric}

    _severity_is_a_number = field_validator("corruptions")(_numeric_keys)


class Retrieved(_Lenient):
    image: str | None = None
    text: str | None = None
    score: float


class Example(_Lenient):
    image: str | None = None
    text: str | None = None
    prediction: str | None = None
    reference: str | None = None
    correct: bool | None = None
    retrieved: list[Retrieved] | None = None


class BenchmarkResult(_Lenient):
    benchmark: str
    split: str
    headline: str
    metrics: dict[str, float]
    ci95: dict[str, tuple[float, float]] = Field(default_factory=dict)
    details: Details = Field(default_factory=Details)
    robustness: Robustness | None = None
    examples: list[Example] = Field(default_factory=list)

    @model_validator(mode="after")
    def _headline_is_a_metric(self) -> BenchmarkResult:
        if self.headline not in self.metrics:
            raise ValueError(f"headline {self.headline!r} is not a key of metrics {sorted(self.metrics)}")
        return self


class EvalFile(_Lenient):
    polymodal_eval: int
    provenance: Provenance
    results: list[BenchmarkResult]


def is_eval_document(data: Any) -> bool:
    """True for a parsed JSON document that claims to be a result file (valid or not)."""
    return isinstance(data, dict) and EVAL_KEY in data


def parse_eval(data: Any, source: str | Path) -> EvalFile:
    """Validate a parsed result document; errors name ``source`` and the field."""
    if not is_eval_document(data):
        raise ReportError(f"{source}: not a polymodal result file (no top-level {EVAL_KEY!r} key)")
    if data[EVAL_KEY] != EVAL_VERSION:
        raise ReportError(f"{source}: field {EVAL_KEY!r}: unsupported version {data[EVAL_KEY]!r}; this polymodal reads {EVAL_VERSION}")
    try:
        return EvalFile.model_validate(data)
    except ValidationError as e:
        raise ReportError(format_validation_errors(e, str(source), EvalFile)) from None


def read_json(path: Path) -> Any:
    """Parse a JSON file or raise :class:`ReportError` naming the file, line and column."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReportError(f"{path}: no such file") from None
    except UnicodeDecodeError as e:
        raise ReportError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise ReportError(f"{path}, line {e.lineno}, column {e.colno}: invalid JSON: {e.msg}") from None


def load_eval_file(path: str | Path) -> EvalFile:
    """Read and validate one result file."""
    path = Path(path)
    return parse_eval(read_json(path), path)
