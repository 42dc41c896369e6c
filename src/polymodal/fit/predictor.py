"""``TablePredictor``: a classifier or regressor fitted to a user's table, saved as a directory, and its predictions.

A saved predictor is ``fit.json`` (columns and their kinds, the problem, each featurizer's state, the chosen
network, the leaderboard, the single-input baselines and the validation metrics), ``model.safetensors`` (the
network) and ``report.html``. The pretrained towers are not copied: they come from the installed packages.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from polymodal.data.errors import BadSampleError, BadSampleLog
from polymodal.fit.columns import (
    ID_NAMES,
    MEDIA_KINDS,
    METRICS,
    ColumnInfo,
    Problem,
    class_name,
    column_names,
    describe_column,
    detect_problem,
    is_missing,
    known_class,
    warn_of_label_copies,
)
from polymodal.fit.features import Featurizer, TowerFeaturizer, featurizer_from_state, featurizers_for
from polymodal.fit.network import Candidate, FeatureNetwork

if TYPE_CHECKING:
    from polymodal.fit.finetune import FineTuneResult
from polymodal.fit.search import (
    CANDIDATES,
    Features,
    Targets,
    Trial,
    encode_targets,
    output_size,
    outputs_of,
    predictions,
    score,
    search,
)
from polymodal.fit.store import FeatureStore, StoreChoice, opened_store
from polymodal.fit.table import Table, read_table, rows_table
from polymodal.fsutil import atomic_directory, write_atomic
from polymodal.progress import ProgressReporter
from polymodal.version import __version__
from polymodal.weights import load_state, read_weights, save_weights

FIT_FILE = "fit.json"
WEIGHTS_FILE = "model.safetensors"
TOWERS_FILE = "towers.safetensors"  # the towers' weights, when fine-tuning trained them
FINE_TUNE_SEARCH_SHARE = 0.3  # of the time after features, with --fine-tune: the rest fine-tunes
REPORT_FILE = "report.html"
LOG_FILE = "fit.log"
BAD_SAMPLES_FILE = "bad_samples.jsonl"
FORMAT = 2  # 2: a featurizer of a version other than 1 (audio features 2); format 1 is read as version 1 of each
VALIDATION_SHARE = 0.2
FEATURES_SHARE_WARNED = 0.2  # features leaving less than this share of the time limit to the search are said
Say = Callable[[str], None]


def is_fit_dir(path: str | os.PathLike[str]) -> bool:
    return (Path(path) / FIT_FILE).is_file()


def check_output(directory: str | os.PathLike[str], overwrite: bool) -> None:
    """Refuse (FileExistsError) to replace anything at ``directory`` but an empty folder or, with ``overwrite``, a
    fitted predictor: ``overwrite`` never deletes a folder of other files (the table's own, say)."""
    path = Path(directory)
    if not path.exists() or (path.is_dir() and not any(path.iterdir())) or (overwrite and is_fit_dir(path)):
        return
    if is_fit_dir(path):
        raise FileExistsError(
            f"{path}: already holds a fitted predictor (pass overwrite=True / --overwrite to replace it)"
        )
    raise FileExistsError(f"{path}: exists and is not an empty directory or a fitted predictor; choose another --out")


class ColumnMismatchError(ValueError):
    """A table to predict lacks columns the predictor reads: a usage error, unlike a missing cell."""


def holdout_split(problem: Problem, targets: Targets, share: float, seed: int) -> tuple[list[int], list[int]]:
    """Row indices (train, validation): ``share`` of the labelled rows held out, per class for classification (a
    class with one row stays in training); rows without a label go nowhere."""
    generator = torch.Generator().manual_seed(seed)
    known = torch.nonzero(targets.known).squeeze(1)
    if problem.kind in ("binary", "multiclass"):
        groups = [known[targets.y[known] == c] for c in range(len(problem.classes))]
    else:
        groups = [known]
    train, val = [], []
    for group in groups:
        shuffled = group[torch.randperm(len(group), generator=generator)].tolist()
        held = round(share * len(shuffled)) if len(shuffled) > 1 else 0
        held = max(held, 1) if len(shuffled) > 1 else 0
        val += shuffled[:held]
        train += shuffled[held:]
    if not val or not train:
        raise ValueError(f"too few labelled rows ({len(known)}) to hold out a validation split; pass --val")
    return sorted(train), sorted(val)


@dataclass
class Predictions:
    """Per row of the table: the prediction and, for classification, each class's probability."""

    problem: Problem
    values: np.ndarray  # (N, C) probabilities, or (N,) regression values
    row_numbers: list[int]
    bad: list[BadSampleError] = field(default_factory=list)
    keys: dict[str, list[Any]] = field(default_factory=dict)  # the table's identifier columns (id ...), per row

    @property
    def labels(self) -> list[Any]:
        if self.problem.kind == "regression":
            return [float(v) for v in self.values]
        if self.problem.kind == "multilabel":
            return [[c for c, p in zip(self.problem.classes, row) if p > 0.5] for row in self.values]
        return [self.problem.classes[int(i)] for i in self.values.argmax(1)]

    def to_rows(self) -> list[dict[str, Any]]:
        """One dict per row: ``row``, the table's identifier columns (``id`` ...), ``prediction`` and
        ``probability_<class>`` (classification)."""
        out = []
        for i, (number, label, value) in enumerate(zip(self.row_numbers, self.labels, self.values)):
            row: dict[str, Any] = {"row": number, **{name: values[i] for name, values in self.keys.items()}}
            row["prediction"] = "|".join(label) if isinstance(label, list) else label
            if self.problem.kind != "regression":
                row.update({f"probability_{c}": round(float(p), 6) for c, p in zip(self.problem.classes, value)})
            out.append(row)
        return out

    def to_csv(self) -> str:
        rows = self.to_rows()
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else ["row", "prediction"])
        writer.writeheader()
        writer.writerows(rows)
        return buffer.getvalue()


