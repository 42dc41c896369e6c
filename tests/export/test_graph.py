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


def _export(module: nn.Module, path: Path) -> tuple[Tensor, Tensor]:
    torch.manual_seed(0)
    x, mask = torch.randn(2, 6, WIDTH), torch.ones(2, 6, dtype=torch.bool)
    mask[1, 3:] = False
    batch, sequence = torch.export.Dim("batch", min=1), torch.export.Dim("sequence", min=1, max=64)
    torch.onnx.export(
        module.eval(),
        (x, mask),
        str(path),
        dynamo=True,
        opset_version=23,
        input_names=["x", "mask"],
        dynamic_shapes={"x": {0: batch, 1: sequence}, "mask": {0: batch, 1: sequence}},
        external_data=False,
    )
    return x, mask


def _run(model: object, x: Tensor, mask: Tensor) -> np.ndarray:
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x.numpy(), "mask": mask.numpy()})[0]


def _other_batch() -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(1)
    x, mask = torch.randn(3, 9, WIDTH, generator=generator), torch.ones(3, 9, dtype=torch.bool)
    mask[0, 5:], mask[2, 1:] = False, False
    return x, mask


def test_attention_runs_on_the_projections_with_its_mask_over_every_query(tmp_path: Path) -> None:
    module = PaddedSelfAttention()
    _export(module, tmp_path / "layer.onnx")
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
    x, mask = _other_batch()  # another batch size and length than the export's, rows of 5, 9 and 1 real tokens
    with torch.inference_mode():
        want = module(x, mask).numpy()
    got = _run(model, x, mask)
    real = mask.numpy()
    np.testing.assert_allclose(got[real], want[real], atol=1e-5)


def test_a_head_split_used_twice_is_left_as_it_is(tmp_path: Path) -> None:
    module = PaddedSelfAttention(shared_keys=True)
    _export(module, tmp_path / "layer.onnx")
    model = onnx.load(str(tmp_path / "layer.onnx"))
    nodes = len(model.graph.node)

    assert fold_head_transposes(model) == 0 and len(model.graph.node) == nodes
    assert expand_mask_queries(model) == 1  # still needed for onnxruntime to run it
    x, mask = _other_batch()
    with torch.inference_mode():
        want = module(x, mask).numpy()
    np.testing.assert_allclose(_run(model, x, mask)[mask.numpy()], want[mask.numpy()], atol=1e-5)
