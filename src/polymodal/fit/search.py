"""Training feature networks and choosing one: each candidate fusion trains on the training rows' features with
early stopping on the validation rows, within a shared time budget; the best validation score wins.

Everything here runs on cached feature vectors, so a candidate costs seconds, not a pass of the pretrained towers.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from polymodal.fit.columns import LOWER_IS_BETTER, Problem, as_number, is_missing, known_class, label_values
from polymodal.fit.network import Candidate, FeatureNetwork
from polymodal.metrics.classification import accuracy, confusion_matrix, precision_recall_f1, roc_auc
from polymodal.metrics.regression import regression_metrics

# The search's default order: the cheapest, most often good candidates first, so a short budget still has them.
CANDIDATES = (
    # Late fusion of one linear predictor per input under a linear head, by L-BFGS: a regularised linear model over
    # all the features (logistic regression, for classes), the strong baseline on few rows.
    Candidate("late", {}, 64, dropout=0.0, weight_decay=1.0, solver="lbfgs"),
    Candidate("concat", {"hidden_dim": 128, "dropout": 0.1}),
    Candidate("late", {"hidden_dim": 128, "dropout": 0.1}),
    Candidate("gmu", {}),
    Candidate("co_attention", {"dim": 64, "heads": 4, "layers": 1, "dropout": 0.1}, lr=5e-4),
    Candidate("concat", {"hidden_dim": 256, "dropout": 0.2}, 256, head_hidden=256, dropout=0.2),
    Candidate("gmu", {}, 256, head_hidden=256, dropout=0.2),
    Candidate("late", {"hidden_dim": 256, "dropout": 0.2}, 256, dropout=0.2),  # late: hidden layers per input only
    Candidate("co_attention", {"dim": 128, "heads": 4, "layers": 2, "dropout": 0.1}, 256, head_hidden=256, lr=5e-4),
)
FUSIONS_NEEDING_TWO = frozenset({"co_attention", "cross_attention"})
BASELINE_SHARE = 0.2
INPUT_DROPOUT = 0.1  # chance that training hides an input of a row, so predictions survive a missing one


@dataclass
class Features:
    """Each input's (N, D) vectors and (N,) presence, for the same N rows."""

    values: dict[str, Tensor]
    present: dict[str, Tensor]

    def __len__(self) -> int:
        return len(next(iter(self.present.values())))

    def rows(self, index: Tensor) -> Features:
        return Features({k: v[index] for k, v in self.values.items()}, {k: v[index] for k, v in self.present.items()})

    def only(self, names: Sequence[str]) -> Features:
        return Features({k: self.values[k] for k in names}, {k: self.present[k] for k in names})

    @property
    def dims(self) -> dict[str, int]:
        return {k: v.shape[1] for k, v in self.values.items()}


@dataclass
class Targets:
    """The label as training targets: class indices (N,), multi-hot (N, C), or standardised numbers (N,); ``known``
    marks rows whose label is there (the others are never trained or scored on)."""

    y: Tensor
    known: Tensor
    mean: float = 0.0
    std: float = 1.0

    def rows(self, index: Tensor) -> Targets:
        return Targets(self.y[index], self.known[index], self.mean, self.std)


def encode_targets(problem: Problem, values: Sequence[Any], scale: tuple[float, float] | None = None) -> Targets:
    """The label cells as :class:`Targets`; a cell that fits no class (or is not a number) counts as unknown.
    Regression values are standardised by ``scale`` (mean, std: the training rows', for any other rows), by default
    by their own."""
    known = torch.tensor([not is_missing(v) for v in values], dtype=torch.bool)
    if problem.kind == "regression":
        numbers = [as_number(v) if k else None for v, k in zip(values, known.tolist())]
        known &= torch.tensor([n is not None for n in numbers])
        y = torch.tensor([n if n is not None else 0.0 for n in numbers], dtype=torch.float32)
        given = y[known]
        if scale is None:
            scale = (
                float(given.mean()) if len(given) else 0.0,
                float(given.std(unbiased=False)) if len(given) > 1 else 1.0,
            )
        mean, std = scale[0], scale[1] or 1.0
        return Targets((y - mean) / std, known, mean, std)
    index = {c: i for i, c in enumerate(problem.classes)}
    if problem.kind == "multilabel":
        y = torch.zeros(len(values), len(problem.classes))
        for i, value in enumerate(values):
            if known[i]:
                for name in label_values(value):
                    if name in index:
                        y[i, index[name]] = 1.0
        return Targets(y, known)
    names = [known_class(v, index) if k else None for v, k in zip(values, known.tolist())]
    ids = [-1 if name is None else index[name] for name in names]
    y = torch.tensor(ids, dtype=torch.long)
    return Targets(y.clamp(min=0), known & (y >= 0))


