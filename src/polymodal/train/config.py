"""The ``train:`` section of a recipe."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, field_validator, model_validator

from polymodal.config import Config
from polymodal.hardware import normalize_precision

DEFAULT_CHECKPOINT_STEPS = 100  # the fewest steps between the default checkpoints


def metric_direction(name: str) -> Literal["max", "min"]:
    """Which way a metric improves: losses and errors (``caption_loss``, ``rmse``, ``mae``) fall, the rest rise."""
    return "min" if name.endswith(("loss", "rmse", "mae", "error")) else "max"


class TrainConfig(Config):
    steps: int = Field(ge=1, description="optimizer steps")
    batch_size: int = Field(64, ge=1, description="global batch per optimizer micro-step, over all processes")
    accumulate: int = Field(1, ge=1, description="micro-batches per optimizer step")
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.05, ge=0)
    warmup_steps: int = Field(0, ge=0)
    min_lr_ratio: float = Field(0.0, ge=0, le=1)
    betas: tuple[float, float] = (0.9, 0.98)
    grad_clip: float | None = Field(1.0, gt=0)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto",
        description="auto: bf16 where the device runs it natively, fp16 on CUDA without bf16, else fp32 ('no' = fp32)",
    )
    threads: int | None = Field(
        None, ge=1, description="torch threads; default: the cores left free by other processes"
    )
    gradient_checkpointing: bool = False
    seed: int = 0
    num_workers: int = Field(0, ge=0)
    log_every: int = Field(10, ge=1)
    tensorboard: bool = Field(True, description="also write TensorBoard events (RUN_DIR/tensorboard) when installed")
    eval_every: int | None = Field(None, ge=1)
    checkpoint_every: int | None = Field(
        None, ge=1, description="steps between checkpoints; default: every tenth of the run, at least 100 steps apart"
    )
    keep_last: int = Field(2, ge=1)
    metric: str | None = Field(None, description="evaluation metric that picks the best checkpoint")
    metric_mode: Literal["max", "min"] | None = Field(
        None, description="max or min: which way train.metric improves; default: min for losses and errors, else max"
    )
    early_stopping_patience: int | None = Field(None, ge=1, description="evaluations without improvement")

    def improved(self, value: float, best: float | None) -> bool:
        """Whether ``value`` of ``metric`` beats ``best`` (None: nothing yet), in the direction it improves."""
        mode = self.metric_mode or metric_direction(self.metric or "")
        return best is None or (value > best if mode == "max" else value < best)

    def evaluation_due(self, step: int) -> bool:
        """Whether the run evaluates after ``step``: every ``eval_every`` steps, and at the end."""
        return self.eval_every is not None and (step % self.eval_every == 0 or step == self.steps)

    def checkpoint_due(self, step: int) -> bool:
        """Whether a regular checkpoint follows ``step`` (the last step always has one): every ``checkpoint_every``
        steps when set, else every tenth of the run (at least DEFAULT_CHECKPOINT_STEPS apart, so a short run or a
        frequent evaluation does not spend its time writing), so a SIGKILL loses at most that much. A function of
        the step alone, so every rank of a distributed run decides alike."""
        every = self.checkpoint_every or max(DEFAULT_CHECKPOINT_STEPS, math.ceil(self.steps / 10))
        return step % every == 0

    @field_validator("precision", mode="before")
    @classmethod
    def _fp32_spellings(cls, value: object) -> object:
        # YAML 1.1 reads a bare `no` (Accelerate's name for fp32, in older recipes) as false.
        if value is False:
            return "fp32"
        try:
            return normalize_precision(str(value))
        except ValueError:
            return value  # pydantic's own error lists the allowed values

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        if self.early_stopping_patience is not None and self.metric is None:
            raise ValueError("early_stopping_patience needs a metric")
        if self.warmup_steps > self.steps:
            raise ValueError(
                f"warmup_steps ({self.warmup_steps}) exceeds steps ({self.steps}): "
                f"set train.warmup_steps to at most {self.steps}"
            )
        return self
