"""What each column of a table is, and what kind of problem its label column poses, read from the content.

A column is a media path (``image``, ``audio``, ``video``: by the files' extensions), free ``text``, a
``categorical`` value, a ``numeric`` value, or ``ignore`` (an identifier, or nothing usable). The label decides
between classification (``binary``, ``multiclass``; ``multilabel`` for lists) and ``regression``. Every guess
carries its reason and can be overridden (``--column NAME=KIND``, ``--problem``).
"""

from __future__ import annotations

import math
import re
import warnings
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from polymodal.data.readers.base import media_kind

COLUMN_KINDS = ("image", "audio", "video", "text", "categorical", "numeric", "ignore")
MEDIA_KINDS = ("image", "audio", "video")
TABULAR_KINDS = ("categorical", "numeric")
PROBLEMS = ("binary", "multiclass", "multilabel", "regression")

MEDIA_SHARE = 0.9  # of a column's values must be paths of one media kind
NUMERIC_SHARE = 0.95  # of a column's values must be numbers (the others are then bad cells, counted)
TEXT_MIN_WORDS = 3.0  # mean words per value from which strings are free text, not categories
MAX_CLASSES_FOR_INTEGERS = 20  # an integer label with more distinct values is a regression target
ID_NAMES = frozenset({"id", "uid", "uuid", "key", "index"})


@dataclass(frozen=True)
class ColumnInfo:
    """One column: its kind, why, and what it holds."""

    name: str
    kind: str
    reason: str
    missing: int
    distinct: int
    example: str

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("name", "kind", "reason", "missing", "distinct", "example")}


MISSING_MARKERS = frozenset({"", "na", "n/a", "nan", "null", "none", "-", "?"})  # what spreadsheets write for nothing


def is_missing(value: Any) -> bool:
    """None, a NaN float, or a string that is blank or a usual marker of nothing (``NA``, ``n/a``, ``null`` ...)."""
    if value is None:
        return True
    if isinstance(value, str):
        return value.strip().lower() in MISSING_MARKERS
    return isinstance(value, float) and math.isnan(value)


def as_number(value: Any) -> float | None:
    """The value as a float (numbers, booleans, numeric strings), or None."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


def describe_column(name: str, values: Sequence[Any], kind: str | None = None) -> ColumnInfo:
    """The column's :class:`ColumnInfo`; ``kind`` given (an override) is kept, with that as its reason."""
    present = [v for v in values if not is_missing(v)]
    distinct = len({_hashable(v) for v in present})
    missing = len(values) - len(present)
    if kind is not None and kind not in COLUMN_KINDS:
        raise ValueError(f"column {name!r}: unknown kind {kind!r}; kinds: {', '.join(COLUMN_KINDS)}")
    detected, reason = (kind, "given") if kind is not None else _detect(name, present, distinct)
    # A numeric column's example is a number: its first value may be one of the bad cells.
    usable = [v for v in present if as_number(v) is not None] if detected == "numeric" else present
    example = _short(usable[0]) if usable else ""
    return ColumnInfo(name, detected, reason, missing, distinct, example)


def column_names(names: Sequence[str]) -> str:
    """Column names for a message, comma-separated; one with surrounding whitespace quoted, so the space shows."""
    return ", ".join(repr(n) if n != n.strip() else n for n in names)


