"""Resemblyzer's speaker encoder (a GE2E-trained LSTM) with the weights its PyPI wheel ships: one unit vector per
voice, close for the same speaker whatever is said.

The weights are ``pretrained.pt`` inside the installed ``resemblyzer`` package (Apache-2.0), read with
``weights_only=True``; resemblyzer itself and librosa, which it imports, are not needed. The tower takes the log-mel
frames of :data:`RESEMBLYZER_FEATURES` (40 Slaney mel bands, 25 ms windows every 10 ms at 16 kHz, zero-padded ends:
librosa's ``melspectrogram`` defaults) and computes what ``VoiceEncoder.embed_utterance`` does: an embedding per
1.6 s window of the clip, windows every 0.77 s, averaged and L2-normalised. Each clip is first brought to -30 dBFS,
as resemblyzer's ``preprocess_wav`` does (so a quieter recording of a voice is the same voice; its silence trimming
by voice activity is not applied).
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polymodal.data.audio import AudioFeatures
from polymodal.modules.encoders.base import Encoder, EncoderOutput, masked_mean
from polymodal.modules.layers import maybe_checkpoint
from polymodal.pretrained.locate import resemblyzer_weights

# librosa.feature.melspectrogram(sr=16000, n_fft=400, hop_length=160, n_mels=40), the features the weights know.
RESEMBLYZER_FEATURES = AudioFeatures(
    sample_rate=16_000, n_fft=400, hop_length=160, n_mels=40, mel_scale="slaney", pad_mode="constant", level_dbfs=-30.0
)


class SpeakerLSTM(Encoder):
    """Resemblyzer's voice encoder over log-mel frames (B, channels, frames): a stacked LSTM runs over each
    ``window``-frame partial of a clip (one every ``step`` frames), its last state -> linear -> ReLU -> unit vector.
    Tokens are the partials' embeddings; pooled is their normalised mean (``embed_utterance``).

    A last partial that covers less than ``min_coverage`` of its window with sound is dropped, unless it is the only
    one; windows reaching past the clip see silence. The clip's length is read from the frame mask (to the frame).
    """

    modality = "audio"
    name = "resemblyzer_speaker"

    def __init__(
        self,
        channels: int = 40,
        width: int = 256,
        layers: int = 3,
        window: int = 160,
        step: int = 77,
        min_coverage: float = 0.75,
    ) -> None:
        super().__init__()
        if not 0 < min_coverage <= 1:
            raise ValueError(f"min_coverage={min_coverage} must be in (0, 1]")
        if not 0 < step <= window:
            raise ValueError(f"step={step} must be in 1..window ({window}): partials must cover the clip")
        self.channels, self.window, self.step, self.min_coverage = channels, window, step, min_coverage
        self.lstm = nn.LSTM(channels, width, layers, batch_first=True)
        self.linear = nn.Linear(width, width)
        self.output_dim = width

    def blocks(self) -> list[nn.Module]:
        return [self.lstm, self.linear]

    def partial_starts(self, frames: int) -> list[int]:
        """First frame of each partial over a clip with ``frames`` frames of sound, as
        ``VoiceEncoder.compute_partial_slices`` for a clip of ``frames`` hops (whose spectrogram has one frame more)."""
        starts = list(range(0, max(1, frames + 1 - self.window + self.step + 1), self.step))
        if len(starts) > 1 and (frames - starts[-1]) / self.window < self.min_coverage:
            starts.pop()
        return starts

    def embed_partials(self, windows: Tensor) -> Tensor:
        """(N, window, channels) power mel -> (N, width) unit vectors."""
        _, (hidden, _) = self.lstm(windows)
        return F.normalize(F.relu(self.linear(hidden[-1])), dim=-1)

    def check_inputs(self, x: Tensor, mask: Tensor | None = None) -> None:
        hint = "compute features with RESEMBLYZER_FEATURES (n_mels: 40, mel_scale: slaney, pad_mode: constant)"
        layout = ("batch", (self.channels, "mel bands"), "frames")
        self.check_input(x, "log-mel features", layout, self.linear.weight.dtype, hint)
        if mask is not None:
            self.check_mask(mask, (x.shape[0], x.shape[2]), "(batch, frames)")

    def forward(self, x: Tensor, mask: Tensor | None = None) -> EncoderOutput:
        self.check_inputs(x, mask)
        b, _, t = x.shape
        lengths = [t] * b if mask is None else mask.sum(1).tolist()
        starts = [self.partial_starts(int(n)) for n in lengths]
        owner = torch.tensor([i for i, s in enumerate(starts) for _ in s], device=x.device)
        first = torch.tensor([f for s in starts for f in s], device=x.device)
        # The weights were trained on the power mel spectrogram, not its log; frames past the clip are silence.
        power = F.pad(x.exp().transpose(1, 2), (0, 0, 0, max(0, int(first.max()) + self.window - t)))  # (B, T', C)
        index = first[:, None] + torch.arange(self.window, device=x.device)  # (N, window)
        windows = power[owner[:, None], index]  # (N, window, channels)
        use_ckpt = self.grad_checkpointing and self.training and torch.is_grad_enabled()
        partials = maybe_checkpoint(self.embed_partials, windows, enabled=use_ckpt)  # (N, width)
        counts = [len(s) for s in starts]
        token_mask = (
            torch.arange(max(counts), device=x.device)[None, :] < torch.tensor(counts, device=x.device)[:, None]
        )
        tokens = partials.new_zeros(b, max(counts), self.output_dim)
        tokens[token_mask] = partials  # partials are in (sample, position) order, as the mask's True entries
        return EncoderOutput(tokens, F.normalize(masked_mean(tokens, token_mask), dim=-1), token_mask)


def load_speaker_lstm(path: str | os.PathLike[str] | None = None) -> SpeakerLSTM:
    """The speaker encoder with resemblyzer's weights, in eval mode (default: ``pretrained.pt`` of the installed
    ``resemblyzer`` package)."""
    path = resemblyzer_weights() if path is None else path
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("model_state"), dict):
        raise ValueError(f"{path}: not a resemblyzer checkpoint (no 'model_state' state dict)")
    # similarity_weight/bias are the GE2E loss's scale and offset, not part of the encoder.
    state = {k: v for k, v in checkpoint["model_state"].items() if not k.startswith("similarity_")}
    model = SpeakerLSTM()
    model.load_state_dict(state, strict=True)
    return model.eval()
