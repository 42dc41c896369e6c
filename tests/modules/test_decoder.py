"""TransformerDecoder + generation: the KV cache, masks and every strategy against slow references."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from polymodal.modules.heads.decoder import TransformerDecoder
from polymodal.modules.heads.generation import (
    generate,
    next_token_log_probs,
    score_sequences,
    top_k_filter,
    top_p_filter,
)

PAD, BOS, EOS = 0, 1, 2
MEMORY_DIM = 8


def tiny_decoder(seed: int = 5, vocab_size: int = 12, max_length: int = 10) -> TransformerDecoder:
    """A random tiny decoder with large weights, so its distributions are peaked and ties rare."""
    torch.manual_seed(seed)
    decoder = TransformerDecoder(
        vocab_size=vocab_size,
        width=16,
        depth=2,
        heads=2,
        max_length=max_length,
        memory_dim=MEMORY_DIM,
        pad_id=PAD,
        bos_id=BOS,
        eos_id=EOS,
    )
    for p in decoder.parameters():
        if p.dim() > 1:
            nn.init.normal_(p, std=0.5)
    return decoder.eval()


def memory_batch(B: int = 3, S: int = 5, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    memory = torch.randn(B, S, MEMORY_DIM, generator=g)
    mask = torch.ones(B, S, dtype=torch.bool)
    mask[1, 3:] = False
    return memory, mask


def test_tied_embeddings_share_one_weight() -> None:
    decoder = tiny_decoder()
    assert decoder.lm_head.weight is decoder.token_embedding.weight
    untied = TransformerDecoder(12, 16, 1, 2, 8, MEMORY_DIM, PAD, BOS, EOS, tie_embeddings=False)
    assert untied.lm_head.weight is not untied.token_embedding.weight


def test_teacher_forcing_equals_cached_steps() -> None:
    decoder = tiny_decoder()
    memory, mask = memory_batch()
    ids = torch.randint(3, 12, (3, 7))
    full = decoder(ids, memory, mask)  # (B, T, V)
    # One token at a time.
    cache, steps = None, []
    for t in range(ids.size(1)):
        logits, cache = decoder.forward_step(ids[:, t : t + 1], memory, mask, cache)
        steps.append(logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=0)
    # Chunks of several tokens exercise the causal mask against cached positions.
    first, cache = decoder.forward_step(ids[:, :3], memory, mask, None)
    rest, cache = decoder.forward_step(ids[:, 3:], memory, mask, cache)
    assert cache.length == 7
    torch.testing.assert_close(torch.cat([first, rest], dim=1), full, atol=1e-5, rtol=0)


def test_causality_future_tokens_do_not_change_earlier_logits() -> None:
    decoder = tiny_decoder()
    memory, mask = memory_batch()
    ids = torch.randint(3, 12, (3, 6))
    changed = ids.clone()
    changed[:, 4:] = (changed[:, 4:] + 1) % 12
    a, b = decoder(ids, memory, mask), decoder(changed, memory, mask)
    torch.testing.assert_close(a[:, :4], b[:, :4], atol=0, rtol=0)
    assert not torch.allclose(a[:, 4:], b[:, 4:])


def test_memory_mask_hides_masked_positions() -> None:
    decoder = tiny_decoder()
    memory, mask = memory_batch()
    altered = memory.clone()
    altered[1, 3:] = torch.randn(2, MEMORY_DIM) * 10  # only positions masked out in row 1
    ids = torch.randint(3, 12, (3, 5))
    torch.testing.assert_close(decoder(ids, memory, mask), decoder(ids, altered, mask), atol=0, rtol=0)
    tokens_a, scores_a = generate(decoder, memory, mask, strategy="beam", num_beams=3, max_new_tokens=6)
    tokens_b, scores_b = generate(decoder, altered, mask, strategy="beam", num_beams=3, max_new_tokens=6)
    assert torch.equal(tokens_a, tokens_b) and torch.equal(scores_a, scores_b)
    # Without the mask the same change is visible (so the test above is not vacuous).
    assert not torch.allclose(decoder(ids, memory), decoder(ids, altered))


def test_row_with_no_real_memory_gives_finite_logits_and_ignores_memory() -> None:
    decoder = tiny_decoder()
    memory, mask = memory_batch()
    mask[2] = False
    ids = torch.randint(3, 12, (3, 4))
    logits = decoder(ids, memory, mask)
    assert torch.isfinite(logits).all()
    other = memory.clone()
    other[2] = torch.randn(5, MEMORY_DIM)
    torch.testing.assert_close(logits, decoder(ids, other, mask), atol=0, rtol=0)


def test_right_padding_does_not_change_real_positions() -> None:
    decoder = tiny_decoder()
    memory, mask = memory_batch()
    short = torch.randint(3, 12, (3, 4))
    padded = torch.cat([short, torch.full((3, 3), PAD)], dim=1)
    attention_mask = padded != PAD
    logits = decoder(padded, memory, mask, attention_mask=attention_mask)
    assert torch.isfinite(logits).all()
    torch.testing.assert_close(logits[:, :4], decoder(short, memory, mask), atol=1e-5, rtol=0)


def test_too_long_sequence_names_max_length() -> None:
    decoder = tiny_decoder(max_length=4)
    memory, _ = memory_batch()
    with pytest.raises(ValueError, match="max_length=4"):
        decoder(torch.randint(3, 12, (3, 5)), memory)
    with pytest.raises(ValueError, match="max_length=4"):
        generate(decoder, memory, max_new_tokens=5)
    with pytest.raises(ValueError, match="unknown strategy 'topk'"):
        generate(decoder, memory, strategy="topk")  # type: ignore[arg-type]


@pytest.mark.parametrize("strategy", ["greedy", "beam", "sample"])
def test_cache_equals_no_cache(strategy: str) -> None:
    decoder = tiny_decoder()
    memory, mask = memory_batch()
    kwargs = {"strategy": strategy, "max_new_tokens": 8, "num_beams": 4, "top_k": 5}
    cached = generate(decoder, memory, mask, generator=torch.Generator().manual_seed(3), **kwargs)
    plain = generate(decoder, memory, mask, generator=torch.Generator().manual_seed(3), use_cache=False, **kwargs)
    assert (cached[0] == EOS).any() and (cached[0] != PAD).all(dim=1).any()  # rows that stop early and late
    assert torch.equal(cached[0], plain[0])
    torch.testing.assert_close(cached[1], plain[1], atol=1e-5, rtol=0)


@pytest.mark.parametrize("strategy", ["greedy", "beam", "sample"])
def test_output_format_and_scores_match_teacher_forcing(strategy: str) -> None:
    decoder = tiny_decoder()
    memory, mask = memory_batch()
    tokens, scores = generate(
        decoder,
        memory,
        mask,
        strategy=strategy,
        max_new_tokens=8,
        num_beams=3,
        length_penalty=0.6,
        generator=torch.Generator().manual_seed(0),
    )
    assert tokens.dtype == torch.long and tokens.shape[0] == 3 and tokens.shape[1] <= 8
    for row in tokens.tolist():
        assert BOS not in row
        if EOS in row:
            end = row.index(EOS)
            assert all(t == PAD for t in row[end + 1 :])
            assert PAD not in row[:end]
        else:
            assert PAD not in row and len(row) == 8
    expected = score_sequences(decoder, memory, tokens, mask, length_penalty=0.6)
    torch.testing.assert_close(scores, expected, atol=1e-5, rtol=0)


def test_one_beam_equals_greedy() -> None:
    for seed in range(4):
        decoder = tiny_decoder(seed)
        memory, mask = memory_batch(seed=seed)
        greedy = generate(decoder, memory, mask, strategy="greedy", max_new_tokens=8)
        beam = generate(decoder, memory, mask, strategy="beam", num_beams=1, max_new_tokens=8)
        assert torch.equal(greedy[0], beam[0])
        torch.testing.assert_close(greedy[1], beam[1], atol=1e-6, rtol=0)


def test_top_k_one_sampling_equals_greedy() -> None:
    decoder = tiny_decoder()
    memory, mask = memory_batch()
    greedy = generate(decoder, memory, mask, strategy="greedy", max_new_tokens=8)
    sampled = generate(
        decoder,
        memory,
        mask,
        strategy="sample",
        top_k=1,
        temperature=2.0,
        max_new_tokens=8,
        generator=torch.Generator().manual_seed(5),
    )
    assert torch.equal(greedy[0], sampled[0])
    torch.testing.assert_close(greedy[1], sampled[1], atol=1e-6, rtol=0)


def test_sampling_is_reproducible_with_a_seed() -> None:
    decoder = tiny_decoder(vocab_size=40)
    memory, mask = memory_batch(B=8)
    mask[1] = True

    def run(seed: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        return generate(
            decoder, memory, mask, strategy="sample", top_p=0.95, temperature=1.5, max_new_tokens=8, generator=gen
        )[0]

    assert torch.equal(run(7), run(7))
    assert any(not torch.equal(run(7), run(s)) for s in (8, 9, 10))


def slow_top_p(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Reference nucleus filter: add tokens from most to least likely until their mass reaches p."""
    out = torch.full_like(logits, float("-inf"))
    for r, row in enumerate(logits):
        probs = row.double().softmax(dim=0).tolist()
        mass = 0.0
        for i in sorted(range(len(probs)), key=lambda i: -probs[i]):
            out[r, i] = row[i]
            mass += probs[i]
            if mass >= p:
                break
    return out


