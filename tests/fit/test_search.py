"""The search's choices: the L-BFGS linear candidate is logistic regression, and the one-standard-error rule keeps a
small validation split's noise from picking a bigger network."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from polymodal.fit import search
from polymodal.fit.columns import Problem
from polymodal.fit.network import Candidate
from polymodal.fit.search import CANDIDATES, Features, Targets, Trial, choose, evaluate, train_network

sklearn_linear = pytest.importorskip("sklearn.linear_model")


def _split(x: np.ndarray, y: np.ndarray) -> tuple[Features, Targets]:
    features = Features({"v": torch.tensor(x, dtype=torch.float32)}, {"v": torch.ones(len(x), dtype=torch.bool)})
    return features, Targets(torch.tensor(y), torch.ones(len(y), dtype=torch.bool))


def test_the_linear_candidate_agrees_with_logistic_regression() -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 50))
    labels = rng.integers(0, 4, 300)
    x = centres[labels] + 1.5 * rng.normal(size=(300, 50))
    problem = Problem("multiclass", "y", ("a", "b", "c", "d"))
    train, train_y = _split(x[:40], labels[:40])  # few rows, many features: where regularisation decides
    test, test_y = _split(x[100:], labels[100:])
    linear = CANDIDATES[0]
    assert linear.solver == "lbfgs" and linear.label.startswith("linear")
    trial = train_network(linear, problem, train, train_y, test, test_y, deadline=float("inf"), max_epochs=30)
    ours = evaluate(trial.network, problem, test, test_y)[0]["accuracy"]
    mean, std = x[:40].mean(0), x[:40].std(0)
    reference = sklearn_linear.LogisticRegression(max_iter=2000).fit((x[:40] - mean) / std, labels[:40])
    theirs = reference.score((x[100:] - mean) / std, labels[100:])
    assert abs(ours - theirs) <= 0.05, (ours, theirs)


def test_the_linear_candidate_stops_once_its_solver_has_converged(monkeypatch: pytest.MonkeyPatch) -> None:
    """A full-batch solver that stopped short of its iterations would not move again: the search moves on (it ran
    ``patience`` epochs more, each a full pass of the line search)."""
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 200)
    x = np.c_[labels * 6.0 - 3 + rng.normal(size=200), rng.normal(size=(200, 3))]  # one feature separates them
    problem = Problem("binary", "y", ("a", "b"))
    train, train_y = _split(x[:150], labels[:150])
    val, val_y = _split(x[150:], labels[150:])
    passes = []
    monkeypatch.setattr(search, "evaluate", lambda *a: passes.append(1) or evaluate(*a))  # once per epoch
    monkeypatch.setattr(search, "LBFGS_PATIENCE", 1000)  # only convergence can stop it early
    trial = train_network(CANDIDATES[0], problem, train, train_y, val, val_y, deadline=float("inf"), patience=50)
    assert trial.metrics["accuracy"] >= 0.95
    assert len(passes) < 10, len(passes)  # not best epoch + 50: it converged


def _trial(label: str, accuracy: float, loss: float = 1.0) -> Trial:
    metrics = {"score": accuracy, "score_name": "accuracy", "accuracy": accuracy, "loss": loss}
    return Trial(Candidate(label), ["v"], metrics, 1, 0.1)


def test_one_standard_error_rule() -> None:
    trials = [_trial("late", 0.36), _trial("concat", 0.40), _trial("gmu", 0.44)]
    assert choose(trials, 25).candidate.fusion == "late"  # 0.44 - 0.36 is less than one SE (0.099) of 25 rows
    assert choose(trials, 2500).candidate.fusion == "gmu"  # the SE of 2,500 rows is 0.0099
    rmse = [
        Trial(Candidate(n), ["v"], {"score": s, "score_name": "rmse"}, 1, 0.1) for n, s in (("a", -2.0), ("b", -1.0))
    ]
    assert choose(rmse, 25).candidate.fusion == "b"
    # A perfect score still has an error: one miss in 72 rows is within it (the naive one, 0, chose the bigger one).
    perfect = [_trial("linear", 71 / 72), _trial("concat", 1.0)]
    assert choose(perfect, 72).candidate.fusion == "linear" and choose(perfect, 7200).candidate.fusion == "concat"


def test_candidates_are_ranked_by_the_metric_asked_for() -> None:
    """An imbalanced validation split: the always-majority predictor has the best accuracy but the worst balanced
    accuracy; --metric balanced_accuracy ranks by that (and says it), a metric of another kind is refused, and a
    class the model never predicts is named."""
    from polymodal.fit.predictor import never_predicted
    from polymodal.fit.search import score

    problem = Problem("binary", "rare", ("no", "yes"))
    truth = Targets(torch.tensor([0] * 9 + [1]), torch.ones(10, dtype=torch.bool))
    majority = np.tile([0.9, 0.1], (10, 1))
    finds_it = np.array([[0.9, 0.1]] * 7 + [[0.1, 0.9]] * 3)  # two false alarms, the one positive found
    by_accuracy = [score(problem, p, truth) for p in (majority, finds_it)]
    assert [m["score_name"] for m in by_accuracy] == ["accuracy"] * 2
    assert by_accuracy[0]["score"] > by_accuracy[1]["score"]
    balanced = problem.with_metric("balanced_accuracy")
    ranked = [score(balanced, p, truth) for p in (majority, finds_it)]
    assert [m["score_name"] for m in ranked] == ["balanced_accuracy"] * 2
    assert ranked[0]["score"] == pytest.approx(0.5) and ranked[1]["score"] == pytest.approx((7 / 9 + 1) / 2)
    assert Problem.from_dict(balanced.to_dict()) == balanced and "metric" not in problem.to_dict()
    assert never_predicted(problem, by_accuracy[0]) == "'yes' (1 rows)" and never_predicted(problem, ranked[1]) == ""
    regression = Problem("regression", "y").with_metric("mae")
    values = Targets(torch.tensor([0.0, 1.0]), torch.ones(2, dtype=torch.bool))
    assert score(regression, np.array([0.5, 1.5]), values)["score"] == pytest.approx(-0.5)
    with pytest.raises(ValueError, match="does not rank a binary problem; choose from accuracy, balanced_accuracy"):
        problem.with_metric("rmse")
