"""A small text-conditioned UNet (diffusers' ``UNet2DConditionModel``) and the noise schedulers that train and
sample it.

diffusers is imported when a UNet or scheduler is built, so importing polymodal does not need it (the
``generate`` extra).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

SAMPLERS = ("ddim", "dpm_solver", "ddpm")


def _diffusers() -> Any:
    try:
        import diffusers
    except ImportError as e:  # pragma: no cover - the lock installs it
        raise ImportError("text-to-image generation needs diffusers: pip install 'polymodal[generate]'") from e
    return diffusers


class TextConditionedUNet(nn.Module):
    """Predicts the noise (or ``v``, or the clean image) of a noisy image at timestep ``t``, cross-attending to text
    tokens of width ``context_dim`` in the blocks at the lower resolutions (``attention_levels`` counts them from the
    bottom); with ``pooled_dim``, a pooled text vector also joins the timestep embedding that every block reads."""

    def __init__(
        self,
        image_size: int = 32,
        channels: int = 3,
        widths: Sequence[int] = (32, 64, 64),
        layers_per_block: int = 1,
        attention_levels: int = 2,
        context_dim: int = 128,
        head_dim: int = 8,
        norm_groups: int = 8,
        pooled_dim: int | None = None,
    ) -> None:
        super().__init__()
        if not 0 <= attention_levels <= len(widths):
            raise ValueError(f"attention_levels must be in 0..{len(widths)}, got {attention_levels}")
        if image_size % 2 ** (len(widths) - 1):
            raise ValueError(f"image_size {image_size} must divide by {2 ** (len(widths) - 1)} ({len(widths)} levels)")
        if any(w % norm_groups for w in widths):
            raise ValueError(f"every width {list(widths)} must divide by norm_groups {norm_groups}")
        plain = len(widths) - attention_levels
        down = ["DownBlock2D"] * plain + ["CrossAttnDownBlock2D"] * attention_levels
        self.unet = _diffusers().UNet2DConditionModel(
            sample_size=image_size,
            in_channels=channels,
            out_channels=channels,
            layers_per_block=layers_per_block,
            block_out_channels=tuple(widths),
            down_block_types=tuple(down),
            up_block_types=tuple(b.replace("Down", "Up") for b in reversed(down)),
            mid_block_type="UNetMidBlock2DCrossAttn" if attention_levels else None,
            cross_attention_dim=context_dim,
            attention_head_dim=head_dim,
            norm_num_groups=norm_groups,
            class_embed_type="projection" if pooled_dim else None,
            projection_class_embeddings_input_dim=pooled_dim,
        )
        self.image_size, self.channels, self.context_dim = image_size, channels, context_dim

    def forward(
        self,
        noisy: Tensor,
        timesteps: Tensor,
        context: Tensor,
        context_mask: Tensor | None = None,
        pooled: Tensor | None = None,
    ) -> Tensor:
        return self.unet(  # type: ignore[no-any-return]
            noisy, timesteps, encoder_hidden_states=context, encoder_attention_mask=context_mask, class_labels=pooled
        ).sample


def noise_schedulers(
    num_train_timesteps: int = 1000, beta_schedule: str = "squaredcos_cap_v2", prediction_type: str = "epsilon"
) -> dict[str, Any]:
    """diffusers schedulers sharing one noise schedule: ``train`` (DDPM: adds noise) and one per sampler in
    :data:`SAMPLERS`; DDIM and DPM-Solver++ are deterministic given the starting noise."""
    d = _diffusers()
    common = {
        "num_train_timesteps": num_train_timesteps,
        "beta_schedule": beta_schedule,
        "prediction_type": prediction_type,
    }
    return {
        "train": d.DDPMScheduler(**common),
        "ddpm": d.DDPMScheduler(**common),
        "ddim": d.DDIMScheduler(**common, clip_sample=True, set_alpha_to_one=False),
        "dpm_solver": d.DPMSolverMultistepScheduler(**common, algorithm_type="dpmsolver++", solver_order=2),
    }
