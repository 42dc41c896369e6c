"""LSTMDecoder and the decoder registry: stepping against teacher forcing, masks, generation, a copy task."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from polymodal.modules.heads import DECODERS, LSTMDecoder, TextDecoder
from polymodal.modules.heads.generation import generate, score_sequences

PAD, BOS, EOS = 0, 1, 2
MEMORY_DIM = 8
COMMON = {"memory_dim": MEMORY_DIM, "vocab_size": 12, "max_length": 10, "pad_id": PAD, "bos_id": BOS, "eos_id": EOS}
PARAMS = {"transformer": {"width": 16, "depth": 2, "heads": 2}, "lstm": {"width": 16, "depth": 2}}


def tiny_lstm(seed: int = 5, vocab_size: int = 12, max_length: int = 10) -> LSTMDecoder:
    """A random tiny decoder with large weights, so its distributions are peaked and ties rare."""
    torch.manual_seed(seed)
    decoder = LSTMDecoder(
        vocab_size=vocab_size,
        width=16,
        depth=2,
        max_length=max_length,
        memory_dim=MEMORY_DIM,
        pad_id=PAD,
        bos_id=BOS,
        eos_id=EOS,
        dropout=0.1,
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


def test_registry_builds_every_decoder_with_the_common_arguments() -> None:
    assert DECODERS.names() == ["lstm", "transformer"]
    for name in DECODERS:
        decoder = DECODERS.build(name, **COMMON, **PARAMS[name])
        assert isinstance(decoder, TextDecoder)
        assert (decoder.vocab_size, decoder.max_length, decoder.pad_id, decoder.bos_id, decoder.eos_id) == (
            12,
            10,
            PAD,
            BOS,
            EOS,
        )
    with pytest.raises(KeyError, match="unknown decoder 'gru'; known: lstm, transformer"):
        DECODERS.build("gru", **COMMON)
    with pytest.raises(ValueError, match=r"eos_id=12 is outside the vocabulary \[0, 12\)"):
        LSTMDecoder(12, 16, 1, 10, MEMORY_DIM, PAD, BOS, eos_id=12)


@pytest.mark.parametrize("name", ["lstm", "transformer"])
def test_every_registered_decoder_steps_like_teacher_forcing_and_generates(name: str) -> None:
    decoder = DECODERS.build(name, **COMMON, **PARAMS[name]).eval()
    memory, mask = memory_batch()
    ids = torch.randint(3, 12, (3, 6))
    full = decoder(ids, memory, mask)
    assert full.shape == (3, 6, 12)
    cache, steps = None, []
    for t in range(ids.size(1)):
        logits, cache = decoder.forward_step(ids[:, t : t + 1], memory, mask, cache)
        steps.append(logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=0)
    for strategy in ("greedy", "beam", "sample"):
        tokens, scores = generate(decoder, memory, mask, strategy=strategy, max_new_tokens=5, num_beams=3)
        assert tokens.shape[0] == 3 and torch.isfinite(scores).all()


def test_teacher_forcing_equals_stepping() -> None:
    decoder = tiny_lstm()
    memory, mask = memory_batch()
    ids = torch.randint(3, 12, (3, 7))
    full = decoder(ids, memory, mask)  # (B, T, V)
    cache, steps = None, []
    for t in range(ids.size(1)):
        logits, cache = decoder.forward_step(ids[:, t : t + 1], memory, mask, cache)
        steps.append(logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=0)
    first, cache = decoder.forward_step(ids[:, :3], memory, mask, None)
    rest, cache = decoder.forward_step(ids[:, 3:], memory, mask, cache)
    assert cache.length == 7
    torch.testing.assert_close(torch.cat([first, rest], dim=1), full, atol=1e-5, rtol=0)


def test_reordered_cache_continues_the_chosen_rows() -> None:
    decoder = tiny_lstm()
    memory, mask = memory_batch()
    ids = torch.randint(3, 12, (3, 5))
    rows = torch.tensor([2, 0, 0])
    _, cache = decoder.forward_step(ids[:, :3], memory, mask, None)
    moved, _ = decoder.forward_step(ids[rows, 3:], memory[rows], mask[rows], cache.reorder(rows))
    expected = decoder(ids[rows], memory[rows], mask[rows])[:, 3:]
    torch.testing.assert_close(moved, expected, atol=1e-5, rtol=0)


def test_causality_and_right_padding() -> None:
    decoder = tiny_lstm()
    memory, mask = memory_batch()
    ids = torch.randint(3, 12, (3, 6))
    changed = ids.clone()
    changed[:, 4:] = (changed[:, 4:] + 1) % 12
    a, b = decoder(ids, memory, mask), decoder(changed, memory, mask)
    torch.testing.assert_close(a[:, :4], b[:, :4], atol=0, rtol=0)
    assert not torch.allclose(a[:, 4:], b[:, 4:])
    padded = torch.cat([ids[:, :4], torch.full((3, 3), PAD)], dim=1)
    logits = decoder(padded, memory, mask, attention_mask=padded != PAD)
    torch.testing.assert_close(logits[:, :4], a[:, :4], atol=1e-5, rtol=0)


def test_memory_mask_hides_masked_positions() -> None:
    decoder = tiny_lstm()
    memory, mask = memory_batch()
    altered = memory.clone()
    altered[1, 3:] = torch.randn(2, MEMORY_DIM) * 10  # only positions masked out in row 1
    ids = torch.randint(3, 12, (3, 5))
    torch.testing.assert_close(decoder(ids, memory, mask), decoder(ids, altered, mask), atol=0, rtol=0)
    tokens_a, scores_a = generate(decoder, memory, mask, strategy="beam", num_beams=3, max_new_tokens=6)
    tokens_b, scores_b = generate(decoder, altered, mask, strategy="beam", num_beams=3, max_new_tokens=6)
    assert torch.equal(tokens_a, tokens_b) and torch.equal(scores_a, scores_b)
    assert not torch.allclose(decoder(ids, memory), decoder(ids, altered))  # the change is visible unmasked


def test_row_with_no_real_memory_gives_finite_logits_and_ignores_memory() -> None:
    decoder = tiny_lstm()
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


def test_too_long_sequence_names_max_length() -> None:
    decoder = tiny_lstm(max_length=4)
    memory, _ = memory_batch()
    with pytest.raises(ValueError, match="max_length=4"):
        decoder(torch.randint(3, 12, (3, 5)), memory)
    _, cache = decoder.forward_step(torch.randint(3, 12, (3, 4)), memory)
    with pytest.raises(ValueError, match="sequence length 5 exceeds the decoder's max_length=4"):
        decoder.forward_step(torch.randint(3, 12, (3, 1)), memory, cache=cache)
    with pytest.raises(ValueError, match="max_length=4"):
        generate(decoder, memory, max_new_tokens=5)


@pytest.mark.parametrize("strategy", ["greedy", "beam", "sample"])
def test_cache_equals_no_cache(strategy: str) -> None:
    decoder = tiny_lstm()
    memory, mask = memory_batch()
    kwargs = {"strategy": strategy, "max_new_tokens": 8, "num_beams": 4, "top_k": 5}
    cached = generate(decoder, memory, mask, generator=torch.Generator().manual_seed(3), **kwargs)
    plain = generate(decoder, memory, mask, generator=torch.Generator().manual_seed(3), use_cache=False, **kwargs)
    assert torch.equal(cached[0], plain[0])
    torch.testing.assert_close(cached[1], plain[1], atol=1e-5, rtol=0)


@pytest.mark.parametrize("strategy", ["greedy", "beam", "sample"])
def test_output_format_and_scores_match_teacher_forcing(strategy: str) -> None:
    decoder = tiny_lstm()
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
    expected = score_sequences(decoder, memory, tokens, mask, length_penalty=0.6)
    torch.testing.assert_close(scores, expected, atol=1e-5, rtol=0)


def test_generation_ends_at_eos_and_pads_after() -> None:
    decoder = tiny_lstm()
    memory, mask = memory_batch(B=16, seed=3)
    with torch.no_grad():
        decoder.lm_head.weight[EOS] *= 3  # make EOS likely somewhere, so some rows stop early
    for strategy in ("greedy", "beam", "sample"):
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


def test_one_beam_equals_greedy() -> None:
    for seed in range(3):
        decoder = tiny_lstm(seed)
        memory, mask = memory_batch(seed=seed)
        greedy = generate(decoder, memory, mask, strategy="greedy", max_new_tokens=8)
        beam = generate(decoder, memory, mask, strategy="beam", num_beams=1, max_new_tokens=8)
        assert torch.equal(greedy[0], beam[0])
        torch.testing.assert_close(greedy[1], beam[1], atol=1e-6, rtol=0)


def test_beam_search_scores_at_least_greedy() -> None:
    decoder = tiny_lstm()
    memory, mask = memory_batch(B=8, seed=4)
    _, greedy = generate(decoder, memory, strategy="greedy", max_new_tokens=6)
    _, beam = generate(decoder, memory, strategy="beam", num_beams=8, max_new_tokens=6)
    assert (beam >= greedy - 1e-6).all()


def test_teacher_forcing_trains_every_parameter() -> None:
    decoder = tiny_lstm().train()
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


def copy_batch(B: int, g: torch.Generator, symbols: int = 4, S: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Memory = S tokens (one-hot symbol + one-hot position); target = the symbols in order, then EOS."""
    symbol = torch.randint(0, symbols, (B, S), generator=g)
    memory = torch.cat(
        [nn.functional.one_hot(symbol, symbols), nn.functional.one_hot(torch.arange(S), S).expand(B, S, S)], dim=-1
    ).float()  # (B, S, symbols + S)
    targets = torch.cat([symbol + 3, torch.full((B, 1), EOS)], dim=1)  # ids 3.. are the symbols
    return memory, targets


def test_lstm_decoder_learns_to_copy_its_memory() -> None:
    torch.manual_seed(0)
    symbols, S = 6, 4
    decoder = LSTMDecoder(
        vocab_size=3 + symbols,
        width=32,
        depth=1,
        max_length=S + 2,
        memory_dim=symbols + S,
        pad_id=PAD,
        bos_id=BOS,
        eos_id=EOS,
    )
    optimizer = torch.optim.Adam(decoder.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    for _ in range(300):
        memory, targets = copy_batch(32, g, symbols, S)
        inputs = torch.cat([torch.full((32, 1), BOS), targets[:, :-1]], dim=1)
        loss = nn.functional.cross_entropy(decoder(inputs, memory).flatten(0, 1), targets.flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    decoder.eval()
    memory, targets = copy_batch(64, torch.Generator().manual_seed(99), symbols, S)
    for strategy in ("greedy", "beam"):
        tokens, _ = generate(decoder, memory, strategy=strategy, num_beams=3, max_new_tokens=S + 1)
        assert torch.equal(tokens, targets), strategy
