"""polymodal fit against scikit-learn on the same cached features, and against the hand-written recipes (#24).

Four tables made from ShapesWorld (``generate_shapesworld(..., speech=True)``; a temporary folder, removed
afterwards, unless ``--data DIR`` names one to make or reuse):

* ``sentiment``   spoken sentences: id, text, audio -> sentiment (``sentiment_{split}.jsonl`` without the columns
                  that give the answer away: words, delivery, voice, rate, pitch, pitch_range)
* ``statements``  image, statement -> true/false (each scene's first two statements)
* ``speaker``     audio -> which of the eight eSpeak voices (``speech_{split}.jsonl``)
* ``few-shot``    image -> colour and shape of the scene's main object, ``--classes`` classes with ``--shots``
                  training images each (the first in the train split); every image of those classes in val and test

Each table is trained on train, validated on val and scored on test. Per table:

1. features: the columns' pretrained towers over train, val and test into an empty feature store (timed);
2. ``TablePredictor.fit`` with ``--time-limit`` on the now cached features (its time: reading the store, the search
   over fusion networks, the single-input baselines);
3. scikit-learn ``LogisticRegression`` (standardised, max_iter 2000) and ``HistGradientBoostingClassifier`` on the
   same vectors read back from that store (concatenated; a missing input is zeros), trained on train; their times
   are the ``fit`` calls, the store read is timed apart;
4. with ``--recipes``, the hand-written recipe where there is one (shapes-sentiment, shapes-speaker), trained by
   ``run_recipe`` and scored by ``run_eval`` on test; its time includes its own features (data, towers, training).

Test accuracy comes with a 95% bootstrap interval. polymodal fit and the recipes run torch at the printed threads;
scikit-learn's OpenMP/BLAS pools are held to the same count. ``--out FILE`` writes every figure and the machine.

Run: ``.venv/bin/python benchmarks/fit.py [--n 2000] [--time-limit 120] [--no-recipes] [--data DIR] [--out FILE]``
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from polymodal.data.errors import BadSampleLog
from polymodal.data.shapes import generate_shapesworld, is_complete, load_split
from polymodal.fit import Table, TablePredictor, plan_inputs, rows_table
from polymodal.fit.features import Featurizer
from polymodal.fit.predictor import featurize
from polymodal.fit.search import encode_targets
from polymodal.fit.store import FeatureStore
from polymodal.fsutil import write_atomic
from polymodal.hardware import ThreadBudget, choose_precision, describe_record, machine_header, machine_record
from polymodal.metrics.bootstrap import bootstrap_ci

SPLITS = ("train", "val", "test")
LABEL = "label"
SENTIMENT_COLUMNS = ("id", "text", "audio", LABEL)  # the manifest's other columns name the answer
STATEMENTS_PER_SCENE = 2
RESAMPLES = 1000  # bootstrap resamples of the test accuracy
SKLEARN_MODELS = ("LogisticRegression", "HistGradientBoosting")


@dataclass
class Task:
    name: str
    about: str
    rows: Callable[[str], list[dict[str, Any]]]  # split -> the table's rows
    recipe: str | None = None


def make_tasks(data: Path, shots: int, classes: int) -> list[Task]:
    def sentiment(split: str) -> list[dict[str, Any]]:
        return [{k: r[k] for k in SENTIMENT_COLUMNS} for r in load_split(data, split, "sentiment_")]

    def statements(split: str) -> list[dict[str, Any]]:
        return [
            {"image": r["image"], "statement": s["text"], LABEL: "true" if s["label"] else "false"}
            for r in load_split(data, split)
            for s in r["statements"][:STATEMENTS_PER_SCENE]
        ]

    def speaker(split: str) -> list[dict[str, Any]]:
        return [{"audio": r["audio"], LABEL: r["voice"]} for r in load_split(data, split, "speech_")]

    chosen = few_shot_classes(data, shots, classes)

    def few_shot(split: str) -> list[dict[str, Any]]:
        taken: Counter[str] = Counter()
        rows = []
        for r in load_split(data, split):
            name = r["label"]["color_shape"]
            if name in chosen and (split != "train" or taken[name] < shots):
                taken[name] += 1
                rows.append({"image": r["image"], LABEL: name})
        return rows

    return [
        Task("sentiment", "id, text, audio -> sentiment", sentiment, "shapes-sentiment"),
        Task("statements", "image, statement -> true/false", statements),
        Task("speaker", "audio -> voice (8)", speaker, "shapes-speaker"),
        Task("few-shot", f"image -> main object's colour+shape ({len(chosen)} classes, {shots} shots)", few_shot),
    ]


def few_shot_classes(data: Path, shots: int, count: int) -> list[str]:
    """The ``count`` main-object classes with at least ``shots`` training and one validation image that have the
    most test images (ties by name), so the test set is as large as the split allows."""
    per_split = {s: Counter(r["label"]["color_shape"] for r in load_split(data, s)) for s in SPLITS}
    usable = [c for c in per_split["test"] if per_split["train"][c] >= shots and per_split["val"][c] >= 1]
    chosen = sorted(usable, key=lambda c: (-per_split["test"][c], c))[:count]
    if len(chosen) < 2:
        raise SystemExit(f"few-shot: only {len(chosen)} classes have {shots} training images; use a larger --n")
    return chosen


def prime_store(tables: dict[str, Table], store: FeatureStore) -> list[Featurizer]:
    """Every tower's features of every split into ``store``; the featurizers ``fit`` chooses for these columns."""
    train = tables["train"]
    featurizers = plan_inputs(train, LABEL, val=tables.get("val"))[2]
    for featurizer in featurizers:
        featurizer.fit(train)
    for split, table in tables.items():
        featurize(featurizers, table, BadSampleLog(), split, None, store, progress=False)
    return featurizers


