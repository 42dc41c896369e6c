"""Heads: shapes, the exact computation of each layer layout, and the registry."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from polymodal.modules.heads import HEADS, ClassificationHead, ProjectionHead, RegressionHead


def test_linear_classification_head_is_one_affine_map() -> None:
    head = ClassificationHead(16, 5)
    x = torch.randn(3, 16)
    out = head(x)
    assert out.shape == (3, 5) and head.num_classes == 5
    torch.testing.assert_close(out, x @ head.out.weight.T + head.out.bias)


def test_hidden_layer_head_computes_linear_gelu_linear() -> None:
    head = ClassificationHead(16, 4, hidden=32, dropout=0.5).eval()
    x = torch.randn(3, 16)
    first, second = head.body[1], head.out
    expected = F.gelu(x @ first.weight.T + first.bias) @ second.weight.T + second.bias
    torch.testing.assert_close(head(x), expected)
    # Dropout is active in training mode only.
    head.train()
    assert not torch.allclose(head(x), expected)


def test_regression_heads_have_their_output_sizes() -> None:
    x = torch.randn(2, 8)
    assert RegressionHead(8)(x).shape == (2, 1)
    assert RegressionHead(8, out_dim=3, hidden=4)(x).shape == (2, 3)


def test_reset_output_keeps_the_body() -> None:
    head = ClassificationHead(8, 3, hidden=6)
    hidden_weight = head.body[1].weight.clone()
    head.reset_output(7)
    assert head(torch.randn(2, 8)).shape == (2, 7) and head.num_classes == 7
    assert torch.equal(head.body[1].weight, hidden_weight)


def test_projection_head_kinds() -> None:
    x = torch.randn(4, 12)
    linear = ProjectionHead(12, 6)
    assert linear.proj.bias is None  # CLIP's projection has no bias
    torch.testing.assert_close(linear(x), x @ linear.proj.weight.T)
    mlp = ProjectionHead(12, 6, kind="mlp", hidden=20)
    assert mlp(x).shape == (4, 6) and mlp.proj[0].out_features == 20
    with pytest.raises(ValueError, match=r"one of \('linear', 'mlp'\); got 'conv'"):
        ProjectionHead(12, 6, kind="conv")  # type: ignore[arg-type]


@pytest.mark.parametrize("name", HEADS.names())
def test_every_registered_head_builds_as_models_build_it_and_backpropagates(name: str) -> None:
    head = HEADS.get(name)(8, 3)  # (in_dim, outputs): how a model config's head is built
    out = head(torch.randn(5, 8))
    assert out.shape == (5, 3) and torch.isfinite(out).all()
    out.square().sum().backward()
    for p in head.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all()


def test_registry_lists_the_heads() -> None:
    assert HEADS.names() == ["classification", "projection", "regression"]
