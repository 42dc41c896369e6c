"""A conditional GAN's two networks at small resolutions: a generator from noise and a condition vector (the
text's), and a projection discriminator (Miyato & Koyama 2018) that judges an image and a condition together,
with spectral normalisation on every layer."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm


class _UpBlock(nn.Module):
    """2x nearest upsampling, a 3x3 convolution, then a normalisation whose scale and shift come from the condition
    (conditional normalisation, as in BigGAN; group norm rather than batch norm, so a sample does not depend on its
    batch and the EMA generator needs no running statistics)."""

    def __init__(self, in_channels: int, out_channels: int, condition_dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm = nn.GroupNorm(min(8, out_channels), out_channels, affine=False)
        self.modulation = nn.Linear(condition_dim, 2 * out_channels)

    def forward(self, x: Tensor, condition: Tensor) -> Tensor:
        x = self.norm(self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest")))
        scale, shift = self.modulation(condition).chunk(2, dim=-1)
        return F.relu(x * (1 + scale[..., None, None]) + shift[..., None, None])


class ConditionalGenerator(nn.Module):
    """Noise (B, noise_dim) + text features (B, text_dim) -> images (B, channels, S, S) in [-1, 1]; the text is
    projected to a ``condition_dim`` vector that joins the noise and modulates every block, one upsampling block per
    width, from S / 2**len(widths)."""

    def __init__(
        self,
        text_dim: int,
        noise_dim: int = 64,
        condition_dim: int = 128,
        image_size: int = 32,
        channels: int = 3,
        widths: Sequence[int] = (256, 128, 64),
    ) -> None:
        super().__init__()
        base = image_size // 2 ** len(widths)
        if base < 1 or base * 2 ** len(widths) != image_size:
            raise ValueError(f"image_size {image_size} is not a multiple of 2**{len(widths)} (one per width)")
        self.noise_dim, self.base, self.widths = noise_dim, base, list(widths)
        self.condition = nn.Linear(text_dim, condition_dim)
        self.stem = nn.Linear(noise_dim + condition_dim, widths[0] * base * base)
        ins = [widths[0], *widths[:-1]]
        self.blocks = nn.ModuleList(_UpBlock(i, o, condition_dim) for i, o in zip(ins, widths, strict=True))
        self.to_image = nn.Conv2d(widths[-1], channels, 3, padding=1)

    def forward(self, noise: Tensor, text: Tensor) -> Tensor:
        condition = self.condition(text)
        x = self.stem(torch.cat([noise, condition], dim=-1)).view(-1, self.widths[0], self.base, self.base)
        x = F.relu(x)
        for block in self.blocks:
            x = block(x, condition)
        return torch.tanh(self.to_image(x))


class ProjectionDiscriminator(nn.Module):
    """Images (B, C, S, S) + text features (B, text_dim) -> (B,) logits: ``w . phi(x) + <V t, phi(x)>``, with
    ``phi`` the convolutional features of the whole final map (not pooled: where a shape is, matters)."""

    def __init__(
        self,
        text_dim: int,
        image_size: int = 32,
        channels: int = 3,
        widths: Sequence[int] = (64, 128, 256),
        feature_dim: int = 256,
    ) -> None:
        super().__init__()
        final = image_size // 2 ** len(widths)
        if final < 1:
            raise ValueError(f"image_size {image_size} is too small for {len(widths)} downsamplings")
        layers: list[nn.Module] = []
        previous = channels
        for width in widths:
            layers += [
                spectral_norm(nn.Conv2d(previous, width, 3, padding=1)),
                nn.LeakyReLU(0.1),
                spectral_norm(nn.Conv2d(width, width, 4, stride=2, padding=1)),
                nn.LeakyReLU(0.1),
            ]
            previous = width
        self.features = nn.Sequential(*layers)
        self.to_feature = spectral_norm(nn.Linear(previous * final * final, feature_dim))
        self.score = spectral_norm(nn.Linear(feature_dim, 1))
        self.projection = spectral_norm(nn.Linear(text_dim, feature_dim))

    def forward(self, images: Tensor, text: Tensor) -> Tensor:
        phi = F.leaky_relu(self.to_feature(self.features(images).flatten(1)), 0.1)
        return self.score(phi).squeeze(-1) + (self.projection(text) * phi).sum(-1)