def _detect(name: str, present: list[Any], distinct: int) -> tuple[str, str]:
    if not present:
        return "ignore", "no values"
    if any(isinstance(v, (list, dict)) for v in present):
        return "ignore", "holds lists or objects"
    strings = [v for v in present if isinstance(v, str)]
    if len(strings) == len(present):
        kinds = [media_kind(v.strip()) for v in strings]
        for media in MEDIA_KINDS:
            share = kinds.count(media) / len(kinds)
            if share >= MEDIA_SHARE:
                return media, f"{share:.0%} of values are {media} file paths"
    numbers = [as_number(v) for v in present]
    share = sum(n is not None for n in numbers) / len(numbers)
    if share >= NUMERIC_SHARE:
        if name.lower() in ID_NAMES and distinct == len(present):
            return "ignore", "an identifier: every value differs"
        return "numeric", "every value is a number" if share == 1 else f"{share:.0%} of values are numbers"
    if name.lower() in ID_NAMES:
        return "ignore", f"named {name!r}"
    words = sum(len(str(v).split()) for v in present) / len(present)
    if distinct == len(present) and words < 1.5 and len(present) >= 20:
        return "ignore", "an identifier: every value differs and is one word"
    if words >= TEXT_MIN_WORDS:
        return "text", f"{words:.1f} words per value"
    if distinct > max(50, len(present) // 2):
        return "text", f"{distinct} distinct values"
    return "categorical", f"{distinct} distinct values, {words:.1f} words each"


@dataclass(frozen=True)
class Problem:
    """What the label column asks for: its kind and, for classification, its classes in a fixed order."""

    kind: str
    label: str
    classes: tuple[str, ...] = ()
    reason: str = ""
    metric: str = ""  # what the search ranks candidates by; "" is the kind's first in METRICS

    @property
    def is_classification(self) -> bool:
        return self.kind != "regression"

    @property
    def ranked_by(self) -> str:
        return self.metric or METRICS[self.kind][0]

    def with_metric(self, metric: str | None) -> Problem:
        """This problem ranked by ``metric`` (one of its kind's METRICS), or ValueError naming them."""
        if metric is None:
            return self
        if metric not in METRICS[self.kind]:
            raise ValueError(
                f"--metric {metric!r} does not rank a {self.kind} problem; choose from {', '.join(METRICS[self.kind])}"
            )
        return replace(self, metric=metric)

    def to_dict(self) -> dict[str, Any]:
        out = {"kind": self.kind, "label": self.label, "classes": list(self.classes), "reason": self.reason}
        return {**out, "metric": self.metric} if self.metric else out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Problem:
        classes = tuple(data.get("classes", ()))
        return cls(data["kind"], data["label"], classes, data.get("reason", ""), data.get("metric", ""))


# The metrics a fit may rank candidates by, per problem kind, the default first (RMSE and MAE: lower is better).
METRICS = {
    "binary": ("accuracy", "balanced_accuracy", "f1_macro", "roc_auc"),
    "multiclass": ("accuracy", "balanced_accuracy", "f1_macro"),
    "multilabel": ("f1_micro", "f1_macro", "subset_accuracy"),
    "regression": ("rmse", "mae", "r2"),
}
LOWER_IS_BETTER = frozenset({"rmse", "mae"})


PLAIN_DECIMAL = re.compile(r"[+-]?(0|[1-9][0-9]*)(\.[0-9]+)?$")  # how a number column is written out
EXACT_INTEGERS = 2**53  # floats hold every integer below this: a longer numeric string stays as written


def class_name(value: Any) -> str:
    """A label value as its class name: ``1``, ``1.0``, ``"1"`` and ``"1.0"`` are the same class ``"1"`` (a CSV cell
    is a string, and a float column written out says ``1.0``); ``"1.50"`` is ``"1.5"``; other strings, codes such as
    ``"007"``, ``"1e3"`` or ``"1_000"`` among them, are only stripped."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str) and not PLAIN_DECIMAL.match(value.strip()):
        return value.strip()
    number = as_number(value)
    if number is not None and number.is_integer() and abs(number) < EXACT_INTEGERS:
        return str(int(number))
    if number is not None and isinstance(value, str) and abs(number) < EXACT_INTEGERS:
        return str(number)
    return str(value).strip()


def known_class(value: Any, classes: Collection[str]) -> str | None:
    """The one of ``classes`` a label cell names: as written first (a predictor saved before labels were normalised
    holds "1.0"), then as :func:`class_name` normalises it; None for a class it does not know."""
    for name in (str(value).strip(), class_name(value)):
        if name in classes:
            return name
    return None


LABEL_SEPARATORS = ("|", ";")


def label_values(value: Any) -> list[str]:
    """A multi-label cell as its class names: a JSON list, or a string split on ``|`` or ``;``."""
    if isinstance(value, list):
        return sorted({class_name(v) for v in value if not is_missing(v)})
    text = str(value)
    for separator in LABEL_SEPARATORS:
        if separator in text:
            return sorted({class_name(p) for p in text.split(separator) if p.strip()})
    return [class_name(value)] if text.strip() else []


MULTILABEL_SHARE = 0.2  # of the label's string cells that must hold several labels to read it as multi-label
MAX_MULTILABEL_CLASSES = 50  # the labels (the parts) must be a small vocabulary of short names
MAX_LABEL_WORDS = 3


def _separated_labels(present: list[Any]) -> str | None:
    """Why string cells read as ``a|b`` (or ``a;b``) label sets, or None: a clear share of them hold several labels,
    and the labels are few short names, fewer than the distinct cells (so ordinary text is not split)."""
    if not all(isinstance(v, str) for v in present):
        return None
    parts = [label_values(v) for v in present]
    share = sum(len(p) > 1 for p in parts) / len(parts)
    vocabulary = {name for p in parts for name in p}
    if (
        share < MULTILABEL_SHARE
        or len(vocabulary) > MAX_MULTILABEL_CLASSES
        or len(vocabulary) >= len(set(present))
        or any(len(name.split()) > MAX_LABEL_WORDS for name in vocabulary)
    ):
        return None
    return f"{share:.0%} of values are several labels split on {' or '.join(LABEL_SEPARATORS)}"


def detect_problem(label: str, values: Sequence[Any], kind: str | None = None) -> Problem:
    """The problem the ``label`` column's non-missing ``values`` pose (``kind`` given: that one)."""
    present = [v for v in values if not is_missing(v)]
    if not present:
        raise ValueError(f"label column {label!r} has no values")
    if kind is not None and kind not in PROBLEMS:
        raise ValueError(f"unknown problem {kind!r}; problems: {', '.join(PROBLEMS)}")
    if kind == "regression" or (kind is None and _looks_continuous(present)):
        bad = [v for v in present if as_number(v) is None]
        if bad:
            raise ValueError(f"label column {label!r}: regression needs numbers; got {bad[0]!r}")
        reason = "given" if kind else "numbers with many distinct or fractional values"
        return Problem("regression", label, (), reason)
    separated = _separated_labels(present) if kind is None else None
    if kind == "multilabel" or (kind is None and any(isinstance(v, list) for v in present)) or separated:
        classes = sorted({c for v in present for c in label_values(v)})
        reason = "given" if kind else separated or "lists of labels"
        return Problem("multilabel", label, tuple(classes), reason)
    names = [class_name(v) for v in present]
    classes = _class_order(names)
    if len(classes) < 2:
        raise ValueError(f"label column {label!r} has a single class {classes[0]!r}: nothing to learn")
    _warn_of_odd_classes(label, names)
    chosen = kind or ("binary" if len(classes) == 2 else "multiclass")
    if chosen == "binary" and len(classes) != 2:
        raise ValueError(f"label column {label!r}: binary needs 2 classes, found {len(classes)}")
    return Problem(chosen, label, tuple(classes), "given" if kind else f"{len(classes)} classes")


def _warn_of_odd_classes(label: str, names: list[str]) -> None:
    """Classes that look like mistakes, which would otherwise be learnt as classes: names that differ only in case
    ("Positive", "positive"), and a class of one row among many (a typo, too few to learn or to validate)."""
    counts = Counter(names)
    by_case: dict[str, list[str]] = {}
    for name in sorted(counts):
        by_case.setdefault(" ".join(name.lower().split()), []).append(name)
    alike = [group for group in by_case.values() if len(group) > 1]
    if alike:
        shown = "; ".join(", ".join(repr(n) for n in group) for group in alike[:3])
        warnings.warn(f"label column {label!r}: classes differing only in case: {shown} (one class each)", stacklevel=3)
    lonely = sorted(n for n, k in counts.items() if k == 1)
    if lonely and len(names) >= 10 * len(counts):
        shown = ", ".join(repr(n) for n in lonely[:5])
        warnings.warn(
            f"label column {label!r}: {len(lonely)} class(es) of a single row among {len(names)}: {shown} "
            "(a typo? too few to learn or to validate)",
            stacklevel=3,
        )


LEAK_MIN_ROWS = 20  # fewer labelled rows than this decide nothing
LEAK_CORRELATION = 0.9999  # a number column this correlated with a number label is a copy of it


def warn_of_label_copies(problem: Problem, columns: Sequence[str], values: Callable[[str], Sequence[Any]]) -> None:
    """Columns that give the label away in the training rows: a class per value, with no more values than twice
    the classes (the label under another name or code: a model scores perfectly on it, then fails where the
    column is not known in advance), or a number column equal to a regression label up to scale and shift."""
    labels = values(problem.label)
    for column in columns:
        pairs = [(v, y) for v, y in zip(values(column), labels) if not is_missing(v) and not is_missing(y)]
        if len(pairs) < LEAK_MIN_ROWS or any(isinstance(v, list) or isinstance(y, list) for v, y in pairs):
            continue
        if problem.kind == "regression":
            numbers = [(as_number(v), as_number(y)) for v, y in pairs]
            if any(a is None or b is None for a, b in numbers):
                continue
            x, t = np.array(numbers, dtype=np.float64).T
            if x.std() == 0 or t.std() == 0 or abs(np.corrcoef(x, t)[0, 1]) < LEAK_CORRELATION:
                continue
            why = f"its numbers are the label's up to scale and shift (correlation above {LEAK_CORRELATION})"
        else:
            classes_of: dict[str, set[str]] = {}
            for v, y in pairs:
                classes_of.setdefault(class_name(v), set()).add(class_name(y))
            classes = {c for found in classes_of.values() for c in found}
            if len(classes) < 2 or len(classes_of) > 2 * len(classes):
                continue
            if any(len(found) > 1 for found in classes_of.values()):
                continue
            why = f"each of its {len(classes_of)} values goes with one class in all {len(pairs)} training rows"
        warnings.warn(
            f"column {column!r} gives the label {problem.label!r} away: {why}. A copy or code of the label? If it "
            f"is not known when predicting, leave it out: --column {column}=ignore",
            stacklevel=3,
        )


def _looks_continuous(present: list[Any]) -> bool:
    numbers = [as_number(v) for v in present]
    if any(n is None for n in numbers) or any(isinstance(v, (bool, list)) for v in present):
        return False
    if any(not n.is_integer() for n in numbers):  # type: ignore[union-attr]
        return True
    return len(set(numbers)) > MAX_CLASSES_FOR_INTEGERS


def _class_order(names: list[str]) -> list[str]:
    """Sorted numerically when every class is a number (2 before 10), else alphabetically."""
    distinct = set(names)
    if all(as_number(n) is not None for n in distinct):
        return sorted(distinct, key=lambda n: as_number(n))  # type: ignore[arg-type,return-value]
    return sorted(distinct)


def _hashable(value: Any) -> Any:
    return repr(value) if isinstance(value, (list, dict)) else value


def _short(value: Any, limit: int = 48) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
