"""Fusion modules: registry-driven checks of the missing-modality contract, plus references."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from polymodal.modules.encoders.base import EncoderOutput
from polymodal.modules.fusion import (
    FUSIONS,
    BilinearFusion,
    CoAttentionFusion,
    ConcatFusion,
    CrossAttentionFusion,
    FiLMFusion,
    GatedMultimodalUnit,
    LateFusion,
    ProductFusion,
    WeightedSumFusion,
)
from polymodal.modules.fusion._common import masked_softmax
from polymodal.modules.fusion.base import Fusion, FusionOutput
from polymodal.modules.fusion.graph import GraphAttentionLayer

B = 4
OUT = 6
DIMS2 = {"image": 16, "text": 12}
DIMS3 = {**DIMS2, "audio": 8}
TOKENS = {"image": 5, "text": 7, "audio": 3}
IMAGE_GRID = (2, 2)  # the image's last 4 tokens are a 2x2 map after a CLS-like token (FiLM convolves over it)
TEXT_LENGTHS = [7, 3, 5, 1]

# Every registered name with its defaults, plus the options that switch code paths.
# track reads a clip's space-time cells, which these features do not have: tests/modules/test_track_fusion.py.
CASES = [(name, {}) for name in FUSIONS.names() if name != "track"] + [
    ("concat", {"missing": "zeros"}),
    ("late", {"combine": "learned", "hidden_dim": 8}),
    ("bilinear", {"mode": "mlb", "rank": 32}),
    ("gmu", {"gate": "sigmoid"}),
    ("cross_attention", {"query": "text", "dim": 16, "heads": 2}),
    ("cross_attention", {"query": "text", "dim": 16, "heads": 2, "gate_by": ["image"]}),
    ("graph", {"top_tokens": None}),
    ("graph", {"top_tokens": 0}),
    ("graph", {"top_tokens": 2}),
    ("film", {"pool": "mean", "layers": 1, "kernel": 1, "dim": 8}),
]
CASE_IDS = [name + "".join(f"-{k}={v}" for k, v in kw.items()) for name, kw in CASES]


def build(name: str, kwargs: dict, dims: dict[str, int] = DIMS2) -> Fusion:
    fusion = FUSIONS.build(name, input_dims=dims, output_dim=OUT, **kwargs)
    with torch.no_grad():  # non-trivial "nothing"/"missing" values, so tests cannot pass by zeros
        for pname, p in fusion.named_parameters():
            if pname in ("nothing", "missing", "scores"):
                p.normal_()
    return fusion.eval()  # dropout off: outputs are compared exactly


def make_features(dims: dict[str, int]) -> dict[str, EncoderOutput]:
    """Leaf tensors (so their gradients can be read); text has a padding mask."""
    features = {}
    for m, d in dims.items():
        tokens = torch.randn(B, TOKENS[m], d, requires_grad=True)
        pooled = torch.randn(B, d, requires_grad=True)
        mask = None
        if m == "text":
            mask = torch.arange(TOKENS[m]).unsqueeze(0) < torch.tensor(TEXT_LENGTHS).unsqueeze(1)  # (B, T)
        features[m] = EncoderOutput(tokens=tokens, pooled=pooled, mask=mask, grid=IMAGE_GRID if m == "image" else None)
    return features


def all_present(dims: dict[str, int]) -> dict[str, Tensor]:
    return {m: torch.ones(B, dtype=torch.bool) for m in dims}


def replaced(feat: EncoderOutput, where: Tensor, value: str) -> EncoderOutput:
    """A copy of ``feat`` whose tokens at ``where`` ((B,) or (B, T) bool), and pooled rows at
    ``where`` if it is (B,), hold garbage. Fresh leaves, so gradients can be read."""

    def garbage(x: Tensor) -> Tensor:
        if value == "random":
            return torch.randn_like(x) * 100
        return torch.full_like(x, {"huge": 3e38, "inf": math.inf, "nan": math.nan}[value])

    tok_where = where if where.dim() == 2 else where.unsqueeze(1).expand(feat.tokens.shape[:2])
    tokens = torch.where(tok_where.unsqueeze(-1), garbage(feat.tokens), feat.tokens).detach().requires_grad_()
    pooled = feat.pooled
    if where.dim() == 1:
        pooled = torch.where(where.unsqueeze(-1), garbage(feat.pooled), feat.pooled)
    return EncoderOutput(tokens=tokens, pooled=pooled.detach().requires_grad_(), mask=feat.mask, grid=feat.grid)


def loss_of(out: FusionOutput) -> Tensor:
    loss = out.pooled.pow(2).sum()
    if out.tokens is not None:
        loss = loss + torch.where(out.mask.unsqueeze(-1), out.tokens, 0.0).pow(2).sum()
    return loss


def assert_param_grads_finite(fusion: Fusion) -> None:
    for pname, p in fusion.named_parameters():
        if p.grad is not None:
            assert torch.isfinite(p.grad).all(), f"non-finite gradient in {pname}"


def test_registry_lists_every_fusion() -> None:
    expected = {
        *("concat", "late", "weighted_sum", "product", "bilinear", "gmu"),
        *("cross_attention", "co_attention", "graph", "film", "track"),
    }
    assert set(FUSIONS.names()) == expected
    for row in FUSIONS.describe():
        assert [p["name"] for p in row["params"]][:2] == ["input_dims", "output_dim"], row["name"]
        assert all(not p["required"] for p in row["params"][2:]), row["name"]


@pytest.mark.parametrize("dims", [DIMS2, DIMS3], ids=["2mod", "3mod"])
@pytest.mark.parametrize(("name", "kwargs"), CASES, ids=CASE_IDS)
def test_forward_backward_finite(name: str, kwargs: dict, dims: dict[str, int]) -> None:
    fusion = build(name, kwargs, dims).train()
    features = make_features(dims)
    present = all_present(dims)
    present["image"][1] = False
    out = fusion(features, present)
    assert out.pooled.shape == (B, OUT)
    if out.tokens is not None:
        assert out.tokens.shape[0] == B and out.tokens.shape[-1] == OUT
        assert out.mask is not None and out.mask.shape == out.tokens.shape[:2]
    loss_of(out).backward()
    assert torch.isfinite(out.pooled).all()
    assert_param_grads_finite(fusion)
    grads = [p.grad for p in fusion.parameters() if p.grad is not None]
    assert any(g.abs().sum() > 0 for g in grads), "no parameter received gradient"


@pytest.mark.parametrize("garbage", ["random", "huge", "inf", "nan"])
@pytest.mark.parametrize(("name", "kwargs"), CASES, ids=CASE_IDS)
def test_absent_sample_is_ignored(name: str, kwargs: dict, garbage: str) -> None:
    fusion = build(name, kwargs)
    features = make_features(DIMS2)
    present = all_present(DIMS2)
    present["image"][1] = False
    reference = fusion(features, present)

    missing = torch.tensor([False, True, False, False])
    features["image"] = replaced(features["image"], missing, garbage)
    out = fusion(features, present)
    assert torch.equal(out.pooled, reference.pooled)
    if out.tokens is not None:
        assert torch.equal(out.tokens, reference.tokens) and torch.equal(out.mask, reference.mask)

    loss_of(out).backward()
    image = features["image"]
    used = [g for g in (image.tokens.grad, image.pooled.grad) if g is not None]
    assert used, "the image features were not used at all"
    for grad in used:
        assert (grad[1] == 0).all(), "the absent sample's image features received gradient"
        assert grad[0].abs().sum() > 0, "a present sample's image features received no gradient"
    assert_param_grads_finite(fusion)


@pytest.mark.parametrize(("name", "kwargs"), CASES, ids=CASE_IDS)
def test_text_padding_is_ignored(name: str, kwargs: dict) -> None:
    fusion = build(name, kwargs)
    features = make_features(DIMS2)
    present = all_present(DIMS2)
    reference = fusion(features, present)

    text = features["text"]
    features["text"] = replaced(text, ~text.mask, "inf")
    out = fusion(features, present)
    assert torch.equal(out.pooled, reference.pooled)
    loss_of(out).backward()
    grad = features["text"].tokens.grad
    if grad is not None:
        assert (grad[~text.mask] == 0).all()
    assert_param_grads_finite(fusion)


@pytest.mark.parametrize("how", ["dropped_from_features", "dropped_from_both"])
@pytest.mark.parametrize(("name", "kwargs"), CASES, ids=CASE_IDS)
def test_modality_absent_from_whole_batch(name: str, kwargs: dict, how: str) -> None:
    """Leaving a modality out of the batch equals passing it with every sample marked absent."""
    fusion = build(name, kwargs)
    features = make_features(DIMS2)
    present = all_present(DIMS2)
    present["image"][:] = False
    features["image"] = replaced(features["image"], present["image"] == False, "inf")  # noqa: E712
    marked_absent = fusion(features, present)

    del features["image"]
    if how == "dropped_from_both":
        del present["image"]
    out = fusion(features, present)
    assert torch.isfinite(out.pooled).all()
    torch.testing.assert_close(out.pooled, marked_absent.pooled, rtol=1e-5, atol=1e-6)
    loss_of(out).backward()
    assert_param_grads_finite(fusion)


@pytest.mark.parametrize(("name", "kwargs"), CASES, ids=CASE_IDS)
def test_sample_with_nothing_gets_the_learned_nothing(name: str, kwargs: dict) -> None:
    fusion = build(name, kwargs, DIMS3)
    features = make_features(DIMS3)
    present = all_present(DIMS3)
    for m in DIMS3:
        present[m][2] = False
    present["audio"][0] = False
    out = fusion(features, present)
    assert torch.isfinite(out.pooled).all()
    torch.testing.assert_close(out.pooled[2], fusion.nothing.detach(), rtol=0, atol=0)
    assert not torch.equal(out.pooled[0], out.pooled[2])
    loss_of(out).backward()
    assert_param_grads_finite(fusion)
    assert fusion.nothing.grad is not None and fusion.nothing.grad.abs().sum() > 0

    # A batch where nothing at all was encoded still has a size (from ``present``).
    empty = fusion({}, {m: torch.zeros(B, dtype=torch.bool) for m in DIMS3})
    assert torch.equal(empty.pooled, fusion.nothing.detach().expand(B, OUT))


def test_unknown_modality_and_wrong_width_are_named() -> None:
    fusion = FUSIONS.build("concat", input_dims=DIMS2, output_dim=OUT)
    features = make_features(DIMS3)
    with pytest.raises(ValueError, match="audio"):
        fusion(features, all_present(DIMS3))
    features = make_features({"image": 16, "text": 10})
    with pytest.raises(ValueError, match=r"'text' was built with dim 12"):
        fusion(features, all_present(DIMS2))
    present = all_present(DIMS2)
    present["text"] = torch.ones(B, 1, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"present\['text'\] has shape \(4, 1\), expected \(4,\)"):
        fusion(make_features(DIMS2), present)


def test_late_fusion_mean_is_average_of_present_logits() -> None:
    fusion = LateFusion(DIMS3, OUT)
    features = make_features(DIMS3)
    present = all_present(DIMS3)
    present["image"][1] = False
    present["text"][2] = False
    present["audio"][2] = False
    out = fusion(features, present).pooled
    for b in range(B):
        logits = [fusion.predictors[m](features[m].pooled[b]) for m in DIMS3 if present[m][b]]
        torch.testing.assert_close(out[b], torch.stack(logits).mean(0))


def test_late_fusion_learned_weights_renormalise_over_present() -> None:
    fusion = LateFusion(DIMS3, OUT, combine="learned")
    with torch.no_grad():
        fusion.scores.copy_(torch.tensor([0.5, -1.0, 2.0]))
    features = make_features(DIMS3)
    present = all_present(DIMS3)
    present["audio"][3] = False
    out = fusion(features, present).pooled
    for b in (0, 3):
        names = [m for m in DIMS3 if present[m][b]]
        w = torch.tensor([math.exp(fusion.scores[list(DIMS3).index(m)].item()) for m in names])
        w = w / w.sum()
        expected = sum(wi * fusion.predictors[m](features[m].pooled[b]) for wi, m in zip(w, names))
        torch.testing.assert_close(out[b], expected)


def test_mfb_output_is_unit_norm() -> None:
    fusion = build("bilinear", {"mode": "mfb"})
    out = fusion(make_features(DIMS2), all_present(DIMS2)).pooled
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(B))


def _reference_cross_attention(
    fusion: CrossAttentionFusion, features: dict[str, EncoderOutput], present: dict[str, Tensor]
) -> list[Tensor | None]:
    """Slow per-sample, per-token, per-head loops; only real keys enter each softmax."""
    [block] = fusion.blocks
    block = block["image"]
    H = block.heads
    results: list[Tensor | None] = []
    for b in range(features["image"].tokens.shape[0]):
        if not present["image"][b]:
            results.append(None)
            continue
        x = fusion.proj["image"](features["image"].tokens[b]) + fusion.modality_embed[0]  # (Tq, D)
        keys = []
        if present["text"][b]:
            for t in range(features["text"].tokens.shape[1]):
                if features["text"].mask[b, t]:
                    keys.append(fusion.proj["text"](features["text"].tokens[b, t]) + fusion.modality_embed[1])
        D = x.shape[-1]
        hd = D // H
        rows = []
        for i in range(x.shape[0]):
            xi = x[i]
            if keys:
                q = block.q(block.norm_q(xi))
                kv = [block.kv(block.norm_kv(k)) for k in keys]
                heads = []
                for h in range(H):
                    sl = slice(h * hd, (h + 1) * hd)
                    scores = [(q[sl] @ kvj[sl]).item() / math.sqrt(hd) for kvj in kv]
                    m = max(scores)
                    e = [math.exp(s - m) for s in scores]
                    heads.append(sum(ej / sum(e) * kvj[D + h * hd : D + (h + 1) * hd] for ej, kvj in zip(e, kv)))
                xi = xi + block.out(torch.cat(heads))
            xi = xi + block.mlp(block.norm_mlp(xi))
            rows.append(fusion.head(fusion.norm(xi)))
        results.append(torch.stack(rows).mean(0))
    return results


def test_cross_attention_matches_slow_reference() -> None:
    fusion = CrossAttentionFusion(DIMS2, OUT, dim=8, heads=2, layers=1).eval()
    features = make_features(DIMS2)
    present = all_present(DIMS2)
    present["text"][2] = False  # no context: the image tokens skip attention
    present["image"][3] = False  # no query: falls back to the text tokens' mean
    with torch.no_grad():
        out = fusion(features, present)
        expected = _reference_cross_attention(fusion, features, present)
    for b in range(3):
        torch.testing.assert_close(out.pooled[b], expected[b], rtol=1e-4, atol=1e-5)
    assert torch.equal(out.mask[3], torch.zeros(TOKENS["image"], dtype=torch.bool))
    with torch.no_grad():
        text = fusion.proj["text"](features["text"].tokens[3, : TEXT_LENGTHS[3]]) + fusion.modality_embed[1]
        text_tokens = fusion.head(fusion.norm(text))
    torch.testing.assert_close(out.pooled[3], text_tokens.mean(0), rtol=1e-4, atol=1e-5)


def test_co_attention_first_layer_matches_cross_attention_each_way() -> None:
    """With one layer, co-attention's text stream is cross-attention with text as the query."""
    co = CoAttentionFusion(DIMS2, OUT, dim=8, heads=2, layers=1).eval()
    cross = CrossAttentionFusion(DIMS2, OUT, query="text", dim=8, heads=2, layers=1).eval()
    cross.proj.load_state_dict(co.proj.state_dict())
    cross.blocks[0]["text"].load_state_dict(co.blocks[0]["text"].state_dict())
    cross.norm.load_state_dict(co.norm.state_dict())
    cross.head.load_state_dict(co.head.state_dict())
    with torch.no_grad():
        cross.modality_embed.copy_(co.modality_embed)
    features = make_features(DIMS2)
    present = all_present(DIMS2)
    present["image"][0] = False
    co_out, cross_out = co(features, present), cross(features, present)
    n_image = TOKENS["image"]
    torch.testing.assert_close(co_out.tokens[:, n_image:], cross_out.tokens)
    assert torch.equal(co_out.mask[:, n_image:], cross_out.mask)
    assert not co_out.mask[0, :n_image].any()