class TablePredictor:
    """Featurizers (locked pretrained towers, tabular statistics) + a trained :class:`FeatureNetwork`."""

    def __init__(
        self,
        problem: Problem,
        columns: Sequence[ColumnInfo],
        featurizers: Sequence[Featurizer],
        network: FeatureNetwork,
        targets: tuple[float, float] = (0.0, 1.0),
        summary: Mapping[str, Any] | None = None,
    ) -> None:
        self.problem = problem
        self.columns = list(columns)
        self.featurizers = list(featurizers)
        self.network = network.eval()
        self.target_mean, self.target_std = targets
        self.summary = dict(summary or {})

    # -- fitting ------------------------------------------------------------------------------------------------
    @classmethod
    def fit(
        cls,
        table: Table,
        label: str,
        *,
        kinds: Mapping[str, str] | None = None,
        problem: str | None = None,
        metric: str | None = None,
        val: Table | None = None,
        time_limit: float = 600.0,
        seed: int = 0,
        say: Say | None = None,
        log_file: Path | None = None,
        bad_log: BadSampleLog | None = None,
        store: StoreChoice = True,
        candidates: Sequence[Candidate] = CANDIDATES,
        fine_tune: bool = False,
        progress: bool = True,
    ) -> TablePredictor:
        """Detect the columns and the problem, featurize, search, and return the best predictor. ``kinds`` override
        detected column kinds; ``metric`` ranks the candidates (one of ``METRICS`` for the problem's kind,
        default accuracy, RMSE or micro-F1); ``val`` is a validation table (default: a stratified fifth of
        ``table``): its rows whose class ``table`` lacks are left out, warned about, and are no class of the
        model; ``store`` keeps the pretrained towers' features across runs (True: the default store, as the
        CLI's; False: none); ``candidates`` are the networks searched, in order. ``fine_tune`` then trains the
        winner with its towers end to end in the rest of the time (kept if it validates better). ``progress``: a
        line per input as it is featurized, and the fine-tuning's progress. Ctrl-C during the search keeps the
        best candidate trained so far (``summary["interrupted"]``)."""
        started = time.monotonic()
        say = say or (lambda _: None)
        bad_log = bad_log or BadSampleLog()
        columns, the_problem, featurizers = plan_inputs(table, label, kinds, problem, val)
        the_problem = the_problem.with_metric(metric)
        # Rows left out (unreadable, or without a label) are recorded before any bad cell, and counted apart.
        labelled, unlabelled = labelled_rows(table, the_problem)
        labelled_val, val_unlabelled = labelled_rows(val, the_problem) if val is not None else (None, [])
        unreadable, unlabelled = table.bad + (val.bad if val is not None else []), unlabelled + val_unlabelled
        for left_out in unreadable + unlabelled:
            bad_log.record(left_out)
        cells_from = bad_log.total
        used = len(labelled) + (len(labelled_val) if labelled_val is not None else 0)
        say(describe_inputs(columns, the_problem, used, len(unreadable), len(unlabelled)))
        val_only = Counter(unknown_classes(the_problem, val.values(label))) if val is not None else Counter()
        if val_only:
            shown = ", ".join(f"{name!r} ({n} rows)" for name, n in val_only.most_common(5))
            message = f"--val has classes the training table lacks, left out of the model and its validation: {shown}"
            say(message)
            warnings.warn(message, stacklevel=2)
        if labelled_val is None:
            targets = encode_targets(the_problem, labelled.values(label))
            train_rows, val_rows = holdout_split(the_problem, targets, VALIDATION_SHARE, seed)
            train_table, val_table = labelled.subset(train_rows), labelled.subset(val_rows)
        else:
            train_table, val_table = labelled, labelled_val
        for featurizer in featurizers:
            featurizer.fit(train_table)
        with opened_store(store) as opened:
            train = featurize(featurizers, train_table, bad_log, "train", log_file, opened, progress)
            held = featurize(featurizers, val_table, bad_log, "validation", log_file, opened, progress)
        train_targets = encode_targets(the_problem, train_table.values(label))
        val_targets = encode_targets(the_problem, val_table.values(label), (train_targets.mean, train_targets.std))
        featurized = time.monotonic() - started
        cells = bad_cells_by_column(featurizers, [(train_table, train), (val_table, held)])
        by_column = ", ".join(f"{column} {bad}" for column, (_, bad) in cells.items() if bad)
        say(
            f"features: {len(train_table)} training and {len(val_table)} validation rows in {featurized:.1f} s; "
            f"{bad_log.total - cells_from} bad cells" + (f" ({by_column})" if by_column else "")
        )
        refuse_unusable_columns(cells, {c.name: c.kind for c in columns}, bad_log, labelled)
        remaining = max(1.0, time_limit - featurized)
        search_seconds = remaining * (FINE_TUNE_SEARCH_SHARE if fine_tune else 1.0)
        if featurized > time_limit * (1 - FEATURES_SHARE_WARNED):
            say(
                f"features took {featurized:.0f} s of the {time_limit:g} s time limit: the search has "
                f"{search_seconds:.0f} s, so its first candidate may stop under-trained (stored features make a "
                "second fit faster; or raise --time-limit)"
            )

        def report(trial: Trial, done: int, total: int) -> None:
            say(
                f"candidate {done}/{total} {trial.candidate.label}: {trial.metrics['score_name']} "
                f"{abs(trial.score):.4f} (epoch {trial.epochs}, {trial.seconds:.1f} s)"
            )

        best, leaderboard, baselines, interrupted = search(
            the_problem,
            train,
            train_targets,
            held,
            val_targets,
            time_limit=search_seconds,
            candidates=candidates,
            seed=seed,
            report=report,
        )
        assert best.network is not None
        network, validation, tuned = best.network, best.metrics, None
        if (unpredicted := never_predicted(the_problem, best.metrics)) and the_problem.ranked_by == "accuracy":
            say(
                f"the chosen model never predicts {unpredicted} on the validation rows; where classes are uneven, "
                "rank candidates by --metric balanced_accuracy or f1_macro"
            )
        if interrupted:
            say(f"interrupted: keeping the best of the {len(leaderboard)} candidates trained, {best.candidate.label}")
        if fine_tune and not interrupted:
            try:
                tuned = _fine_tune(
                    featurizers,
                    best,
                    the_problem,
                    (train_table, train_targets),
                    (val_table, val_targets),
                    seconds=time_limit - (time.monotonic() - started),
                    log_dir=log_file.parent if log_file else None,
                    bad_log=bad_log,
                    seed=seed,
                    say=say,
                    progress=progress,
                )
            except KeyboardInterrupt:  # the searched candidate stands, as a Ctrl-C during the search keeps its best
                interrupted = True
                say(f"interrupted fine-tuning: keeping the searched candidate {best.candidate.label}")
            if tuned is not None and tuned.metrics and tuned.metrics["score"] > best.score:
                network, validation = tuned.model.network, tuned.metrics
                for name, tower in tuned.model.towers.items():
                    featurizer = next(f for f in featurizers if f.name == name)
                    featurizer.tower = tower.requires_grad_(False).eval()  # type: ignore[attr-defined]
        summary = {
            "rows": {
                "train": len(train_table),
                "validation": len(val_table),
                "unreadable": len(unreadable),
                "unlabelled": len(unlabelled),
            },
            "bad_cells": bad_log.total - cells_from,
            "bad_by_kind": dict(bad_log.counts),
            "validation": validation,
            "fine_tuned": network is not best.network,
            "fine_tune": None
            if tuned is None
            else {"steps": tuned.steps, "seconds": round(tuned.seconds, 2), "metrics": tuned.metrics},
            "leaderboard": [{**t.to_dict(), "chosen": t is best} for t in leaderboard],
            "baselines": [t.to_dict() for t in baselines],
            "seconds": {"featurize": round(featurized, 2), "total": round(time.monotonic() - started, 2)},
            "time_limit": time_limit,
            "seed": seed,
            "source": table.source,
            "interrupted": interrupted,
        }
        return cls(the_problem, columns, featurizers, network, (train_targets.mean, train_targets.std), summary)

    # -- predicting ---------------------------------------------------------------------------------------------
    def predict(
        self,
        table: Table | str | os.PathLike[str] | Sequence[Mapping[str, Any]],
        bad_log: BadSampleLog | None = None,
        log_file: Path | None = None,
        store: StoreChoice = True,
        progress: bool = True,
    ) -> Predictions:
        """Predictions for every row of ``table`` (a :class:`Table`, a table file, or rows as dicts whose media paths
        are absolute or relative to the working directory); a bad file or missing cell only removes that input.
        ``store``: as :meth:`fit`'s. ``progress``: a line per input as it is featurized (terminal and ``log_file``).
        Each row keeps the table's identifier columns, those the predictor ignores and its media paths."""
        table = as_table(table)
        self.check_columns(table)
        bad_log = bad_log or BadSampleLog()
        with opened_store(store) as opened:
            features = featurize(self.featurizers, table, bad_log, "predict", log_file, opened, progress)
        outputs = outputs_of(self.network, features)
        values = predictions(self.problem, outputs, self.target_mean, self.target_std)
        keep = [c.name for c in self.columns if c.kind == "ignore" or c.kind in MEDIA_KINDS]
        return Predictions(
            self.problem, values, list(table.row_numbers), list(bad_log.examples), id_columns(table, keep)
        )

    def evaluate(
        self,
        table: Table | str | os.PathLike[str] | Sequence[Mapping[str, Any]],
        store: StoreChoice = True,
        progress: bool = False,
    ) -> dict[str, Any]:
        """The metrics of this predictor on a labelled ``table`` (as :meth:`predict` takes it), as :meth:`score_labels`
        gives them."""
        table = as_table(table)
        self.check_columns(table)
        if self.problem.label not in table.columns:
            raise ValueError(f"{table.source}: no label column {self.problem.label!r} to evaluate against")
        result = self.predict(table, store=store, progress=progress)
        return self.score_labels(result.values, table.values(self.problem.label), unreadable=len(table.bad))

    def score_labels(self, values: np.ndarray, labels: Sequence[Any], unreadable: int = 0) -> dict[str, Any]:
        """The metrics (those of ``fit.json``'s ``validation``) of predicted ``values`` (:attr:`Predictions.values`)
        against the ``labels`` of the same rows: :func:`score_rows` with this predictor's problem and targets."""
        return score_rows(self.problem, values, labels, (self.target_mean, self.target_std), unreadable)

    @property
    def inputs(self) -> list[str]:
        return [f.name for f in self.featurizers]

    @property
    def read_columns(self) -> list[str]:
        """The columns this predictor reads: those it was fit on, but for the ones it ignores."""
        return [c.name for c in self.columns if c.kind != "ignore"]

    def unknown_columns(self, names: Iterable[str]) -> list[str]:
        """Those of ``names`` that are neither a column the predictor was fit on (read or ignored) nor its label."""
        known = {c.name for c in self.columns} | {self.problem.label}
        return [name for name in names if name not in known]

    def check_columns(self, table: Table) -> None:
        """Refuse (:class:`ColumnMismatchError`) a table file that lacks a column this predictor reads, naming those
        and the table's columns it does not know (a renamed column is one of each). A column may be empty. Rows given
        as dicts are not checked: a key they leave out is a missing cell."""
        if table.header is None:
            return
        missing = [c for c in self.read_columns if c not in table.columns]
        if not missing:
            return

        def named(names: list[str]) -> str:
            return f"column{'s' if len(names) > 1 else ''} {column_names(names)}"

        message = f"{table.source}: no {named(missing)} (this predictor reads {column_names(self.read_columns)})"
        unknown = self.unknown_columns(table.columns)
        if unknown:
            message += f"; it does not know the table's {named(unknown)} (renamed?)"
        raise ColumnMismatchError(message + ". A column may have empty cells, but it must be in the table")

    # -- saving -------------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT if any(f.version != 1 for f in self.featurizers) else 1,
            "polymodal_version": __version__,
            "problem": self.problem.to_dict(),
            "columns": [c.to_dict() for c in self.columns],
            "featurizers": [f.state() for f in self.featurizers],
            "network": {
                "candidate": self.network.candidate.to_dict(),
                "input_dims": self.network.input_dims,
                "outputs": output_size(self.problem),
            },
            "targets": {"mean": self.target_mean, "std": self.target_std},
            **self.summary,
        }

    def save(
        self,
        directory: str | os.PathLike[str],
        extra_files: Mapping[str, str | bytes] | None = None,
        overwrite: bool = True,
    ) -> Path:
        """Write the predictor (and ``extra_files``: name -> content) atomically to ``directory``; ``overwrite=False``
        refuses to replace anything there but an empty folder."""
        from polymodal.fit.report import fit_report_html

        check_output(directory, overwrite)
        target = Path(directory)
        with atomic_directory(target) as tmp:
            save_weights(self.network, tmp / WEIGHTS_FILE)
            tuned = {f.name: f.tower for f in self.featurizers if isinstance(f, TowerFeaturizer) and f.tower}
            if tuned:
                save_weights(nn.ModuleDict(tuned), tmp / TOWERS_FILE)
            (tmp / FIT_FILE).write_text(json.dumps(self.to_dict(), indent=2, default=_json_default) + "\n")
            (tmp / REPORT_FILE).write_text(fit_report_html(self.to_dict()), encoding="utf-8")
            for name, content in (extra_files or {}).items():
                write_atomic(tmp / name, content)
        return target

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> TablePredictor:
        path = Path(directory)
        if not is_fit_dir(path):
            raise FileNotFoundError(f"{path}: not a fitted predictor (no {FIT_FILE}); make one with `polymodal fit`")
        data = json.loads((path / FIT_FILE).read_text(encoding="utf-8"))
        if data.get("format") not in range(1, FORMAT + 1):
            raise ValueError(
                f"{path / FIT_FILE}: format {data.get('format')!r}, this polymodal reads 1 to {FORMAT}: a newer "
                "polymodal saved it; upgrade"
            )
        problem = Problem.from_dict(data["problem"])
        columns = [ColumnInfo(**c) for c in data["columns"]]
        featurizers = [featurizer_from_state(s) for s in data["featurizers"]]
        spec = data["network"]
        network = FeatureNetwork(spec["input_dims"], Candidate(**spec["candidate"]), spec["outputs"])
        load_state(network, read_weights(path / WEIGHTS_FILE), path / WEIGHTS_FILE)
        if data.get("fine_tuned"):
            _load_tuned_towers(featurizers, path / TOWERS_FILE)
        skip = {"format", "polymodal_version", "problem", "columns", "featurizers", "network", "targets"}
        summary = {k: v for k, v in data.items() if k not in skip}
        targets = (float(data["targets"]["mean"]), float(data["targets"]["std"]))
        return cls(problem, columns, featurizers, network, targets, summary)


