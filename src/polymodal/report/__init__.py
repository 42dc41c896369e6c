"""Reports: Markdown + self-contained HTML with tables and plots for evaluation and training runs.

```python
from polymodal.report import write_report
written = write_report(["runs/concat", "runs/gmu"], out="reports/fusion")
print(written.html)
```

Layers: :mod:`schema` validates result files, :mod:`runs` finds what an input holds,
:mod:`build` turns runs into blocks (:mod:`blocks`), and :mod:`markdown` / :mod:`html`
render the same blocks twice.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from polymodal.evaluate.results import ResultFile, load_results
from polymodal.report.build import build_document
from polymodal.report.errors import ReportError
from polymodal.report.html import render_html
from polymodal.report.markdown import render_markdown, write_assets
from polymodal.report.plots import require_matplotlib
from polymodal.report.runs import Run, load_runs


@dataclass
class WrittenReport:
    markdown: Path
    html: Path
    assets: int  # PNG files in report_assets/
    runs: list[str]
    warnings: list[str] = field(default_factory=list)
    clips: int = 0  # FLAC clips in report_assets/ (and embedded in report.html)


def write_report(
    inputs: list[str | os.PathLike],
    out: str | os.PathLike | None = None,
    *,
    title: str = "polymodal report",
    max_examples: int = 8,
) -> WrittenReport:
    """Write ``report.md``, ``report_assets/*.png`` (and ``*.flac`` for examples with sounds) and ``report.html``
    into ``out`` (default: the first input's directory, or the folder of a first input that is a file)."""
    if not inputs:
        raise ReportError("give at least one run directory or result file")
    require_matplotlib()
    warnings: list[str] = []
    runs = load_runs([Path(p) for p in inputs], warnings)
    if out is None:
        first = Path(inputs[0])
        out = first if first.is_dir() else first.parent
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    document = build_document(runs, title=title, max_examples=max_examples)
    assets = write_assets(document, out_dir)
    (out_dir / "report.md").write_text(render_markdown(document), encoding="utf-8")
    (out_dir / "report.html").write_text(render_html(document), encoding="utf-8")
    return WrittenReport(
        out_dir / "report.md",
        out_dir / "report.html",
        assets,
        [r.name for r in runs],
        warnings,
        clips=len(document.clips()),
    )


__all__ = [
    "ResultFile",
    "ReportError",
    "Run",
    "WrittenReport",
    "build_document",
    "load_results",
    "load_runs",
    "render_html",
    "render_markdown",
    "write_report",
]
