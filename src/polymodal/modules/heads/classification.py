"""Heads on pooled features: ``forward(x (B, in_dim)) -> (B, out_dim)``.

One small MLP shape serves classification (image-text matching too: two classes) and regression: optional
dropout, an optional hidden layer (Linear -> GELU -> Dropout), then the output Linear.
"""

from __future__ import annotations

from torch import Tensor, nn


class MLPHead(nn.Module):
    """``dropout -> [Linear(in_dim, hidden) -> GELU -> dropout] -> Linear(., out_dim)``."""

    def __init__(self, in_dim: int, out_dim: int, hidden: int | None = None, dropout: float = 0.0) -> None:
        super().__init__()
        self.in_dim = in_dim
        self.out_dim = out_dim
        layers: list[nn.Module] = [nn.Dropout(dropout)]
        width = in_dim
        if hidden is not None:
            layers += [nn.Linear(in_dim, hidden), nn.GELU(), nn.Dropout(dropout)]
            width = hidden
        self.body = nn.Sequential(*layers)
        self.out = nn.Linear(width, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.body(x))

    def reset_output(self, out_dim: int) -> None:
        """Replace the output layer (e.g. a new label set when fine-tuning), keeping the body."""
        self.out = nn.Linear(self.out.in_features, out_dim).to(self.out.weight.device)
        self.out_dim = out_dim


class ClassificationHead(MLPHead):
    """Class logits (B, num_classes) from pooled features (B, in_dim)."""

    def __init__(self, in_dim: int, num_classes: int, hidden: int | None = None, dropout: float = 0.0) -> None:
        super().__init__(in_dim, num_classes, hidden, dropout)

    @property
    def num_classes(self) -> int:
        return self.out_dim


class RegressionHead(MLPHead):
    """Real-valued predictions (B, out_dim) from pooled features (B, in_dim); pair with MSELoss."""

    def __init__(self, in_dim: int, out_dim: int = 1, hidden: int | None = None, dropout: float = 0.0) -> None:
        super().__init__(in_dim, out_dim, hidden, dropout)
