"""``polymodal fit TABLE --label COLUMN --out DIR`` and ``polymodal predict DIR TABLE --out preds.csv``.

``fit`` prints the columns as it reads them before it trains, each candidate as it finishes, and writes the
predictor directory atomically with its ``report.html``; ``fit.log`` and ``bad_samples.jsonl`` go beside it while it
runs (in ``DIR.logs/``), into the directory when it is written, and ``DIR.logs/`` is then removed (also when the fit
fails). Ctrl-C during the search saves the best candidate trained so far, then exits 130.
"""

from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table as RichTable

from polymodal.cli.output import JsonOption, console, emit_json, err_console, fail

CacheOption = typer.Option(
    True,
    "--cache/--no-cache",
    help="Keep the pretrained towers' features of each file and text "
    "($POLYMODAL_CACHE_DIR/features.sqlite, default ~/.cache/polymodal) for the next fit or predict.",
)

# What `fit --json` prints of fit.json.
FIT_JSON_KEYS = (
    "problem",
    "columns",
    "rows",
    "validation",
    "leaderboard",
    "baselines",
    "seconds",
    "bad_cells",
    "interrupted",
)
SHOWN_METRICS = ("accuracy", "f1_macro", "roc_auc", "f1_micro", "rmse", "mae", "r2")
INTERRUPTED_EXIT = 130  # a shell's code for a process stopped by Ctrl-C (128 + SIGINT)


def _metric_line(metrics: dict[str, Any]) -> str:
    """``accuracy 0.9500, f1_macro 0.9400``: the headline metrics of fit.json's ``validation`` (or an evaluation),
    the one the candidates were ranked by first."""
    ranked = metrics.get("score_name")
    names = [ranked] if ranked in metrics else []
    return ", ".join(
        f"{k} {metrics[k]:.4f}" for k in [*names, *(k for k in SHOWN_METRICS if k != ranked)] if k in metrics
    )


def _remove_logs(logs: Path) -> None:
    """Remove ``DIR.logs/``'s files (their content is in the predictor, or the fit failed) and the folder when it is
    then empty."""
    for file in [*logs.glob("*.log"), *logs.glob("*.jsonl")]:
        file.unlink(missing_ok=True)
    try:
        logs.rmdir()
    except OSError:
        pass  # it holds something fit did not write


def _kinds(values: list[str] | None) -> dict[str, str]:
    from polymodal.fit import COLUMN_KINDS

    out = {}
    for value in values or []:
        name, sep, kind = value.rpartition("=")
        if not sep or not name or kind not in COLUMN_KINDS:
            raise ValueError(f"--column {value!r}: expected NAME=KIND with KIND one of {', '.join(COLUMN_KINDS)}")
        out[name] = kind
    return out


