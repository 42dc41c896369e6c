"""Hinge losses of adversarial training (Lim & Ye 2017; SAGAN, BigGAN)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def hinge_discriminator_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Push real pairs above +1 and fake ones below -1 (``fake_logits`` may hold several kinds of fake)."""
    return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()


def hinge_generator_loss(fake_logits: Tensor) -> Tensor:
    return -fake_logits.mean()