def test_masked_softmax_matches_softmax_and_zeroes_empty_rows() -> None:
    scores = torch.randn(3, 5, requires_grad=True)
    mask = torch.tensor([[True] * 5, [True, False, True, False, False], [False] * 5])
    probs = masked_softmax(scores, mask)
    torch.testing.assert_close(probs[0], scores[0].softmax(-1))
    expected = torch.zeros(5)
    expected[[0, 2]] = scores[1, [0, 2]].softmax(-1)
    torch.testing.assert_close(probs[1], expected)
    assert torch.equal(probs[2], torch.zeros(5))
    (probs * torch.randn(3, 5)).sum().backward()
    assert torch.isfinite(scores.grad).all() and (scores.grad[2] == 0).all()


def _image_absent_for_sample_1() -> tuple[dict[str, EncoderOutput], dict[str, Tensor]]:
    features = make_features(DIMS2)
    present = all_present(DIMS2)
    present["image"][1] = False
    return features, present


def test_single_present_modality_reduces_to_its_own_branch() -> None:
    """With image absent, each pooled fusion is exactly what the text branch alone gives."""
    features, present = _image_absent_for_sample_1()
    text = features["text"].pooled[1]
    with torch.no_grad():
        weighted = WeightedSumFusion(DIMS2, OUT)
        torch.testing.assert_close(weighted(features, present).pooled[1], weighted.proj["text"](text))
        product = ProductFusion(DIMS2, OUT)
        torch.testing.assert_close(product(features, present).pooled[1], product.proj["text"](text))
        mlb = BilinearFusion(DIMS2, OUT, mode="mlb", rank=32).eval()
        torch.testing.assert_close(mlb(features, present).pooled[1], mlb.out(mlb.proj["text"](text).tanh()))
        gmu = GatedMultimodalUnit(DIMS2, OUT)  # softmax gate over one present modality is 1
        torch.testing.assert_close(gmu(features, present).pooled[1], gmu.hidden["text"](text).tanh())
        gmu = GatedMultimodalUnit(DIMS2, OUT, gate="sigmoid")  # the absent image's gate is 0
        gate_in = torch.cat([torch.zeros(DIMS2["image"]), text, torch.tensor([0.0, 1.0])])
        text_gate = gmu.gates(gate_in).view(2, OUT)[1].sigmoid()
        torch.testing.assert_close(gmu(features, present).pooled[1], text_gate * gmu.hidden["text"](text).tanh())
        concat = build("concat", {})
        assert isinstance(concat, ConcatFusion)
        expected = concat.mlp(torch.cat([concat.missing[0], concat.proj["text"](text)]))
        torch.testing.assert_close(concat(features, present).pooled[1], expected)