def fit(
    table: Path = typer.Argument(..., help="A CSV, JSONL or Parquet file, or a folder of class folders."),
    label: str = typer.Option(None, "--label", "-y", help="The column to predict (a folder of class folders: label)."),
    out: Path = typer.Option(..., "--out", "-o", help="The predictor directory to write."),
    column: list[str] = typer.Option(
        None,
        "--column",
        help="Override a detected kind: NAME=KIND (image, audio, video, text, categorical, "
        "numeric, ignore). Repeatable.",
    ),
    problem: str = typer.Option(
        None,
        "--problem",
        help="binary, multiclass, multilabel or regression (default: detected from the label column).",
    ),
    metric: str = typer.Option(
        None,
        "--metric",
        help="What ranks the candidates: accuracy, balanced_accuracy, f1_macro, roc_auc (binary); f1_micro, "
        "f1_macro, subset_accuracy (multilabel); rmse, mae, r2 (regression). Default: the first of each.",
    ),
    val: Path = typer.Option(None, "--val", help="A validation table (default: a stratified fifth of TABLE)."),
    time_limit: float = typer.Option(600.0, "--time-limit", help="Seconds for features, search and baselines."),
    seed: int = typer.Option(
        0,
        "--seed",
        help="Seeds the split and the training: the same seed and table train the same candidates the same way (how "
        "many candidates fit in --time-limit depends on the machine's speed and load).",
    ),
    fine_tune: bool = typer.Option(
        False,
        "--fine-tune",
        help="After the search, train the winner with its pretrained towers end to end in the "
        "rest of the time (kept when it validates better; slower, and the saved predictor carries the towers).",
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace a fitted predictor at --out (never a folder of other files)."
    ),
    cache: bool = CacheOption,
    json: bool = JsonOption,
) -> None:
    """Train a classifier or regressor on your table: columns detected, pretrained towers, fusion searched."""
    from polymodal.data.errors import BadSampleError, BadSampleLog
    from polymodal.fit import TablePredictor, read_table
    from polymodal.fit.columns import column_names
    from polymodal.fit.predictor import BAD_SAMPLES_FILE, LOG_FILE, check_output
    from polymodal.fit.table import FOLDER_LABEL_COLUMN

    if time_limit <= 0:
        fail(f"--time-limit must be positive, got {time_limit}", as_json=json)
    try:
        check_output(out, overwrite)  # before the training, not after it
    except FileExistsError as e:
        fail(str(e), as_json=json)
    logs = out.with_name(out.name + ".logs")
    logs.mkdir(parents=True, exist_ok=True)
    log_file, bad_file = logs / LOG_FILE, logs / BAD_SAMPLES_FILE
    for stale in (log_file, bad_file):
        stale.unlink(missing_ok=True)

    said: set[str] = set()

    def say(message: str) -> None:
        said.add(message)
        with open(log_file, "a", encoding="utf-8") as f:
            f.write(message + "\n")
        if not json:
            console.print(escape(message), highlight=False)

    def warn(message: Warning | str, *_: Any, **__: Any) -> None:
        """A warning of the fit (label classes, columns, --val rows) when it happens: on stderr and in the log, unless
        the fit said it already (a line of its own output)."""
        if str(message) in said:
            return
        with open(log_file, "a", encoding="utf-8") as f:
            f.write(f"warning: {message}\n")
        err_console.print(f"[yellow]warning:[/] {escape(str(message))}", highlight=False, soft_wrap=True)

    with warnings.catch_warnings():
        warnings.showwarning = warn
        try:
            train_table = read_table(table)
            label = label or (FOLDER_LABEL_COLUMN if table.is_dir() else None)
            if label is None:
                raise ValueError(f"give --label COLUMN; {table} has columns {column_names(train_table.columns)}")
            val_table = read_table(val) if val is not None else None
            bad_log = BadSampleLog(bad_file)
            predictor = TablePredictor.fit(
                train_table,
                label,
                kinds=_kinds(column),
                problem=problem,
                metric=metric,
                val=val_table,
                time_limit=time_limit,
                seed=seed,
                say=say,
                log_file=log_file,
                bad_log=bad_log,
                store=cache,
                fine_tune=fine_tune,
            )
            extra = {p.name: p.read_text(encoding="utf-8") for p in logs.glob("*.log")}
            if bad_file.is_file():
                extra[BAD_SAMPLES_FILE] = bad_file.read_text(encoding="utf-8")
            predictor.save(out, extra, overwrite=overwrite)
        except (BadSampleError, ValueError, ImportError, OSError) as e:
            _remove_logs(logs)
            fail(str(e), as_json=json)
        except KeyboardInterrupt:
            _remove_logs(logs)
            fail(
                "interrupted before a candidate was trained (while reading the table or its features): nothing "
                f"written to {out}",
                as_json=json,
                code=INTERRUPTED_EXIT,
            )
    _remove_logs(logs)
    summary = predictor.to_dict()
    if json:
        emit_json({"out": str(out), **{k: summary[k] for k in FIT_JSON_KEYS}})
    else:
        _print_summary(summary, out)
    if summary["interrupted"]:
        if not json:
            console.print(f"interrupted: saved the best candidate trained so far to {escape(str(out))}")
        raise typer.Exit(INTERRUPTED_EXIT)


def _print_summary(summary: dict, out: Path) -> None:
    from polymodal.fit.predictor import BAD_SAMPLES_FILE, rows_left_out

    metrics = summary["validation"]
    name = metrics["score_name"]
    board = RichTable(title="validation", title_justify="left")
    for header in ("candidate", "inputs", name, "epoch", "s"):
        board.add_column(header, justify="left" if header in ("candidate", "inputs") else "right")
    for kind, trials in (("", summary["leaderboard"]), ("alone: ", summary["baselines"])):
        for t in trials:
            value = t["metrics"]["score"]
            board.add_row(
                escape(kind + t["candidate"] + (" (chosen)" if t.get("chosen") else "")),
                escape(", ".join(t["inputs"])),
                f"{abs(value) if name == 'rmse' else value:.4f}",
                str(t["epochs"]),
                f"{t['seconds']:.1f}",
            )
    console.print(board)
    console.print("chosen: " + _metric_line(metrics), highlight=False)
    console.print(f"wrote {escape(str(out))} (report.html, fit.json, model.safetensors)", highlight=False)
    rows = summary["rows"]
    if rows["unreadable"] or rows["unlabelled"] or summary["bad_cells"]:
        console.print(
            f"{rows_left_out(rows['unreadable'], rows['unlabelled'])}; {summary['bad_cells']} bad cells: "
            f"each listed in {escape(str(out / BAD_SAMPLES_FILE))}",
            highlight=False,
        )


