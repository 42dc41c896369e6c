"""ESC-50 (and ESC-10): ``root/meta/esc50.csv`` (filename, fold, target, category, esc10, ...) naming clips in
``root/audio/``. Each row becomes an audio Sample labelled with its category; its fold (1-5, for the five-fold
protocol), class index and ESC-10 membership go to ``metadata``."""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from polymodal.data.errors import BadSampleError, BadSampleLog
from polymodal.data.readers.base import PathResolver, resolve_log
from polymodal.data.schema import Sample

META = Path("meta") / "esc50.csv"
COLUMNS = ("filename", "fold", "target", "category")


def is_esc50(root: str | os.PathLike) -> bool:
    return (Path(root) / META).is_file()


def read_esc50(
    root: str | os.PathLike,
    strict: bool = False,
    bad_log: BadSampleLog | None = None,
    *,
    folds: Sequence[int] | None = None,
    esc10: bool = False,
) -> Iterator[Sample]:
    """The clips of ``folds`` (default all five); ``esc10`` keeps the ESC-10 subset only."""
    base = Path(root)
    meta = base / META
    if not meta.is_file():
        raise BadSampleError(f"no {META} here: not an ESC-50 directory", source=str(base), kind="missing_file")
    return _samples(base, meta, set(folds) if folds is not None else None, esc10, resolve_log(strict, bad_log))


def _samples(base: Path, meta: Path, folds: set[int] | None, esc10: bool, log: BadSampleLog) -> Iterator[Sample]:
    resolver = PathResolver(base / "audio", str(meta))
    with open(meta, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise BadSampleError(f"header lacks {missing}", source=str(meta), row=1, kind="bad_header")
        for row, record in enumerate(reader, start=2):
            try:
                fold, target = int(record["fold"]), int(record["target"])
            except ValueError:
                log.record(
                    BadSampleError(
                        f"fold {record['fold']!r} / target {record['target']!r} are not integers",
                        source=str(meta),
                        row=row,
                        field="fold",
                        kind="invalid",
                    )
                )
                continue
            in_esc10 = str(record.get("esc10", "")).strip().lower() == "true"
            if (folds is not None and fold not in folds) or (esc10 and not in_esc10):
                continue
            try:
                path = resolver.resolve(record["filename"], "audio", row, sample_id=record["filename"])
            except BadSampleError as e:
                log.record(e)
                continue
            yield Sample(
                id=record["filename"],
                audio=path,
                label=record["category"],
                metadata={"fold": fold, "class_index": target, "esc10": in_esc10},
                source=str(meta),
                row=row,
            )
