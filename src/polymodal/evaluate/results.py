"""The evaluation result file (``polymodal eval --out FILE``), as pydantic models.

``polymodal report`` reads the same file: :func:`load_results` validates one, :func:`dump_results`
writes one. Optional parts are left out of the JSON when absent (not written as ``null``).

Shape::

    {"polymodal_eval": 1,
     "provenance": {"model", "model_hash", "data": {"path", "hash"}, "versions", "seed", "command", "created"},
     "results": [{"benchmark", "split", "headline", "metrics", "ci95", "details", "robustness"?, "examples"}]}
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

FORMAT_VERSION = 1
MAX_EXAMPLES = 16


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataProvenance(_Model):
    path: str
    hash: str  # sha256 over the files the benchmark read


class Provenance(_Model):
    model: str
    model_hash: str
    data: DataProvenance
    versions: dict[str, str | None]  # polymodal, torch, transformers, numpy (None: not installed)
    seed: int
    command: str
    created: str  # ISO 8601, UTC


class Confusion(_Model):
    classes: list[str]
    matrix: list[list[int]]  # row = true class, column = predicted class


class Details(_Model):
    confusion: Confusion | None = None
    per_class: dict[str, float] | None = None
    per_question_type: dict[str, float] | None = None
    recall_at_k: dict[str, dict[str, float]] | None = None  # {"i2t": {"1": r, ...}, "t2i": {...}}


class Robustness(_Model):
    metric: str  # the headline metric every number here measures
    missing_modality: dict[str, float] | None = None  # {"none": full input, "image": image dropped, "text": ...}
    corruptions: dict[str, dict[str, float]] | None = None  # corruption -> severity ("0".."5") -> metric


class Retrieved(_Model):
    image: str | None = None
    text: str | None = None
    score: float


class Example(_Model):
    image: str | None = None  # absolute path
    text: str | None = None
    prediction: str | None = None
    reference: str | None = None
    correct: bool | None = None
    retrieved: list[Retrieved] | None = None


class Result(_Model):
    benchmark: str
    split: str
    headline: str
    metrics: dict[str, float]
    ci95: dict[str, tuple[float, float]] = Field(default_factory=dict)
    details: Details = Field(default_factory=Details)
    robustness: Robustness | None = None
    examples: list[Example] = Field(default_factory=list, max_length=MAX_EXAMPLES)

    @model_validator(mode="after")
    def _headline_is_a_metric(self) -> Result:
        if self.headline not in self.metrics:
            raise ValueError(f"headline {self.headline!r} is not one of the metrics {sorted(self.metrics)}")
        return self


class ResultFile(_Model):
    polymodal_eval: int = FORMAT_VERSION
    provenance: Provenance
    results: list[Result]


def to_json(doc: ResultFile) -> dict[str, Any]:
    """The plain-JSON form, optional parts left out."""
    return doc.model_dump(mode="json", exclude_none=True)


def dump_results(doc: ResultFile, path: str | os.PathLike) -> Path:
    """Write ``doc`` to ``path`` (parents created); write-then-rename so a reader never sees half a file."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(json.dumps(to_json(doc), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, target)
    return target


def load_results(path: str | os.PathLike) -> ResultFile:
    """Read and validate a result file; errors name the file."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{p}: cannot read an evaluation result file: {e}") from None
    if not isinstance(data, dict) or data.get("polymodal_eval") != FORMAT_VERSION:
        raise ValueError(f"{p}: not a polymodal eval result file (expected \"polymodal_eval\": {FORMAT_VERSION})")
    from pydantic import ValidationError

    try:
        return ResultFile.model_validate(data)
    except ValidationError as e:
        raise ValueError(f"{p}: invalid result file: {e}") from None
