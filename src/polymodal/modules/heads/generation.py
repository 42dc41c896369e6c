"""Decoding strategies for any ``TextDecoder``: greedy, beam search and top-k / top-p sampling.

Conventions shared by every strategy:

- a sequence starts from ``bos_id`` (not returned) and ends at the first ``eos_id`` (returned);
  the positions after it hold ``pad_id``. Every sequence stops after ``max_new_tokens``.
- ``pad_id`` and ``bos_id`` are never generated: ``next_token_log_probs`` removes them.
- a sequence's score is its summed log-probability under the model (with that removal, and
  without temperature/top-k/top-p) divided by ``length ** length_penalty``, where length counts
  the generated tokens including EOS (as in Hugging Face). ``score_sequences`` recomputes it
  with teacher forcing, so scores of different strategies are comparable.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

from polymodal.modules.heads.decoders import DecoderState, TextDecoder

Strategy = Literal["greedy", "beam", "sample"]
STRATEGIES = ("greedy", "beam", "sample")


@torch.no_grad()
def generate(
    decoder: TextDecoder,
    memory: Tensor,
    memory_mask: Tensor | None = None,
    strategy: Strategy = "greedy",
    max_new_tokens: int = 20,
    num_beams: int = 4,
    length_penalty: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
) -> tuple[Tensor, Tensor]:
    """Generate from ``memory`` (B, S, D): -> (token ids (B, L) LongTensor, scores (B,)).

    L <= ``max_new_tokens`` (generation stops early once every sequence has emitted EOS).
    ``num_beams`` is read by "beam"; ``top_k`` (0 = off), ``top_p`` (1.0 = off), ``temperature``
    and ``generator`` by "sample". ``use_cache=False`` re-runs the whole prefix every step (slow;
    kept as the reference the cache is tested against).
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}")
    if not 1 <= max_new_tokens <= decoder.max_length:
        raise ValueError(f"max_new_tokens={max_new_tokens} must be in [1, max_length={decoder.max_length}]")
    if strategy == "beam":
        if num_beams < 1:
            raise ValueError(f"num_beams must be >= 1, got {num_beams}")
        return _beam_search(decoder, memory, memory_mask, max_new_tokens, num_beams, length_penalty, use_cache)
    if strategy == "greedy":
        return _decode_one_path(
            decoder,
            _Stepper(decoder, memory, memory_mask, use_cache),
            max_new_tokens,
            length_penalty,
            pick=lambda log_probs: log_probs.argmax(dim=-1),
        )
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature} (use strategy='greedy' instead)")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")

    def pick(log_probs: Tensor) -> Tensor:
        logits = top_p_filter(top_k_filter(log_probs / temperature, top_k), top_p)
        return torch.multinomial(logits.softmax(dim=-1), 1, generator=generator).squeeze(1)

    return _decode_one_path(
        decoder, _Stepper(decoder, memory, memory_mask, use_cache), max_new_tokens, length_penalty, pick
    )


def next_token_log_probs(logits: Tensor, decoder: TextDecoder) -> Tensor:
    """(..., V) logits -> float32 log-probabilities with pad and BOS removed (they are never generated)."""
    banned = sorted({decoder.pad_id, decoder.bos_id} - {decoder.eos_id})
    logits = logits.float().clone()
    logits[..., banned] = float("-inf")
    return logits.log_softmax(dim=-1)


def top_k_filter(logits: Tensor, k: int) -> Tensor:
    """Set every logit below the k-th largest of its row to -inf (k <= 0 keeps all; ties are kept)."""
    if k <= 0 or k >= logits.size(-1):
        return logits
    kth = logits.topk(k, dim=-1).values[..., -1:]  # (..., 1)
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: Tensor, p: float) -> Tensor:
    """Nucleus filtering: keep the smallest set of most likely tokens whose probability sums to >= p."""
    if p >= 1:
        return logits
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    probs = sorted_logits.softmax(dim=-1)
    cumulative = probs.cumsum(dim=-1)
    # Mass of the strictly more likely tokens: once it reaches p, this token is not needed.
    mass_before = torch.cat([torch.zeros_like(cumulative[..., :1]), cumulative[..., :-1]], dim=-1)
    drop_sorted = mass_before >= p
    drop = drop_sorted.scatter(-1, order, drop_sorted)  # back to vocabulary order
    return logits.masked_fill(drop, float("-inf"))


@torch.no_grad()
def score_sequences(
    decoder: TextDecoder,
    memory: Tensor,
    tokens: Tensor,
    memory_mask: Tensor | None = None,
    length_penalty: float = 1.0,
) -> Tensor:
    """Score generated ``tokens`` (B, L) (no BOS; pad after EOS) with teacher forcing: -> (B,)."""
    bos = torch.full_like(tokens[:, :1], decoder.bos_id)
    inputs = torch.cat([bos, tokens[:, :-1]], dim=1)  # (B, L)
    log_probs = next_token_log_probs(decoder(inputs, memory, memory_mask), decoder)  # (B, L, V)
    token_log_probs = log_probs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)  # (B, L)
    is_eos = (tokens == decoder.eos_id).long()
    real = (is_eos.cumsum(dim=1) - is_eos) == 0  # up to and including the first EOS
    sums = token_log_probs.masked_fill(~real, 0.0).sum(dim=1)
    return sums / _length_norm(real.sum(dim=1), length_penalty)