def loss_of(problem: Problem, outputs: Tensor, targets: Targets) -> Tensor:
    if problem.kind == "regression":
        return F.mse_loss(outputs.squeeze(-1), targets.y)
    if problem.kind == "multilabel":
        return F.binary_cross_entropy_with_logits(outputs, targets.y)
    return F.cross_entropy(outputs, targets.y)


def output_size(problem: Problem) -> int:
    return 1 if problem.kind == "regression" else len(problem.classes)


def predictions(problem: Problem, outputs: Tensor, targets_mean: float = 0.0, targets_std: float = 1.0) -> np.ndarray:
    """Class probabilities (N, C) for classification (sigmoid per class for multi-label), values (N,) for
    regression."""
    if problem.kind == "regression":
        return (outputs.squeeze(-1).double() * targets_std + targets_mean).numpy()
    if problem.kind == "multilabel":
        return outputs.double().sigmoid().numpy()
    return outputs.double().softmax(-1).numpy()


def score(problem: Problem, predicted: np.ndarray, targets: Targets) -> dict[str, Any]:
    """The validation metrics of ``predicted`` (from :func:`predictions`) against the known targets: accuracy,
    macro-F1, per-class precision/recall/F1, the confusion matrix and, for two classes, ROC-AUC; RMSE, MAE and R2
    for regression; micro- and macro-F1 for multi-label. ``score`` is the one the search maximises."""
    known = targets.known.numpy()
    if problem.kind == "regression":
        truth = targets.y.double().numpy() * targets.std + targets.mean
        out: dict[str, Any] = regression_metrics(truth[known], predicted[known])
        return _ranked(problem, out)
    if problem.kind == "multilabel":
        truth_bits = targets.y.numpy()[known] > 0.5
        pred_bits = predicted[known] > 0.5
        tp, fp, fn = (truth_bits & pred_bits).sum(0), (~truth_bits & pred_bits).sum(0), (truth_bits & ~pred_bits).sum(0)
        per_class = np.where(2 * tp + fp + fn > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1), 0.0)
        micro = float(2 * tp.sum() / max(2 * tp.sum() + fp.sum() + fn.sum(), 1))
        out = {
            "f1_micro": micro,
            "f1_macro": float(per_class.mean()),
            "subset_accuracy": float((truth_bits == pred_bits).all(1).mean()),
            "per_class_f1": dict(zip(problem.classes, per_class.tolist())),
        }
        return _ranked(problem, out)
    truth = targets.y.numpy()[known]
    chosen = predicted[known].argmax(1)
    labels = list(range(len(problem.classes)))
    prf = precision_recall_f1(truth, chosen, "macro", labels)
    present = prf.support > 0  # balanced accuracy: the mean recall over the classes the rows hold
    out = {
        "accuracy": accuracy(truth, chosen),
        "balanced_accuracy": float(prf.recall[present].mean()) if present.any() else 0.0,
        "f1_macro": prf.avg_f1,
        "per_class": {
            name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(problem.classes, prf.precision, prf.recall, prf.f1, prf.support)
        },
        "confusion": confusion_matrix(truth, chosen, labels).tolist(),
    }
    if problem.kind == "binary" and 0 < truth.sum() < len(truth):
        out["roc_auc"] = roc_auc(truth, predicted[known][:, 1])
    return _ranked(problem, out)


def _ranked(problem: Problem, metrics: dict[str, Any]) -> dict[str, Any]:
    """``metrics`` with ``score``, the one the search maximises (the problem's metric, negated where lower is
    better; ROC-AUC, undefined on a one-class validation split, falls back to accuracy)."""
    name = problem.ranked_by if problem.ranked_by in metrics else "accuracy"
    value = float(metrics[name])
    return {**metrics, "score": -value if name in LOWER_IS_BETTER else value, "score_name": name}


@dataclass
class Trial:
    """One trained candidate: its settings, inputs, validation metrics and cost."""

    candidate: Candidate
    inputs: list[str]
    metrics: dict[str, Any]
    epochs: int
    seconds: float
    network: FeatureNetwork | None = field(default=None, repr=False)

    @property
    def score(self) -> float:
        return float(self.metrics["score"])

    def to_dict(self) -> dict[str, Any]:
        keep = (
            "score",
            "score_name",
            "loss",
            "accuracy",
            "balanced_accuracy",
            "f1_macro",
            "roc_auc",
            "rmse",
            "mae",
            "r2",
            "f1_micro",
            "subset_accuracy",
        )
        return {
            "candidate": self.candidate.label,
            "settings": self.candidate.to_dict(),
            "inputs": self.inputs,
            "metrics": {k: self.metrics[k] for k in keep if k in self.metrics},
            "epochs": self.epochs,
            "seconds": round(self.seconds, 2),
        }