def test_top_p_keeps_smallest_set_reaching_p() -> None:
    g = torch.Generator().manual_seed(0)
    for p in (0.1, 0.5, 0.9, 0.99):
        logits = torch.randn(20, 12, generator=g) * 2
        assert torch.equal(top_p_filter(logits, p), slow_top_p(logits, p))
    logits = torch.tensor([[3.0, 1.0, 0.0, -1.0]])
    assert torch.isfinite(top_p_filter(logits, 1e-6)).sum() == 1  # the top token always survives
    assert torch.equal(top_p_filter(logits, 1.0), logits)


def test_top_k_keeps_k_largest() -> None:
    logits = torch.randn(6, 12)
    kept = top_k_filter(logits, 3)
    for row, kept_row in zip(logits, kept):
        expected = set(row.argsort(descending=True)[:3].tolist())
        assert set(torch.isfinite(kept_row).nonzero().flatten().tolist()) == expected
    assert torch.equal(top_k_filter(logits, 0), logits)


def brute_force_best(decoder: TransformerDecoder, memory: torch.Tensor, max_new_tokens: int, length_penalty: float):
    """Score every possible output (each ends at EOS or at max_new_tokens) with teacher forcing."""
    allowed = [t for t in range(decoder.vocab_size) if t not in (PAD, BOS)]
    others = [t for t in allowed if t != EOS]
    candidates = []
    for length in range(1, max_new_tokens + 1):
        for prefix in itertools.product(others, repeat=length - 1):
            candidates.append(list(prefix) + [EOS] + [PAD] * (max_new_tokens - length))
    candidates += [list(seq) for seq in itertools.product(others, repeat=max_new_tokens)]
    tokens = torch.tensor(candidates)
    scores = score_sequences(decoder, memory.expand(len(candidates), -1, -1), tokens, length_penalty=length_penalty)
    best = scores.argmax()
    return tokens[best], scores[best]


