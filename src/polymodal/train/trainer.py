"""The training loop, on Hugging Face Accelerate.

Accelerate owns devices, DDP/FSDP wrapping, mixed precision and gradient synchronisation;
this loop owns what makes a run trustworthy: deterministic batches addressable by step
(so resume is exact), atomic checkpoints with optimizer/scheduler/RNG state, best-checkpoint
selection and early stopping on a named metric, and metrics written as JSONL.

Only the main process writes files. An objective (see ``objectives.py``) joins the model and its
losses; its learnable parameters (temperatures) are optimised and checkpointed with it. An objective with
``phases`` (a GAN: discriminator, then generator) gets one optimizer and schedule per phase, and each step runs
its phases in order on the same batch, each stepping only its own parameters.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import DistributedDataParallelKwargs, DistributedType, set_seed
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from polymodal.data.errors import BadSampleSummary
from polymodal.fsutil import write_atomic
from polymodal.hardware import PrecisionChoice, ThreadBudget, choose_precision, machine_record, threads_phrase
from polymodal.modules.losses.distributed import distributed_rank
from polymodal.progress import ProgressReporter
from polymodal.train.checkpoint import (
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    restore_newest,
    save_checkpoint,
)
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

    def forward(self, batch: Any, phase: str | None = None) -> dict[str, Tensor]:
        if phase is None:
            return self.objective(self.model, batch)  # type: ignore[no-any-return]
        return self.objective(self.model, batch, phase)  # type: ignore[no-any-return]


class PhaseStates:
    """Several optimizers (or schedulers) saved and restored as one state: ``{"phases": {name: state}}``."""

    def __init__(self, parts: dict[str, Any]) -> None:
        self.parts = parts

    def state_dict(self) -> dict[str, Any]:
        return {"phases": {name: part.state_dict() for name, part in self.parts.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = state.get("phases", {})
        if set(saved) != set(self.parts):
            raise ValueError(f"the checkpoint has optimizer phases {sorted(saved)}, this run {sorted(self.parts)}")
        for name, part in self.parts.items():
            part.load_state_dict(saved[name])


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
    bad_samples: BadSampleSummary | None = None  # each bad sample once, with the file that lists them
    already_complete: bool = False  # a resumed run that had finished: nothing was trained, the result is its summary


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped by Ctrl-C or SIGTERM (``signum``) at a step boundary; ``checkpointed``: the run's newest
    checkpoint is at ``step``, so ``--resume`` continues exactly from there (False: nothing was trained yet);
    ``saved``: it was written now (not the one a resume started from)."""

    def __init__(
        self, run_dir: Path, step: int, checkpointed: bool, saved: bool = True, signum: int = signal.SIGINT
    ) -> None:
        self.run_dir, self.step, self.checkpointed, self.signum = run_dir, step, checkpointed, signum
        if checkpointed:
            kept = "checkpoint saved" if saved else f"its checkpoint of step {step} stands"
            message = f"interrupted at step {step}; {kept}; resume with `polymodal train --resume {run_dir}`"
        else:
            message = f"interrupted at step {step}, before anything was trained: no checkpoint to resume from"
        super().__init__(message)


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)  # Ctrl-C; a scheduler's preemption, `docker stop`, a launcher's