def _fine_tune(
    featurizers: Sequence[Featurizer],
    best: Trial,
    problem: Problem,
    train: tuple[Table, Targets],
    val: tuple[Table, Targets],
    *,
    seconds: float,
    log_dir: Path | None,
    bad_log: BadSampleLog,
    seed: int,
    say: Say,
    progress: bool,
) -> FineTuneResult | None:
    from polymodal.fit.finetune import fine_tune

    say(f"fine-tuning {best.candidate.label} with its towers for up to {seconds:.0f} s")
    with tempfile.TemporaryDirectory(prefix="polymodal-fit-") as run_dir:
        tuned = fine_tune(
            featurizers,
            best.network,
            problem,
            train,
            val,
            seconds=seconds,
            run_dir=Path(run_dir),  # type: ignore[arg-type]
            bad_log=bad_log,
            seed=seed,
            progress=progress,
        )
        if log_dir is not None and (Path(run_dir) / "train.log").is_file():
            shutil.copyfile(Path(run_dir) / "train.log", log_dir / "fine_tune.log")
    if tuned is None:
        say("fine-tuning skipped: no tower input, or no time left for a step")
    else:
        name = tuned.metrics.get("score_name", "score")
        say(
            f"fine-tuned {tuned.steps} steps in {tuned.seconds:.0f} s: {name} {abs(tuned.metrics.get('score', 0)):.4f} "
            f"(locked towers: {abs(best.score):.4f})"
        )
    return tuned