def predict(
    model: Path = typer.Argument(
        ..., help="A predictor directory written by `polymodal fit`, or a fusion classifier (model or run directory)."
    ),
    table: Path = typer.Argument(
        ...,
        help="A CSV, JSONL or Parquet file with the columns the model reads (a fusion classifier's: its modalities).",
    ),
    out: Path = typer.Option(
        ...,
        "--out",
        "-o",
        help="CSV of predictions: row, the table's identifier, ignored and media-path columns, prediction, "
        "probability_<class>.",
    ),
    evaluate: bool = typer.Option(
        False,
        "--evaluate",
        help="Also score the predictions against TABLE's label column (`label` for a fusion classifier): the "
        "metrics fit.json reports for validation. A label the model does not know counts as an error; rows without one "
        "are left out and counted.",
    ),
    cache: bool = CacheOption,
    json: bool = JsonOption,
) -> None:
    """Predict every row of a table with a fitted predictor or a fusion classifier (missing cells and bad files are
    missing inputs); --evaluate scores them when the table has the label."""
    import warnings

    from polymodal.backends import TaskNotSupported
    from polymodal.data.errors import BadSampleError, BadSampleLog
    from polymodal.fit import ColumnMismatchError, TablePredictor, is_fit_dir, read_table
    from polymodal.fit.predictor import score_rows
    from polymodal.fsutil import write_atomic

    metrics = None
    try:
        bad_log = BadSampleLog(out.with_name(out.name + ".bad_samples.jsonl"))
        scaling = (0.0, 1.0)  # a regression target's mean and std, which a fitted predictor standardised
        if is_fit_dir(model):
            predictor = TablePredictor.load(model)
            rows, problem = read_table(table), predictor.problem
            check_label(evaluate, table, rows, problem)
            result = predictor.predict(rows, bad_log, store=cache)
            scaling = (predictor.target_mean, predictor.target_std)
        else:  # a polymodal model: its own towers read the files (the feature store is for fit's)
            from polymodal.api import load

            loaded = load(model)
            rows, problem = read_table(table), loaded.predict_problem
            check_label(evaluate, table, rows, problem)
            result = loaded.predict(rows, bad_log=bad_log)
        if evaluate:
            with warnings.catch_warnings():  # the counts are in the metrics' rows, printed below
                warnings.simplefilter("ignore")
                labels = rows.values(result.problem.label)
                metrics = score_rows(result.problem, result.values, labels, scaling, unreadable=len(rows.bad))
        out.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(out, result.to_csv())
        cells = bad_log.total  # the bad cells; the unreadable rows are listed in the same file, counted apart
        for error in rows.bad:
            bad_log.record(error)
    except (ColumnMismatchError, TaskNotSupported) as e:
        fail(str(e), as_json=json, code=2)
    except (BadSampleError, ValueError, ImportError, OSError) as e:
        fail(str(e), as_json=json)
    unusable = unusable_columns(rows, bad_log)
    payload: dict[str, Any] = {
        "out": str(out),
        "rows": len(result.row_numbers),
        "unreadable_rows": len(rows.bad),
        "bad_cells": cells,
        "bad_cells_by_column": dict(bad_log.by_field.most_common()),
    }
    if result.problem.kind in ("binary", "multiclass"):
        payload["predicted"] = dict(Counter(result.labels).most_common())
    if metrics is not None:
        payload["metrics"] = metrics
    if unusable:
        payload["unusable_columns"] = unusable
    if json:
        emit_json(payload)
        if unusable:
            raise typer.Exit(1)
        return
    counts = ", ".join(f"{k} {v}" for k, v in payload.get("predicted", {}).items())
    console.print(
        f"{payload['rows']} predictions -> {escape(str(out))}{'; ' + escape(counts) if counts else ''}; "
        f"{cells} bad cells, {len(rows.bad)} unreadable rows",
        highlight=False,
    )
    if bad_log.total:
        columns = ", ".join(f"{name} {n}" for name, n in bad_log.by_field.most_common())
        where = f" ({escape(columns)})" if columns else ""
        console.print(f"bad cells{where}: each listed in {escape(str(bad_log.path))}", highlight=False)
    if metrics is not None:
        _print_evaluation(metrics)
    if unusable:  # predictions were written, from the other inputs: but a whole column was lost
        fail(
            f"every cell of {', '.join(repr(c) for c in unusable)} in {table} is unusable (e.g. "
            f"{bad_log.examples[0].reason if bad_log.examples else '?'}); media paths are read relative to "
            f"{rows.base or rows.root}: the predictions in {out} were made without it",
            as_json=False,
        )


def unusable_columns(rows: Any, bad_log: Any) -> list[str]:
    """The columns none of whose filled cells could be read (a table moved away from its files, a wrong root)."""
    out = []
    for column, bad in bad_log.by_field.items():
        filled = sum(1 for value in rows.values(column) if value not in (None, "")) if column in rows.columns else 0
        if filled and bad >= filled:
            out.append(column)
    return sorted(out)


def check_label(evaluate: bool, table: Path, rows: Any, problem: Any) -> None:
    """``--evaluate`` needs the label column (before anything is predicted)."""
    if evaluate and problem is not None and problem.label not in rows.columns:
        raise ValueError(f"--evaluate: {table} has no label column {problem.label!r}")


def _print_evaluation(metrics: dict[str, Any]) -> None:
    counted = metrics["rows"]
    console.print(f"evaluated {counted['scored']} rows: {_metric_line(metrics)}", highlight=False)
    if counted["left_out"] or counted["unreadable"]:
        console.print(
            f"left out: {counted['left_out']} without a usable label, {counted['unreadable']} unreadable",
            highlight=False,
        )
    if counted["unknown"]:
        unknown = ", ".join(f"{name} {n}" for name, n in counted["unknown"].items())
        console.print(f"counted as errors, labels the model does not know: {escape(unknown)}", highlight=False)
