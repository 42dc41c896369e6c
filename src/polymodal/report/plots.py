"""Report plots as PNG bytes, drawn with matplotlib's object API on the Agg canvas.

No ``pyplot``: figures are plain objects, so nothing global (backend, open figures) changes in
the caller's process. Each run keeps one colour across every plot of a report.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from polymodal.report.errors import ReportError

DPI = 110
# Inches: a plot fills half the HTML page width; a WIDE one (several panels) a whole row.
WIDTH, WIDE, HEIGHT = 5.0, 10.0, 3.2
# Colour-blind-friendly (Okabe-Ito), in a fixed order so run i has the same colour everywhere.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]


def require_matplotlib() -> None:
    """Fail early, before any work, with the install command when matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ReportError(
            "reports draw plots with matplotlib, which is not installed: pip install 'polymodal[report]'"
        ) from None


def colour(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


@dataclass
class Series:
    """One line: ``label`` in the legend, ``colour_index`` the run it belongs to."""

    label: str
    xs: Sequence[float]
    ys: Sequence[float]
    colour_index: int


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _style(ax: Any, title: str | None = None) -> None:
    if title:
        ax.set_title(_text(title), fontsize=10, loc="left")
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(axis="y", color="#e5e7eb", linewidth=0.8)
    ax.set_axisbelow(True)
    ax.tick_params(labelsize=8)


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    # No "Software" metadata: the same report input gives byte-identical PNGs.
    fig.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def _text(text: str) -> str:
    """Names come from input files; ``$`` would switch matplotlib to math mode (and a stray one
    can fail the whole drawing), so it is escaped to show as itself."""
    return text.replace("$", r"\$")


def _short(text: str, limit: int = 18) -> str:
    return _text(text if len(text) <= limit else text[: limit - 1] + "…")


def _legend(fig: Any, axes: Sequence[Any]) -> None:
    """One legend under the plot, outside the axes (it never hides a bar or a line), listing
    every label once even when each panel holds a different subset of runs."""
    by_label: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            by_label.setdefault(label, handle)
    if len(by_label) > 1:
        fig.legend(
            list(by_label.values()),
            list(by_label),
            loc="outside lower center",
            ncols=min(len(by_label), 4),
            fontsize=8,
            frameon=False,
        )


def grouped_bars(
    title: str,
    categories: Sequence[str],
    groups: Sequence[tuple[str, int, Sequence[float | None]]],
    errors: Sequence[Sequence[tuple[float, float] | None]] | None = None,
    ylabel: str = "",
) -> bytes:
    """Bars per category, one bar per group (run). ``groups``: (label, colour index, values,
    ``None`` = no value). ``errors``: per group, per category, a (lo, hi) interval or None."""
    import numpy as np

    n_groups = max(len(groups), 1)
    slots = len(categories) * n_groups
    fig = _figure(WIDTH if slots <= 24 else WIDE, HEIGHT)
    ax = fig.add_subplot()
    x = np.arange(len(categories))
    bar = 0.8 / n_groups
    for g, (label, colour_index, values) in enumerate(groups):
        offsets = x - 0.4 + bar * (g + 0.5)
        heights = [np.nan if v is None else v for v in values]
        ax.bar(offsets, heights, bar * 0.92, label=_text(label), color=colour(colour_index))
        if errors is not None:
            for xi, value, interval in zip(offsets, values, errors[g]):
                if interval is not None and value is not None:
                    lo, hi = interval
                    ax.errorbar(
                        xi,
                        value,
                        yerr=[[max(value - lo, 0)], [max(hi - value, 0)]],
                        color="#374151",
                        capsize=2,
                        linewidth=0.9,
                    )
    rotate = len(categories) > 5
    ax.set_xticks(x, [_short(c) for c in categories], rotation=30 if rotate else 0, ha="right" if rotate else "center")
    ax.set_ylabel(_text(ylabel), fontsize=9)
    _style(ax, title)
    _legend(fig, [ax])
    return _png(fig)


def line_panels(
    title: str,
    panels: dict[str, Sequence[Series]],
    xlabel: str,
    ylabel: str,
    sharey: bool = True,
) -> bytes:
    """One axes per panel (e.g. per corruption); each panel holds several lines. ``sharey``
    for panels of one quantity (a metric under several corruptions), not for different metrics.

    Few distinct x values (K = 1, 5, 10; severities 0..5) become the ticks themselves.
    """
    from matplotlib.ticker import MaxNLocator

    n = max(len(panels), 1)
    fig = _figure({1: WIDTH, 2: 6.4}.get(n, min(1.0 + 3.2 * n, 12.0)), HEIGHT)
    axes = fig.subplots(1, n, sharey=sharey, squeeze=False)[0]
    for ax, (panel, series) in zip(axes, panels.items()):
        xs_all = sorted({x for s in series for x in s.xs})
        for s in series:
            ax.plot(
                s.xs,
                s.ys,
                marker="o",
                markersize=3.5,
                linewidth=1.6,
                color=colour(s.colour_index),
                label=_text(s.label),
            )
        if len(xs_all) <= 8:
            ax.set_xticks(xs_all, [f"{x:g}" for x in xs_all])
        else:
            ax.xaxis.set_major_locator(MaxNLocator(nbins=6, integer=all(float(x).is_integer() for x in xs_all)))
        ax.set_xlabel(xlabel, fontsize=9)
        _style(ax, panel if n > 1 else None)
    axes[0].set_ylabel(_text(ylabel), fontsize=9)
    fig.suptitle(_text(title), fontsize=10, x=0.01, ha="left")
    _legend(fig, axes)
    return _png(fig)


def confusion_heatmap(title: str, classes: Sequence[str], matrix: Sequence[Sequence[int]]) -> bytes:
    """Row-normalised confusion matrix (rows: true class), counts written in small matrices."""
    import numpy as np

    counts = np.asarray(matrix, dtype=float).reshape(len(classes), len(classes))  # (C, C)
    totals = counts.sum(axis=1, keepdims=True)
    rates = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    size = min(2.4 + 0.25 * len(classes), 8.0)
    fig = _figure(size + 1.0, size)
    # Labels must fit one cell each: 7 pt down to 4 pt for ~60 classes on 8 inches.
    fontsize = max(3.5, min(7.0, 300 / max(len(classes), 1)))
    ax = fig.add_subplot()
    shown = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ticks = range(len(classes))
    labels = [_short(c, 14) for c in classes]
    ax.set_xticks(
        ticks,
        labels,
        rotation=90 if len(classes) > 20 else 45,
        ha="center" if len(classes) > 20 else "right",
        fontsize=fontsize,
    )
    ax.set_yticks(ticks, labels, fontsize=fontsize)
    ax.set_xlabel("predicted", fontsize=9)
    ax.set_ylabel("true", fontsize=9)
    ax.set_title(_text(title), fontsize=10, loc="left")
    if len(classes) <= 12:
        for i in ticks:
            for j in ticks:
                ax.text(
                    j,
                    i,
                    f"{int(counts[i, j])}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if rates[i, j] > 0.5 else "#111827",
                )
    bar = fig.colorbar(shown, ax=ax, shrink=0.8)
    bar.set_label("fraction of true class", fontsize=8)
    bar.ax.tick_params(labelsize=7)
    return _png(fig)