def _load_tuned_towers(featurizers: Sequence[Featurizer], path: Path) -> None:
    towers = {f.name: f for f in featurizers if isinstance(f, TowerFeaturizer)}
    modules = nn.ModuleDict({name: f.trainable_tower() for name, f in towers.items()})
    load_state(modules, read_weights(path), path)
    for name, featurizer in towers.items():
        featurizer.tower = modules[name].requires_grad_(False).eval()


def never_predicted(problem: Problem, metrics: Mapping[str, Any]) -> str:
    """The validation classes (with rows) a classifier's confusion matrix shows it never predicts, as text, or ""."""
    confusion = metrics.get("confusion")
    if not confusion or problem.kind not in ("binary", "multiclass"):
        return ""
    columns = [sum(row[j] for row in confusion) for j in range(len(confusion))]
    missed = [
        f"{name!r} ({sum(confusion[j])} rows)"
        for j, name in enumerate(problem.classes)
        if columns[j] == 0 and sum(confusion[j]) > 0
    ]
    return ", ".join(missed)


def plan_inputs(
    table: Table,
    label: str,
    kinds: Mapping[str, str] | None = None,
    problem: str | None = None,
    val: Table | None = None,
) -> tuple[list[ColumnInfo], Problem, list[Featurizer]]:
    """What ``fit`` will read: each column described (``kinds`` override the detected ones), the problem the label
    poses (its classes are ``table``'s: a class only ``val`` has could never be learnt), and the featurizers of the
    used columns; clear errors for a missing label, unknown overrides or no usable column."""
    if label not in table.columns:
        raise ValueError(f"{table.source}: no label column {label!r}; columns: {column_names(table.columns)}")
    overrides = dict(kinds or {})
    unknown = sorted(set(overrides) - set(table.columns))
    if unknown:
        raise ValueError(f"--column names {unknown} are not columns of {table.source}: {column_names(table.columns)}")
    columns = [describe_column(c, table.values(c), overrides.get(c)) for c in table.columns if c != label]
    used = {c.name: c.kind for c in columns if c.kind != "ignore"}
    if not used:
        raise ValueError(f"{table.source}: no column besides {label!r} can be used (all ignored)")
    the_problem = detect_problem(label, table.values(label), problem)
    warn_of_label_copies(the_problem, [c for c, kind in used.items() if kind not in MEDIA_KINDS], table.values)
    return columns, the_problem, featurizers_for(used)


