"""The training loop, on Hugging Face Accelerate.

Accelerate owns devices, DDP/FSDP wrapping, mixed precision and gradient synchronisation;
this loop owns what makes a run trustworthy: deterministic batches addressable by step
(so resume is exact), atomic checkpoints with optimizer/scheduler/RNG state, best-checkpoint
selection and early stopping on a named metric, and metrics written as JSONL.

Only the main process writes files. An objective (see ``objectives.py``) joins the model and its
losses; its learnable parameters (temperatures) are optimised and checkpointed with it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import DistributedType, set_seed
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from polymodal.fsutil import write_atomic
from polymodal.hardware import PrecisionChoice, ThreadBudget, choose_precision, machine_record
from polymodal.modules.losses.distributed import distributed_rank
from polymodal.progress import ProgressReporter
from polymodal.train.checkpoint import list_checkpoints, load_checkpoint, prune_checkpoints, save_checkpoint
from polymodal.train.config import TrainConfig
from polymodal.train.metrics_log import MetricsLog
from polymodal.train.optim import cosine_with_warmup, param_groups
from polymodal.train.sampler import StepBatchSampler

ValidateFn = Callable[[nn.Module], dict[str, float]]


class TrainModule(nn.Module):
    """Model + objective as one module, so DDP wraps (and checkpoints hold) both."""

    def __init__(self, model: nn.Module, objective: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.objective = objective

    def forward(self, batch: Any) -> dict[str, Tensor]:
        return self.objective(self.model, batch)


@dataclass
class TrainResult:
    step: int
    stopped_early: bool
    best_metric: float | None
    best_step: int | None
    last_losses: dict[str, float] = field(default_factory=dict)
    samples_per_second: float = 0.0
    skipped_batches: int = 0
    dropped_samples: int = 0  # bad samples skipped inside batches (lenient mode)
    transfer: dict[str, Any] | None = None  # what model.init_from copied: source, tensors transferred / total
    processes: int = 1  # of the launch: `accelerate launch --num_processes 2` without --multi_gpu starts one on CPU
    machine: dict[str, Any] = field(default_factory=dict)  # CPU, flags, and the precision and threads chosen (why)


def _batch_size_of(batch: Any) -> int:
    ids = getattr(batch, "ids", None)
    if ids is not None:
        return len(ids)
    if isinstance(batch, dict):
        first = next(iter(batch.values()))
        return int(first.shape[0])
    if isinstance(batch, (tuple, list)):
        return int(batch[0].shape[0])
    return int(batch.shape[0])


def _to_device(batch: Any, device: torch.device) -> Any:
    if hasattr(batch, "to"):
        return batch.to(device)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


def _accelerator(precision: PrecisionChoice) -> Accelerator:
    """An Accelerator with ``precision``, even when an earlier run in this process used another.

    Accelerate keeps one process-wide state and refuses a second Accelerator with a different
    mixed precision; several recipes in one process (the demo, a pretrain -> fine-tune chain, tests)
    each need their own. Resetting only the AcceleratorState keeps the process group (PartialState),
    so this is safe under a distributed launch too.
    """
    name = precision.accelerate_name
    if AcceleratorState._shared_state and AcceleratorState().mixed_precision != name:
        AcceleratorState._reset_state(reset_partial_state=False)
    return Accelerator(mixed_precision=name, cpu=not torch.cuda.is_available())


def training_device() -> torch.device:
    """Where a run trains: this process's CUDA device when there is one, else the CPU."""
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def end_distributed() -> bool:
    """Tear the process group down, together, after training; True if there was one (a launched process).

    The barrier keeps a rank from tearing down while another is still writing the model. Call it on
    success only: after a failure on one rank the barrier would wait for ranks that never come. A no-op
    (False) in a single process. A launched process should then leave with :func:`exit_launched_process`.
    """
    if distributed_rank() is None:
        return False
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
    return True