@pytest.mark.parametrize("length_penalty", [0.0, 1.0, 2.0])
def test_exhaustive_beam_search_finds_brute_force_optimum(length_penalty: float) -> None:
    # vocab 5 = pad, bos, eos + 2 tokens; 3 steps give at most 15 candidates, so 25 beams are exhaustive.
    beats_greedy = 0
    for seed in range(6):
        decoder = tiny_decoder(seed, vocab_size=5)
        memory, _ = memory_batch(B=2, seed=seed)
        tokens, scores = generate(
            decoder, memory, strategy="beam", num_beams=25, max_new_tokens=3, length_penalty=length_penalty
        )
        _, greedy_scores = generate(decoder, memory, strategy="greedy", max_new_tokens=3, length_penalty=length_penalty)
        assert (scores >= greedy_scores - 1e-6).all()
        beats_greedy += int((scores > greedy_scores + 1e-4).sum())
        for b in range(2):
            best_tokens, best_score = brute_force_best(decoder, memory[b : b + 1], 3, length_penalty)
            torch.testing.assert_close(scores[b], best_score, atol=1e-5, rtol=0)
            row = tokens[b].tolist() + [PAD] * (3 - tokens.size(1))
            assert row == best_tokens.tolist()
    assert beats_greedy > 0  # the seeds include cases where greedy is not optimal


def test_batched_beam_search_equals_one_sample_at_a_time() -> None:
    decoder = tiny_decoder()
    memory, mask = memory_batch()
    tokens, scores = generate(decoder, memory, mask, strategy="beam", num_beams=4, max_new_tokens=8)
    for b in range(3):
        one_tokens, one_score = generate(
            decoder, memory[b : b + 1], mask[b : b + 1], strategy="beam", num_beams=4, max_new_tokens=8
        )
        row = tokens[b, : one_tokens.size(1)]
        assert torch.equal(row, one_tokens[0]) and (tokens[b, one_tokens.size(1) :] == PAD).all()
        torch.testing.assert_close(scores[b], one_score[0], atol=1e-5, rtol=0)


def test_pad_and_bos_are_never_generated() -> None:
    decoder = tiny_decoder()
    logits = torch.randn(4, 12)
    log_probs = next_token_log_probs(logits, decoder)
    assert torch.isneginf(log_probs[:, [PAD, BOS]]).all()
    torch.testing.assert_close(log_probs.exp().sum(-1), torch.ones(4))


def test_teacher_forcing_trains_every_parameter() -> None:
    decoder = tiny_decoder().train()
    memory, mask = memory_batch()
    targets = torch.randint(3, 12, (3, 6))
    targets[0, 4:] = PAD
    inputs = torch.cat([torch.full((3, 1), BOS), targets[:, :-1]], dim=1)
    logits = decoder(inputs, memory, mask, attention_mask=inputs != PAD)
    loss = nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=PAD)
    loss.backward()
    for name, p in decoder.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