def labelled_rows(table: Table, problem: Problem) -> tuple[Table, list[BadSampleError]]:
    """The rows of ``table`` with a label, and an error naming each row without one, or with one that is no number
    (regression) or no class (it is left out of training)."""
    values = table.values(problem.label)
    known = encode_targets(problem, values).known.tolist()

    def why(value: Any) -> tuple[str, str]:
        if is_missing(value):
            return f"no {problem.label!r} value: the row is left out", "missing_label"
        wanted = "a number" if problem.kind == "regression" else "one of the classes"
        return f"{problem.label!r} is {value!r}, not {wanted}: the row is left out", "bad_label"

    missing = [
        BadSampleError(reason, source=table.source, row=row, field=problem.label, kind=kind)
        for row, value, has_label in zip(table.row_numbers, values, known)
        if not has_label
        for reason, kind in [why(value)]
    ]
    if len(missing) == len(table):
        raise ValueError(f"{table.source}: no row has a {problem.label!r} value")
    return table.subset(i for i, has_label in enumerate(known) if has_label), missing


def bad_cells_by_column(
    featurizers: Sequence[Featurizer], parts: Sequence[tuple[Table, Features]]
) -> dict[str, tuple[int, int]]:
    """Per column read, over every (table, its features): (cells with a value, cells of them that are bad)."""
    totals: dict[str, tuple[int, int]] = {}
    for table, features in parts:
        for featurizer in featurizers:
            for column, (given, bad) in featurizer.cell_counts(table, features.present[featurizer.name]).items():
                before = totals.get(column, (0, 0))
                totals[column] = (before[0] + given, before[1] + bad)
    return totals