def accuracy_of(hits: np.ndarray) -> dict[str, Any]:
    low, high = bootstrap_ci(hits.astype(np.float64), n_resamples=RESAMPLES, seed=0)
    return {"accuracy": float(hits.mean()), "ci95": [low, high], "rows": len(hits)}


def stored_matrix(predictor: TablePredictor, table: Table, store: FeatureStore) -> tuple[np.ndarray, np.ndarray]:
    """(features (N, D): the inputs side by side, zeros where one is missing; class indices (N,)), labelled rows."""
    features = featurize(predictor.featurizers, table, BadSampleLog(), "sklearn", None, store, progress=False)
    x = torch.cat([v * features.present[k].unsqueeze(1) for k, v in features.values.items()], dim=1)
    targets = encode_targets(predictor.problem, table.values(LABEL))
    known = targets.known
    return x[known].double().numpy(), targets.y[known].numpy()


def run_polymodal_fit(tables: dict[str, Table], store: FeatureStore, args: argparse.Namespace) -> dict[str, Any]:
    stored = len(store)
    started = time.perf_counter()
    predictor = TablePredictor.fit(
        tables["train"],
        LABEL,
        val=tables["val"],
        time_limit=args.time_limit,
        seed=args.seed,
        store=store,
        progress=False,
    )
    seconds = time.perf_counter() - started
    if len(store) != stored:
        print(f"  warning: fit stored {len(store) - stored} vectors the priming did not: its time includes towers")
    test = tables["test"]
    predicted = predictor.predict(test, store=store, progress=False).values.argmax(1)
    targets = encode_targets(predictor.problem, test.values(LABEL))
    known = targets.known.numpy()
    summary = predictor.summary
    return {
        "predictor": predictor,
        "record": {
            "fit_seconds": seconds,
            "chosen": predictor.network.candidate.label,
            "validation_accuracy": summary["validation"]["accuracy"],
            "candidates_tried": len(summary["leaderboard"]),
            **accuracy_of(predicted[known] == targets.y.numpy()[known]),
        },
    }


