"""The one interface every encoder offers, whatever its modality.

``forward(x, mask=None) -> EncoderOutput`` where ``tokens`` is (B, T, D), ``pooled`` is (B, D)
and ``mask`` is (B, T) bool with True for real tokens (None when every token is real, e.g.
image patches). ``output_dim`` is D. Audio and video encoders will implement the same.

Each encoder checks its input at the top of ``forward`` (:meth:`Encoder.check_inputs`): rank, layout and dtype
against its own configuration, with an error that names the encoder, what it expected and what it got, instead of
a raw error from whichever layer first trips over it. Shape and dtype comparisons only: they cost microseconds and
trace under torch.export.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

# One dimension of an input's layout: a fixed size (3), a named free size ("batch"), or a fixed size with its name
# ((16, "mel bands")).
Dim = int | str | tuple[int, str]
# What an input's dtype must be: the weights' dtype (a float input; under autocast any float autocast casts),
# any floating-point dtype, integer token ids, or (None) any dtype.
InputDtype = torch.dtype | Literal["float", "ids"] | None
ID_DTYPES = (torch.int64, torch.int32)  # what nn.Embedding takes
AUTOCAST_DTYPES = (torch.float32, torch.float16, torch.bfloat16)  # autocast casts these; float64 it leaves alone


@dataclass
class EncoderOutput:
    tokens: Tensor  # (B, T, D)
    pooled: Tensor  # (B, D)
    mask: Tensor | None = None  # (B, T) bool, True = real token
    # (h, w) when the last h*w tokens are a spatial feature map in row-major order (any tokens before
    # them, e.g. a CLS token, are not on it); None for sequences. FiLM fusion convolves over it.
    grid: tuple[int, int] | None = None
    # When tokens are a clip's frames in time order, each frame's cells in a row (a video tower's space-time
    # tokens, (B, T * cells, D)): the cells per frame. Tracking fusion reads each frame's cells apart.
    cells_per_frame: int | None = None


class Encoder(nn.Module):
    """Base class: subclasses set ``modality`` and ``output_dim`` and implement ``forward``.

    Freezing helpers work on ``blocks()`` (the ordered list of layers), so partial
    unfreezing is uniform across architectures. A fully frozen encoder stays in eval mode (and
    :class:`~polymodal.modules.encoders.cache.CachedEncoder` can then memoise its outputs).
    """

    modality: str = "unknown"
    # The name it registers under in ENCODERS (polymodal.modules.encoders), which its input errors begin with.
    name: ClassVar[str | None] = None
    output_dim: int
    grad_checkpointing: bool = False  # subclasses honour it in forward while training

    def forward(self, x: Tensor, mask: Tensor | None = None) -> EncoderOutput:  # pragma: no cover
        raise NotImplementedError

    @property
    def label(self) -> str:
        """How errors name the encoder: its registered name, else its class's (an unregistered plugin)."""
        return self.name or type(self).__name__

    def check_inputs(self, x: Tensor, mask: Tensor | None = None) -> None:
        """Raise a ValueError (TypeError for a wrong type or dtype) naming the encoder unless ``x`` and ``mask`` are
        laid out as ``forward`` takes them. Subclasses call it first in ``forward``; a wrapper such as
        :class:`~polymodal.modules.encoders.cache.CachedEncoder` calls its tower's before anything else."""

    def check_input(self, x: object, what: str, layout: Sequence[Dim], dtype: InputDtype, hint: str = "") -> None:
        """Raise unless ``x`` is a tensor of ``layout`` (one entry per dimension; see :data:`Dim`) and ``dtype``
        (see :data:`InputDtype`). The error reads "NAME: expected ``what`` LAYOUT of DTYPE, got shape ... dtype ..."
        then ``hint`` (where such inputs come from: "the model's tokenizer makes them")."""
        if isinstance(x, Tensor) and len(x.shape) == len(layout):
            for size, dim in zip(x.shape, layout):
                if not isinstance(dim, str) and size != (dim if isinstance(dim, int) else dim[0]):
                    break
            else:
                if _dtype_ok(x.dtype, dtype, x.device):
                    return
                raise TypeError(self._input_message(x, what, layout, dtype, "", hint))
        if not isinstance(x, Tensor):
            raise TypeError(self._input_message(x, what, layout, dtype, "", hint))
        raise ValueError(self._input_message(x, what, layout, dtype, _layout_hint(x.shape, layout), hint))

    def check_mask(self, mask: object, shape: Sequence[int], what: str) -> None:
        """Raise unless ``mask`` is None or a tensor of ``shape``; ``what`` names its dimensions: "(batch, frames)"."""
        if mask is None or (isinstance(mask, Tensor) and mask.shape == shape):
            return
        expected = f"{self.label}: expected a {what} mask of shape {tuple(shape)} (or None)"
        if not isinstance(mask, Tensor):
            raise TypeError(f"{expected}, got {describe_input(mask)}")
        raise ValueError(f"{expected}, got shape {tuple(mask.shape)}")

    def ids_out_of_range(self, ids: Tensor, vocab_size: int) -> ValueError | None:
        """The error for token ids outside [0, vocab_size), or None when all are inside. It reads the ids' range
        (a reduction, and on a GPU a sync), so call it only once an embedding has failed, never on the hot path."""
        if ids.numel() == 0:
            return None
        low, high = (int(v) for v in torch.aminmax(ids))
        if high >= vocab_size:
            bad = f"token id {high} >= vocab_size {vocab_size}"
        elif low < 0:
            bad = f"token id {low} < 0"
        else:
            return None
        return ValueError(f"{self.label}: {bad} (was the text tokenised with this model's tokenizer?)")

    def _input_message(
        self, x: object, what: str, layout: Sequence[Dim], dtype: InputDtype, problem: str, hint: str
    ) -> str:
        dims = ", ".join(
            d if isinstance(d, str) else str(d) if isinstance(d, int) else f"{d[0]} {d[1]}" for d in layout
        )
        of_dtype = "" if dtype is None else f" of {_dtype_words(dtype)}"
        message = f"{self.label}: expected {what} ({dims}){of_dtype}, got {describe_input(x)}"
        return message + "".join(f"; {part}" for part in (problem, hint) if part)

    def pooled(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """(B, D): ``forward(x, mask).pooled``. An embedding reads nothing else, so an encoder may compute it with
        less work than all its tokens take."""
        return self(x, mask).pooled

    @property
    def frozen(self) -> bool:
        """No parameter trains (read from ``requires_grad`` each time, so unfreezing by hand counts)."""
        return not any(p.requires_grad for p in self.parameters())

    def train(self, mode: bool = True) -> Encoder:
        # Frozen means frozen, statistics included: in train mode a frozen tower's BatchNorm would
        # normalise with batch statistics (and overwrite its running ones) and dropout would stay on.
        return super().train(mode and not self.frozen)

    def blocks(self) -> list[nn.Module]:
        """The encoder's stacked layers, first to last. Override in subclasses."""
        return []

    def freeze(self, unfreeze_last: int = 0) -> None:
        """Freeze every parameter, then unfreeze the last ``unfreeze_last`` blocks."""
        for p in self.parameters():
            p.requires_grad_(False)
        if unfreeze_last > 0:
            for block in self.blocks()[-unfreeze_last:]:
                for p in block.parameters():
                    p.requires_grad_(True)
        if self.frozen:
            self.eval()

    def unfreeze(self) -> None:
        for p in self.parameters():
            p.requires_grad_(True)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable


def describe_input(x: object) -> str:
    """``shape (4, 3, 16, 16) dtype float32`` for a tensor; ``a list, not a tensor`` for anything else."""
    if isinstance(x, Tensor):
        return f"shape {tuple(x.shape)} dtype {str(x.dtype).removeprefix('torch.')}"
    return f"a {type(x).__name__}, not a tensor"


def _dtype_ok(got: torch.dtype, expected: InputDtype, device: torch.device) -> bool:
    if expected is None:
        return True
    if expected == "ids":
        return got in ID_DTYPES
    if expected == "float":
        return got.is_floating_point
    # Asked only on a mismatch: a lower-precision input is fine where autocast will cast it.
    return got == expected or (got in AUTOCAST_DTYPES and torch.is_autocast_enabled(device.type))


def _dtype_words(dtype: torch.dtype | str) -> str:
    if dtype == "ids":
        return "dtype int64 (or int32)"
    if dtype == "float":
        return "a floating-point dtype"
    return f"dtype {str(dtype).removeprefix('torch.')}"


def _layout_hint(shape: Sequence[int], layout: Sequence[Dim]) -> str:
    """What a wrong shape most likely is: a missing batch dimension, or the right sizes in another order."""
    fixed = Counter(d if isinstance(d, int) else d[0] for d in layout if not isinstance(d, str))
    if len(shape) == len(layout) - 1 and all(
        isinstance(d, str) or size == (d if isinstance(d, int) else d[0]) for size, d in zip(shape, layout[1:])
    ):
        return "no batch dimension? add one with x.unsqueeze(0)"
    if len(shape) == len(layout) and fixed and fixed <= Counter(shape[1:]):
        return "are the dimensions in another order?"
    return ""


def masked_mean(tokens: Tensor, mask: Tensor | None) -> Tensor:
    """Mean over real tokens; (B, T, D), (B, T) -> (B, D). All-padding rows give zeros."""
    if mask is None:
        return tokens.mean(dim=1)
    weights = mask.to(tokens.dtype).unsqueeze(-1)  # (B, T, 1)
    return (tokens * weights).sum(1) / weights.sum(1).clamp_min(1.0)


def last_index(mask: Tensor) -> Tensor:
    """(B,) the position of each right-padded row's last real token (0 for a row of padding only)."""
    return mask.long().sum(1).clamp_min(1) - 1


def last_token(tokens: Tensor, mask: Tensor | None) -> Tensor:
    """The last real token of each row (EOS pooling); (B, T, D) -> (B, D)."""
    if mask is None:
        return tokens[:, -1]
    return tokens[torch.arange(tokens.size(0), device=tokens.device), last_index(mask)]