SHOWN_REASONS = 3  # kinds of bad cell an unusable column's error shows an example of


def refuse_unusable_columns(
    cells: Mapping[str, tuple[int, int]], kinds: Mapping[str, str], bad_log: BadSampleLog, table: Table
) -> None:
    """Refuse to train when every value of a column is a bad cell: its input would never be present. The error names
    the column, the count, the first cell of each kind of failure, and for media where paths must be."""
    for column, (given, bad) in cells.items():
        if not given or bad < given:
            continue
        first_of_kind: dict[str, BadSampleError] = {}
        for error in bad_log.examples:
            if error.field == column:
                first_of_kind.setdefault(error.kind, error)
        shown = list(first_of_kind.values())[:SHOWN_REASONS]
        message = f"column {column!r} ({kinds[column]}): none of its {given} values can be used"
        if shown:
            message += ", e.g. " + "; ".join(f"row {e.row}: {e.reason}" for e in shown)
        if kinds[column] in MEDIA_KINDS:
            resolver = table.resolver()
            base = "" if resolver.base == resolver.root else f"relative ones start at {resolver.base}, "
            message += (
                f". Media paths must stay inside {resolver.root}, the table's folder ({base}absolute paths elsewhere "
                "are refused): put the files under it and write their paths relative to it"
            )
        raise ValueError(f"{message}. Fix the column, or train without it: --column {column}=ignore")


