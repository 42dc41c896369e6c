"""The contract every registered text decoder obeys, written once and run for each name in ``DECODERS``.

The conventions are those of ``polymodal.modules.heads.decoders`` (teacher forcing and stepping give
the same logits, caches reorder their rows, no NaN even without memory) and of
``polymodal.modules.heads.generation`` (BOS is never returned, EOS is followed by pad only, scores
are recomputed by teacher forcing, one beam is greedy ...). A newly registered decoder gets all of
it by adding a factory to ``FACTORIES`` (``test_registry_names_every_decoder_and_each_has_a_factory``
fails until it does). What only one decoder has, such as the transformer's KV cache layout or the
LSTM's initial state, is tested in that decoder's own file.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

from polymodal.modules.heads import DECODERS, TextDecoder
from polymodal.modules.heads.generation import (
    generate,
    next_token_log_probs,
    score_sequences,
    top_k_filter,
    top_p_filter,
)

PAD, BOS, EOS = 0, 1, 2
MEMORY_DIM = 8
STRATEGIES = ["greedy", "beam", "sample"]


def tiny_transformer(**common: Any) -> TextDecoder:
    return DECODERS.build("transformer", width=16, depth=2, heads=2, **common)


def tiny_lstm(**common: Any) -> TextDecoder:
    # Dropout acts only in train mode: test_teacher_forcing_trains_every_parameter runs through it.
    return DECODERS.build("lstm", width=16, depth=2, dropout=0.1, **common)


# One factory per registered name: the decoder's own parameters, small; the common ones come from tiny_decoder.
FACTORIES: dict[str, Callable[..., TextDecoder]] = {"transformer": tiny_transformer, "lstm": tiny_lstm}


def tiny_decoder(
    name: str, seed: int = 5, vocab_size: int = 12, max_length: int = 10, peaked: bool = True, **kwargs: Any
) -> TextDecoder:
    """A random tiny decoder, in eval mode. ``peaked`` redraws its weights large, so its distributions are
    peaked and ties rare; ``peaked=False`` keeps the decoder's own initialization (an untrained model).
    ``kwargs`` override the common arguments or add the decoder's own."""
    torch.manual_seed(seed)
    common = {"vocab_size": vocab_size, "max_length": max_length, "memory_dim": MEMORY_DIM}
    common |= {"pad_id": PAD, "bos_id": BOS, "eos_id": EOS, **kwargs}
    decoder = FACTORIES[name](**common)
    if peaked:
        for p in decoder.parameters():
            if p.dim() > 1:
                nn.init.normal_(p, std=0.5)
    return decoder.eval()