def train_network(
    candidate: Candidate,
    problem: Problem,
    train: Features,
    train_targets: Targets,
    val: Features,
    val_targets: Targets,
    *,
    deadline: float,
    seed: int = 0,
    max_epochs: int = 200,
    patience: int = 20,
    batch_size: int = 64,
) -> Trial:
    """Train ``candidate`` on ``train`` (AdamW with input dropout, or full-batch L-BFGS), keep the epoch with the best
    validation score, stop after ``patience`` epochs without a gain (L-BFGS: ``LBFGS_PATIENCE``, or once it has
    converged), at ``max_epochs`` or at ``deadline`` (time.monotonic)."""
    started = time.monotonic()
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    network = FeatureNetwork(train.dims, candidate, output_size(problem))
    rows = torch.nonzero(train_targets.known).squeeze(1)
    network.set_statistics(train.values, train.present)
    if candidate.solver == "lbfgs":
        run_epoch = _lbfgs_epochs(network, problem, train.rows(rows), train_targets.rows(rows))
        patience = min(patience, LBFGS_PATIENCE)
    else:
        run_epoch = _adamw_epochs(network, problem, train, train_targets, rows, generator, batch_size)
    best: tuple[float, float] = (-math.inf, -math.inf)
    best_state, best_epoch, best_metrics, epoch = None, 0, {}, 0
    for epoch in range(1, max_epochs + 1):
        network.train()
        converged = run_epoch()
        metrics, val_loss = evaluate(network, problem, val, val_targets)
        key = (metrics["score"], -val_loss)
        if key > best:
            best, best_epoch, best_metrics = key, epoch, {**metrics, "loss": val_loss}
            best_state = copy.deepcopy(network.state_dict())
        if converged or epoch - best_epoch >= patience or time.monotonic() > deadline:
            break
    if best_state is not None:
        network.load_state_dict(best_state)
    network.eval()
    return Trial(candidate, list(train.values), best_metrics, best_epoch, time.monotonic() - started, network)


def _adamw_epochs(
    network: FeatureNetwork,
    problem: Problem,
    train: Features,
    targets: Targets,
    rows: Tensor,
    generator: torch.Generator,
    batch_size: int,
) -> Callable[[], bool]:
    """One epoch of shuffled mini-batches per call (returns False: never known to have converged); each input of a
    row is hidden with probability INPUT_DROPOUT."""
    candidate = network.candidate
    optimizer = torch.optim.AdamW(network.parameters(), lr=candidate.lr, weight_decay=candidate.weight_decay)
    several = len(train.values) > 1

    def epoch() -> bool:
        order = rows[torch.randperm(len(rows), generator=generator)]
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            if len(batch) < 2 and len(order) > 1:
                continue  # a lone last row: its batch statistics would be noise
            part = train.rows(batch)
            present = part.present
            if several:
                hidden = {k: torch.rand(len(batch), generator=generator) < INPUT_DROPOUT for k in present}
                present = {k: v & ~hidden[k] for k, v in present.items()}
            loss = loss_of(problem, network(part.values, present), targets.rows(batch))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return False

    return epoch


LBFGS_ITERATIONS = 20  # per epoch
LBFGS_PATIENCE = 5  # epochs: a full-batch solver that has not gained in 100 iterations is done


def _lbfgs_epochs(network: FeatureNetwork, problem: Problem, train: Features, targets: Targets) -> Callable[[], bool]:
    """L-BFGS over all rows at once on the mean loss plus ``weight_decay / (2 n)`` times the squared weights (the
    objective of scikit-learn's logistic regression at ``C = 1 / weight_decay``), ``LBFGS_ITERATIONS`` per call;
    a call returns True once the solver stopped short of them twice in a row (converged: more calls would not move
    it)."""
    weights = [p for name, p in network.named_parameters() if p.dim() > 1]
    optimizer = torch.optim.LBFGS(
        network.parameters(),
        lr=1.0,
        max_iter=LBFGS_ITERATIONS,
        max_eval=4 * LBFGS_ITERATIONS,  # so that stopping short means a tolerance was met, not evaluations ran out
        history_size=20,
        line_search_fn="strong_wolfe",
    )
    penalty = network.candidate.weight_decay / (2 * max(len(train), 1))

    def closure() -> Tensor:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_of(problem, network(train.values, train.present), targets)
        loss = loss + penalty * sum((w**2).sum() for w in weights)
        loss.backward()
        return loss

    short = [False]  # whether the last call stopped short

    def epoch() -> bool:
        before = _lbfgs_iterations(optimizer)
        optimizer.step(closure)
        stopped_short = _lbfgs_iterations(optimizer) - before < LBFGS_ITERATIONS
        converged, short[0] = stopped_short and short[0], stopped_short  # twice in a row: a tolerance, not chance
        return converged

    return epoch


