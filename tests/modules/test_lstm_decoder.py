"""LSTMDecoder's own parts: its initial state from the memory, and that it learns a copy task.

What every registered decoder obeys (teacher forcing equals stepping, masks, padding, every generation
strategy against slow references) is tested once for all of them in ``test_generation_contract.py``.
"""

from __future__ import annotations

import torch
from torch import nn

from polymodal.modules.heads import LSTMDecoder
from polymodal.modules.heads.generation import generate
from polymodal.modules.heads.lstm_decoder import LSTMCache
from tests.modules.test_generation_contract import BOS, EOS, MEMORY_DIM, PAD, memory_batch, tiny_decoder


def test_initial_state_comes_from_the_masked_mean_of_the_memory() -> None:
    decoder = tiny_decoder("lstm")  # width 16, depth 2
    memory, mask = memory_batch()  # (B=3, S=5, 8); row 1 has 3 real positions
    mask[2] = False  # row 2 has none: it pools to zeros
    cache = decoder.init_cache(memory, mask)
    assert isinstance(cache, LSTMCache) and cache.length == 0
    assert cache.h.shape == cache.c.shape == (2, 3, 16)  # (depth, B, width): the batch in dim 1, as nn.LSTM has it
    assert cache.keys.shape == (3, 5, 16) and cache.memory is memory

    def state(layer: nn.Linear, pooled: torch.Tensor) -> torch.Tensor:
        return torch.tanh(layer(pooled)).view(3, 2, 16).transpose(0, 1)

    pooled = torch.stack([memory[0].mean(dim=0), memory[1, :3].mean(dim=0), torch.zeros(MEMORY_DIM)])
    torch.testing.assert_close(cache.h, state(decoder.init_h, pooled))
    torch.testing.assert_close(cache.c, state(decoder.init_c, pooled))
    torch.testing.assert_close(decoder.init_cache(memory).h, state(decoder.init_h, memory.mean(dim=1)))  # no mask
    # Beam search moves rows: the state along dim 1, the attention keys and the memory along dim 0.
    rows = torch.tensor([2, 0, 0])
    moved = cache.reorder(rows)
    assert torch.equal(moved.h, cache.h[:, rows]) and torch.equal(moved.c, cache.c[:, rows])
    assert torch.equal(moved.keys, cache.keys[rows]) and torch.equal(moved.memory, memory[rows])


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