def memory_batch(B: int = 3, S: int = 5, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, S, MEMORY_DIM) random memory and its mask: row 1 has only 3 real positions."""
    g = torch.Generator().manual_seed(seed)
    memory = torch.randn(B, S, MEMORY_DIM, generator=g)
    mask = torch.ones(B, S, dtype=torch.bool)
    mask[1, 3:] = False
    return memory, mask


@pytest.fixture(params=DECODERS.names())
def name(request: pytest.FixtureRequest) -> str:
    """Every registered decoder name; each test below runs once per decoder."""
    return request.param


# --- Registry and construction ------------------------------------------------------------------


def test_registry_names_every_decoder_and_each_has_a_factory() -> None:
    assert DECODERS.names() == ["lstm", "transformer"]
    assert sorted(FACTORIES) == DECODERS.names()
    with pytest.raises(KeyError, match="unknown decoder 'gru'; known: lstm, transformer"):
        DECODERS.build("gru", vocab_size=12)


def test_registry_builds_it_with_the_common_arguments(name: str) -> None:
    decoder = tiny_decoder(name, peaked=False)  # built by DECODERS.build, initialized as the decoder does
    assert isinstance(decoder, TextDecoder)
    assert (decoder.vocab_size, decoder.max_length, decoder.pad_id, decoder.bos_id, decoder.eos_id) == (
        12,
        10,
        PAD,
        BOS,
        EOS,
    )
    memory, mask = memory_batch()
    for strategy in STRATEGIES:
        tokens, scores = generate(decoder, memory, mask, strategy=strategy, max_new_tokens=5, num_beams=3)
        assert tokens.shape[0] == 3 and torch.isfinite(scores).all(), strategy
    with pytest.raises(ValueError, match=r"eos_id=12 is outside the vocabulary \[0, 12\)"):
        tiny_decoder(name, eos_id=12)


def test_tied_embeddings_share_one_weight(name: str) -> None:
    decoder = tiny_decoder(name)
    assert decoder.lm_head.weight is decoder.token_embedding.weight
    untied = tiny_decoder(name, tie_embeddings=False)
    assert untied.lm_head.weight is not untied.token_embedding.weight


# --- Teacher forcing, stepping and masks --------------------------------------------------------


@pytest.mark.parametrize("peaked", [True, False], ids=["peaked", "own_init"])
def test_teacher_forcing_equals_stepping(name: str, peaked: bool) -> None:
    decoder = tiny_decoder(name, peaked=peaked)
    memory, mask = memory_batch()
    ids = torch.randint(3, 12, (3, 7))
    full = decoder(ids, memory, mask)
    assert full.shape == (3, 7, 12)  # (B, T, V)
    # One token at a time.
    cache, steps = None, []
    for t in range(ids.size(1)):
        logits, cache = decoder.forward_step(ids[:, t : t + 1], memory, mask, cache)
        steps.append(logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=0)
    # Chunks of several tokens (for the transformer: the causal mask against cached positions).
    first, cache = decoder.forward_step(ids[:, :3], memory, mask, None)
    rest, cache = decoder.forward_step(ids[:, 3:], memory, mask, cache)
    assert cache.length == 7
    torch.testing.assert_close(torch.cat([first, rest], dim=1), full, atol=1e-5, rtol=0)


def test_reordered_cache_continues_the_chosen_rows(name: str) -> None:
    decoder = tiny_decoder(name)
    memory, mask = memory_batch()
    ids = torch.randint(3, 12, (3, 5))
    rows = torch.tensor([2, 0, 0])
    _, cache = decoder.forward_step(ids[:, :3], memory, mask, None)
    moved, _ = decoder.forward_step(ids[rows, 3:], memory[rows], mask[rows], cache.reorder(rows))
    expected = decoder(ids[rows], memory[rows], mask[rows])[:, 3:]
    torch.testing.assert_close(moved, expected, atol=1e-5, rtol=0)


def test_causality_future_tokens_do_not_change_earlier_logits(name: str) -> None:
    decoder = tiny_decoder(name)
    memory, mask = memory_batch()
    ids = torch.randint(3, 12, (3, 6))
    changed = ids.clone()
    changed[:, 4:] = (changed[:, 4:] + 1) % 12
    a, b = decoder(ids, memory, mask), decoder(changed, memory, mask)
    torch.testing.assert_close(a[:, :4], b[:, :4], atol=0, rtol=0)
    assert not torch.allclose(a[:, 4:], b[:, 4:])


def test_right_padding_does_not_change_real_positions(name: str) -> None:
    decoder = tiny_decoder(name)
    memory, mask = memory_batch()
    ids = torch.randint(3, 12, (3, 6))
    short = ids[:, :4]
    padded = torch.cat([short, torch.full((3, 3), PAD)], dim=1)
    logits = decoder(padded, memory, mask, attention_mask=padded != PAD)
    assert torch.isfinite(logits).all()
    torch.testing.assert_close(logits[:, :4], decoder(short, memory, mask), atol=1e-5, rtol=0)
    torch.testing.assert_close(logits[:, :4], decoder(ids, memory, mask)[:, :4], atol=1e-5, rtol=0)


def test_memory_mask_hides_masked_positions(name: str) -> None:
    decoder = tiny_decoder(name)
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


def test_row_with_no_real_memory_gives_finite_logits_and_ignores_memory(name: str) -> None:
    decoder = tiny_decoder(name)
    memory, mask = memory_batch()
    mask[2] = False
    ids = torch.randint(3, 12, (3, 4))
    logits = decoder(ids, memory, mask)
    assert torch.isfinite(logits).all()
    other = memory.clone()
    other[2] = torch.randn(5, MEMORY_DIM)
    torch.testing.assert_close(logits, decoder(ids, other, mask), atol=0, rtol=0)
    _, scores = generate(decoder, memory, mask, strategy="beam", num_beams=3, max_new_tokens=6)
    assert torch.isfinite(scores).all()
    logits.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in decoder.parameters() if p.grad is not None)


def test_too_long_sequence_names_max_length(name: str) -> None:
    decoder = tiny_decoder(name, max_length=4)
    memory, _ = memory_batch()
    with pytest.raises(ValueError, match="max_length=4"):
        decoder(torch.randint(3, 12, (3, 5)), memory)
    _, cache = decoder.forward_step(torch.randint(3, 12, (3, 4)), memory)
    with pytest.raises(ValueError, match="sequence length 5 exceeds the decoder's max_length=4"):
        decoder.forward_step(torch.randint(3, 12, (3, 1)), memory, cache=cache)
    with pytest.raises(ValueError, match="max_length=4"):
        generate(decoder, memory, max_new_tokens=5)
    with pytest.raises(ValueError, match="unknown strategy 'topk'"):
        generate(decoder, memory, strategy="topk")  # type: ignore[arg-type]


def test_teacher_forcing_trains_every_parameter(name: str) -> None:
    decoder = tiny_decoder(name).train()
    memory, mask = memory_batch()
    targets = torch.randint(3, 12, (3, 6))
    targets[0, 4:] = PAD
    inputs = torch.cat([torch.full((3, 1), BOS), targets[:, :-1]], dim=1)
    logits = decoder(inputs, memory, mask, attention_mask=inputs != PAD)
    loss = nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=PAD)
    loss.backward()
    for param_name, p in decoder.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), param_name
        assert p.grad.abs().sum() > 0, param_name


# --- Generation ---------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_cache_equals_no_cache(name: str, strategy: str) -> None:
    decoder = tiny_decoder(name)
    memory, mask = memory_batch(B=8)  # 8 rows: for every decoder and strategy, some stop early and some do not
    kwargs = {"strategy": strategy, "max_new_tokens": 8, "num_beams": 4, "top_k": 5}
    cached = generate(decoder, memory, mask, generator=torch.Generator().manual_seed(3), **kwargs)
    plain = generate(decoder, memory, mask, generator=torch.Generator().manual_seed(3), use_cache=False, **kwargs)
    assert (cached[0] == EOS).any() and (cached[0] != PAD).all(dim=1).any()  # rows that stop early and late
    assert torch.equal(cached[0], plain[0])
    torch.testing.assert_close(cached[1], plain[1], atol=1e-5, rtol=0)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_output_format_and_scores_match_teacher_forcing(name: str, strategy: str) -> None:
    decoder = tiny_decoder(name)
    memory, mask = memory_batch(B=6)
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
    assert tokens.dtype == torch.long and tokens.shape[0] == 6 and tokens.shape[1] <= 8
    for row in tokens.tolist():
        assert BOS not in row
        if EOS in row:
            end = row.index(EOS)
            assert all(t == PAD for t in row[end + 1 :])
            assert PAD not in row[:end]
        else:
            assert PAD not in row and len(row) == 8
    assert torch.isfinite(scores).all()
    expected = score_sequences(decoder, memory, tokens, mask, length_penalty=0.6)
    torch.testing.assert_close(scores, expected, atol=1e-5, rtol=0)


def test_generation_ends_at_eos_and_pads_after(name: str) -> None:
    decoder = tiny_decoder(name)
    memory, _ = memory_batch(B=16, seed=3)
    with torch.no_grad():
        decoder.lm_head.weight[EOS] *= 3  # make EOS likely somewhere, so some rows stop early
    for strategy in STRATEGIES:
        tokens, _ = generate(
            decoder,
            memory,
            strategy=strategy,
            max_new_tokens=8,
            num_beams=3,
            generator=torch.Generator().manual_seed(1),
        )
        ended = (tokens == EOS).any(dim=1)
        assert ended.any(), strategy
        for row in tokens[ended].tolist():
            assert set(row[row.index(EOS) + 1 :]) <= {PAD}


def test_pad_and_bos_are_never_generated(name: str) -> None:
    decoder = tiny_decoder(name)
    logits = torch.randn(4, decoder.vocab_size)
    log_probs = next_token_log_probs(logits, decoder)
    assert torch.isneginf(log_probs[:, [PAD, BOS]]).all()
    torch.testing.assert_close(log_probs.exp().sum(-1), torch.ones(4))


def test_one_beam_equals_greedy(name: str) -> None:
    for seed in range(4):
        decoder = tiny_decoder(name, seed)
        memory, mask = memory_batch(seed=seed)
        greedy = generate(decoder, memory, mask, strategy="greedy", max_new_tokens=8)
        beam = generate(decoder, memory, mask, strategy="beam", num_beams=1, max_new_tokens=8)
        assert torch.equal(greedy[0], beam[0])
        torch.testing.assert_close(greedy[1], beam[1], atol=1e-6, rtol=0)


def test_top_k_one_sampling_equals_greedy(name: str) -> None:
    decoder = tiny_decoder(name)
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


def test_sampling_is_reproducible_with_a_seed(name: str) -> None:
    decoder = tiny_decoder(name, vocab_size=40)
    memory, mask = memory_batch(B=8)
    mask[1] = True

    def run(seed: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        return generate(
            decoder, memory, mask, strategy="sample", top_p=0.95, temperature=1.5, max_new_tokens=8, generator=gen
        )[0]

    assert torch.equal(run(7), run(7))
    assert any(not torch.equal(run(7), run(s)) for s in (8, 9, 10))


def test_beam_search_scores_at_least_greedy(name: str) -> None:
    decoder = tiny_decoder(name)
    memory, _ = memory_batch(B=8, seed=4)
    _, greedy = generate(decoder, memory, strategy="greedy", max_new_tokens=6)
    _, beam = generate(decoder, memory, strategy="beam", num_beams=8, max_new_tokens=6)
    assert (beam >= greedy - 1e-6).all()


def brute_force_best(decoder: TextDecoder, memory: torch.Tensor, max_new_tokens: int, length_penalty: float):
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
def test_exhaustive_beam_search_finds_brute_force_optimum(name: str, length_penalty: float) -> None:
    # vocab 5 = pad, bos, eos + 2 tokens; 3 steps give at most 15 candidates, so 25 beams are exhaustive.
    # 8 seeds, so that for every decoder and length penalty some sample has a better answer than greedy's.
    beats_greedy = 0
    for seed in range(8):
        decoder = tiny_decoder(name, seed, vocab_size=5)
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


def test_batched_beam_search_equals_one_sample_at_a_time(name: str) -> None:
    decoder = tiny_decoder(name)
    memory, mask = memory_batch()
    tokens, scores = generate(decoder, memory, mask, strategy="beam", num_beams=4, max_new_tokens=8)
    for b in range(3):
        one_tokens, one_score = generate(
            decoder, memory[b : b + 1], mask[b : b + 1], strategy="beam", num_beams=4, max_new_tokens=8
        )
        row = tokens[b, : one_tokens.size(1)]
        assert torch.equal(row, one_tokens[0]) and (tokens[b, one_tokens.size(1) :] == PAD).all()
        torch.testing.assert_close(scores[b], one_score[0], atol=1e-5, rtol=0)


# --- Filters of sampling: plain functions of logits, the same for every decoder -------------------


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
