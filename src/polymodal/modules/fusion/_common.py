"""Shared plumbing for the fusion modules: clean inputs, masked softmax, the "nothing" output.

Every fusion module starts by calling :meth:`MaskedFusion.gather`, which turns the raw
``features``/``present`` dicts into one :class:`ModalityFeatures` per modality the module was
built for. Placeholder values (absent samples, padding tokens) are replaced by zeros with
``torch.where`` *before* any arithmetic: a placeholder may hold inf or NaN, and ``x * 0`` or a
matmul on it would leak NaN into the output or into the weight gradients. ``torch.where``
also gives those positions an exactly-zero gradient.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from polymodal.modules.encoders.base import EncoderOutput
from polymodal.modules.fusion.base import Fusion, FusionOutput


@dataclass
class ModalityFeatures:
    """One modality's inputs with every placeholder zeroed.

    A modality absent from the whole batch still gets an entry (one zero token, nothing
    present), so modules with a fixed per-modality layout need no special case.
    """

    tokens: Tensor  # (B, T, D), zero at padding and at absent samples
    pooled: Tensor  # (B, D), zero at absent samples
    mask: Tensor  # (B, T) bool, True = real token of a present sample
    present: Tensor  # (B,) bool
    grid: tuple[int, int] | None = None  # the encoder's spatial layout of the last h*w tokens (EncoderOutput.grid)
    cells_per_frame: int | None = None  # tokens are frames of this many cells (EncoderOutput.cells_per_frame)


def keep_where(x: Tensor, keep: Tensor) -> Tensor:
    """``x`` where ``keep``, else 0; ``keep`` broadcasts over x's trailing dims."""
    while keep.dim() < x.dim():
        keep = keep.unsqueeze(-1)
    return torch.where(keep, x, torch.zeros((), dtype=x.dtype, device=x.device))


def masked_softmax(scores: Tensor, mask: Tensor, dim: int = -1) -> Tensor:
    """Softmax over the allowed entries of ``dim``; rows with nothing allowed give all zeros.

    A plain softmax over an all ``-inf`` row is NaN (and so is its gradient); here such rows
    are softmaxed over harmless zeros and then zeroed, so everything stays finite.
    """
    mask = mask.expand_as(scores)
    any_allowed = mask.any(dim=dim, keepdim=True)
    filled = torch.where(mask, scores, torch.full((), float("-inf"), dtype=scores.dtype, device=scores.device))
    filled = torch.where(any_allowed, filled, torch.zeros((), dtype=scores.dtype, device=scores.device))
    return keep_where(filled.softmax(dim=dim), mask)


def mlp(in_dim: int, hidden_dim: int, out_dim: int, dropout: float = 0.0) -> nn.Sequential:
    """Linear -> GELU -> Dropout -> Linear."""
    return nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden_dim, out_dim))


class MaskedFusion(Fusion):
    """Base for the fusion modules here: input checking/cleaning and the no-modality output.

    ``nothing`` is a learned output for samples that have no modality at all (zeros at
    initialisation), so they get a finite, trainable representation instead of NaN.
    """

    def __init__(self, input_dims: Mapping[str, int], output_dim: int) -> None:
        super().__init__()
        if not input_dims:
            raise ValueError("fusion needs at least one modality in input_dims")
        self.input_dims = dict(input_dims)
        self.modalities = list(self.input_dims)
        self.output_dim = output_dim
        self.nothing = nn.Parameter(torch.zeros(output_dim))

    def gather(
        self, features: Mapping[str, EncoderOutput], present: Mapping[str, Tensor]
    ) -> dict[str, ModalityFeatures]:
        """Check and clean the inputs: modality -> :class:`ModalityFeatures`, in build order."""
        unknown = sorted(set(features) - set(self.input_dims))
        if unknown:
            raise ValueError(f"{type(self).__name__} was built for modalities {self.modalities}; got unknown {unknown}")
        batch = _batch_size(features, present)
        ref = self.nothing
        out: dict[str, ModalityFeatures] = {}
        for name, dim in self.input_dims.items():
            feat = features.get(name)
            if feat is None:  # absent from the whole batch
                zeros = ref.new_zeros(batch, 1, dim)
                no = torch.zeros(batch, 1, dtype=torch.bool, device=ref.device)
                out[name] = ModalityFeatures(zeros, zeros[:, 0], no, no[:, 0])
                continue
            if feat.tokens.shape[-1] != dim or feat.pooled.shape[-1] != dim:
                raise ValueError(
                    f"{type(self).__name__}: modality {name!r} was built with dim {dim}, got tokens "
                    f"{tuple(feat.tokens.shape)} and pooled {tuple(feat.pooled.shape)}"
                )
            here = present.get(name)
            if here is None:  # encoded but no presence given: every sample has it
                here = torch.ones(batch, dtype=torch.bool, device=feat.tokens.device)
            if here.shape != (batch,):
                raise ValueError(
                    f"{type(self).__name__}: present[{name!r}] has shape {tuple(here.shape)}, expected ({batch},)"
                )
            here = here.to(device=feat.tokens.device, dtype=torch.bool)
            token_mask = here.unsqueeze(1).expand(feat.tokens.shape[:2])  # (B, T)
            if feat.mask is not None:
                token_mask = token_mask & feat.mask.bool()
            out[name] = ModalityFeatures(
                tokens=keep_where(feat.tokens, token_mask),
                pooled=keep_where(feat.pooled, here),
                mask=token_mask,
                present=here,
                grid=feat.grid,
                cells_per_frame=feat.cells_per_frame,
            )
        return out

    def finish(
        self, pooled: Tensor, any_present: Tensor, tokens: Tensor | None = None, mask: Tensor | None = None
    ) -> FusionOutput:
        """Swap in the learned ``nothing`` output for samples with no modality at all."""
        pooled = torch.where(any_present.unsqueeze(-1), pooled, self.nothing.to(pooled.dtype))
        return FusionOutput(pooled=pooled, tokens=tokens, mask=mask)


def presence(inputs: Mapping[str, ModalityFeatures]) -> Tensor:
    """(B, M) bool: which modalities each sample has, in build order."""
    return torch.stack([m.present for m in inputs.values()], dim=1)


def any_present(inputs: Mapping[str, ModalityFeatures]) -> Tensor:
    """(B,) bool: the sample has at least one modality."""
    return presence(inputs).any(1)


def present_weighted_sum(values: Tensor, here: Tensor, scores: Tensor) -> Tensor:
    """Sum of ``values`` (B, M, D) weighted by softmax(``scores`` (M,)) over present modalities.

    Weights are renormalised per sample over its present modalities (``here``, (B, M)); a
    sample with none gets zeros.
    """
    weights = masked_softmax(scores.expand_as(here), here, dim=1)  # (B, M)
    return (weights.unsqueeze(-1) * values).sum(1)  # (B, D)


def _batch_size(features: Mapping[str, EncoderOutput], present: Mapping[str, Tensor]) -> int:
    for feat in features.values():
        return feat.tokens.shape[0]
    for here in present.values():
        return here.shape[0]
    raise ValueError("fusion got neither features nor presence masks, so the batch size is unknown")