def run_sklearn(
    predictor: TablePredictor, tables: dict[str, Table], store: FeatureStore, args: argparse.Namespace
) -> dict[str, Any]:
    """Both scikit-learn models on the stored vectors of ``predictor``'s inputs, with OpenMP/BLAS at ``--threads``."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    started = time.perf_counter()
    x_train, y_train = stored_matrix(predictor, tables["train"], store)
    x_test, y_test = stored_matrix(predictor, tables["test"], store)
    read_seconds = time.perf_counter() - started
    models = {
        "LogisticRegression": make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)),
        "HistGradientBoosting": HistGradientBoostingClassifier(random_state=args.seed),
    }
    out: dict[str, Any] = {"store_read_seconds": read_seconds, "feature_dim": x_train.shape[1]}
    for name, model in models.items():
        with threadpool_limits(args.threads):
            started = time.perf_counter()
            model.fit(x_train, y_train)
            seconds = time.perf_counter() - started
            hits = model.predict(x_test) == y_test
        out[name] = {"fit_seconds": seconds, **accuracy_of(hits)}
    return out


def run_recipe_on_test(recipe: str, data: Path, run_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Train the packaged recipe on ``data`` and score its best model on the test split."""
    from polymodal.evaluate.runner import run_eval
    from polymodal.models import find_model_dir
    from polymodal.train.recipe import load_recipe
    from polymodal.train.run import run_recipe

    overrides = [f"data.path={data}", "train.tensorboard=false", f"train.threads={args.threads}"]
    if args.recipe_steps:  # a shorter run than the recipe's own (smoke runs)
        overrides += [f"train.steps={args.recipe_steps}", f"train.eval_every={args.recipe_steps}"]
        overrides += ["train.warmup_steps=0"]
    cfg = load_recipe(recipe, overrides)
    started = time.perf_counter()
    result = run_recipe(cfg, run_dir, progress=False)
    seconds = time.perf_counter() - started
    started = time.perf_counter()
    doc = run_eval(str(find_model_dir(run_dir)), recipe, data=data, splits=["test"], seed=args.seed, meteor=False)
    scored = doc.results[0]
    return {
        "recipe": recipe,
        "steps": result.step,
        "fit_seconds": seconds,
        "eval_seconds": time.perf_counter() - started,
        "accuracy": scored.metrics["accuracy"],
        "ci95": list(scored.ci95.get("accuracy", ())),
        "machine": result.machine,
    }


