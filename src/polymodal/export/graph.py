"""Rewrites of an exported ONNX graph that keep its results and save work at run time.

From opset 23 the exporter writes PyTorch's scaled dot-product attention as one ONNX ``Attention`` node, fed 4-D
(B, H, T, hd) queries, keys and values that each projection's (B, T, H x hd) output is reshaped and transposed into,
and transposed and reshaped back after it. ``Attention`` also takes the 3-D projections with the head counts as
attributes, so those four transposes per layer (~4% of a CLIP text tower's int8 time on an AVX2 CPU,
benchmarks/README.md) need not run.

onnxruntime's ``Attention`` kernel also wants a mask's query dimension in full, where ONNX (and PyTorch) broadcast a
padding mask's (B, 1, 1, T) over the queries; :func:`expand_mask_queries` writes that broadcast into the graph.
"""

from __future__ import annotations

from typing import Any

HEAD_SPLIT = [0, 2, 1, 3]  # (B, T, H, hd) <-> (B, H, T, hd)


def fold_head_transposes(model: Any) -> int:
    """Feed each ``Attention`` node of the ``onnx.ModelProto`` ``model`` the 3-D tensors its queries, keys and values
    were split into heads from, and hand its 3-D output straight to the reshape that merged the heads; the split and
    merge nodes go. A node whose surroundings are not exactly that (shared inputs, unknown head counts, a split that
    does not keep the batch and sequence, extra outputs, a mask of unknown rank) is left as it is. Returns how many
    nodes changed."""
    from onnx import helper

    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    shapes = _shapes(graph)
    dropped: set[int] = set()
    changed = 0
    for node in graph.node:
        if not _is_attention(node) or len(node.input) < 3:
            continue
        if any(out for out in node.output[1:]) or any(
            a.name in ("q_num_heads", "kv_num_heads") for a in node.attribute
        ):
            continue
        if len(node.input) > 3 and node.input[3] and node.input[3] not in shapes:
            continue  # a mask of unknown rank could not be expanded over the queries, which 3-D inputs need
        splits = [_head_split(name, producer, consumers, shapes) for name in node.input[:3]]
        merge = _head_merge(node.output[0], consumers, shapes)
        if None in splits or merge is None or splits[1][2] != splits[2][2]:  # type: ignore[index]
            continue
        for j, (transpose, reshape, _heads) in enumerate(splits):  # type: ignore[misc]
            node.input[j] = reshape.input[0]
            dropped.update((id(transpose), id(reshape)))
        for after in consumers[merge.output[0]]:
            after.input[:] = [node.output[0] if name == merge.output[0] else name for name in after.input]
        dropped.add(id(merge))
        node.attribute.extend(
            [helper.make_attribute("q_num_heads", splits[0][2]), helper.make_attribute("kv_num_heads", splits[1][2])]
        )
        changed += 1
    if changed:
        _keep_only(graph.node, lambda node: id(node) not in dropped)
        _drop_unused(graph)
        produced = {out for node in graph.node for out in node.output}
        attention_outputs = {node.output[0] for node in graph.node if _is_attention(node)}
        _keep_only(graph.value_info, lambda v: v.name in produced and v.name not in attention_outputs)
    return changed


def expand_mask_queries(model: Any) -> int:
    """Give each ``Attention`` node of ``model`` whose mask's query dimension is not known to be the queries' length
    (a padding mask's 1, broadcast over the queries) that mask expanded to the queries' length. Returns how many
    masks were expanded."""
    from onnx import TensorProto, helper

    graph = model.graph
    shapes = _shapes(graph)
    changed = 0
    for index, node in reversed(list(enumerate(graph.node))):
        if not _is_attention(node) or len(node.input) < 4:
            continue
        query, mask = shapes.get(node.input[0]), shapes.get(node.input[3])
        if not node.input[3] or query is None or mask is None or len(mask) < 2 or len(query) not in (3, 4):
            continue
        query_axis = 1 if len(query) == 3 else 2
        if query[query_axis] is not None and mask[-2] == query[query_axis]:
            continue
        prefix = f"{node.name or 'attention'}_mask_queries_{changed}"
        lead = len(mask) - 2
        graph.initializer.append(helper.make_tensor(f"{prefix}_ones", TensorProto.INT64, [lead], [1] * lead))
        graph.initializer.append(helper.make_tensor(f"{prefix}_one", TensorProto.INT64, [1], [1]))
        added = [
            helper.make_node("Shape", [node.input[0]], [f"{prefix}_length"], start=query_axis, end=query_axis + 1),
            helper.make_node(
                "Concat", [f"{prefix}_ones", f"{prefix}_length", f"{prefix}_one"], [f"{prefix}_shape"], axis=0
            ),
            helper.make_node("Expand", [node.input[3], f"{prefix}_shape"], [f"{prefix}_mask"]),
        ]
        for offset, new in enumerate(added):
            new.name = f"{prefix}_{new.op_type.lower()}"
            graph.node.insert(index + offset, new)
        node.input[3] = f"{prefix}_mask"
        changed += 1
    return changed