def as_table(data: Table | str | os.PathLike[str] | Sequence[Mapping[str, Any]]) -> Table:
    if isinstance(data, Table):
        return data
    if isinstance(data, (str, os.PathLike)):
        return read_table(data)
    # Rows from the caller's own code: their files may be anywhere, relative paths start at the working directory.
    return rows_table(data, Path(Path.cwd().anchor), base=Path.cwd())


def unknown_classes(problem: Problem, labels: Sequence[Any]) -> list[str]:
    """The class of each label cell that is none of a (single-label) classification ``problem``'s classes."""
    if problem.kind not in ("binary", "multiclass"):
        return []
    known = set(problem.classes)
    return [class_name(v) for v in labels if not is_missing(v) and known_class(v, known) is None]


def id_columns(table: Table, keep: Iterable[str] = ()) -> dict[str, list[Any]]:
    """The table's identifier columns (``id``, ``uid`` ... and those named in ``keep``), each cell per row: what joins
    predictions back. Names the predictions' own columns use are left out."""
    wanted = set(keep)
    return {
        c: table.values(c)
        for c in table.columns
        if (c.lower() in ID_NAMES or c in wanted)
        and c not in ("row", "prediction")
        and not c.startswith("probability_")
    }


def featurize(
    featurizers: Sequence[Featurizer],
    table: Table,
    bad_log: BadSampleLog,
    stage: str,
    log_file: Path | None,
    store: FeatureStore | None = None,
    progress: bool = True,
) -> Features:
    """Every input's features for ``table``, with progress per input (terminal and ``log_file``)."""
    values, present = {}, {}
    for featurizer in featurizers:
        label = f"{stage} features: {featurizer.name} ({featurizer.kind})"
        shown = progress and len(table) > 0
        with ProgressReporter(label, len(table), log_file=log_file, enabled=shown) as reporter:
            values[featurizer.name], present[featurizer.name] = featurizer.transform(
                table, bad_log, reporter.update, store
            )
    return Features(values, present)