def test_product_multiplies_present_projections() -> None:
    features, present = _image_absent_for_sample_1()
    product = ProductFusion(DIMS2, OUT)
    with torch.no_grad():
        out = product(features, present).pooled
        image, text = features["image"].pooled[0], features["text"].pooled[0]
        expected = product.proj["image"](image) * product.proj["text"](text)
    torch.testing.assert_close(out[0], expected)


def test_graph_attention_layer_matches_slow_reference() -> None:
    layer = GraphAttentionLayer(dim=4, heads=2, mlp_ratio=1.0).eval()
    h = torch.randn(2, 3, 4)
    node_mask = torch.tensor([[True, True, False], [True, False, False]])
    edges = node_mask.unsqueeze(2) & node_mask.unsqueeze(1)
    with torch.no_grad():
        out = layer(h, edges)
        for b in range(2):
            for i in range(3):
                hi = h[b, i]
                neighbours = [j for j in range(3) if edges[b, i, j]]
                if neighbours:
                    wh = [layer.value(layer.norm(h[b, j])).view(2, 2) for j in range(3)]
                    heads = []
                    for k in range(2):
                        raw = [layer.att_dst[k] @ wh[i][k] + layer.att_src[k] @ wh[j][k] for j in neighbours]
                        e = [torch.nn.functional.leaky_relu(r, 0.2).exp() for r in raw]
                        heads.append(sum(ej / sum(e) * wh[j][k] for ej, j in zip(e, neighbours)))
                    hi = hi + layer.out(torch.cat(heads))
                hi = hi + layer.mlp(layer.norm_mlp(hi))
                torch.testing.assert_close(out[b, i], hi, rtol=1e-4, atol=1e-5)


