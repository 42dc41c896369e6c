"""Image generators and the networks that judge them: a text-conditioned UNet for diffusion (diffusers), and a
conditional GAN's generator and projection discriminator. Plain nn.Modules over tensors, no I/O."""

from polymodal.modules.generators.gan import (
    ConditionalGenerator,
    Judgement,
    ProjectionDiscriminator,
    TextCondition,
    matching_gradient_penalty,
)
from polymodal.modules.generators.unet import TextConditionedUNet, noise_schedulers

__all__ = [
    "ConditionalGenerator",
    "Judgement",
    "ProjectionDiscriminator",
    "TextCondition",
    "TextConditionedUNet",
    "matching_gradient_penalty",
    "noise_schedulers",
]
