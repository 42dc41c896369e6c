"""A conditional GAN's two networks at small resolutions: a generator from noise and a text condition, and a
projection discriminator (Miyato & Koyama 2018) that judges an image and a text together, with spectral
normalisation on every layer.

Both read the text's pooled vector. Optionally they also read its tokens, word by word (AttnGAN, Xu et al. 2018):
the generator cross-attends from its feature maps to the tokens (``word_attention``), and the discriminator adds a
word-region matching score (``word_matching``). A pooled vector cannot say which colour goes with which shape in
which place; a word attending to a place can.

Two discriminator terms ask it to check that binding (the adversarial objective adds them): DF-GAN's matching-aware
gradient penalty (:func:`matching_gradient_penalty`, Tao et al. 2022), and a contrastive image-text term over the
discriminator's features (``contrastive_dim``; XMC-GAN, Zhang et al. 2021)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from polymodal.modules.layers import attend


class TextCondition:
    """A batch of texts as the networks read them: the pooled vector (B, D), and optionally the tokens (B, T, D)
    with their mask (B, T) (True = a real token). Rows are indexed, repeated and detached together, as for the
    pooled tensor alone, so code that handles a batch of pooled vectors handles these unchanged."""

    def __init__(self, pooled: Tensor, tokens: Tensor | None = None, mask: Tensor | None = None) -> None:
        if tokens is not None and mask is None:
            mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        self.pooled, self.tokens = pooled, tokens
        self.mask = None if mask is None else mask.bool()

    def _map(self, fn: Callable[[Tensor], Tensor]) -> TextCondition:
        tokens = None if self.tokens is None else fn(self.tokens)
        return TextCondition(fn(self.pooled), tokens, None if self.mask is None else fn(self.mask))

    def __getitem__(self, rows: Tensor | slice | int) -> TextCondition:
        return self._map(lambda t: t[rows])

    def __len__(self) -> int:
        return self.pooled.size(0)

    def size(self, dim: int) -> int:
        return self.pooled.size(dim)

    @property
    def device(self) -> torch.device:
        return self.pooled.device

    def detach(self) -> TextCondition:
        return self._map(lambda t: t.detach())

    def repeat_interleave(self, repeats: int, dim: int = 0) -> TextCondition:
        return self._map(lambda t: t.repeat_interleave(repeats, dim))


def _pooled(text: Tensor | TextCondition) -> Tensor:
    return text.pooled if isinstance(text, TextCondition) else text


def _words(text: Tensor | TextCondition, network: str) -> tuple[Tensor, Tensor]:
    """The tokens (B, T, D) and mask (B, T) a word-level network needs, or an error saying it got none."""
    if not isinstance(text, TextCondition) or text.tokens is None or text.mask is None:
        raise ValueError(f"the {network} reads the text word by word: give it a TextCondition with tokens and mask")
    return text.tokens, text.mask


def _masked_attention(query: Tensor, key: Tensor, value: Tensor, mask: Tensor | None, heads: int) -> Tensor:
    """Multi-head attention (B, Q, D) x (B, K, D) -> (B, Q, D); keys where ``mask`` (B, K) is False get no weight,
    and a row with no real key at all gives zeros (not an average of its padding)."""
    b, q_len, dim = query.shape

    def split(t: Tensor) -> Tensor:
        return t.view(b, t.size(1), heads, dim // heads).transpose(1, 2)  # (B, h, N, dim / h)

    out = attend(split(query), split(key), split(value), mask)
    out = out.transpose(1, 2).reshape(b, q_len, dim)  # (B, Q, D)
    if mask is None:
        return out
    return out * mask.any(-1)[:, None, None].to(out.dtype)


class _WordAttention(nn.Module):
    """Cross-attention from every position of a (size x size) feature map to the text's tokens, added back to the
    map: each position, told where it is by a learned embedding, gathers the words that describe that place."""

    def __init__(self, channels: int, token_dim: int, size: int, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm = nn.GroupNorm(min(8, channels), channels)
        self.position = nn.Parameter(torch.randn(1, channels, size, size) * 0.02)
        self.query = nn.Conv2d(channels, dim, 1)
        self.key = nn.Linear(token_dim, dim)
        self.value = nn.Linear(token_dim, dim)
        self.out = nn.Conv2d(dim, channels, 1)

    def forward(self, x: Tensor, tokens: Tensor, mask: Tensor) -> Tensor:
        b, _, h, w = x.shape
        query = self.query(self.norm(x) + self.position).flatten(2).transpose(1, 2)  # (B, HW, dim)
        context = _masked_attention(query, self.key(tokens), self.value(tokens), mask, self.heads)
        return x + self.out(context.transpose(1, 2).reshape(b, -1, h, w))


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
    """Noise (B, noise_dim) + text -> images (B, channels, S, S) in [-1, 1]; the pooled text is projected to a
    ``condition_dim`` vector that joins the noise and modulates every block, one upsampling block per width, from
    S / 2**len(widths). ``word_attention``: the sides of the blocks' outputs (e.g. 8, 16) after which the map
    cross-attends to the text's tokens (``text`` then a :class:`TextCondition` with tokens)."""

    def __init__(
        self,
        text_dim: int,
        noise_dim: int = 64,
        condition_dim: int = 128,
        image_size: int = 32,
        channels: int = 3,
        widths: Sequence[int] = (256, 128, 64),
        word_attention: Sequence[int] = (),
        word_dim: int = 64,
        word_heads: int = 2,
    ) -> None:
        super().__init__()
        base = image_size // 2 ** len(widths)
        if base < 1 or base * 2 ** len(widths) != image_size:
            raise ValueError(f"image_size {image_size} is not a multiple of 2**{len(widths)} (one per width)")
        sides = [base * 2 ** (i + 1) for i in range(len(widths))]
        unknown = sorted(set(word_attention) - set(sides))
        if unknown:
            raise ValueError(f"word_attention sides {unknown}: the generator's blocks output sides {sides}")
        if word_attention and word_dim % word_heads:
            raise ValueError(f"word_dim {word_dim} is not a multiple of word_heads {word_heads}")
        self.noise_dim, self.base, self.widths = noise_dim, base, list(widths)
        self.condition = nn.Linear(text_dim, condition_dim)
        self.stem = nn.Linear(noise_dim + condition_dim, widths[0] * base * base)
        ins = [widths[0], *widths[:-1]]
        self.blocks = nn.ModuleList(_UpBlock(i, o, condition_dim) for i, o in zip(ins, widths, strict=True))
        self.word_attention = nn.ModuleDict(
            {
                str(i): _WordAttention(width, text_dim, side, word_dim, word_heads)
                for i, (width, side) in enumerate(zip(widths, sides, strict=True))
                if side in word_attention
            }
        )
        self.to_image = nn.Conv2d(widths[-1], channels, 3, padding=1)

    def forward(self, noise: Tensor, text: Tensor | TextCondition) -> Tensor:
        condition = self.condition(_pooled(text))
        tokens, mask = _words(text, "generator") if len(self.word_attention) else (None, None)
        x = self.stem(torch.cat([noise, condition], dim=-1)).view(-1, self.widths[0], self.base, self.base)
        x = F.relu(x)
        for i, block in enumerate(self.blocks):
            x = block(x, condition)
            if str(i) in self.word_attention:
                x = self.word_attention[str(i)](x, tokens, mask)
        return torch.tanh(self.to_image(x))


