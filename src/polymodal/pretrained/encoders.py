"""What the packaged weights add to the encoder registry: ``efficientnet_lite0_imagenet``, ``resemblyzer_speaker``
and ``pretrained:NAME`` paths for the ``hf_text`` / ``hf_image`` towers.

They register here because ``polymodal.modules`` sits below this package and may not import it. Importing
``polymodal.pretrained`` registers them; ``polymodal.models`` does, so every model built from a config sees them.
"""

from __future__ import annotations

from polymodal.modules.encoders import ENCODERS
from polymodal.modules.encoders.efficientnet_lite import EfficientNetLite0
from polymodal.pretrained.imagenet import load_efficientnet_lite0
from polymodal.pretrained.locate import PRETRAINED_SCHEME, pretrained_dir
from polymodal.pretrained.speaker import SpeakerLSTM, load_speaker_lstm
from polymodal.registry import PATH_SCHEMES

PATH_SCHEMES.register(PRETRAINED_SCHEME.rstrip(":"))(pretrained_dir)  # pretrained:minilm -> the packaged directory


@ENCODERS.register("efficientnet_lite0_imagenet")
def efficientnet_lite0_imagenet(stages: int = 7) -> EfficientNetLite0:
    """EfficientNet-Lite0 with the packaged ImageNet weights (the ``pretrained`` extra; nothing is downloaded).

    Expects pixels normalised as ``(x * 255 - 127) / 128`` (recipe: ``mean: [0.498, ...]``,
    ``std: [0.502, ...]``); any input size works (tokens are the stride-32 grid). ``stages`` < 7: the first
    stages only, their last feature map the tokens (stage 5: 112-d at stride 16).
    """
    return load_efficientnet_lite0(stages=stages)


@ENCODERS.register("resemblyzer_speaker")
def resemblyzer_speaker() -> SpeakerLSTM:
    """Resemblyzer's speaker encoder with its packaged weights (``pip install --no-deps resemblyzer``; nothing is
    downloaded): 256-d voice embeddings.

    Expects the log-mel of ``RESEMBLYZER_FEATURES`` (recipe: ``data.processors.audio: {n_mels: 40,
    mel_scale: slaney, pad_mode: constant}`` at 16 kHz, the default n_fft 400 and hop 160).
    """
    return load_speaker_lstm()