def test_film_reads_positions_and_is_modulated_by_the_other_modalities() -> None:
    torch.manual_seed(0)
    fusion = FiLMFusion(DIMS2, OUT, dim=8, kernel=1).eval()  # 1x1: nothing but the coordinates knows where a token is
    features = make_features(DIMS2)
    present = all_present(DIMS2)
    out = fusion(features, present).pooled

    image = features["image"]
    # The same tokens on the map in another order: the coordinate projection makes where a feature is matter.
    order = torch.tensor([0, 4, 3, 2, 1])  # keep the prefix token first, reverse the 2x2 map
    reordered = {**features, "image": EncoderOutput(image.tokens[:, order], image.pooled, None, IMAGE_GRID)}
    assert (fusion(reordered, present).pooled - out).abs().max() > 1e-3
    with torch.no_grad():
        fusion.position.weight.zero_(), fusion.position.bias.zero_()
    torch.testing.assert_close(
        fusion(reordered, present).pooled, fusion(features, present).pooled
    )  # no coordinates: order-blind
    fusion = FiLMFusion(DIMS2, OUT, dim=8).eval()
    out = fusion(features, present).pooled
    # Tokens before the map (a CLS token) are not on it.
    tokens = image.tokens.detach().clone()
    tokens[:, 0] = 1e4
    cls_changed = fusion({**features, "image": EncoderOutput(tokens, image.pooled, None, IMAGE_GRID)}, present)
    torch.testing.assert_close(cls_changed.pooled, out)
    # The text's pooled features set FiLM's scale and shift: another statement, another output.
    text = features["text"]
    other = fusion({**features, "text": EncoderOutput(text.tokens, text.pooled.flip(0), text.mask)}, present)
    assert not torch.allclose(other.pooled, out)
    # Output tokens are the per-position features of the map; a sample without the image has none.
    full = fusion(features, present)
    assert full.tokens is not None and full.tokens.shape == (B, 4, OUT) and full.mask.all()
    no_image = {**present, "image": torch.tensor([True, False, True, True])}
    partial = fusion(features, no_image)
    assert not partial.mask[1].any() and (partial.tokens[1] == 0).all()


