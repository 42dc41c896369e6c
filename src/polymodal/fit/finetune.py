"""``--fine-tune``: the searched network and the pretrained towers under it trained end to end on the table's rows,
by the ordinary :class:`~polymodal.train.trainer.Trainer` (checkpoints, bf16 where native, several processes).

Rows are prepared by the featurizers (decoded, preprocessed; a bad file is a missing input, counted), the towers
start from the weights that made the features and train at a small learning rate, the network from its searched
weights. Batch-norm statistics stay those of the pretrained tower (small CPU batches would spoil them). The number
of steps follows from the time left: one timed step on a real batch says what a step costs.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from polymodal.data.errors import BadSampleError, BadSampleLog
from polymodal.fit.columns import Problem, is_missing
from polymodal.fit.features import Featurizer, TowerFeaturizer
from polymodal.fit.network import FeatureNetwork
from polymodal.fit.search import Targets, loss_of, predictions, score
from polymodal.fit.table import Table
from polymodal.hardware import choose_precision
from polymodal.train.config import TrainConfig
from polymodal.train.trainer import Trainer, training_device

TOWER_LR = 2e-5
NETWORK_LR = 2e-4
BATCH_SIZE = 32
EVALUATIONS = 4  # validation passes over the run: the best of them is kept


@dataclass
class RowBatch:
    """A batch of table rows: each tower input collated over the rows that have it, the fixed inputs' vectors, and
    the targets."""

    ids: Tensor  # (B,) row indices
    towers: dict[str, tuple[Any, Tensor]]  # input -> (collated batch of the present rows or None, present (B,))
    fixed: dict[str, Tensor]  # input -> (B, D), every row present (the tabular input)
    y: Tensor
    known: Tensor

    def to(self, device: torch.device) -> RowBatch:
        def move(value: Any) -> Any:
            if isinstance(value, Tensor):
                return value.to(device)
            if isinstance(value, (tuple, list)):
                return type(value)(move(v) for v in value)
            return value

        return RowBatch(
            self.ids.to(device),
            {k: (move(batch), present.to(device)) for k, (batch, present) in self.towers.items()},
            {k: v.to(device) for k, v in self.fixed.items()},
            self.y.to(device),
            self.known.to(device),
        )


class RowDataset(Dataset):
    """The rows of a table as prepared tower inputs (a bad cell is None, counted in ``bad_log``)."""

    def __init__(
        self, featurizers: Sequence[Featurizer], table: Table, targets: Targets, bad_log: BadSampleLog
    ) -> None:
        self.table, self.targets, self.bad_log = table, targets, bad_log
        self.towers = [f for f in featurizers if isinstance(f, TowerFeaturizer)]
        self.fixed = {f.name: f.transform(table, bad_log)[0] for f in featurizers if not isinstance(f, TowerFeaturizer)}
        resolver = table.resolver()
        self.references: dict[str, list[Any]] = {}
        for featurizer in self.towers:
            column = []
            for i, row in enumerate(table.rows):
                value = row.get(featurizer.name)
                reference = None
                if not is_missing(value):
                    try:
                        reference = featurizer.reference(value, resolver, table.row_numbers[i])[0]
                    except BadSampleError as e:
                        bad_log.record(e)
                column.append(reference)
            self.references[featurizer.name] = column

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, index: int) -> tuple[int, dict[str, Any]]:
        prepared = {}
        for featurizer in self.towers:
            reference = self.references[featurizer.name][index]
            value = None
            if reference is not None:
                try:
                    value = featurizer.prepare(reference, self.table.source, self.table.row_numbers[index])
                except BadSampleError as e:
                    self.bad_log.record(e)
                    self.references[featurizer.name][index] = None  # counted once, not once per epoch
            prepared[featurizer.name] = value
        return index, prepared

    def collate(self, items: list[tuple[int, dict[str, Any]]]) -> RowBatch:
        ids = torch.tensor([i for i, _ in items])
        towers = {}
        for featurizer in self.towers:
            values = [prepared[featurizer.name] for _, prepared in items]
            present = torch.tensor([v is not None for v in values], dtype=torch.bool)
            given = [v for v in values if v is not None]
            towers[featurizer.name] = (featurizer.collate(given) if given else None, present)
        fixed = {name: vectors[ids] for name, vectors in self.fixed.items()}
        return RowBatch(ids, towers, fixed, self.targets.y[ids], self.targets.known[ids])


class TableModel(nn.Module):
    """Trainable towers under the searched network: ``forward(batch) -> outputs`` (logits or a value per row)."""

    def __init__(self, featurizers: Sequence[Featurizer], network: FeatureNetwork) -> None:
        super().__init__()
        self.featurizers = {f.name: f for f in featurizers if isinstance(f, TowerFeaturizer)}
        self.towers = nn.ModuleDict({name: f.trainable_tower() for name, f in self.featurizers.items()})
        self.network = network

    def train(self, mode: bool = True) -> TableModel:
        super().train(mode)
        for module in self.towers.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()  # the pretrained running statistics, not those of a few small batches
        return self

    def forward(self, batch: RowBatch) -> Tensor:
        features: dict[str, Tensor] = dict(batch.fixed)
        present: dict[str, Tensor] = {name: torch.ones_like(batch.ids, dtype=torch.bool) for name in batch.fixed}
        for name, (collated, here) in batch.towers.items():
            dim = self.network.input_dims[name]
            values = torch.zeros(len(batch.ids), dim, device=batch.ids.device)
            if collated is not None:
                computed = self.featurizers[name].forward(self.towers[name], collated)
                values = values.to(computed.dtype).index_put((here.nonzero().squeeze(1),), computed)
            features[name], present[name] = values, here
        return self.network({k: v.float() for k, v in features.items()}, present)  # type: ignore[no-any-return]


class TableObjective(nn.Module):
    def __init__(self, problem: Problem) -> None:
        super().__init__()
        self.problem = problem

    def forward(self, model: TableModel, batch: RowBatch) -> dict[str, Tensor]:
        outputs = model(batch)
        keep = batch.known
        if not keep.any():
            return {"loss": outputs.sum() * 0.0}
        return {"loss": loss_of(self.problem, outputs[keep].float(), Targets(batch.y[keep], keep[keep]))}


@dataclass
class FineTuneResult:
    model: TableModel
    metrics: dict[str, Any]
    steps: int
    seconds: float


def fine_tune(
    featurizers: Sequence[Featurizer],
    network: FeatureNetwork,
    problem: Problem,
    train: tuple[Table, Targets],
    val: tuple[Table, Targets],
    *,
    seconds: float,
    run_dir: Path,
    bad_log: BadSampleLog,
    seed: int = 0,
    max_epochs: int = 5,
    progress: bool = True,
) -> FineTuneResult | None:
    """Train towers and network together for at most ``max_epochs`` or about ``seconds``; the best validation pass
    is kept. None when nothing can be fine-tuned (no tower input) or the time cannot buy a step."""
    if not any(isinstance(f, TowerFeaturizer) for f in featurizers):
        return None
    started = time.monotonic()
    torch.manual_seed(seed)
    model = TableModel(featurizers, copy.deepcopy(network))
    train_set = RowDataset(featurizers, *train, bad_log)
    val_set = RowDataset(featurizers, *val, bad_log)
    objective = TableObjective(problem)
    step_seconds = _time_one_step(model, objective, train_set)
    steps_per_epoch = math.ceil(len(train_set) / BATCH_SIZE)
    # A validation pass costs about a third of a training step per batch.
    evaluation = math.ceil(len(val_set) / BATCH_SIZE) * step_seconds / 3
    affordable = int((seconds - (time.monotonic() - started) - EVALUATIONS * evaluation) / max(step_seconds, 1e-3))
    steps = min(max_epochs * steps_per_epoch, affordable)
    if steps < 1:
        return None
    best: dict[str, Any] = {}

    def validate(trained: nn.Module) -> dict[str, float]:
        best["pending"] = evaluate_rows(trained, problem, val_set)  # type: ignore[arg-type]
        metrics = best["pending"]
        return {"score": float(metrics["score"])}

    def keep_best(trained: nn.Module, _: Path) -> None:
        best["state"] = copy.deepcopy(trained.state_dict())
        best["metrics"] = best["pending"]

    config = TrainConfig(
        steps=steps,
        batch_size=BATCH_SIZE,
        lr=NETWORK_LR,
        weight_decay=1e-4,
        warmup_steps=max(1, steps // 10),
        eval_every=max(1, steps // EVALUATIONS),
        metric="score",
        metric_mode="max",
        tensorboard=False,
        seed=seed,
    )
    trainer = Trainer(
        model,
        objective,
        train_set,
        config,
        run_dir,
        collate_fn=train_set.collate,
        validate=validate,
        param_lrs={"towers": TOWER_LR},
        save_best=keep_best,
        progress=progress,
    )
    result = trainer.fit()
    if "state" in best:
        model.load_state_dict(best["state"])
    model.eval()
    return FineTuneResult(model, best.get("metrics", {}), result.step, time.monotonic() - started)


def _time_one_step(model: TableModel, objective: TableObjective, rows: RowDataset) -> float:
    """Seconds of one forward and backward pass on a real batch at the precision the trainer will use (after a
    two-row pass that pays the kernels' one-time set-up), gradients discarded."""
    precision = choose_precision("auto", training_device())
    model.train()
    with torch.autocast(training_device().type, dtype=torch.bfloat16, enabled=precision.precision == "bf16"):
        for size in (min(2, len(rows)), min(BATCH_SIZE, len(rows))):
            batch = rows.collate([rows[i] for i in range(size)])
            started = time.monotonic()
            objective(model, batch)["loss"].backward()
            model.zero_grad(set_to_none=True)
    return (time.monotonic() - started) * 1.2  # the optimizer step and data preparation on top


@torch.no_grad()
def evaluate_rows(model: TableModel, problem: Problem, rows: RowDataset) -> dict[str, Any]:
    model.eval()
    outputs = torch.cat(
        [
            model(rows.collate([rows[i] for i in range(start, min(start + BATCH_SIZE, len(rows)))])).float()
            for start in range(0, len(rows), BATCH_SIZE)
        ]
    )
    model.train()
    return score(problem, predictions(problem, outputs, rows.targets.mean, rows.targets.std), rows.targets)
