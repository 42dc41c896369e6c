"""Teacher-forcing language-model loss for captioning decoders."""

from __future__ import annotations

from torch import Tensor, nn

from polymodal.modules.losses.basic import token_cross_entropy


class CaptionLoss(nn.Module):
    """Next-token cross entropy: ``forward(logits, targets, mask=None) -> loss``.

    ``logits`` (B, T, V) are the decoder outputs for input ids ``targets`` (B, T). With
    ``shift=True`` (default) the loss shifts inside: position t predicts ``targets[:, t + 1]``,
    so callers pass the same ids they fed the decoder. With ``shift=False`` ``targets`` are
    already the next tokens, aligned with ``logits``. Positions where ``mask`` (B, T) is False
    (padding) or where ``targets`` equals ``ignore_index`` are ignored; the result is the mean
    over the remaining tokens of the batch. Padding is taken from ``mask`` rather than a pad id
    because many tokenizers (GPT-2) reuse EOS as padding, and the real EOS must be learned.
    """

    def __init__(self, label_smoothing: float = 0.0, ignore_index: int = -100, shift: bool = True) -> None:
        super().__init__()
        self.label_smoothing = label_smoothing
        self.ignore_index = ignore_index
        self.shift = shift

    def forward(self, logits: Tensor, targets: Tensor, mask: Tensor | None = None) -> Tensor:
        if logits.shape[:2] != targets.shape:
            raise ValueError(f"CaptionLoss: logits {tuple(logits.shape)} do not match targets {tuple(targets.shape)}")
        if mask is not None:
            targets = targets.masked_fill(~mask.bool(), self.ignore_index)
        if self.shift:
            logits = logits[:, :-1]  # (B, T-1, V): position t predicts token t+1
            targets = targets[:, 1:]  # (B, T-1)
        return token_cross_entropy(logits, targets, self.ignore_index, self.label_smoothing)