def run_task(task: Task, data: Path, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    tables = {s: rows_table(task.rows(s), data, source=f"{task.name} {s}") for s in SPLITS}
    store = FeatureStore(work / f"{task.name}.sqlite")  # one per task: each featurization starts empty
    started = time.perf_counter()
    prime_store(tables, store)
    record: dict[str, Any] = {
        "about": task.about,
        "rows": {s: len(t) for s, t in tables.items()},
        "featurize_seconds": time.perf_counter() - started,
        "stored_vectors": len(store),
    }
    fitted = run_polymodal_fit(tables, store, args)
    record["polymodal_fit"] = fitted["record"]
    record["sklearn"] = run_sklearn(fitted["predictor"], tables, store, args)
    best = max(record["sklearn"][m]["accuracy"] for m in SKLEARN_MODELS)
    record["ratio_to_best_sklearn"] = record["polymodal_fit"]["accuracy"] / best if best else None
    if task.recipe and args.recipes:
        record["recipe"] = run_recipe_on_test(task.recipe, data, work / f"run-{task.recipe}", args)
    store.close()
    return record


def cell(entry: dict[str, Any]) -> str:
    low, high = entry["ci95"] if entry.get("ci95") else (float("nan"), float("nan"))
    return f"{entry['accuracy']:.3f} ({low:.3f}-{high:.3f})"


def print_task(name: str, r: dict[str, Any], time_limit: float) -> None:
    rows = r["rows"]
    print(f"\n### {name}: {r['about']}; rows train {rows['train']}, val {rows['val']}, test {rows['test']}")
    print("| method | test accuracy (95% CI) | fit s | notes |")
    print("|---|---:|---:|---|")
    print(
        f"| features (towers, empty store) | - | {r['featurize_seconds']:.1f} | train+val+test, "
        f"{r['stored_vectors']} vectors stored |"
    )
    p = r["polymodal_fit"]
    print(
        f"| polymodal fit | {cell(p)} | {p['fit_seconds']:.1f} | cached features, limit {time_limit:g} s; "
        f"{p['candidates_tried']} candidates, chose {p['chosen']} (val {p['validation_accuracy']:.3f}) |"
    )
    s = r["sklearn"]
    for method in SKLEARN_MODELS:
        print(
            f"| sklearn {method} | {cell(s[method])} | {s[method]['fit_seconds']:.1f} | same vectors, "
            f"{s['feature_dim']}-d; store read {s['store_read_seconds']:.1f} s |"
        )
    if "recipe" in r:
        rec = r["recipe"]
        print(
            f"| recipe {rec['recipe']} | {cell(rec)} | {rec['fit_seconds']:.1f} | {rec['steps']} steps, "
            f"features inside; {describe_record(rec['machine'])} |"
        )
    ratio = r["ratio_to_best_sklearn"]
    print(f"polymodal fit / best sklearn accuracy: {ratio:.3f}" if ratio is not None else "best sklearn accuracy is 0")


def print_summary(tasks: dict[str, dict[str, Any]]) -> None:
    print("\n### all tables: test accuracy; seconds (features: the towers, once; fit: on the cached features)")
    print(
        "| table | polymodal fit | best sklearn | fit / sklearn | recipe | features s | polymodal fit s | sklearn s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in tasks.items():
        s = r["sklearn"]
        best = max(SKLEARN_MODELS, key=lambda m: s[m]["accuracy"])
        ratio = "-" if r["ratio_to_best_sklearn"] is None else f"{r['ratio_to_best_sklearn']:.3f}"
        recipe = f"{r['recipe']['accuracy']:.3f}" if "recipe" in r else "-"
        print(
            f"| {name} | {r['polymodal_fit']['accuracy']:.3f} | {s[best]['accuracy']:.3f} ({best}) | {ratio} | "
            f"{recipe} | {r['featurize_seconds']:.1f} | {r['polymodal_fit']['fit_seconds']:.1f} | "
            f"{s[best]['fit_seconds']:.1f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000, help="ShapesWorld scenes (80%% train, 10%% val, 10%% test)")
    parser.add_argument("--time-limit", type=float, default=120.0, help="polymodal fit's limit per table, seconds")
    parser.add_argument("--recipes", action=argparse.BooleanOptionalAction, default=True, help="train the recipes")
    parser.add_argument("--recipe-steps", type=int, help="train the recipes this many steps (default: their own)")
    parser.add_argument("--tasks", default="sentiment,statements,speaker,few-shot", help="which tables, in order")
    parser.add_argument("--shots", type=int, default=5, help="few-shot: training images per class")
    parser.add_argument("--classes", type=int, default=8, help="few-shot: classes")
    parser.add_argument("--threads", type=int, help="torch and OpenMP/BLAS threads (default: POLYMODAL_THREADS)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, help="ShapesWorld folder to reuse, or to generate and keep")
    parser.add_argument("--out", type=Path, help="also write every figure and the machine here (JSON)")
    args = parser.parse_args()
    try:
        import sklearn
    except ImportError:
        print(
            "scikit-learn is missing: install the test extra (make setup, or pip install scikit-learn)", file=sys.stderr
        )
        sys.exit(2)
    budget = ThreadBudget(fixed=args.threads)
    args.threads = budget.threads
    torch.manual_seed(args.seed)
    print(machine_header())  # CPU, flags, threads and matmul peaks beside the figures
    machine = machine_record(choose_precision("fp32", "cpu"), budget.choice)
    load = os.getloadavg()
    print(f"{describe_record(machine)} (polymodal fit); scikit-learn {sklearn.__version__} in float64")
    print(f"load average at the start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (1, 5, 15 min)")
    results: dict[str, Any] = {"machine": machine, "args": {k: str(v) for k, v in vars(args).items()}}
    results["load_average_start"] = load
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="polymodal-fit-bench-") as tmp:
        data = args.data or Path(tmp) / "shapes"
        if not is_complete(data, args.n, 0, 64, speech=True):
            t0 = time.perf_counter()
            generate_shapesworld(data, args.n, seed=0, image_size=64, workers=2, progress=False, speech=True)
            print(f"ShapesWorld n={args.n} with speech generated in {time.perf_counter() - t0:.0f} s: {data}")
        tasks = {t.name: t for t in make_tasks(data, args.shots, args.classes)}
        results["tasks"] = {}
        for name in [t.strip() for t in args.tasks.split(",") if t.strip()]:
            if name not in tasks:
                raise SystemExit(f"--tasks: unknown {name!r}; choose from {', '.join(tasks)}")
            record = run_task(tasks[name], data, Path(tmp), args)
            results["tasks"][name] = record
            print_task(name, record, args.time_limit)
        print_summary(results["tasks"])
    load = os.getloadavg()
    results["load_average_end"] = load
    results["wall_seconds"] = time.perf_counter() - started
    print(f"\nload average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; wall {results['wall_seconds']:.0f} s")
    if args.out:
        write_atomic(args.out, json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