def exit_launched_process(code: int = 0) -> NoReturn:
    """End a process of a distributed launch now, with ``code``, skipping the interpreter's teardown.

    Why: on 2 loaded cores about one 2-process gloo run in ten (one in three with more load) ended with
    rank 1 killed by SIGABRT ("terminate called without an active exception") after training and
    ``end_distributed`` had finished, so ``accelerate launch`` reported the run as failed. The core dump
    shows the cause (torch 2.13): gloo's worker threads outlive ``destroy_process_group``, and a collective
    started during backward (DDP's gradient all-reduce) keeps, in its thread-local state, the Python
    context that ``torch.autograd.backward`` stashes there. A worker that releases such a collective
    late, while the interpreter is already finalising, must take the GIL; Python ends that thread with
    ``pthread_exit`` inside a ``noexcept`` destructor, and C++ calls ``std::terminate``. Nothing the run
    writes is lost by exiting first: checkpoints, the model and the metrics log are closed before, and
    standard streams and logging are flushed here; only ``atexit`` handlers and the teardown are skipped.
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed or broken pipe: nothing more can reach it
            pass
    logging.shutdown()
    os._exit(code)


TRAIN_LOG = "train.log"  # in the run directory: the progress lines, as a terminal would have shown them
MACHINE_FILE = "machine.json"  # in the run directory: what the run trained on, and the precision and threads chosen


def _read_machine_record(run_dir: Path) -> dict[str, Any] | None:
    try:
        record = json.loads((run_dir / MACHINE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


class Trainer:
    def __init__(
        self,
        model: nn.Module,
        objective: nn.Module,
        train_dataset: Dataset,
        config: TrainConfig,
        run_dir: str | Path,
        collate_fn: Callable[[list[Any]], Any] | None = None,
        validate: ValidateFn | None = None,
        param_lrs: dict[str, float] | None = None,
        save_best: Callable[[nn.Module, Path], None] | None = None,
        accelerator: Accelerator | None = None,
        progress: bool = True,
    ) -> None:
        """``param_lrs`` maps attribute paths of ``model`` (e.g. ``"encoders.text"``) to their
        own learning rate; everything else uses ``config.lr``. ``save_best`` writes the best
        model (e.g. with ``save_model``) into ``run_dir/best`` whenever the metric improves."""
        self.config = config
        self.run_dir = Path(run_dir)
        self.validate = validate
        self.save_best = save_best
        self.progress = progress
        self.metrics_log = MetricsLog(self.run_dir, tensorboard=config.tensorboard)
        # fp16 on CPU is an error here: Accelerate would quietly train in fp32.
        self.precision = choose_precision(config.precision, training_device())
        self.threads = ThreadBudget(reserved=config.num_workers, fixed=config.threads)
        self.accelerator = accelerator or _accelerator(self.precision)
        if self.accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED):
            # Checkpoints, the best model and gradient accumulation here assume every rank holds the whole model
            # (DDP); sharded weights and optimizer states would be saved incomplete.
            raise ValueError(
                f"{self.accelerator.distributed_type.value} is not supported by polymodal's trainer yet; "
                "launch with DDP (accelerate launch --multi_gpu; README, 'Several processes, several GPUs')"
            )
        set_seed(config.seed)
        if config.gradient_checkpointing:
            for module in model.modules():
                if hasattr(module, "set_grad_checkpointing") and module is not model:
                    module.set_grad_checkpointing(True)
        self.module = TrainModule(model, objective)
        self.dataset = train_dataset
        self.collate_fn = collate_fn
        groups = param_groups(self._lr_entries(model, objective, param_lrs or {}), config.weight_decay)
        if not groups:
            raise ValueError("nothing to train: every parameter is frozen")
        # Which scheduler lr belongs to which param_lrs entry, for the log's "lrs"; its "lr" is train.lr on the
        # schedule (group 0 is a tower's when param_lrs is given, and "model" may have no group of its own).
        self._lr_index: dict[str, int] = {}
        for index, group in enumerate(groups):
            if (entry := group["name"].rsplit(".", 1)[0]) not in ("model", "objective"):
                self._lr_index.setdefault(entry, index)
        # The fused kernel (one pass over all tensors) is 4.6-5x faster than the per-tensor loop torch uses on
        # CPU by default (benchmarks/README.md); CPU and CUDA have it.
        self.fused = self.accelerator.device.type in ("cpu", "cuda")
        self.optimizer = torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, fused=self.fused)
        self.scheduler = cosine_with_warmup(self.optimizer, config.warmup_steps, config.steps, config.min_lr_ratio)
        self.wrapped, self.optimizer = self.accelerator.prepare(self.module, self.optimizer)
        self.step = 0
        self.best_metric: float | None = None
        self.best_step: int | None = None
        self.evals_without_improvement = 0
        self.stopped_early = False
        self._started_with: dict[str, Any] | None = None  # the machine record of the run this one resumes

    def _lr_entries(
        self, model: nn.Module, objective: nn.Module, param_lrs: dict[str, float]
    ) -> list[tuple[str, nn.Module, float]]:
        entries = []
        for path, lr in param_lrs.items():
            sub = model.get_submodule(path)
            entries.append((path, sub, lr))
        entries.append(("model", model, self.config.lr))
        entries.append(("objective", objective, self.config.lr))
        return entries

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    # ----------------------------------------------------------------- resume
    def resume(self, run_dir: str | Path | None = None) -> int:
        """Restore the newest complete checkpoint in ``run_dir``; returns its step (0: none)."""
        checkpoints = list_checkpoints(run_dir or self.run_dir)
        if checkpoints:
            self._restore(checkpoints[-1].path)
        previous = _read_machine_record(Path(run_dir or self.run_dir))
        # A run resumed before keeps, under started_with, the record of how it first started.
        self._started_with = None if previous is None else previous.get("started_with", previous)
        recorded = (self._started_with or {}).get("threads", {}).get("threads")
        if self.threads.chosen_from_load and isinstance(recorded, int) and recorded != self.threads.threads:
            # The thread count changes the order of float sums: the count the run started with keeps resume exact.
            self.threads.pin(recorded, f"the run started with {recorded} (a resumed run keeps its thread count)")
        if self.is_main:  # what was logged after that checkpoint is logged again (all of it, if there was none)
            self.metrics_log.rewind(self.step)
        return self.step

    def _restore(self, checkpoint: Path) -> None:
        meta = load_checkpoint(checkpoint, self.module, self.optimizer, self.scheduler)
        # Loading an optimizer state restores each group's settings, "fused" and "foreach" included: a checkpoint
        # from before the fused kernel would switch it off (and on CUDA with fp16 the grad scaler, which saw a
        # fused optimizer, would then fail at the first step). How to step is this run's choice, not the file's.
        for group in self.optimizer.param_groups:
            group["fused"], group["foreach"] = self.fused, None
        self.step = meta["step"]
        self.best_metric = meta.get("best_metric")
        self.best_step = meta.get("best_step")
        self.evals_without_improvement = meta.get("evals_without_improvement", 0)
        self.stopped_early = meta.get("stopped_early", False)

    def _checkpoint(self) -> None:
        self.accelerator.wait_for_everyone()
        if self.is_main:
            meta = {
                "best_metric": self.best_metric,
                "best_step": self.best_step,
                "evals_without_improvement": self.evals_without_improvement,
                "stopped_early": self.stopped_early,
                "micro_batches_seen": self.step * self.config.accumulate,
            }
            save_checkpoint(
                self.run_dir,
                self.step,
                self.accelerator.unwrap_model(self.wrapped),
                self.optimizer,
                self.scheduler,
                meta,
            )
            keep = {self.best_step} if self.best_step is not None else set()
            prune_checkpoints(self.run_dir, self.config.keep_last, keep)
        self.accelerator.wait_for_everyone()

    # ----------------------------------------------------------------- logging
    def _log(self, record: dict[str, Any]) -> None:
        if self.is_main:
            self.metrics_log.write(record)

    def _run_eval(self) -> bool:
        """Evaluate, track the best metric, save the best model; True means stop early."""
        if self.validate is None:
            return False
        model = self.accelerator.unwrap_model(self.wrapped).model
        model.eval()
        with torch.no_grad():
            metrics = self.validate(model)
        model.train()
        self._log({"step": self.step, "eval": metrics})
        cfg = self.config
        if cfg.metric is None:
            return False
        if cfg.metric not in metrics:
            raise KeyError(f"train.metric {cfg.metric!r} is not among the evaluation metrics {sorted(metrics)}")
        value = float(metrics[cfg.metric])
        better = self.best_metric is None or (
            value > self.best_metric if cfg.metric_mode == "max" else value < self.best_metric
        )
        if better:
            self.best_metric, self.best_step = value, self.step
            self.evals_without_improvement = 0
            if self.save_best is not None and self.is_main:
                self.save_best(model, self.run_dir / "best")
        else:
            self.evals_without_improvement += 1
        patience = cfg.early_stopping_patience
        return patience is not None and self.evals_without_improvement >= patience

    # ----------------------------------------------------------------- loop
    def _loader(self) -> DataLoader:
        cfg = self.config
        sampler = StepBatchSampler(
            len(self.dataset),  # type: ignore[arg-type]
            cfg.batch_size,
            seed=cfg.seed,
            start_batch=self.step * cfg.accumulate,
            num_batches=(cfg.steps - self.step) * cfg.accumulate,
            rank=self.accelerator.process_index,
            world_size=self.accelerator.num_processes,
            with_epoch=getattr(self.dataset, "epoch_aware", False),
        )
        # A private generator: otherwise creating the loader draws its worker base seed from
        # the global RNG, and a resumed run would drift from an uninterrupted one.
        generator = torch.Generator().manual_seed(cfg.seed + self.step)
        return DataLoader(
            self.dataset,
            batch_sampler=sampler,
            collate_fn=self.collate_fn,
            num_workers=cfg.num_workers,
            generator=generator,
        )

    def machine(self) -> dict[str, Any]:
        """What this run trains on: CPU and flags, the precision and threads chosen and why."""
        record = machine_record(self.precision, self.threads.choice)
        record["processes"] = self.accelerator.num_processes
        if self._started_with is not None:
            record["started_with"] = self._started_with
        return record

    def fit(self) -> TrainResult:
        cfg = self.config
        acc = self.accelerator
        machine = self.machine()
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            write_atomic(self.run_dir / MACHINE_FILE, json.dumps(machine, indent=1))
        self.wrapped.train()
        loader = iter(self._loader())
        log_file = self.run_dir / TRAIN_LOG if self.is_main else None
        progress = ProgressReporter(
            "train", cfg.steps, start=self.step, enabled=self.progress and self.is_main, log_file=log_file
        )
        samples, started, skipped, dropped = 0, time.perf_counter(), 0, 0
        last: dict[str, float] = {}
        stopped_early = self.stopped_early  # a resumed run that had stopped early stays stopped
        with progress:
            count = self.threads.threads
            progress.note(
                f"precision {self.precision.precision} ({self.precision.reason}); {count} thread{'s' * (count != 1)} "
                f"({self.threads.choice.reason}); {machine['cpu']}"
            )
            while self.step < cfg.steps and not stopped_early:
                totals: dict[str, float] = {}
                for _ in range(cfg.accumulate):
                    batch = next(loader)
                    dropped += getattr(batch, "num_dropped", 0)
                    if batch is None or _batch_size_of(batch) == 0:
                        skipped += 1  # every sample of the micro-batch was bad and skipped
                        continue
                    batch = _to_device(batch, acc.device)
                    with acc.autocast():
                        losses = self.wrapped(batch)
                    loss = losses["loss"]
                    if not torch.isfinite(loss):
                        raise FloatingPointError(
                            f"step {self.step}: loss is {loss.item()} ({ {k: float(v) for k, v in losses.items()} })"
                        )
                    acc.backward(loss / cfg.accumulate)
                    for k, v in losses.items():
                        totals[k] = totals.get(k, 0.0) + float(v.detach()) / cfg.accumulate
                    samples += _batch_size_of(batch) * acc.num_processes
                if cfg.grad_clip is not None:
                    grad_norm = float(acc.clip_grad_norm_(self.wrapped.parameters(), cfg.grad_clip))
                    totals["grad_norm"] = grad_norm
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
                self.step += 1
                last = totals
                rate = samples / max(time.perf_counter() - started, 1e-9)
                lrs = self.scheduler.get_last_lr()
                lr = cfg.lr * lrs[0] / self.scheduler.base_lrs[0]  # the schedule's factor is the same for every group
                progress.update(
                    self.step, f"loss {totals.get('loss', math.nan):.4f}  lr {lr:.2e}  {rate:,.0f} samples/s"
                )
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    record = {"step": self.step, "lr": lr, "samples_per_s": rate, **totals}
                    if self._lr_index:
                        record["lrs"] = {entry: lrs[i] for entry, i in self._lr_index.items()}
                    self._log(record)
                if cfg.eval_every and (self.step % cfg.eval_every == 0 or self.step == cfg.steps):
                    stopped_early = self.stopped_early = self._run_eval()
                if (
                    (cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0)
                    or self.step == cfg.steps
                    or stopped_early
                ):
                    self._checkpoint()
                if stopped_early:
                    break
        self.metrics_log.close()
        return TrainResult(
            step=self.step,
            stopped_early=stopped_early,
            best_metric=self.best_metric,
            best_step=self.best_step,
            last_losses=last,
            samples_per_second=samples / max(time.perf_counter() - started, 1e-9),
            skipped_batches=skipped,
            dropped_samples=dropped,
            processes=acc.num_processes,
            machine=machine,
        )
