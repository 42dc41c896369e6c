"""``run_recipe``: read the data, build the model and its objective, train, and save the model with its processors.

The run directory ends up holding the resolved ``config.yaml`` (paths made absolute), ``data.json`` (the
splits' hash), ``metrics.jsonl``, ``train.log``, checkpoints, ``bad_samples.jsonl`` (when samples were skipped),
``train_summary.json``, and ``best/`` and ``model/`` (saved model directories).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
import yaml
from accelerate import PartialState
from accelerate.utils import set_seed

from polymodal.config import ConfigError
from polymodal.data.errors import BadSampleSummary
from polymodal.data.processors import TOKENIZER_DIR
from polymodal.data.readers import expand_shards
from polymodal.data.readers.webdataset import is_shard_pattern
from polymodal.fsutil import data_hash, listing_hash, write_atomic
from polymodal.models import save_model
from polymodal.models.saved import ANSWERS_FILE
from polymodal.train.bad_samples import BAD_SAMPLES_FILE, RunBadSampleLog, bad_samples_note
from polymodal.train.build import (
    build_recipe_model,
    check_model_fits_data,
    check_recipe_before_data,
    make_objective,
    model_inputs,
    recipe_model_config,
    with_adversarial_examples,
)
from polymodal.train.checkpoint import list_checkpoints
from polymodal.train.objectives import ContrastiveObjective
from polymodal.train.prepare import (
    PATH_OPTIONS,
    choose_tokenizer,
    default_view,
    describe_data,
    hold_out,
    labels_for,
    make_datasets,
    read_rows,
    saved_outputs,
    split_options,
    split_path,
)
from polymodal.train.recipe import Recipe
from polymodal.train.resume import CONFIG_NAME, check_resume_config, with_absolute_paths
from polymodal.train.trainer import Trainer, TrainResult, append_train_log
from polymodal.train.validation import make_validator

SUMMARY_FILE = "train_summary.json"
DATA_FILE = "data.json"  # in the run directory: the splits the run trains on and their hash


def data_fingerprint(recipe: Recipe) -> dict[str, Any]:
    """The identity of a recipe's data that is cheap to take: the sha256 of its split files (manifests, a COCO
    JSON, a CSV) and of files its reader options name (split lists), names and contents as ``polymodal eval``
    hashes what it reads, not of the media they point to; a split that is a folder or shards by its files' names
    and sizes; and the reader options. ``manifests`` (its key since runs had only those) names the splits."""
    root = Path(recipe.data.path).resolve()
    roles = [role for role in ("train", "val") if getattr(recipe.data, role)]
    splits = [split_path(recipe.data, getattr(recipe.data, role)).resolve() for role in roles]
    options = {f"{role}_options": split_options(recipe.data, role) for role in roles}
    named = [Path(v) for role in options.values() for k, v in role.items() if k in PATH_OPTIONS]
    files = [p for p in [*splits, *named] if p.is_file() and p.suffix.lower() != ".tar"]
    digest = data_hash(files, root)
    listed = [p for p in splits if p.exists() and p not in files]
    shards = [Path(s) for p in splits if not p.exists() and is_shard_pattern(p) for s in expand_shards(p)]
    if listed or shards or any(options.values()):  # manifests alone: their content hash, as runs have recorded it
        listing = {str(p): listing_hash(p) for p in [*listed, *shards] if p.exists()}
        digest = hashlib.sha256(
            json.dumps([digest, listing, options], sort_keys=True, default=str).encode()
        ).hexdigest()
    return {"path": str(root), "manifests": [str(p) for p in splits], "hash": digest}


def same_splits_note(recipe: Recipe) -> str | None:
    """A warning when data.val reads what data.train reads (the same split and options): validation would measure
    how well the model fits its training rows."""
    data = recipe.data
    if data.val is None or split_path(data, data.train).resolve() != split_path(data, data.val).resolve():
        return None
    if split_options(data, "train") != split_options(data, "val"):
        return None
    return (
        f"warning: data.val reads the same rows as data.train ({split_path(data, data.train)}, the same options): "
        "validation measures the fit to training rows; give data.val_options (folds, split_list) or data.val_share"
    )


def changed_data_note(run_dir: Path, now: dict[str, Any]) -> str | None:
    """A warning when the data a resumed run is given is not what it started on (by :func:`data_fingerprint`)."""
    try:
        then = json.loads((run_dir / DATA_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # a run from before the fingerprint, or killed before it was written
    if not isinstance(then, dict) or then.get("hash") == now["hash"]:
        return None
    return (
        f"warning: the training data changed since {run_dir} started: its splits ({', '.join(now['manifests'])}) "
        f"hash {str(then.get('hash'))[:12]} in {run_dir / DATA_FILE}, {now['hash'][:12]} now; the run continues "
        "on the data as it is now, so it will not end as one never stopped would have"
    )


def finished_run(recipe: Recipe, run_dir: Path) -> TrainResult | None:
    """The result of a run that already trained to its end (or stopped early) and saved its summary, else None (a
    run killed after its last checkpoint but before its model was saved is not finished)."""
    checkpoints = list_checkpoints(run_dir)
    if not checkpoints or not (run_dir / SUMMARY_FILE).is_file():
        return None
    newest = checkpoints[-1]
    if newest.step < recipe.train.steps and not newest.meta.get("stopped_early"):
        return None
    summary = json.loads((run_dir / SUMMARY_FILE).read_text(encoding="utf-8"))
    bad = summary.get("bad_samples", 0)
    return TrainResult(
        step=newest.step,
        stopped_early=bool(newest.meta.get("stopped_early")),
        best_metric=newest.meta.get("best_metric"),
        best_step=newest.meta.get("best_step"),
        last_losses=summary.get("last_losses", {}),
        samples_per_second=summary.get("samples_per_second", 0.0),
        skipped_batches=summary.get("skipped_batches", 0),
        machine=summary.get("machine", {}),
        bad_samples=BadSampleSummary(
            bad, summary.get("bad_samples_by_kind", {}), str(run_dir / BAD_SAMPLES_FILE) if bad else None
        ),
        already_complete=True,
    )


def run_recipe(recipe: Recipe, run_dir: str | Path, resume: bool = False, progress: bool = True) -> TrainResult:
    run_dir = Path(run_dir)
    if not resume and list_checkpoints(run_dir):
        # Pruning keeps the highest steps, so an old run's checkpoints would win a later --resume.
        raise ConfigError(
            f"{run_dir} already holds a run's checkpoints; pass --resume {run_dir} or choose another --out"
        )
    if resume:
        check_resume_config(recipe, run_dir)
        finished = finished_run(recipe, run_dir)
        if finished is not None:
            return finished
    # Under a distributed launch this joins the process group, so only the main process writes the run's files.
    # The others log bad samples to their own file (appends from two processes to one file could interleave).
    state = PartialState(cpu=not torch.cuda.is_available())
    is_main = state.is_main_process
    bad_log = RunBadSampleLog(
        run_dir / (BAD_SAMPLES_FILE if is_main else f"bad_samples.rank{state.process_index}.jsonl"),
        strict=recipe.data.strict,
        fresh=not resume,
    )

    # 1. Data: rows, tokenizer, labels.
    reads = model_inputs(check_recipe_before_data(recipe))  # a file in another column is not read
    train_rows, train_layout = read_rows(recipe.data, "train", bad_log, reads)
    if not train_rows:
        counted = bad_log.finish()
        kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(counted.by_kind.items()))
        why = f": {counted.total} bad ({kinds}), listed in {bad_log.path}" if counted.total else ""
        raise ConfigError(f"{split_path(recipe.data, recipe.data.train)}: no usable samples{why}")
    read = {"train": (train_rows, train_layout)}
    if recipe.data.val:
        read["val"] = read_rows(recipe.data, "val", bad_log, reads)
    val_rows = read["val"][0] if "val" in read else []
    if recipe.data.val_share is not None:
        classifier = recipe.objective.kind == "classification" and recipe.objective.loss != "mse"
        train_rows, val_rows = hold_out(train_rows, recipe.data.val_share, by_class=classifier)
    data_read = describe_data(recipe.data, read)
    if recipe.data.val_share is not None:
        data_read += f"; {len(val_rows):,} of them held out to validate (data.val_share {recipe.data.val_share:g})"
    tokenizer, tokenizer_from_run = choose_tokenizer(recipe, train_rows, run_dir, resume)
    view = default_view(recipe)
    labels = labels_for(recipe, train_rows, view, run_dir, resume)

    # 2. The model's config decides the modalities to prepare (a captioner also reads its target texts, a
    # generator its target images).
    config = recipe_model_config(recipe, tokenizer.vocab_size, labels.preset_args)
    check_model_fits_data(config, recipe, tokenizer.vocab_size, labels.vocab)
    datasets = make_datasets(recipe, model_inputs(config), tokenizer, train_rows, val_rows, view, labels, bad_log)

    # 3. Model and objective, seeded before the model exists: its initial weights are part of what the seed fixes.
    set_seed(recipe.train.seed)
    model, transfer = build_recipe_model(recipe, config)
    objective = make_objective(recipe, model, tokenizer)
    trained = with_adversarial_examples(recipe, objective)  # validation and saving read the objective

    fingerprint = data_fingerprint(recipe)
    data_note = changed_data_note(run_dir, fingerprint) if resume else None
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        resolved = with_absolute_paths(recipe.model_dump(mode="json"))  # resumable from any working directory
        write_atomic(run_dir / CONFIG_NAME, yaml.safe_dump(resolved, sort_keys=False))
        if data_note is None:  # a changed fingerprint stays the one the run started on
            write_atomic(run_dir / DATA_FILE, json.dumps(fingerprint, indent=1))
        if not tokenizer_from_run:
            tokenizer.save(run_dir / TOKENIZER_DIR)
        if labels.vocab is not None:
            write_atomic(run_dir / ANSWERS_FILE, json.dumps(labels.vocab, indent=1))

    # 4. Train.
    validate = None
    if datasets.val is not None:
        validate = make_validator(objective, recipe.objective.kind, datasets.val, recipe.train.batch_size)

    answers, outputs = saved_outputs(recipe, view, labels)

    def save(model_to_save: torch.nn.Module, where: Path) -> None:
        # A contrastive objective's learned temperatures go with the model, for zero-shot probabilities.
        scales = objective.logit_scales() if isinstance(objective, ContrastiveObjective) else None
        save_model(where, model_to_save, datasets.processors, answers, outputs, scales)  # type: ignore[arg-type]

    trainer = Trainer(
        model,
        trained,
        datasets.train,
        recipe.train,
        run_dir,
        collate_fn=datasets.train.collate_fn,
        validate=validate,
        param_lrs=recipe.model.lrs or None,
        save_best=save,
        progress=progress,
    )
    if resume:
        trainer.resume()
    for note in (data_read, data_note, same_splits_note(recipe)):
        if note is not None:
            trainer.notes.append(note)
    result = trainer.fit()
    result.transfer = transfer.to_dict() if transfer is not None else None

    # 5. Save the last model and what the run did.
    if trainer.is_main:
        save(model, run_dir / "model")
        summary = result.bad_samples = bad_log.finish()
        note = bad_samples_note(summary)
        if note is not None:
            append_train_log(run_dir, note)
        write_atomic(
            run_dir / SUMMARY_FILE,
            json.dumps(
                {
                    "steps": result.step,
                    "stopped_early": result.stopped_early,
                    "best_metric": result.best_metric,
                    "best_step": result.best_step,
                    "samples_per_second": result.samples_per_second,
                    "last_losses": result.last_losses,
                    "bad_samples": summary.total,
                    "bad_samples_by_kind": summary.by_kind,
                    "skipped_batches": result.skipped_batches,
                    "transfer": result.transfer,
                    "machine": result.machine,
                },
                indent=2,
            ),
        )
    return result
