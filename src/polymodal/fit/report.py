"""``report.html`` of a fitted predictor: the columns as detected, validation metrics, the candidates' leaderboard
and each input alone, so a user sees what fusion bought."""

from __future__ import annotations

from typing import Any

from polymodal.report.blocks import Document, Heading, Paragraph, Table, Verbatim
from polymodal.report.html import render_html


def _num(value: Any) -> Verbatim:
    return Verbatim("–" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value))


def fit_report_blocks(fit: dict[str, Any]) -> list[Any]:
    problem = fit["problem"]
    metrics = fit.get("validation", {})
    rows = fit.get("rows", {})
    blocks: list[Any] = [
        Paragraph(
            f"Label {problem['label']!r}: {problem['kind']} ({problem['reason']}). "
            f"Trained on {rows.get('train')} rows, validated on {rows.get('validation')}; "
            f"{fit.get('bad_cells', 0)} bad cells skipped; left out: {rows.get('unreadable', 0)} unreadable rows, "
            f"{rows.get('unlabelled', 0)} without a label. Source: {fit.get('source')}."
        ),
        Heading("Columns", anchor="columns"),
        Table(
            ["column", "kind", "why", "missing", "distinct", "example"],
            [
                [c["name"], c["kind"], c["reason"], str(c["missing"]), str(c["distinct"]), c["example"]]
                for c in fit["columns"]
            ],
            numeric=False,
        ),
        Heading("Validation", anchor="validation"),
    ]
    headline = ["accuracy", "f1_macro", "roc_auc", "f1_micro", "subset_accuracy", "rmse", "mae", "r2"]
    blocks.append(Table(["metric", "value"], [[k, _num(metrics[k])] for k in headline if k in metrics]))
    per_class = metrics.get("per_class")
    if per_class:
        blocks.append(
            Table(
                ["class", "precision", "recall", "F1", "support"],
                [
                    [name, _num(v["precision"]), _num(v["recall"]), _num(v["f1"]), _num(v["support"])]
                    for name, v in per_class.items()
                ],
                caption="Per class",
            )
        )
    confusion = metrics.get("confusion")
    if confusion:
        classes = problem["classes"]
        blocks.append(
            Table(
                ["true \\ predicted", *classes],
                [[name, *(_num(n) for n in row)] for name, row in zip(classes, confusion)],
                caption="Confusion matrix (rows: true class)",
            )
        )
    score_name = metrics.get("score_name", "score")
    blocks += [
        Heading("Candidates", anchor="candidates"),
        Paragraph(
            f"Each candidate trained on the training rows' features, ranked by validation {score_name}. The chosen "
            "one (bold) is the simplest within one standard error of the best accuracy: a small validation split "
            "cannot tell closer scores apart."
        ),
        _trials_table(fit.get("leaderboard", []), score_name),
        Heading("Each input alone", anchor="baselines"),
        Paragraph("The winner's settings on one input at a time: what fusing the inputs adds over the best of them."),
        _trials_table(fit.get("baselines", []), score_name),
    ]
    seconds = fit.get("seconds", {})
    blocks.append(
        Paragraph(
            f"Features took {seconds.get('featurize')} s; the whole fit {seconds.get('total')} s "
            f"(time limit {fit.get('time_limit')} s, seed {fit.get('seed')}).",
            muted=True,
        )
    )
    return blocks


def _trials_table(trials: list[dict[str, Any]], score_name: str) -> Table:
    rows = [
        [
            t["candidate"],
            ", ".join(t["inputs"]),
            _num(abs(t["metrics"]["score"]) if score_name == "rmse" else t["metrics"]["score"]),
            _num(t["epochs"]),
            Verbatim(f"{t['seconds']:.1f}"),
        ]
        for t in trials
    ]
    return Table(
        ["candidate", "inputs", score_name, "best epoch", "seconds"],
        rows,
        bold_rows={i for i, t in enumerate(trials) if t.get("chosen")},
    )


def fit_report_html(fit: dict[str, Any]) -> str:
    title = f"polymodal fit: {fit['problem']['label']}"
    return render_html(Document(title, fit_report_blocks(fit)))
