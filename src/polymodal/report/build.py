"""Turn runs into a :class:`Document`: provenance, a section per benchmark/split (metrics table
with a column per run, plots, examples) and a training section.

Plots put every run on the same axes (one colour per run) wherever the quantity is shared;
only a confusion matrix is drawn per run.
"""

from __future__ import annotations

import hashlib
import io
import math
import re
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any, TypeVar

from PIL import Image

from polymodal.config import flatten_config
from polymodal.evaluate.results import Example, Result
from polymodal.hardware import describe_record
from polymodal.report import plots
from polymodal.report.blocks import (
    Asset,
    Block,
    Document,
    ExampleCard,
    ExampleGrid,
    Heading,
    Paragraph,
    PlotGrid,
    RetrievedItem,
    Table,
    Verbatim,
)
from polymodal.report.runs import Run, TrainingLog
from polymodal.report.sounds import Sounds
from polymodal.report.strips import FrameStrips
from polymodal.report.thumbnails import Thumbnails
from polymodal.version import __version__

MISSING = Verbatim("—")
INITIALS = {"i": "image", "t": "text", "a": "audio", "v": "video"}  # recall directions: "i2t", "a2t", "t2v" ...
# Always shown for training runs (when present), beside every setting that differs between runs.
KEY_SETTINGS = [
    "model.preset",
    "objective.kind",
    "objective.loss",
    "train.steps",
    "train.batch_size",
    "train.lr",
    "train.precision",
    "train.seed",
]
MAX_BAR_CATEGORIES = 40
MAX_SLUG = 100  # characters of a file name or anchor made from names; longer ones end in a hash of the whole
T = TypeVar("T")


def fmt(value: float | None) -> Verbatim:
    """A metric for a table: 3 decimals for rates and losses, fewer for large numbers."""
    if value is None:
        return MISSING
    if math.isnan(value):
        return Verbatim("nan")
    size = abs(value)
    if size >= 1000:
        return Verbatim(f"{value:,.0f}")
    if size >= 100:
        return Verbatim(f"{value:.1f}")
    return Verbatim(f"{value:.3f}")


def fmt_ci(value: float, interval: tuple[float, float] | None) -> Verbatim:
    if interval is None:
        return fmt(value)
    return Verbatim(f"{fmt(value)} [{fmt(interval[0])}, {fmt(interval[1])}]")


def _ran_in(machine: dict[str, Any] | None) -> str:
    """What a run trained on, from its machine.json record (runs from before it have none)."""
    return describe_record(machine) if machine and "precision" in machine else MISSING


def _direction(name: str) -> str:
    """``"a2t"`` -> ``"audio → text"``; other names as they are."""
    source, _, target = name.partition("2")
    if source in INITIALS and target in INITIALS:
        return f"{INITIALS[source]} → {INITIALS[target]}"
    return name


def _shown(cache: Thumbnails | Sounds | FrameStrips, path: str | None) -> tuple[Any, str | None]:
    """What ``cache`` shows of an example's file and why not (a note naming it); nothing without a file."""
    return cache.get(path) if path else (None, None)


def _slugify(text: str) -> str:
    """``text`` as a file name or anchor: lowercase words joined by hyphens, whole up to :data:`MAX_SLUG`
    characters; a longer one is cut and ends in a hash of the whole, so two cut names stay apart."""
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"
    if len(slug) <= MAX_SLUG:
        return slug
    digest = hashlib.sha1(slug.encode()).hexdigest()[:8]
    return f"{slug[: MAX_SLUG - len(digest) - 1].rstrip('-')}-{digest}"


def _scored(result: Result) -> str:
    """How many items a result scored, and what they are: ``4 images``, ``2,248 statements``."""
    if result.n is None:
        return MISSING
    unit = result.unit or "items"
    return f"{result.n:,} {unit.removesuffix('s') if result.n == 1 else unit}"  # units are plurals: "1 image"


def _ordered_union(lists: Iterable[Iterable[T]]) -> list[T]:
    """Every item once, in first-seen order (runs list metrics in the writer's order)."""
    seen: dict[T, None] = {}
    for items in lists:
        for item in items:
            seen.setdefault(item, None)
    return list(seen)