class _WordRegionMatching(nn.Module):
    """How well a text's words agree with an image's regions, one score per pair (AttnGAN's word-region matching,
    as a discriminator term): each real token attends over the regions of a (size x size) feature map, told where
    each region is by a learned embedding, and scores the region context it gathers against itself; the score is the
    mean over the real tokens. A caption with a colour or shape word swapped has a word that its place disagrees
    with."""

    def __init__(self, channels: int, token_dim: int, size: int, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.position = nn.Parameter(torch.randn(1, size * size, channels) * 0.02)
        self.word_query = spectral_norm(nn.Linear(token_dim, dim))
        self.region_key = spectral_norm(nn.Linear(channels, dim))
        self.region_value = spectral_norm(nn.Linear(channels, dim))
        self.word = spectral_norm(nn.Linear(token_dim, dim))

    def forward(self, regions: Tensor, tokens: Tensor, mask: Tensor) -> Tensor:
        places = regions.flatten(2).transpose(1, 2) + self.position  # (B, HW, C)
        context = _masked_attention(
            self.word_query(tokens), self.region_key(places), self.region_value(places), None, self.heads
        )  # (B, T, dim): each word's regions
        agreement = (self.word(tokens) * context).sum(-1)  # (B, T)
        weight = mask.to(agreement.dtype)
        return (agreement * weight).sum(-1) / weight.sum(-1).clamp(min=1.0)


class Judgement(NamedTuple):
    """What the discriminator makes of a batch of image-text pairs."""

    logits: Tensor  # (B,)
    features: Tensor  # (B, feature_dim): phi(x), the image's features the logit projects the text onto


class ProjectionDiscriminator(nn.Module):
    """Images (B, C, S, S) + text -> (B,) logits: ``w . phi(x) + <V t, phi(x)>``, with ``phi`` the convolutional
    features of the whole final map (not pooled: where a shape is, matters) and ``t`` the pooled text.
    ``word_matching``: the side of the feature map (after one of the downsamplings, e.g. 8) whose regions the text's
    tokens are matched against, a score added to the logit (``text`` then a :class:`TextCondition` with tokens).
    ``contrastive_dim``: two heads that embed ``phi(x)`` and the pooled text in one space of that size
    (:meth:`embed_image`, :meth:`embed_text`), for a contrastive term beside the logit; they do not change it."""

    def __init__(
        self,
        text_dim: int,
        image_size: int = 32,
        channels: int = 3,
        widths: Sequence[int] = (64, 128, 256),
        feature_dim: int = 256,
        word_matching: int | None = None,
        word_dim: int = 64,
        word_heads: int = 2,
        contrastive_dim: int | None = None,
    ) -> None:
        super().__init__()
        final = image_size // 2 ** len(widths)
        if final < 1:
            raise ValueError(f"image_size {image_size} is too small for {len(widths)} downsamplings")
        sides = [image_size // 2 ** (i + 1) for i in range(len(widths))]
        if word_matching is not None and word_matching not in sides:
            raise ValueError(f"word_matching side {word_matching}: the discriminator's feature maps have sides {sides}")
        if word_matching is not None and word_dim % word_heads:
            raise ValueError(f"word_dim {word_dim} is not a multiple of word_heads {word_heads}")
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
        self.word_matching: _WordRegionMatching | None = None
        self.matching_layer = -1  # index in ``features`` of the activation whose map the words are matched against
        if word_matching is not None:
            level = sides.index(word_matching)
            self.matching_layer = 4 * level + 3
            self.word_matching = _WordRegionMatching(widths[level], text_dim, word_matching, word_dim, word_heads)
        self.contrastive_image: nn.Linear | None = None
        self.contrastive_text: nn.Linear | None = None
        if contrastive_dim is not None:
            self.contrastive_image = nn.Linear(feature_dim, contrastive_dim)
            self.contrastive_text = nn.Linear(text_dim, contrastive_dim)

    def forward(self, images: Tensor, text: Tensor | TextCondition) -> Tensor:
        return self.judge(images, text).logits

    def embed_image(self, features: Tensor) -> Tensor:
        """``phi(x)`` (B, feature_dim) of :meth:`judge` -> (B, contrastive_dim), for the contrastive term."""
        return self._contrastive_heads()[0](features)

    def embed_text(self, text: Tensor | TextCondition) -> Tensor:
        """The pooled text -> (B, contrastive_dim), for the contrastive term."""
        return self._contrastive_heads()[1](_pooled(text))

    def _contrastive_heads(self) -> tuple[nn.Linear, nn.Linear]:
        if self.contrastive_image is None or self.contrastive_text is None:
            raise ValueError("this discriminator has no contrastive heads: build it with contrastive_dim")
        return self.contrastive_image, self.contrastive_text

    def judge(self, images: Tensor, text: Tensor | TextCondition) -> Judgement:
        """The logits and the image features ``phi(x)`` they were computed from."""
        tokens, mask = _words(text, "discriminator") if self.word_matching is not None else (None, None)
        x, regions = images, None
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i == self.matching_layer:
                regions = x
        phi = F.leaky_relu(self.to_feature(x.flatten(1)), 0.1)
        logits = self.score(phi).squeeze(-1) + (self.projection(_pooled(text)) * phi).sum(-1)
        if self.word_matching is not None:
            logits = logits + self.word_matching(regions, tokens, mask)
        return Judgement(logits, phi)


def matching_gradient_penalty(
    discriminator: Callable[[Tensor, TextCondition | Tensor], Tensor],
    images: Tensor,
    text: Tensor | TextCondition,
    power: float = 6.0,
) -> Tensor:
    """DF-GAN's matching-aware gradient penalty (MA-GP): the mean over rows of ``||(dD/dx, dD/dt)||**power``, the
    norm of the discriminator's gradient with respect to the image and the pooled text together, at real images
    with their own text. It flattens the discriminator around the matched pairs, so that a mismatched text (another
    row's, or one word off) stands out from them. Both inputs enter detached: the penalty trains the discriminator
    only, not the text tower. Differentiable (the gradient is built with ``create_graph``)."""
    images = images.detach().requires_grad_(True)
    text = text.detach()
    pooled = _pooled(text).requires_grad_(True)
    condition = TextCondition(pooled, text.tokens, text.mask) if isinstance(text, TextCondition) else pooled
    logits = discriminator(images, condition)
    # Rows are judged independently, so the gradient of the sum holds each row's own gradient.
    image_grad, text_grad = torch.autograd.grad(logits.sum(), (images, pooled), create_graph=True)
    norms = torch.cat([image_grad.flatten(1), text_grad.flatten(1)], dim=1).float().norm(dim=1)  # (B,)
    return norms.pow(power).mean()