def test_film_needs_a_grid_and_valid_options() -> None:
    fusion = FiLMFusion(DIMS2, OUT)
    features = make_features(DIMS2)
    image = features["image"]
    features["image"] = EncoderOutput(image.tokens, image.pooled, None, None)
    with pytest.raises(ValueError, match=r"'image' has no spatial grid"):
        fusion(features, all_present(DIMS2))
    features["image"] = EncoderOutput(image.tokens, image.pooled, None, (3, 3))
    with pytest.raises(ValueError, match=r"'image' has 5 tokens, fewer than its 3x3 grid"):
        fusion(features, all_present(DIMS2))
    with pytest.raises(ValueError, match="pool must be"):
        FiLMFusion(DIMS2, OUT, pool="sum")
    with pytest.raises(ValueError, match="kernel must be odd"):
        FiLMFusion(DIMS2, OUT, kernel=2)
    with pytest.raises(ValueError, match="visual modality .video.*fusion.params.visual"):
        FiLMFusion(DIMS2, OUT, visual="video")


def test_a_gate_multiplies_the_pooled_output_by_one_plus_the_gating_modalitys_projection() -> None:
    """``gate_by``: pooled * (1 + g(mean of the gate modality's stream)); a zero gate, or a sample without the gate
    modality, gives the ungated output; the gate must be a non-query modality."""
    torch.manual_seed(0)
    gated = build("cross_attention", {"query": "text", "dim": 16, "heads": 2, "gate_by": ["audio"]}, DIMS3)
    plain = build("cross_attention", {"query": "text", "dim": 16, "heads": 2}, DIMS3)
    plain.load_state_dict({k: v for k, v in gated.state_dict().items() if not k.startswith("gates.")})
    features, present = make_features(DIMS3), all_present(DIMS3)
    with torch.no_grad():
        out, reference = gated(features, present), plain(features, present)
        assert not torch.allclose(out.pooled, reference.pooled)
        assert torch.equal(out.tokens, reference.tokens)  # the tokens a decoder reads are not gated
        streams = gated.project(gated.gather(features, present))
        g = gated.gates["audio"](streams["audio"].mean(1))
        expected = gated.finish(reference_pooled(plain, features, present) * (1 + g), torch.ones(B, dtype=torch.bool))
        torch.testing.assert_close(out.pooled, expected.pooled)
        no_audio = {**present, "audio": torch.tensor([True, False, True, True])}
        assert torch.allclose(gated(features, no_audio).pooled[1], plain(features, no_audio).pooled[1])
        for p in gated.gates.parameters():
            p.zero_()
        torch.testing.assert_close(gated(features, present).pooled, reference.pooled)
    for bad in (["text"], ["video"]):
        with pytest.raises(ValueError, match="gate_by"):
            CrossAttentionFusion(DIMS3, OUT, query="text", gate_by=bad)


