"""Rewrites of exported attention graphs: the same results from fewer nodes, on any batch and padding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

onnx = pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")

from polymodal.export.graph import HEAD_SPLIT, expand_mask_queries, fold_head_transposes  # noqa: E402

HEADS, WIDTH = 4, 32


class PaddedSelfAttention(nn.Module):
    """One attention layer over padded tokens, written as models write it: split into heads, SDPA with a
    (B, 1, 1, T) key mask, heads merged. ``shared_keys`` uses the queries as keys (the split feeds two inputs)."""

    def __init__(self, shared_keys: bool = False) -> None:
        super().__init__()
        self.q, self.k, self.v, self.out = (nn.Linear(WIDTH, WIDTH) for _ in range(4))
        self.shared_keys = shared_keys

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        def split(t: Tensor) -> Tensor:
            return t.unflatten(-1, (HEADS, -1)).transpose(1, 2)

        q = split(self.q(x))
        k = q if self.shared_keys else split(self.k(x))
        attended = F.scaled_dot_product_attention(q, k, split(self.v(x)), attn_mask=mask.bool()[:, None, None, :])
        return self.out(attended.transpose(1, 2).flatten(2))


class GroupedCrossAttention(nn.Module):
    """Queries from ``x`` attend to a padded ``context`` of another length, 4 query heads sharing 2 key/value heads."""

    def __init__(self) -> None:
        super().__init__()
        self.q, self.out = nn.Linear(WIDTH, WIDTH), nn.Linear(WIDTH, WIDTH)
        self.k, self.v = nn.Linear(WIDTH, WIDTH // 2), nn.Linear(WIDTH, WIDTH // 2)

    def forward(self, x: Tensor, context: Tensor, mask: Tensor) -> Tensor:
        def split(t: Tensor, heads: int) -> Tensor:
            return t.unflatten(-1, (heads, -1)).transpose(1, 2)

        q, k, v = split(self.q(x), HEADS), split(self.k(context), HEADS // 2), split(self.v(context), HEADS // 2)
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask.bool()[:, None, None, :], enable_gqa=True)
        return self.out(attended.transpose(1, 2).flatten(2))


def _export(module: nn.Module, path: Path, inputs: dict[str, Tensor]) -> None:
    batch = torch.export.Dim("batch", min=1)
    dims = {name: {0: batch, 1: torch.export.Dim(f"{name}_length", min=1, max=64)} for name in inputs}
    if "mask" in inputs and "context" in inputs:
        dims["mask"] = {0: batch, 1: dims["context"][1]}
    elif "mask" in inputs:
        dims["mask"] = {0: batch, 1: dims["x"][1]}
    torch.onnx.export(
        module.eval(),
        tuple(inputs.values()),
        str(path),
        dynamo=True,
        opset_version=23,
        input_names=list(inputs),
        dynamic_shapes=dims,
        external_data=False,
    )


def _padded(batch: int, length: int, real: list[int], seed: int) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, length, WIDTH, generator=generator)
    return x, torch.arange(length)[None, :] < torch.tensor(real)[:, None]


def _run(model: object, inputs: dict[str, Tensor]) -> np.ndarray:
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {name: t.numpy() for name, t in inputs.items()})[0]


def test_attention_runs_on_the_projections_with_its_mask_over_every_query(tmp_path: Path) -> None:
    module = PaddedSelfAttention()
    _export(module, tmp_path / "layer.onnx", dict(zip(("x", "mask"), _padded(2, 6, [6, 3], seed=0))))
    model = onnx.load(str(tmp_path / "layer.onnx"))
    transposes = sum(node.op_type == "Transpose" for node in model.graph.node)

    assert fold_head_transposes(model) == 1
    assert expand_mask_queries(model) == 1
    (attention,) = [node for node in model.graph.node if node.op_type == "Attention"]
    heads = {a.name: a.i for a in attention.attribute if a.name.endswith("num_heads")}
    assert heads == {"q_num_heads": HEADS, "kv_num_heads": HEADS}
    perms = [list(node.attribute[0].ints) for node in model.graph.node if node.op_type == "Transpose"]
    assert HEAD_SPLIT not in perms and len(perms) == transposes - 4
    producers = {out: node.op_type for node in model.graph.node for out in node.output}
    assert producers[attention.input[3]] == "Expand"
    onnx.checker.check_model(model)
    x, mask = _padded(3, 9, [5, 9, 1], seed=1)  # another batch size and length than the export's
    with torch.inference_mode():
        want = module(x, mask).numpy()
    np.testing.assert_allclose(_run(model, {"x": x, "mask": mask}), want, atol=1e-5)


def test_cross_attention_with_grouped_heads_keeps_its_lengths_and_head_counts(tmp_path: Path) -> None:
    module = GroupedCrossAttention()
    x, _ = _padded(2, 5, [5, 5], seed=2)
    context, mask = _padded(2, 7, [7, 4], seed=3)
    _export(module, tmp_path / "cross.onnx", {"x": x, "context": context, "mask": mask})
    model = onnx.load(str(tmp_path / "cross.onnx"))

    assert fold_head_transposes(model) == 1 and expand_mask_queries(model) == 1
    (attention,) = [node for node in model.graph.node if node.op_type == "Attention"]
    heads = {a.name: a.i for a in attention.attribute if a.name.endswith("num_heads")}
    assert heads == {"q_num_heads": HEADS, "kv_num_heads": HEADS // 2}
    x, _ = _padded(3, 4, [4, 4, 4], seed=4)  # 4 queries against 11 keys, rows of 11, 6 and 1 real keys
    context, mask = _padded(3, 11, [11, 6, 1], seed=5)
    with torch.inference_mode():
        want = module(x, context, mask).numpy()
    np.testing.assert_allclose(_run(model, {"x": x, "context": context, "mask": mask}), want, atol=1e-5)


def test_a_head_split_used_twice_is_left_as_it_is(tmp_path: Path) -> None:
    module = PaddedSelfAttention(shared_keys=True)
    _export(module, tmp_path / "layer.onnx", dict(zip(("x", "mask"), _padded(2, 6, [6, 3], seed=0))))
    model = onnx.load(str(tmp_path / "layer.onnx"))
    nodes = len(model.graph.node)

    assert fold_head_transposes(model) == 0 and len(model.graph.node) == nodes
    assert expand_mask_queries(model) == 1  # still needed for onnxruntime to run it
    x, mask = _padded(3, 9, [5, 9, 1], seed=1)
    with torch.inference_mode():
        want = module(x, mask).numpy()
    np.testing.assert_allclose(_run(model, {"x": x, "mask": mask}), want, atol=1e-5)
