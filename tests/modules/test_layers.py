"""Shared transformer layers against slow, explicit references."""

from __future__ import annotations

import math

import pytest
import torch

from polymodal.modules.layers import Attention, RotaryEmbedding, TransformerBlock, attend, maybe_checkpoint


def reference_attention(q, k, v, key_mask=None, causal=False):
    """softmax(QK^T / sqrt(d)) V with the allowed (query, key) pairs spelled out one by one."""
    b, h, tq, d = q.shape
    tk = k.size(-2)
    allowed = torch.ones(b, tq, tk, dtype=torch.bool)
    for bi in range(b):
        for i in range(tq):
            for j in range(tk):
                real = key_mask is None or bool(key_mask[bi, j])
                # Causal with queries aligned to the end of the keys.
                visible = not causal or j <= i + (tk - tq)
                allowed[bi, i, j] = real and visible
    scores = q @ k.transpose(-1, -2) / math.sqrt(d)  # (B, H, Tq, Tk)
    scores = scores.masked_fill(~allowed[:, None], float("-inf"))
    return scores.softmax(-1) @ v


KEY_MASK = torch.tensor([[True, True, True, True, True], [True, True, True, False, False]])


@pytest.mark.parametrize("key_mask", [None, KEY_MASK], ids=["no-mask", "padding"])
@pytest.mark.parametrize("causal", [False, True], ids=["bidirectional", "causal"])
@pytest.mark.parametrize("tq", [5, 3], ids=["self", "shorter-queries"])
def test_attend_matches_explicit_softmax(key_mask, causal, tq):
    q, k, v = torch.randn(2, 2, tq, 8), torch.randn(2, 2, 5, 8), torch.randn(2, 2, 5, 8)
    got = attend(q, k, v, key_mask, causal)
    torch.testing.assert_close(got, reference_attention(q, k, v, key_mask, causal), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("causal", [False, True], ids=["bidirectional", "causal"])
def test_attend_long_sequences_take_the_fused_kernel_with_the_same_result(causal, monkeypatch):
    import polymodal.modules.layers as layers

    q, k, v = torch.randn(1, 2, 40, 8), torch.randn(1, 2, 40, 8), torch.randn(1, 2, 40, 8)
    key_mask = torch.ones(1, 40, dtype=torch.bool)
    key_mask[0, 30:] = False
    short = attend(q, k, v, key_mask, causal)  # 40 x 40 pairs: the math kernel
    monkeypatch.setattr(layers, "CPU_MATH_ATTENTION_MAX_PAIRS", 100)  # now "long": the fused kernel
    long = attend(q, k, v, key_mask, causal)
    expected = reference_attention(q, k, v, key_mask, causal)
    torch.testing.assert_close(short, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(long, expected, atol=1e-5, rtol=1e-5)


def test_inference_takes_the_fused_kernel_sooner_than_training(monkeypatch):
    import polymodal.modules.layers as layers

    math_calls = []
    real_kernel = layers.sdpa_kernel
    monkeypatch.setattr(layers, "sdpa_kernel", lambda backend: math_calls.append(backend) or real_kernel(backend))
    q = k = v = torch.randn(1, 2, 40, 8)  # 1,600 pairs: above the inference bound, below the training one
    trained = attend(q, k, v)
    assert len(math_calls) == 1
    with torch.no_grad():
        inferred = attend(q, k, v)
        attend(q[:, :, :20], k[:, :, :20], v[:, :, :20])  # 400 pairs: math
    assert len(math_calls) == 2
    torch.testing.assert_close(inferred, trained, atol=1e-5, rtol=1e-5)


def test_attend_all_padding_row_is_finite():
    q = k = v = torch.randn(2, 2, 4, 8)
    key_mask = torch.tensor([[True, True, False, False], [False, False, False, False]])
    out = attend(q, k, v, key_mask)
    assert torch.isfinite(out).all()
    # The row with real keys is untouched by the guard.
    torch.testing.assert_close(out[:1], reference_attention(q[:1], k[:1], v[:1], key_mask[:1]), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cross", [False, True], ids=["self", "cross"])
def test_attention_module_matches_reference_with_its_weights(cross):
    attn = Attention(16, heads=4, context_dim=12 if cross else None).eval()
    x = torch.randn(2, 5, 16)
    context = torch.randn(2, 3, 12) if cross else None
    key_mask = torch.tensor([[True, True, True], [True, False, False]]) if cross else KEY_MASK
    src = x if context is None else context
    k, v = attn.kv(src).chunk(2, dim=-1)

    def heads(t):  # (B, T, 16) -> (B, 4, T, 4)
        return t.reshape(t.size(0), t.size(1), 4, 4).permute(0, 2, 1, 3)

    ref = reference_attention(heads(attn.q(x)), heads(k), heads(v), key_mask)
    ref = attn.out(ref.permute(0, 2, 1, 3).reshape(2, 5, 16))
    torch.testing.assert_close(attn(x, key_mask, context=context), ref, atol=1e-5, rtol=1e-5)


def test_rotary_scores_depend_only_on_relative_offset():
    rotary = RotaryEmbedding(8)
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)
    # The same (query, key) pair at positions (3, 1) and (10, 8): offset 2 both times.
    s1 = (rotary(q, offset=3) * rotary(k, offset=1)).sum()
    s2 = (rotary(q, offset=10) * rotary(k, offset=8)).sum()
    s3 = (rotary(q, offset=4) * rotary(k, offset=1)).sum()
    torch.testing.assert_close(s1, s2, atol=1e-5, rtol=1e-5)
    assert not torch.isclose(s1, s3, atol=1e-3)
    # A rotation preserves norms, and position 0 is the identity.
    x = torch.randn(2, 3, 6, 8)
    torch.testing.assert_close(rotary(x).norm(dim=-1), x.norm(dim=-1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(rotary(x)[..., 0, :], x[..., 0, :])


def test_rotary_rejects_odd_head_dim():
    with pytest.raises(ValueError, match="even head_dim"):
        RotaryEmbedding(7)


@pytest.mark.parametrize("rotary", [None, RotaryEmbedding(4)], ids=["plain", "rotary"])
def test_block_causal_outputs_ignore_the_future(rotary):
    block = TransformerBlock(16, heads=4, rotary=rotary).eval()
    x = torch.randn(1, 6, 16)
    changed = x.clone()
    changed[:, 4:] = torch.randn(1, 2, 16)
    a, b = block(x, causal=True), block(changed, causal=True)
    torch.testing.assert_close(a[:, :4], b[:, :4], atol=1e-6, rtol=1e-6)
    assert not torch.allclose(a[:, 4:], b[:, 4:])


def test_block_padding_does_not_leak_into_real_tokens():
    block = TransformerBlock(16, heads=4).eval()
    x = torch.randn(2, 5, 16)
    changed = x.clone()
    changed[1, 3:] = torch.randn(2, 16)  # only padded positions of row 1 change
    a, b = block(x, KEY_MASK), block(changed, KEY_MASK)
    torch.testing.assert_close(a[0], b[0])
    torch.testing.assert_close(a[1, :3], b[1, :3], atol=1e-6, rtol=1e-6)


def test_cross_attention_block_uses_context_and_its_mask():
    block = TransformerBlock(16, heads=4, cross_attention=True, context_dim=8).eval()
    x, context = torch.randn(2, 4, 16), torch.randn(2, 3, 8)
    context_mask = torch.tensor([[True, True, True], [True, True, False]])
    out = block(x, context=context, context_mask=context_mask)
    padded = context.clone()
    padded[1, 2] = 100.0
    torch.testing.assert_close(block(x, context=padded, context_mask=context_mask), out)
    real_changed = context.clone()
    real_changed[:, 0] += 1.0
    assert not torch.allclose(block(x, context=real_changed, context_mask=context_mask), out)
    with pytest.raises(ValueError, match="pass context"):
        block(x)


def test_maybe_checkpoint_gives_the_same_grads():
    block = TransformerBlock(16, heads=4)
    x = torch.randn(2, 5, 16, requires_grad=True)
    grads = []
    for enabled in (False, True):
        block.zero_grad()
        x.grad = None
        maybe_checkpoint(block, x, KEY_MASK, causal=True, enabled=enabled).square().sum().backward()
        grads.append([x.grad.clone()] + [p.grad.clone() for p in block.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