class StepBoundaryInterrupt:
    """Ctrl-C (SIGINT) or SIGTERM while training, taken as a request to stop at the next step boundary, where a
    checkpoint is consistent (``agreed``); a second one stops at once, without one.

    In a ``distributed`` run the ranks agree at each step boundary, so that all stop at the same step (one may get
    the signal during a step the others have finished). There a second signal does not stop at once: Ctrl-C reaches
    every process and the launcher passes its own on, so each rank gets it twice; the launcher kills the ranks
    itself when they outlast its grace period (30 s for torchrun and accelerate). Signal handlers run only in the
    main thread: elsewhere a signal keeps its default effect.
    """

    def __init__(self, *, distributed: bool = False, announce: bool = True) -> None:
        self.distributed, self.announce = distributed, announce
        self.requested: int | None = None  # the signal that asked
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StepBoundaryInterrupt:
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                # A process started with a signal ignored (nohup, a background job) keeps ignoring it.
                if signal.getsignal(signum) is not signal.SIG_IGN:
                    self._previous[signum] = signal.signal(signum, self._request)
        return self

    def _request(self, signum: int, frame: FrameType | None) -> None:
        if self.requested is not None:
            if self.distributed:
                return
            raise KeyboardInterrupt
        self.requested = signum
        if self.announce:
            again = "" if self.distributed else " (Ctrl-C again: stop now, without one)"
            print(f"stopping after this step to save a checkpoint{again}", file=sys.stderr, flush=True)

    def agreed(self, accelerator: Accelerator) -> int | None:
        """At a step boundary: the signal to stop for, if any rank got one (the same answer on every rank)."""
        if not self.distributed:
            return self.requested
        asked = torch.tensor([self.requested or 0], device=accelerator.device)
        signum = int(accelerator.gather(asked).max())
        return signum or None

    def __exit__(self, *exc: object) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()