def _lbfgs_iterations(optimizer: torch.optim.LBFGS) -> int:
    state = optimizer.state[optimizer.param_groups[0]["params"][0]]
    return int(state.get("n_iter", 0))


@torch.no_grad()
def outputs_of(network: FeatureNetwork, features: Features, batch_size: int = 1024) -> Tensor:
    network.eval()
    parts = []
    for start in range(0, len(features), batch_size):
        part = features.rows(torch.arange(start, min(start + batch_size, len(features))))
        parts.append(network(part.values, part.present))
    return torch.cat(parts)


def evaluate(network: FeatureNetwork, problem: Problem, features: Features, targets: Targets) -> tuple[dict, float]:
    """The validation metrics and loss of ``network`` on the rows whose label is known."""
    outputs = outputs_of(network, features)
    known = targets.known
    loss = float(loss_of(problem, outputs[known], targets.rows(torch.nonzero(known).squeeze(1))))
    return score(problem, predictions(problem, outputs, targets.mean, targets.std), targets), loss


def _rank(trial: Trial) -> tuple[float, float]:
    """Higher score first; equal scores go to the lower validation loss."""
    return trial.score, -trial.metrics.get("loss", 0.0)


def choose(trials: Sequence[Trial], validation_rows: int) -> Trial:
    """The one-standard-error rule (Breiman et al. 1984): the first, simplest, trial whose validation accuracy is
    within one standard error of the best one's, so a small validation split's noise does not pick a bigger network
    over a linear model. Other scores (RMSE, micro-F1): the best; equal scores go to the lower validation loss. The
    error is Agresti and Coull's (two hits and two misses added), which a perfect score does not make zero."""
    top = max(trials, key=_rank)
    if top.metrics.get("score_name") != "accuracy" or validation_rows < 1:
        return top
    smoothed = (top.score * validation_rows + 2) / (validation_rows + 4)
    error = math.sqrt(smoothed * (1 - smoothed) / (validation_rows + 4))
    return next(t for t in trials if t.score >= top.score - error)


Report = Callable[[Trial, int, int], None]  # (trial, done, total): after each candidate


def search(
    problem: Problem,
    train: Features,
    train_targets: Targets,
    val: Features,
    val_targets: Targets,
    *,
    time_limit: float,
    candidates: Sequence[Candidate] = CANDIDATES,
    seed: int = 0,
    report: Report | None = None,
) -> tuple[Trial, list[Trial], list[Trial], bool]:
    """Train the candidates in order until ``time_limit`` seconds have passed (at least one always trains), then
    each input alone with the winner's settings. Returns the chosen trial (see :func:`choose`), the leaderboard (best
    first), the single-input baselines and whether Ctrl-C stopped the search: then the candidates trained so far are
    kept (the one in training is dropped) and the baselines left undone; with none trained, it propagates."""
    started = time.monotonic()
    several = len(train.values) > 1
    # The single-input baselines get the last BASELINE_SHARE of the budget, and the candidates the rest.
    deadline = started + time_limit * ((1 - BASELINE_SHARE) if several else 1.0)
    usable = [c for c in candidates if several or c.fusion not in FUSIONS_NEEDING_TWO]
    trials: list[Trial] = []
    interrupted = False
    try:
        for k, candidate in enumerate(usable):
            if trials and time.monotonic() > deadline:
                break
            trials.append(
                train_network(candidate, problem, train, train_targets, val, val_targets, deadline=deadline, seed=seed)
            )
            if report is not None:
                report(trials[-1], k + 1, len(usable))
    except KeyboardInterrupt:
        if not trials:
            raise
        interrupted = True
    leaderboard = sorted(trials, key=_rank, reverse=True)
    best = choose(trials, int(val_targets.known.sum()))
    baselines: list[Trial] = []
    if several and not interrupted:
        alone = best.candidate
        if alone.fusion in FUSIONS_NEEDING_TWO:
            alone = Candidate("concat", {"hidden_dim": alone.fusion_dim}, alone.fusion_dim, alone.head_hidden)
        names = list(train.values)
        try:
            for k, name in enumerate(names):
                share = max(started + time_limit - time.monotonic(), 1.0) / (
                    len(names) - k
                )  # an even share of the rest
                trial = train_network(
                    alone,
                    problem,
                    train.only([name]),
                    train_targets,
                    val.only([name]),
                    val_targets,
                    deadline=time.monotonic() + share,
                    seed=seed,
                )
                trial.network = None  # only its scores are kept
                baselines.append(trial)
        except KeyboardInterrupt:
            interrupted = True
    return best, leaderboard, baselines, interrupted
