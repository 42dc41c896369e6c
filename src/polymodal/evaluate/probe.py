"""Linear probe: multinomial logistic regression on frozen embeddings, fitted in torch (full batch, L-BFGS).

The objective is scikit-learn's ``LogisticRegression(C=...)`` divided by the number of training items:
mean cross-entropy + ``l2 / 2 * ||W||^2`` with ``l2 = 1 / (C * N)``, the bias unpenalised; the tests hold
the two to the same probabilities.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

DEFAULT_L2 = 1e-3


def fit_logistic_regression(
    x: torch.Tensor, y: torch.Tensor, n_classes: int, l2: float = DEFAULT_L2, max_iter: int = 500
) -> tuple[torch.Tensor, torch.Tensor]:
    """(W (C, D), b (C,)) minimising mean cross-entropy of ``x @ W.T + b`` against ``y`` plus ``l2 / 2 * ||W||^2``."""
    # Evaluation runs under inference mode; the fit needs gradients, and a normal copy of inference tensors.
    with torch.inference_mode(False), torch.enable_grad():
        x, y = x.double().clone(), y.long().clone()
        weight = torch.zeros(n_classes, x.shape[1], dtype=torch.float64, requires_grad=True)
        bias = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
        optimizer = torch.optim.LBFGS(
            [weight, bias],
            max_iter=max_iter,
            tolerance_grad=1e-9,
            tolerance_change=1e-12,
            line_search_fn="strong_wolfe",
        )

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            loss = F.cross_entropy(x @ weight.T + bias, y) + l2 / 2 * weight.pow(2).sum()
            loss.backward()
            return loss

        optimizer.step(closure)
    return weight.detach(), bias.detach()


def probe_predictions(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    n_classes: int,
    l2: float = DEFAULT_L2,
) -> torch.Tensor:
    """(N_test,) class predicted for each test item by a logistic regression fitted on the training items."""
    weight, bias = fit_logistic_regression(train_x, train_y, n_classes, l2)
    return (test_x.double() @ weight.T + bias).argmax(dim=1)