def _judges(provenance: Any) -> str:
    """The models a run's benchmarks scored with: ``checker runs/checker (1a2b3c4d5e6f)``, hash shortened."""
    return ", ".join(f"{name} {j.path} ({j.hash[:12]})" for name, j in (provenance.judges or {}).items())


class _Builder:
    def __init__(self, runs: list[Run], max_examples: int, max_retrieved: int) -> None:
        self.runs = runs
        self.max_examples = max_examples
        self.max_retrieved = max_retrieved
        self.thumbnails = Thumbnails()
        self.sounds = Sounds()
        self.strips = FrameStrips()
        self.colour = {id(run): i for i, run in enumerate(runs)}
        self.results = {id(run): run.results() for run in runs}
        self._plot_count = 0

    # ------------------------------------------------------------------ helpers
    def plot(self, name: str, title: str, png: bytes) -> Asset:
        self._plot_count += 1
        with Image.open(io.BytesIO(png)) as im:
            width, height = im.size
        return Asset(
            slug=f"plot-{self._plot_count:02d}-{_slugify(name)}", png=png, alt=title, width=width, height=height
        )

    # ------------------------------------------------------------------ sections
    def provenance(self) -> list[Block]:
        eval_runs = [r for r in self.runs if r.eval_files]
        if not eval_runs:
            return []

        def cell(run: Run, get: Any) -> str:
            values = _ordered_union(
                [[str(v)] for v in (get(doc.provenance) for _, doc in run.eval_files) if v not in (None, "", {})]
            )
            return "; ".join(values) if values else MISSING

        rows = [
            ["model", *[cell(r, lambda p: p.model) for r in eval_runs]],
            ["model hash", *[cell(r, lambda p: p.model_hash[:12]) for r in eval_runs]],
            *(
                [["judges", *[cell(r, _judges) for r in eval_runs]]]
                if any(doc.provenance.judges for r in eval_runs for _, doc in r.eval_files)
                else []
            ),
            ["data", *[cell(r, lambda p: p.data.path) for r in eval_runs]],
            ["data hash", *[cell(r, lambda p: p.data.hash[:12]) for r in eval_runs]],
            ["seed", *[cell(r, lambda p: p.seed) for r in eval_runs]],
            [
                "versions",
                *[cell(r, lambda p: ", ".join(f"{k} {v or '—'}" for k, v in p.versions.items())) for r in eval_runs],
            ],
            ["command", *[cell(r, lambda p: p.command) for r in eval_runs]],
            ["created", *[cell(r, lambda p: p.created) for r in eval_runs]],
            ["result files", *["; ".join(str(path) for path, _ in r.eval_files) for r in eval_runs]],
        ]
        return [
            Heading("Provenance", anchor="provenance"),
            Table(["", *[r.name for r in eval_runs]], rows, numeric=False),
        ]

    def benchmarks(self) -> list[Block]:
        keys = _ordered_union(self.results[id(r)].keys() for r in self.runs)
        blocks: list[Block] = []
        for benchmark, split in keys:
            # Only runs evaluated on this benchmark and split get a column and a line.
            present = [
                (r, self.results[id(r)][(benchmark, split)])
                for r in self.runs
                if (benchmark, split) in self.results[id(r)]
            ]
            blocks.append(Heading(f"{benchmark} · {split}", anchor=_slugify(f"{benchmark}-{split}")))
            blocks.append(self.metrics_table(present))
            figures = self.benchmark_plots(f"{benchmark}-{split}", present)
            if figures:
                blocks.append(PlotGrid(figures))
            blocks.extend(self.skipped_curves(present))
            for run, result in present:
                if result.examples and self.max_examples > 0:
                    blocks.append(self.examples(run, result))
        return blocks

    def metrics_table(self, present: list[tuple[Run, Result]]) -> Table:
        """Metric rows (headline first, then how many items it averages), one column per run, ``value [lo, hi]``
        cells."""
        headline = present[0][1].headline
        names = _ordered_union([[headline], *(res.metrics for _, res in present)])
        rows = [
            [
                name,
                *[
                    fmt_ci(res.metrics[name], res.ci95.get(name)) if name in res.metrics else MISSING
                    for _, res in present
                ],
            ]
            for name in names
        ]
        caption = (
            f"Headline metric: {headline}. Brackets hold the 95% confidence interval where the result file gives one."
        )
        if any(res.n is not None for _, res in present):
            # Beside the headline: an accuracy of 1.000 on 4 images must read as one.
            rows.insert(1, ["n", *[_scored(res) for _, res in present]])
            caption += " n: the items the headline metric averages over (the sample its interval resamples)."
        return Table(["metric", *[run.name for run, _ in present]], rows, caption=caption, bold_rows={0})

    def benchmark_plots(self, key: str, present: list[tuple[Run, Result]]) -> list[Asset]:
        figures = []
        if len(present) > 1:
            # Only rates (all values in [0, 1]) share one axis; ranks or CIDEr would flatten them.
            names = _ordered_union([[present[0][1].headline], *(res.metrics for _, res in present)])
            rates = [n for n in names if all(0 <= res.metrics.get(n, 0) <= 1 for _, res in present)][:12]
            if rates:
                groups = [(run.name, self.colour[id(run)], [res.metrics.get(n) for n in rates]) for run, res in present]
                errors = [[res.ci95.get(n) for n in rates] for _, res in present]
                png = plots.grouped_bars("Metrics by run (95% CI)", rates, groups, errors)
                figures.append(self.plot(f"{key}-metrics", "Metrics by run", png))
        figures.extend(self.recall_plot(key, present))
        for field, label in (
            ("per_class", "Per class"),
            ("per_question_type", "Per question type"),
            ("per_statement_type", "Per statement type"),
        ):
            figures.extend(self.category_bars(key, present, field, label))
        figures.extend(self.robustness_plots(key, present))
        for run, res in present:
            if res.details.confusion is not None:
                title = f"Confusion matrix: {run.name}"
                png = plots.confusion_heatmap(title, res.details.confusion.classes, res.details.confusion.matrix)
                figures.append(self.plot(f"{key}-confusion-{run.name}", title, png))
        return figures

    def recall_plot(self, key: str, present: list[tuple[Run, Result]]) -> list[Asset]:
        panels: dict[str, list[plots.Series]] = {}
        for run, res in present:
            for direction, by_k in (res.details.recall_at_k or {}).items():
                series = self.series(run, ((float(k), v) for k, v in by_k.items()))
                panels.setdefault(_direction(direction), []).append(series)
        if not panels:
            return []
        png = plots.line_panels("Recall@K", panels, "K", "recall")
        return [self.plot(f"{key}-recall", "Recall@K", png)]

    def category_bars(self, key: str, present: list[tuple[Run, Result]], field: str, label: str) -> list[Asset]:
        tables = [(run, getattr(res.details, field)) for run, res in present if getattr(res.details, field)]
        if not tables:
            return []
        categories = _ordered_union(values for _, values in tables)
        if len(categories) > MAX_BAR_CATEGORIES:
            label += f" (first {MAX_BAR_CATEGORIES} of {len(categories)})"
            categories = categories[:MAX_BAR_CATEGORIES]
        groups = [(run.name, self.colour[id(run)], [values.get(c) for c in categories]) for run, values in tables]
        png = plots.grouped_bars(label, categories, groups)
        return [self.plot(f"{key}-{field}", label, png)]

    def series(self, run: Run, points: Iterable[tuple[float, float]]) -> plots.Series:
        """A line for ``run`` through ``points``, sorted by x, in the run's colour."""
        ordered = sorted(points)
        return plots.Series(run.name, [x for x, _ in ordered], [y for _, y in ordered], self.colour[id(run)])

    def robustness_plots(self, key: str, present: list[tuple[Run, Result]]) -> list[Asset]:
        robust = [(run, res.robustness) for run, res in present if res.robustness is not None]
        if not robust:
            return []
        metric = robust[0][1].metric
        figures = []
        panels: dict[str, list[plots.Series]] = {}
        for run, rob in robust:
            for corruption, by_severity in (rob.corruptions or {}).items():
                panels.setdefault(corruption, []).append(
                    self.series(run, ((float(s), v) for s, v in by_severity.items()))
                )
        if panels:
            png = plots.line_panels(f"Robustness to corruptions ({metric})", panels, "severity", metric)
            figures.append(self.plot(f"{key}-corruptions", "Robustness to corruptions", png))
        attacked = [(run, rob) for run, rob in robust if rob.adversarial]
        if attacked:
            lines = [
                # In 255ths, rounded: the keys keep six figures (4/255 is 0.0156863, 4.00001/255).
                self.series(run, ((round(float(e) * 255, 3), v) for e, v in rob.adversarial.items()))
                for run, rob in attacked
            ]
            title = f"Robustness to adversarial examples ({metric})"
            png = plots.line_panels(title, {"PGD, L-inf": lines}, "epsilon (/255)", metric)
            figures.append(self.plot(f"{key}-adversarial", "Robustness to adversarial examples", png))
        dropped = [(run, rob.missing_modality) for run, rob in robust if rob.missing_modality]
        if dropped:
            categories = _ordered_union(values for _, values in dropped)
            groups = [(run.name, self.colour[id(run)], [values.get(c) for c in categories]) for run, values in dropped]
            labels = ["none dropped" if c == "none" else f"drop {c}" for c in categories]
            png = plots.grouped_bars(f"Missing modality ({metric})", labels, groups, ylabel=metric)
            figures.append(self.plot(f"{key}-missing-modality", "Missing modality", png))
        return figures

    def skipped_curves(self, present: list[tuple[Run, Result]]) -> list[Paragraph]:
        """A line per robustness curve a result file says was not run, and why, where its plot would be."""
        runs_by_reason: dict[tuple[str, str], list[str]] = {}
        for run, res in present:
            for curve, reason in ((res.robustness.skipped or {}) if res.robustness else {}).items():
                runs_by_reason.setdefault((curve, reason), []).append(run.name)
        return [
            Paragraph(
                f"Robustness to {curve}: not run"
                + (f" for {', '.join(names)}" if len(present) > 1 else "")
                + f" ({reason}).",
                muted=True,
            )
            for (curve, reason), names in runs_by_reason.items()
        ]

    def examples(self, run: Run, result: Result) -> ExampleGrid:
        cards = [self.card(example) for example in result.examples[: self.max_examples]]
        shown = f"{len(cards)} of {len(result.examples)}" if len(result.examples) > len(cards) else f"{len(cards)}"
        return ExampleGrid(f"Examples: {run.name} ({shown})", cards)

    def card(self, example: Example) -> ExampleCard:
        image, note = _shown(self.thumbnails, example.image)
        sound, sound_note = _shown(self.sounds, example.audio)
        strip, strip_note = _shown(self.strips, example.video)
        fields = [
            (label, value)
            for label, value in (
                ("text", example.text),
                ("prediction", example.prediction),
                ("reference", example.reference),
            )
            if value is not None
        ]
        retrieved = []
        for item in (example.retrieved or [])[: self.max_retrieved]:
            thumb, thumb_note = _shown(self.thumbnails, item.image)
            clip, clip_note = _shown(self.sounds, item.audio)
            frames, frames_note = _shown(self.strips, item.video)
            retrieved.append(
                RetrievedItem(thumb, item.text, item.score, clip, thumb_note or clip_note or frames_note, frames)
            )
        return ExampleCard(image, note, fields, example.correct, retrieved, sound, sound_note, strip, strip_note)

    def not_run(self) -> list[Block]:
        """The benchmark splits result files say ``polymodal eval`` skipped, and why (a capability the model lacks,
        nothing of the kind in the split)."""
        rows = [
            [benchmark, split, run.name, reason]
            for run in self.runs
            for (benchmark, split), reason in run.skipped().items()
        ]
        if not rows:
            return []
        return [
            Heading("Not run", anchor="not-run"),
            Table(["benchmark", "split", "run", "reason"], rows, numeric=False),
        ]

    # ------------------------------------------------------------------ training
    def training(self) -> list[Block]:
        trained = [(r, r.training) for r in self.runs if r.training is not None]
        if not trained:
            return []

        def summary(log: TrainingLog, key: str) -> Any:
            return (log.summary or {}).get(key)

        def text(value: Any) -> str:
            return MISSING if value is None else str(value)

        def steps(log: TrainingLog) -> str:
            """The steps a finished run took; an unfinished one (no train_summary.json: stopped, crashed or still
            running) says how far it got of its configured steps."""
            done = summary(log, "steps")
            if done is not None:
                return str(done)
            last = int(log.steps[-1]["step"]) if log.steps else 0
            planned = ((log.config or {}).get("train") or {}).get("steps")
            return f"{last} of {planned} (unfinished)" if planned else f"{last} (unfinished)"

        def final_loss(log: TrainingLog) -> float | None:
            losses = [s["loss"] for s in log.steps if "loss" in s]
            return losses[-1] if losses else None

        logs = [log for _, log in trained]
        rows = [
            ["steps", *[steps(g) for g in logs]],
            ["final loss", *[fmt(final_loss(g)) for g in logs]],
            ["best metric", *[fmt(summary(g, "best_metric")) for g in logs]],
            ["best step", *[text(summary(g, "best_step")) for g in logs]],
            ["stopped early", *[{True: "yes", False: "no"}.get(summary(g, "stopped_early"), MISSING) for g in logs]],
            ["samples/s", *[fmt(summary(g, "samples_per_second")) for g in logs]],
            ["ran in", *[_ran_in(summary(g, "machine")) for g in logs]],
            ["bad samples", *[text(summary(g, "bad_samples")) for g in logs]],
        ]
        blocks: list[Block] = [Heading("Training", anchor="training"), Table(["", *[r.name for r, _ in trained]], rows)]
        settings = self.settings_table(trained)
        if settings is not None:
            blocks.append(settings)
        figures = self.training_plots(trained)
        if figures:
            blocks.append(PlotGrid(figures))
        return blocks

    def settings_table(self, trained: list[tuple[Run, TrainingLog]]) -> Table | None:
        flat = [flatten_config(log.config or {}) for _, log in trained]
        keys = [k for k in KEY_SETTINGS if any(k in f for f in flat)]
        if len(trained) > 1:
            differing = [k for k in _ordered_union(flat) if len({repr(f.get(k)) for f in flat}) > 1]
            keys += [k for k in differing if k not in keys]
        if not keys:
            return None
        rows = [[k, *[str(f[k]) if k in f else MISSING for f in flat]] for k in keys]
        caption = "Recipe settings (config.yaml): key settings" + (
            " and every setting that differs between runs." if len(trained) > 1 else "."
        )
        return Table(["setting", *[r.name for r, _ in trained]], rows, caption=caption, numeric=False)

    def training_plots(self, trained: list[tuple[Run, TrainingLog]]) -> list[Asset]:
        figures = []
        loss = [self.series(r, ((s["step"], s["loss"]) for s in log.steps if "loss" in s)) for r, log in trained]
        loss = [s for s in loss if s.xs]
        if loss:
            figures.append(
                self.plot(
                    "training-loss", "Training loss", plots.line_panels("Training loss", {"loss": loss}, "step", "loss")
                )
            )
        panels: dict[str, list[plots.Series]] = {}
        for name in _ordered_union(m for _, log in trained for _, m in log.evals)[:4]:
            for r, log in trained:
                points = [(step, m[name]) for step, m in log.evals if name in m]
                if points:
                    panels.setdefault(name, []).append(self.series(r, points))
        if panels:
            ylabel = next(iter(panels)) if len(panels) == 1 else "value"  # one metric: name the axis after it
            png = plots.line_panels("Validation during training", panels, "step", ylabel, sharey=False)
            figures.append(self.plot("training-eval", "Validation during training", png))
        return figures


def build_document(
    runs: list[Run], *, title: str = "polymodal report", max_examples: int = 8, max_retrieved: int = 5
) -> Document:
    """The whole report as blocks, ready for :func:`~polymodal.report.markdown.render_markdown`
    and :func:`~polymodal.report.html.render_html`."""
    builder = _Builder(runs, max_examples, max_retrieved)
    created = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    intro = Paragraph(
        f"{len(runs)} {'run' if len(runs) == 1 else 'runs'}: {', '.join(r.name for r in runs)}. "
        f"Generated {created} by polymodal {__version__}.",
        muted=True,
    )
    blocks: list[Block] = [
        intro,
        *builder.provenance(),
        *builder.benchmarks(),
        *builder.not_run(),
        *builder.training(),
    ]
    return Document(title=title, blocks=blocks)