def rows_left_out(unreadable: int, unlabelled: int) -> str:
    """``left out: 2 unreadable, 1 without a label``: the rows a fit did not train on."""
    return f"left out: {unreadable} unreadable, {unlabelled} without a label"


def describe_inputs(
    columns: Sequence[ColumnInfo], problem: Problem, rows: int, unreadable: int, unlabelled: int
) -> str:
    """The rows used and left out, the detected columns and the problem as a small text table (printed before
    training)."""
    width = max(len(c.name) for c in columns)
    left_out = rows_left_out(unreadable, unlabelled)
    lines = [f"{rows} labelled rows ({left_out}); label {problem.label!r}: {problem.kind} ({problem.reason})"]
    if problem.classes:
        shown = ", ".join(problem.classes[:10]) + (" ..." if len(problem.classes) > 10 else "")
        lines.append(f"  classes: {shown}")
    for c in columns:
        lines.append(f"  {c.name:<{width}}  {c.kind:<11} {c.reason}; {c.missing} missing, e.g. {c.example!r}")
    return "\n".join(lines)


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


__all__ = ["ColumnMismatchError", "Predictions", "TablePredictor", "check_output", "holdout_split", "is_fit_dir"]


def score_rows(
    problem: Problem,
    values: np.ndarray,
    labels: Sequence[Any],
    target_scaling: tuple[float, float] = (0.0, 1.0),
    unreadable: int = 0,
) -> dict[str, Any]:
    """The metrics (those of ``fit.json``'s ``validation``) of predicted ``values`` (:attr:`Predictions.values`)
    against the ``labels`` of the same rows (``target_scaling``: a regression's target mean and std). A row whose
    label is none of the problem's classes counts as an error (its class joins the metrics, never predicted); a row
    without a label (or, for regression, without a number) is left out. ``rows`` counts both, and a warning says
    when rows were left out or the classes unknown."""
    extra = Counter(unknown_classes(problem, labels))
    if extra:  # the unknown classes as classes no row is predicted to be: each such row is a miss
        kept = problem.metric if problem.metric in METRICS["multiclass"] else ""  # ROC-AUC needs two classes
        classes = problem.classes + tuple(sorted(extra))
        problem = replace(problem, kind="multiclass", classes=classes, metric=kept)
        values = np.pad(values, ((0, 0), (0, len(extra))))
    targets = encode_targets(problem, labels, target_scaling)
    scored = int(targets.known.sum())
    if not scored:
        raise ValueError(f"no row has a usable {problem.label!r} value to evaluate against")
    metrics = score(problem, values, targets)
    left_out = len(labels) - scored
    metrics["rows"] = {"scored": scored, "left_out": left_out, "unreadable": unreadable, "unknown": dict(extra)}
    if left_out or unreadable or extra:
        unknown = ", ".join(f"{name!r} ({n} rows)" for name, n in extra.most_common(5))
        warnings.warn(
            f"evaluated {scored} rows; left out {left_out} without a usable {problem.label!r} value and "
            f"{unreadable} unreadable"
            + (f"; counted as errors: labels the model does not know: {unknown}" if extra else ""),
            stacklevel=2,
        )
    return metrics