class _Stepper:
    """Next-token logits for the sequences so far, with or without the decoder's cache."""

    def __init__(self, decoder: TextDecoder, memory: Tensor, memory_mask: Tensor | None, use_cache: bool):
        self.decoder, self.memory, self.memory_mask, self.use_cache = decoder, memory, memory_mask, use_cache
        self.cache: DecoderState | None = None

    def __call__(self, tokens: Tensor) -> Tensor:
        """(N, t) every token so far -> (N, V) logits for the next one."""
        if not self.use_cache:
            return self.decoder(tokens, self.memory, self.memory_mask)[:, -1]
        new = tokens if self.cache is None else tokens[:, -1:]
        logits, self.cache = self.decoder.forward_step(new, self.memory, self.memory_mask, self.cache)
        return logits[:, -1]

    def reorder(self, rows: Tensor) -> None:
        if self.cache is not None:
            self.cache = self.cache.reorder(rows)


def _length_norm(lengths: Tensor, length_penalty: float) -> Tensor:
    return lengths.clamp_min(1).float() ** length_penalty


def _decode_one_path(
    decoder: TextDecoder,
    stepper: _Stepper,
    max_new_tokens: int,
    length_penalty: float,
    pick: Callable[[Tensor], Tensor],
) -> tuple[Tensor, Tensor]:
    """Greedy or sampling: ``pick`` maps (B, V) log-probabilities to (B,) next tokens."""
    B = stepper.memory.size(0)
    device = stepper.memory.device
    tokens = torch.full((B, 1), decoder.bos_id, dtype=torch.long, device=device)
    sums = torch.zeros(B, device=device)
    lengths = torch.zeros(B, dtype=torch.long, device=device)
    finished = torch.zeros(B, dtype=torch.bool, device=device)
    for _ in range(max_new_tokens):
        log_probs = next_token_log_probs(stepper(tokens), decoder)  # (B, V)
        nxt = pick(log_probs).masked_fill(finished, decoder.pad_id)  # (B,)
        chosen = log_probs.gather(1, nxt[:, None]).squeeze(1)
        sums = sums + torch.where(finished, torch.zeros_like(chosen), chosen)
        lengths = lengths + (~finished).long()
        finished = finished | (nxt == decoder.eos_id)
        tokens = torch.cat([tokens, nxt[:, None]], dim=1)
        if bool(finished.all()):
            break
    return tokens[:, 1:], sums / _length_norm(lengths, length_penalty)


def _beam_search(
    decoder: TextDecoder,
    memory: Tensor,
    memory_mask: Tensor | None,
    max_new_tokens: int,
    num_beams: int,
    length_penalty: float,
    use_cache: bool,
) -> tuple[Tensor, Tensor]:
    """Keep the ``num_beams`` best hypotheses per sample, finished ones included.

    A finished hypothesis stays in the beam unchanged (extended by pad at no cost) and competes
    with the live ones on the length-normalized score. So one beam is exactly greedy decoding,
    and when ``num_beams`` is at least the number of candidates at every step the search is
    exhaustive. Returns the best hypothesis of each sample.
    """
    B, K, V = memory.size(0), num_beams, decoder.vocab_size
    N = B * K
    memory = memory.repeat_interleave(K, dim=0)  # (B*K, S, D): beams of a sample are adjacent rows
    memory_mask = None if memory_mask is None else memory_mask.repeat_interleave(K, dim=0)
    stepper = _Stepper(decoder, memory, memory_mask, use_cache)
    device = memory.device
    tokens = torch.full((N, 1), decoder.bos_id, dtype=torch.long, device=device)
    # Only beam 0 starts live, so the K copies of the empty prefix do not fill the beam with duplicates.
    sums = torch.full((B, K), float("-inf"), device=device)
    sums[:, 0] = 0.0
    lengths = torch.zeros(B, K, dtype=torch.long, device=device)
    finished = torch.zeros(B, K, dtype=torch.bool, device=device)
    first_row = torch.arange(B, device=device)[:, None] * K  # (B, 1) flat row of each sample's beam 0
    # A finished beam's only candidate is itself, marked by the pad token.
    stay = torch.full((V,), float("-inf"), device=device)
    stay[decoder.pad_id] = 0.0
    for _ in range(max_new_tokens):
        log_probs = next_token_log_probs(stepper(tokens), decoder).view(B, K, V)
        # (B, K, V): the summed log-probability of each beam extended by each token
        cand_sums = torch.where(finished[..., None], sums[..., None] + stay, sums[..., None] + log_probs)
        cand_lengths = lengths + (~finished).long()  # (B, K)
        cand_scores = cand_sums / _length_norm(cand_lengths, length_penalty)[..., None]
        flat = cand_scores.view(B, K * V).topk(K, dim=1).indices  # (B, K)
        beam, token = flat // V, flat % V
        sums = cand_sums.view(B, K * V).gather(1, flat)
        lengths = cand_lengths.gather(1, beam)
        finished = finished.gather(1, beam) | (token == decoder.eos_id)
        rows = (first_row + beam).view(N)  # the old row each new beam continues
        tokens = torch.cat([tokens[rows], token.view(N, 1)], dim=1)
        stepper.reorder(rows)
        # Beams still at -inf are empty slots (fewer candidates than beams), not live hypotheses.
        if bool((finished | sums.isneginf()).all()):
            break
    scores = sums / _length_norm(lengths, length_penalty)  # (B, K)
    best = scores.argmax(dim=1)  # (B,)
    samples = torch.arange(B, device=device)
    return tokens.view(B, K, -1)[samples, best, 1:], scores[samples, best]