def reference_pooled(fusion: CrossAttentionFusion, features: dict[str, EncoderOutput], present: dict[str, Tensor]):
    """The ungated fusion's pooled tokens before its final step (``finish``)."""
    captured = {}
    original = fusion.finish

    def capture(pooled, *args, **kwargs):  # type: ignore[no-untyped-def]
        captured["pooled"] = pooled
        return original(pooled, *args, **kwargs)

    fusion.finish = capture  # type: ignore[method-assign]
    try:
        fusion(features, present)
    finally:
        del fusion.finish
    return captured["pooled"]


def test_a_fusion_that_cannot_take_the_models_dimensions_is_refused_at_registration() -> None:
    """The model builds a fusion with input_dims and output_dim: a plugin's class without them is refused when it is
    registered, naming the two, not with a TypeError deep in a model's build."""

    class NoDims(nn.Module):
        def __init__(self, width: int = 8) -> None:
            super().__init__()

    with pytest.raises(TypeError, match="fusion 'no_dims': NoDims must take input_dims and output_dim"):
        FUSIONS.register("no_dims")(NoDims)
    assert "no_dims" not in FUSIONS.names()

    class AnyOptions(nn.Module):
        def __init__(self, **options: object) -> None:
            super().__init__()

    FUSIONS.register("any_options")(AnyOptions)  # takes whatever the model passes
    FUSIONS.unregister("any_options")
