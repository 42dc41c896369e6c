"""Text encoders trained from scratch: a transformer and an LSTM/GRU.

Both take token ids (B, T) and an attention mask (B, T) bool (True = real token). Without a
mask, tokens equal to ``pad_id`` are treated as padding. Neither prepends tokens, so
``tokens`` stays aligned with the input ids (a masked-LM head can read it position by position).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from polymodal.modules.encoders.base import Encoder, EncoderOutput, masked_mean
from polymodal.modules.encoders.pooling import check_choice, pool_tokens
from polymodal.modules.layers import RotaryEmbedding, TransformerBlock, init_transformer_weights, maybe_checkpoint

TOKEN_IDS = "the model's tokenizer makes them"


def _text_mask(x: Tensor, mask: Tensor | None, pad_id: int) -> Tensor:
    return (x != pad_id) if mask is None else mask.bool()


def check_text_inputs(encoder: Encoder, x: Tensor, mask: Tensor | None) -> None:
    """Token ids (B, T) of an integer dtype, and a mask of their shape (or None)."""
    encoder.check_input(x, "token ids", ("batch", "length"), "ids", TOKEN_IDS)
    encoder.check_mask(mask, x.shape, "(batch, length)")


def embed_ids(encoder: Encoder, embedding: nn.Embedding, ids: Tensor) -> Tensor:
    """``embedding(ids)``, with an error naming the id when one is outside the vocabulary. The ids' range is read
    only once the lookup has failed (on a CPU it raises IndexError), so valid ids cost nothing extra."""
    try:
        return embedding(ids)
    except IndexError as e:
        error = encoder.ids_out_of_range(ids, embedding.num_embeddings)
        if error is None:
            raise
        raise error from e


class TransformerTextEncoder(Encoder):
    """Pre-norm transformer over token embeddings.

    ``positions``: ``learned`` (a table of ``max_length`` rows) or ``rotary`` (no length limit).
    ``pooling``: ``cls`` (the first token: the tokenizer's [CLS]/BOS), ``mean`` (real tokens)
    or ``eos`` (last real token, as in CLIP). ``causal`` makes every token see only its past.
    """

    modality = "text"
    name = "transformer_text"

    def __init__(
        self,
        vocab_size: int,
        width: int = 256,
        depth: int = 4,
        heads: int = 4,
        max_length: int = 77,
        positions: str = "learned",
        pooling: str = "cls",
        pad_id: int = 0,
        causal: bool = False,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.vocab_size, self.max_length, self.pad_id, self.causal = vocab_size, max_length, pad_id, causal
        self.positions = check_choice("positions", positions, ("learned", "rotary"))
        self.pooling = check_choice("pooling", pooling, ("cls", "mean", "eos"))
        self.output_dim = width
        self.grad_checkpointing = False
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.position_embedding = nn.Parameter(torch.zeros(max_length, width)) if positions == "learned" else None
        # One rotary module shared by all blocks: it holds no weights, only frequencies.
        rotary = RotaryEmbedding(width // heads) if positions == "rotary" else None
        self.layers = nn.ModuleList(
            TransformerBlock(width, heads, mlp_ratio, dropout, rotary=rotary) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(width)
        self.apply(init_transformer_weights)
        if self.position_embedding is not None:
            nn.init.trunc_normal_(self.position_embedding, std=0.02, a=-0.04, b=0.04)

    def blocks(self) -> list[nn.Module]:
        return list(self.layers)

    def check_inputs(self, x: Tensor, mask: Tensor | None = None) -> None:
        check_text_inputs(self, x, mask)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> EncoderOutput:
        self.check_inputs(x, mask)
        mask = _text_mask(x, mask, self.pad_id)
        h = embed_ids(self, self.token_embedding, x)  # (B, T, D)
        if self.position_embedding is not None:
            if x.size(1) > self.max_length:
                raise ValueError(f"{self.label}: text length {x.size(1)} exceeds max_length {self.max_length}")
            h = h + self.position_embedding[: x.size(1)]
        use_ckpt = self.grad_checkpointing and self.training and torch.is_grad_enabled()
        for block in self.layers:
            h = maybe_checkpoint(block, h, mask, self.causal, enabled=use_ckpt)
        tokens = self.norm(h)
        return EncoderOutput(tokens, pool_tokens(tokens, mask, self.pooling), mask)


class RecurrentEncoder(Encoder):
    """Stacked LSTM/GRU layers over a sequence of vectors (B, T, width) with a mask, run on packed sequences so
    padding is skipped: the part the text and audio recurrent towers share (each adds its own input layer).

    ``width`` is the output width; a bidirectional layer gives each direction ``width // 2``.
    ``pooling``: ``last`` (final hidden states of both directions) or ``mean`` (real positions).
    Each layer is its own module so ``freeze(unfreeze_last=k)`` can pick the top layers.
    """

    @staticmethod
    def _check(width: int, cell: str, bidirectional: bool, pooling: str) -> tuple[str, str]:
        if bidirectional and width % 2:
            raise ValueError(f"width={width} must be even for a bidirectional RNN")
        return check_choice("cell", cell, ("lstm", "gru")), check_choice("pooling", pooling, ("last", "mean"))

    def _init_recurrence(self, width: int, cell: str, layers: int, bidirectional: bool, dropout: float) -> None:
        rnn_cls = nn.LSTM if cell == "lstm" else nn.GRU
        hidden = width // 2 if bidirectional else width
        self.layers = nn.ModuleList(
            rnn_cls(width, hidden, batch_first=True, bidirectional=bidirectional) for _ in range(layers)
        )
        self.drop = nn.Dropout(dropout)

    def blocks(self) -> list[nn.Module]:
        return list(self.layers)

    def _run_layer(self, rnn: nn.RNNBase, h: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """One layer on a packed batch: outputs (B, T, W) (zeros at padding) and final state (B, W)."""
        packed = pack_padded_sequence(h, lengths, batch_first=True, enforce_sorted=False)
        out, state = rnn(packed)
        h_n = state[0] if isinstance(state, tuple) else state  # (directions, B, hidden)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=h.size(1))
        return out, h_n.transpose(0, 1).reshape(h.size(0), -1)  # (B, directions * hidden)

    def _encode(self, h: Tensor, mask: Tensor) -> EncoderOutput:
        """(B, T, width) inputs and their (B, T) mask -> the stacked layers' outputs, pooled."""
        # Packing rejects empty rows; an all-padding row reads its first position instead.
        lengths = mask.sum(1).clamp_min(1).cpu()
        use_ckpt = self.grad_checkpointing and self.training and torch.is_grad_enabled()
        for i, rnn in enumerate(self.layers):
            if i:
                h = self.drop(h)
            h, last = maybe_checkpoint(self._run_layer, rnn, h, lengths, enabled=use_ckpt)
        pooled = last if self.pooling == "last" else masked_mean(h, mask)
        return EncoderOutput(h, pooled, mask)


class RNNTextEncoder(RecurrentEncoder):
    """Stacked LSTM/GRU over token embeddings (see :class:`RecurrentEncoder`)."""

    modality = "text"
    name = "rnn_text"

    def __init__(
        self,
        vocab_size: int,
        width: int = 256,
        cell: str = "lstm",
        layers: int = 1,
        bidirectional: bool = True,
        pooling: str = "last",
        pad_id: int = 0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.cell, self.pooling = self._check(width, cell, bidirectional, pooling)
        self.vocab_size, self.pad_id, self.output_dim = vocab_size, pad_id, width
        self.grad_checkpointing = False
        self.embedding = nn.Embedding(vocab_size, width)
        self._init_recurrence(width, cell, layers, bidirectional, dropout)

    def check_inputs(self, x: Tensor, mask: Tensor | None = None) -> None:
        check_text_inputs(self, x, mask)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> EncoderOutput:
        self.check_inputs(x, mask)
        return self._encode(embed_ids(self, self.embedding, x), _text_mask(x, mask, self.pad_id))
