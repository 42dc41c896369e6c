"""Find what a report input holds: evaluation result files and/or a training run.

An input is a result file, or a directory with result files (``*.json`` carrying
``"polymodal_eval": 1``, at its top level or in ``eval/``) and/or a training run
(``metrics.jsonl``, ``config.yaml``, ``train_summary.json``, as ``polymodal train`` leaves them).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from polymodal.evaluate.results import (
    Result,
    ResultFile,
    ResultFileError,
    is_result_document,
    load_results,
    parse_results,
    read_json,
)
from polymodal.report.errors import ReportError
from polymodal.train.recipe import upgrade_recipe_dict

EVAL_DIRS = (".", "eval")


@dataclass
class TrainingLog:
    """What ``polymodal train`` wrote: per-step records, evaluations, summary and config."""

    steps: list[dict[str, float]]  # {"step": .., "loss": .., other loss parts, "lr": ..}
    evals: list[tuple[int, dict[str, float]]]  # (step, metrics)
    summary: dict[str, Any] | None
    config: dict[str, Any] | None


@dataclass
class Run:
    """One report column: a name, its result files and (optionally) its training log."""

    name: str
    path: Path
    eval_files: list[tuple[Path, ResultFile]] = field(default_factory=list)
    training: TrainingLog | None = None

    def results(self) -> dict[tuple[str, str], Result]:
        """(benchmark, split) -> result; a later file (by ``created``, then name) wins a duplicate."""
        ordered = sorted(self.eval_files, key=lambda item: (item[1].provenance.created or "", str(item[0])))
        merged: dict[tuple[str, str], Result] = {}
        for _, doc in ordered:
            for result in doc.results:
                merged[(result.benchmark, result.split)] = result
        return merged

    def skipped(self) -> dict[tuple[str, str], str]:
        """(benchmark, split) -> why ``polymodal eval`` did not run it, for those no result file of the run holds."""
        ran = self.results()
        return {
            (entry.benchmark, entry.split): entry.reason
            for _, doc in self.eval_files
            for entry in doc.skipped
            if (entry.benchmark, entry.split) not in ran
        }


def _eval_candidates(directory: Path) -> list[Path]:
    files: list[Path] = []
    for sub in EVAL_DIRS:
        folder = directory / sub
        if folder.is_dir():
            files.extend(sorted(p for p in folder.glob("*.json") if p.is_file()))
    return files


def _read_eval_files(directory: Path, warnings: list[str]) -> list[tuple[Path, ResultFile]]:
    found = []
    for path in _eval_candidates(directory):
        try:
            data = read_json(path)
        except ResultFileError as e:
            # Other JSON files live in run directories too; an unreadable one is not ours to fail on.
            warnings.append(f"skipped {e}")
            continue
        if is_result_document(data):
            found.append((path, parse_results(data, path)))  # a broken result file is an error
    return found


def read_metrics_jsonl(
    path: Path, warnings: list[str]
) -> tuple[list[dict[str, float]], list[tuple[int, dict[str, float]]]]:
    """Split ``metrics.jsonl`` into training-step records and evaluation records.

    A killed run can leave a truncated last line, so unparsable lines are skipped with a warning.
    """
    steps: list[dict[str, float]] = []
    evals: list[tuple[int, dict[str, float]]] = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            step = int(record["step"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            warnings.append(f"{path}, line {lineno}: skipped (not a JSON record with a 'step')")
            continue
        if isinstance(record.get("eval"), dict):
            evals.append((step, {k: float(v) for k, v in record["eval"].items() if _is_number(v)}))
        else:
            steps.append({k: float(v) for k, v in record.items() if _is_number(v)})
    return steps, evals


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _read_training(directory: Path, warnings: list[str]) -> TrainingLog | None:
    metrics = directory / "metrics.jsonl"
    if not metrics.is_file():
        return None
    steps, evals = read_metrics_jsonl(metrics, warnings)
    summary = None
    if (directory / "train_summary.json").is_file():
        summary = read_json(directory / "train_summary.json")
    config = None
    if (directory / "config.yaml").is_file():
        try:
            config = yaml.safe_load((directory / "config.yaml").read_text(encoding="utf-8"))
        except yaml.YAMLError:
            warnings.append(f"{directory / 'config.yaml'}: skipped (invalid YAML)")
    config = upgrade_recipe_dict(config) if isinstance(config, dict) else None  # a run from before `objective:`
    return TrainingLog(steps=steps, evals=evals, summary=summary, config=config)


def load_run(path: str | Path, warnings: list[str] | None = None) -> Run:
    """Read one input (result file or run directory) into a :class:`Run` named after it."""
    path = Path(path)
    warnings = warnings if warnings is not None else []
    if path.is_file():
        return Run(name=path.stem, path=path, eval_files=[(path, load_results(path))])
    if not path.is_dir():
        raise ReportError(f"{path}: no such file or directory")
    run = Run(
        name=path.name, path=path, eval_files=_read_eval_files(path, warnings), training=_read_training(path, warnings)
    )
    if not run.eval_files and run.training is None:
        raise ReportError(
            f"{path}: nothing to report: no result files (*.json with {'polymodal_eval'!r}) and no metrics.jsonl"
        )
    return run


def load_runs(paths: list[str | Path], warnings: list[str] | None = None) -> list[Run]:
    """Load every input; names that collide get their parent folder prefixed (then a number)."""
    runs = [load_run(p, warnings) for p in paths]
    _unique_names(runs)
    return runs


def _unique_names(runs: list[Run]) -> None:
    names = [r.name for r in runs]
    for run in runs:
        if names.count(run.name) > 1:
            run.name = f"{run.path.resolve().parent.name}/{run.name}"
    seen: dict[str, int] = {}
    for run in runs:
        seen[run.name] = seen.get(run.name, 0) + 1
        if seen[run.name] > 1:
            run.name = f"{run.name} ({seen[run.name]})"