Dim = int | str | None  # a size, a symbolic size's name, or unknown


def _shapes(graph: Any) -> dict[str, list[Dim]]:
    """Each annotated value's dims: sizes, symbolic names (equal names, equal sizes), None where unknown."""

    def dim(d: Any) -> Dim:
        return d.dim_value if d.HasField("dim_value") else (d.dim_param or None)

    return {
        v.name: [dim(d) for d in v.type.tensor_type.shape.dim]
        for v in (*graph.value_info, *graph.input)
        if v.type.tensor_type.HasField("shape")
    }


def _head_split(
    name: str, producer: dict[str, Any], consumers: dict[str, list[Any]], shapes: dict[str, list[Dim]]
) -> tuple[Any, Any, int] | None:
    """(transpose, reshape, heads) when ``name`` is a (B, H, T, hd) transpose of a (B, T, H, hd) reshape of a 3-D
    tensor, used by one node each; else None."""
    transpose = producer.get(name)
    if transpose is None or transpose.op_type != "Transpose" or _perm(transpose) != HEAD_SPLIT:
        return None
    reshape = producer.get(transpose.input[0])
    if reshape is None or reshape.op_type != "Reshape":
        return None
    if len(consumers.get(name, [])) != 1 or len(consumers.get(reshape.output[0], [])) != 1:
        return None
    split, hidden = shapes.get(name), shapes.get(reshape.input[0])
    if split is None or hidden is None or len(split) != 4 or len(hidden) != 3:
        return None
    (batch, heads, length, head_size), width = split, hidden[2]
    if not isinstance(heads, int) or not isinstance(head_size, int) or width != heads * head_size:
        return None
    if batch is None or length is None or [batch, length] != hidden[:2]:  # (B, T, H, hd) from (B, T, H x hd) only
        return None
    return transpose, reshape, heads


def _head_merge(name: str, consumers: dict[str, list[Any]], shapes: dict[str, list[Dim]]) -> Any | None:
    """The transpose that takes ``name`` (B, H, T, hd) back to (B, T, H, hd) when it is ``name``'s only use and only
    reshapes to 3-D use it; else None."""
    users = consumers.get(name, [])
    if len(users) != 1 or users[0].op_type != "Transpose" or _perm(users[0]) != HEAD_SPLIT:
        return None
    merge = users[0]
    after = consumers.get(merge.output[0], [])
    if not after or any(n.op_type != "Reshape" or len(shapes.get(n.output[0], [])) != 3 for n in after):
        return None
    if any(n.input[0] != merge.output[0] for n in after):
        return None
    return merge


def _drop_unused(graph: Any) -> None:
    """Remove the nodes and initializers nothing reads any more (the split's shape computations)."""
    while True:
        used = _names_read(graph) | {out.name for out in graph.output}
        live = [node for node in graph.node if any(out in used for out in node.output)]
        if len(live) == len(graph.node):
            break
        del graph.node[:]
        graph.node.extend(live)
    _keep_only(graph.initializer, lambda init: init.name in used)


def _names_read(graph: Any) -> set[str]:
    """The names ``graph``'s nodes read, those of the branches and bodies of its If, Loop and Scan nodes included."""
    names: set[str] = set()
    for node in graph.node:
        names.update(node.input)
        for attribute in node.attribute:
            for sub in (*([attribute.g] if attribute.HasField("g") else []), *attribute.graphs):
                names |= _names_read(sub)
    return names


def _is_attention(node: Any) -> bool:
    """An ONNX-domain ``Attention`` node (a contrib op of that name takes other inputs)."""
    return node.op_type == "Attention" and node.domain in ("", "ai.onnx")


def _perm(transpose: Any) -> list[int] | None:
    return next((list(a.ints) for a in transpose.attribute if a.name == "perm"), None)


def _keep_only(entries: Any, keep: Any) -> None:
    kept = [entry for entry in entries if keep(entry)]
    del entries[:]
    entries.extend(kept)