def _leave_stop_signals(worker_id: int) -> None:
    """A DataLoader worker leaves Ctrl-C and SIGTERM to the trainer, which finishes its step (with the worker's
    batches) first."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


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


def _accelerator(precision: PrecisionChoice, several_phases: bool = False) -> Accelerator:
    """An Accelerator with ``precision``, even when an earlier run in this process used another.

    Accelerate keeps one process-wide state and refuses a second Accelerator with a different
    mixed precision; several recipes in one process (the demo, a pretrain -> fine-tune chain, tests)
    each need their own. Resetting only the AcceleratorState keeps the process group (PartialState),
    so this is safe under a distributed launch too. With ``several_phases`` DDP expects parameters a phase
    does not use (a GAN's generator in the discriminator's step).
    """
    name = precision.accelerate_name
    if AcceleratorState._shared_state and AcceleratorState().mixed_precision != name:
        AcceleratorState._reset_state(reset_partial_state=False)
    handlers = [DistributedDataParallelKwargs(find_unused_parameters=True)] if several_phases else None
    return Accelerator(mixed_precision=name, cpu=not torch.cuda.is_available(), kwargs_handlers=handlers)


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


def append_train_log(run_dir: Path, line: str) -> None:
    """A line of the run's own (an interruption, the bad samples skipped) in train.log, after the progress lines."""
    with open(run_dir / TRAIN_LOG, "a", encoding="utf-8") as log:
        log.write(line + "\n")


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
        self.accelerator = accelerator or _accelerator(self.precision, bool(getattr(objective, "phases", None)))
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
        self.after_phase = getattr(objective, "after_phase", None)
        # The fused kernel (one pass over all tensors) is 4.6-5x faster than the per-tensor loop torch uses on
        # CPU by default (benchmarks/README.md); CPU and CUDA have it.
        self.fused = self.accelerator.device.type in ("cpu", "cuda")
        self.phases: list[str | None] = list(getattr(objective, "phases", None) or [None])
        owners = self._phase_owners(model, objective) if self.phases != [None] else {None: [("model", model)]}
        optimizers, self.schedulers = [], []
        # Which scheduler lr belongs to which param_lrs entry, for the log's "lrs"; its "lr" is train.lr on the
        # schedule (group 0 is a tower's when param_lrs is given, and "model" may have no group of its own).
        self._lr_index: dict[str, int] = {}
        for phase in self.phases:
            entries = self._lr_entries(model, owners[phase], param_lrs or {})
            if phase == self.phases[0]:
                entries.append(("objective", objective, config.lr))
            groups = param_groups(entries, config.weight_decay)
            if not groups:
                where = "" if phase is None else f" of phase {phase!r}"
                raise ValueError(f"nothing to train{where}: every parameter is frozen")
            if phase == self.phases[0]:
                for index, group in enumerate(groups):
                    if (entry := group["name"].rsplit(".", 1)[0]) in (param_lrs or {}):
                        self._lr_index.setdefault(entry, index)
            optimizer = torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, fused=self.fused)
            optimizers.append(optimizer)
            self.schedulers.append(
                cosine_with_warmup(optimizer, config.warmup_steps, config.steps, config.min_lr_ratio)
            )
        prepared = self.accelerator.prepare(self.module, *optimizers)
        self.wrapped, self.optimizers = prepared[0], list(prepared[1:])
        self.optimizer = self.optimizers[0]
        self.scheduler = self.schedulers[0]
        several = len(self.phases) > 1
        self._optimizer_state = (
            PhaseStates(dict(zip(self.phases, self.optimizers, strict=True))) if several else self.optimizer
        )
        self._scheduler_state = (
            PhaseStates(dict(zip(self.phases, self.schedulers, strict=True))) if several else self.scheduler
        )
        self.step = 0
        self.best_metric: float | None = None
        self.best_step: int | None = None
        self.evals_without_improvement = 0
        self.stopped_early = False
        self._started_with: dict[str, Any] | None = None  # the machine record of the run this one resumes
        self._checkpointed_step: int | None = None  # the step of the newest checkpoint written or restored
        self._resumed_step: int | None = None  # the step of the checkpoint this session resumed from
        self._resume_note: str | None = None  # what resume() found, said when training starts
        self.notes: list[str] = []  # the caller's lines (a warning about the run), said when training starts
        self._progress: ProgressReporter | None = None  # while fit() runs: where evaluations are said

    def _lr_entries(
        self, model: nn.Module, owned: list[tuple[str, nn.Module]], param_lrs: dict[str, float]
    ) -> list[tuple[str, nn.Module, float]]:
        """(name, module, lr) for the param_lrs entries inside ``owned`` (these first), then ``owned``."""
        entries = []
        for path, lr in param_lrs.items():
            if any(path == name or path.startswith(name + ".") or name == "model" for name, _ in owned):
                entries.append((path, model.get_submodule(path), lr))
        entries += [(name, module, self.config.lr) for name, module in owned]
        return entries

    @staticmethod
    def _phase_owners(model: nn.Module, objective: nn.Module) -> dict[str | None, list[tuple[str, nn.Module]]]:
        """Each phase's submodules (``objective.phase_modules(model)``); every trainable parameter must belong to
        exactly one phase."""
        owners = {
            phase: [(path, model.get_submodule(path)) for path in paths]
            for phase, paths in objective.phase_modules(model).items()  # type: ignore[operator]
        }
        claimed: dict[int, str] = {}
        for phase, modules in owners.items():
            for path, module in modules:
                for p in module.parameters():
                    if id(p) in claimed and claimed[id(p)] != phase:
                        raise ValueError(f"{path}: parameters in two phases ({claimed[id(p)]} and {phase})")
                    claimed[id(p)] = phase  # type: ignore[assignment]
        for name, p in model.named_parameters():
            if p.requires_grad and id(p) not in claimed:
                raise ValueError(f"{name} is trainable but in no phase of {type(objective).__name__}")
        return owners  # type: ignore[return-value]

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    # ----------------------------------------------------------------- resume
    def resume(self, run_dir: str | Path | None = None) -> int:
        """Restore the newest checkpoint in ``run_dir`` that loads; returns its step (0: none)."""
        where = Path(run_dir or self.run_dir)
        checkpoints = list_checkpoints(where)
        if checkpoints:
            skipped = restore_newest(checkpoints, self._restore, set_aside=self.is_main)
            went_back = f" ({'; '.join(skipped)})" if skipped else ""  # past checkpoints that do not load
            self._resume_note = f"resuming {where} from step {self.step}{went_back}"
        else:
            self._resume_note = f"no checkpoint in {where} yet: starting from step 0"
        previous = _read_machine_record(where)
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
        meta = load_checkpoint(checkpoint, self.module, self._optimizer_state, self._scheduler_state)
        # Loading an optimizer state restores each group's settings, "fused" and "foreach" included: a checkpoint
        # from before the fused kernel would switch it off (and on CUDA with fp16 the grad scaler, which saw a
        # fused optimizer, would then fail at the first step). How to step is this run's choice, not the file's.
        for optimizer in self.optimizers:
            for group in optimizer.param_groups:
                group["fused"], group["foreach"] = self.fused, None
        self.step = self._checkpointed_step = self._resumed_step = meta["step"]
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
                self._optimizer_state,
                self._scheduler_state,
                meta,
            )
            keep = {self.best_step} if self.best_step is not None else set()
            prune_checkpoints(self.run_dir, self.config.keep_last, keep)
        self._checkpointed_step = self.step
        self.accelerator.wait_for_everyone()

    def _stop_interrupted(self, signum: int) -> NoReturn:
        """At a step boundary after Ctrl-C or SIGTERM: checkpoint this step (unless one holds it already), then
        stop."""
        checkpointed = self._checkpointed_step == self.step
        saved = checkpointed and self.step != self._resumed_step  # a checkpoint written by this session
        if not checkpointed and self.step > 0:
            self._checkpoint()
            checkpointed = saved = True
        self.metrics_log.close()
        interrupted = TrainingInterrupted(self.run_dir, self.step, checkpointed, saved, signum)
        if self.is_main:
            append_train_log(self.run_dir, str(interrupted))
        raise interrupted

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
        if cfg.metric is not None and cfg.metric not in metrics:
            raise KeyError(f"train.metric {cfg.metric!r} is not among the evaluation metrics {sorted(metrics)}")
        value = None if cfg.metric is None else float(metrics[cfg.metric])
        better = value is not None and cfg.improved(value, self.best_metric)
        self._say_eval(metrics, better)
        if value is None:
            return False
        if better:
            self.best_metric, self.best_step = value, self.step
            self.evals_without_improvement = 0
            if self.save_best is not None and self.is_main:
                self.save_best(model, self.run_dir / "best")
        else:
            self.evals_without_improvement += 1
        patience = cfg.early_stopping_patience
        return patience is not None and self.evals_without_improvement >= patience

    @contextmanager
    def _failure_logged(self, progress: ProgressReporter) -> Iterator[None]:
        """While training: evaluations said through ``progress``; an exception that ends the run written to
        train.log (with its traceback) before it propagates, so the run directory says how the run ended."""
        self._progress = progress
        try:
            yield
        except TrainingInterrupted:
            raise  # it logs its own line
        except BaseException as e:
            if self.is_main:
                what = "interrupted" if isinstance(e, KeyboardInterrupt) else f"{type(e).__name__}: {e}"
                append_train_log(
                    self.run_dir, f"stopped at step {self.step}: {what}\n{traceback.format_exc().rstrip()}"
                )
            raise
        finally:
            self._progress = None

    def _say_eval(self, metrics: dict[str, float], better: bool) -> None:
        """One line per evaluation in the terminal and train.log: the step and each metric (``train.metric``
        first, marked when it is the best so far)."""
        if self._progress is None:
            return
        first = [self.config.metric] if self.config.metric in metrics else []
        shown = [f"{name} {metrics[name]:.4g}" for name in first + sorted(set(metrics) - set(first))]
        best = " (best)" if better else ""
        self._progress.note(f"eval {self.step}/{self.config.steps}  {'  '.join(shown)}{best}")

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
            worker_init_fn=_leave_stop_signals if cfg.num_workers else None,
        )

    def _phase_step(
        self, phase: str | None, optimizer: torch.optim.Optimizer, micro_batches: list[Any]
    ) -> dict[str, float]:
        """Forward and backward every micro-batch for ``phase``, clip, step its optimizer; its losses by name
        (with several phases, the total is ``loss_<phase>``)."""
        cfg, acc = self.config, self.accelerator
        totals: dict[str, float] = {}
        for batch in micro_batches:
            with acc.autocast():
                losses = self.wrapped(batch) if phase is None else self.wrapped(batch, phase)
            loss = losses["loss"]
            if not torch.isfinite(loss):
                where = "" if phase is None else f" ({phase})"
                raise FloatingPointError(
                    f"step {self.step}{where}: loss is {loss.item()} ({ {k: float(v) for k, v in losses.items()} })"
                )
            acc.backward(loss / cfg.accumulate)
            for k, v in losses.items():
                name = f"loss_{phase}" if k == "loss" and phase is not None else k
                totals[name] = totals.get(name, 0.0) + float(v.detach()) / cfg.accumulate
        # The norm is logged with or without clipping (a GAN's main diagnostic); without clipping it is measured only
        # for the steps that are logged (an infinite bound clips nothing, but the pass over every gradient costs).
        params = [p for group in optimizer.param_groups for p in group["params"]]
        logged = (self.step + 1) % cfg.log_every == 0 or self.step + 1 == cfg.steps
        if cfg.grad_clip is not None or logged:
            bound = cfg.grad_clip if cfg.grad_clip is not None else math.inf
            totals["grad_norm" if phase is None else f"grad_norm_{phase}"] = float(acc.clip_grad_norm_(params, bound))
        optimizer.step()
        # Every phase's gradients go: the generator's pass also reaches the discriminator's parameters.
        for each in self.optimizers:
            each.zero_grad(set_to_none=True)
        if self.after_phase is not None:
            self.after_phase(self.accelerator.unwrap_model(self.wrapped).model, phase)
        return totals

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
        interrupt = StepBoundaryInterrupt(distributed=acc.num_processes > 1, announce=self.is_main)
        with progress, interrupt, self._failure_logged(progress):
            if self._resume_note is not None:
                progress.note(self._resume_note)
            for note in self.notes:
                progress.note(note)
            count = self.threads.threads
            progress.note(
                f"precision {self.precision.precision} ({self.precision.reason}); {threads_phrase(count)} "
                f"({self.threads.choice.reason}); {machine['cpu']}"
            )
            while self.step < cfg.steps and not stopped_early:
                stop_signal = interrupt.agreed(acc)
                if stop_signal is not None:
                    self._stop_interrupted(stop_signal)
                micro_batches = []
                for _ in range(cfg.accumulate):
                    batch = next(loader)
                    dropped += getattr(batch, "num_dropped", 0)
                    if batch is None or _batch_size_of(batch) == 0:
                        skipped += 1  # every sample of the micro-batch was bad and skipped
                        continue
                    micro_batches.append(_to_device(batch, acc.device))
                    samples += _batch_size_of(batch) * acc.num_processes
                totals: dict[str, float] = {}
                for phase, optimizer, scheduler in zip(self.phases, self.optimizers, self.schedulers, strict=True):
                    totals.update(self._phase_step(phase, optimizer, micro_batches))
                    scheduler.step()
                if len(self.phases) > 1:
                    totals["loss"] = sum(totals[f"loss_{phase}"] for phase in self.phases)
                self.step += 1
                last = totals
                rate = samples / max(time.perf_counter() - started, 1e-9)
                lrs = self.scheduler.get_last_lr()
                lr = cfg.lr * lrs[0] / self.scheduler.base_lrs[0]  # the schedule's factor is the same for every group
                shown = [f"loss_{p}" for p in self.phases] if len(self.phases) > 1 else ["loss"]
                losses_text = "  ".join(f"{name} {totals.get(name, math.nan):.4f}" for name in shown)
                progress.update(self.step, f"{losses_text}  lr {lr:.2e}  {rate:,.0f} samples/s")
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    record = {"step": self.step, "lr": lr, "samples_per_s": rate, **totals}
                    if self._lr_index:
                        record["lrs"] = {entry: lrs[i] for entry, i in self._lr_index.items()}
                    self._log(record)
                if cfg.evaluation_due(self.step):
                    stopped_early = self.stopped_early = self._run_eval()
                if cfg.checkpoint_due(self.step) or self.step == cfg.steps or stopped_early:
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
