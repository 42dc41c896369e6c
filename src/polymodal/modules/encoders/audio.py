"""Audio towers over spectrogram frames (B, channels, frames) with a frame mask (B, frames), True = sound."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polymodal.modules.encoders.base import Encoder, EncoderOutput, masked_mean
from polymodal.modules.encoders.text import RecurrentEncoder
from polymodal.modules.layers import maybe_checkpoint


class AudioCNN(Encoder):
    """PANNs-style CNN: blocks of two 3x3 convolutions (BatchNorm, ReLU) each halving frequency and time, then
    the frequency axis averaged away: one token per group of ``2 ** len(widths)`` frames. With gradient
    checkpointing each block runs twice in training, so its BatchNorm statistics update twice (as in ``cnn``)."""

    modality = "audio"

    def __init__(self, channels: int = 64, widths: tuple[int, ...] = (32, 64, 128), width: int = 128) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        previous = 1
        for w in widths:
            layers.append(
                nn.Sequential(
                    nn.Conv2d(previous, w, 3, padding=1, bias=False),
                    nn.BatchNorm2d(w),
                    nn.ReLU(),
                    nn.Conv2d(w, w, 3, padding=1, bias=False),
                    nn.BatchNorm2d(w),
                    nn.ReLU(),
                    nn.AvgPool2d(2, ceil_mode=True),
                )
            )
            previous = w
        self.stages = nn.ModuleList(layers)
        self.input_norm = nn.BatchNorm1d(channels)  # per-band statistics: log-mel bands differ by orders of magnitude
        self.proj = nn.Linear(previous, width)
        self.output_dim = width
        self.downsample = 2 ** len(widths)

    def blocks(self) -> list[nn.Module]:
        return list(self.stages)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> EncoderOutput:
        h = self.input_norm(x).unsqueeze(1)  # (B, 1, channels, frames)
        use_ckpt = self.grad_checkpointing and self.training and torch.is_grad_enabled()
        for stage in self.stages:
            h = maybe_checkpoint(stage, h, enabled=use_ckpt)
        tokens = self.proj(h.mean(dim=2).transpose(1, 2))  # (B, frames / downsample, width)
        token_mask = None
        if mask is not None:  # a token holds sound when any of its frames does
            pooled = F.max_pool1d(mask.float().unsqueeze(1), self.downsample, ceil_mode=True).squeeze(1)
            token_mask = pooled[:, : tokens.shape[1]].bool()
        return EncoderOutput(tokens, masked_mean(tokens, token_mask), token_mask)


class AudioLSTM(RecurrentEncoder):
    """Stacked LSTM/GRU over spectrogram or MFCC frames (the frames' bands normalised, then projected to
    ``width``), one token per frame; padded frames are skipped."""

    modality = "audio"

    def __init__(
        self,
        channels: int = 20,
        width: int = 128,
        cell: str = "lstm",
        layers: int = 2,
        bidirectional: bool = True,
        pooling: str = "mean",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.cell, self.pooling = self._check(width, cell, bidirectional, pooling)
        self.output_dim = width
        self.input_norm = nn.BatchNorm1d(channels)
        self.proj = nn.Linear(channels, width)
        self._init_recurrence(width, cell, layers, bidirectional, dropout)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> EncoderOutput:
        h = self.proj(self.input_norm(x).transpose(1, 2))  # (B, frames, width)
        frames = torch.ones(h.shape[:2], dtype=torch.bool, device=h.device) if mask is None else mask.bool()
        return self._encode(h, frames)
