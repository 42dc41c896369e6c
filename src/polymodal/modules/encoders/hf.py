"""Wrappers that give Hugging Face ``transformers`` models the encoder interface.

Models load from a local directory only (``local_files_only=True``): nothing downloads at
run time. ``transformers`` is imported lazily so that importing polymodal stays fast.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from torch import Tensor, nn

from polymodal.modules.encoders.base import Encoder, EncoderOutput
from polymodal.modules.encoders.pooling import check_choice, pool_tokens
from polymodal.registry import Registry

if TYPE_CHECKING:
    from transformers import PreTrainedModel

E = TypeVar("E", bound="_HFEncoder")

# Named directories a config can give instead of a machine-specific path, as ``SCHEME:NAME``: scheme -> NAME ->
# directory. The modules know no names; polymodal.pretrained adds ``pretrained`` (directories inside PyPI packages).
PATH_SCHEMES: Registry[Callable[[str], str | os.PathLike[str]]] = Registry("path scheme")


def resolve_path(path: str | os.PathLike[str]) -> str | os.PathLike[str]:
    """``SCHEME:NAME`` of a registered scheme -> that scheme's directory for NAME; any other path unchanged."""
    scheme, sep, name = str(path).partition(":")
    return PATH_SCHEMES.get(scheme)(name) if sep and scheme in PATH_SCHEMES else path


def load_hf_model(model_or_path: PreTrainedModel | str | os.PathLike[str], tower: str | None = None) -> PreTrainedModel:
    """An already-built model as is, or a model loaded from a local directory (or ``SCHEME:NAME``, such as
    ``pretrained:minilm``: see :data:`PATH_SCHEMES`).

    ``tower`` (``"text"`` or ``"vision"``) picks one tower of a dual checkpoint such as
    ``CLIPModel`` (whose config has ``text_config`` / ``vision_config``): the matching
    ``CLIPTextModel`` / ``CLIPVisionModel`` loads just that tower's weights. A single-tower
    checkpoint loads through ``AutoModel``.
    """
    if not isinstance(model_or_path, (str, os.PathLike)):
        return model_or_path
    from transformers import AutoConfig, AutoModel
    from transformers.models.auto.modeling_auto import MODEL_MAPPING

    model_or_path = resolve_path(model_or_path)  # pretrained:minilm -> the packaged directory

    config = AutoConfig.from_pretrained(model_or_path, local_files_only=True)
    sub_config = getattr(config, f"{tower}_config", None) if tower else None
    if sub_config is not None and type(sub_config) in MODEL_MAPPING:
        return MODEL_MAPPING[type(sub_config)].from_pretrained(model_or_path, local_files_only=True)
    return AutoModel.from_pretrained(model_or_path, local_files_only=True)


class _HFEncoder(Encoder):
    """Shared parts: layer discovery for freezing, and HF's own gradient checkpointing."""

    tower: str | None = None  # which tower of a dual (CLIP-like) checkpoint to load

    def __init__(self, model_or_path: PreTrainedModel | str | os.PathLike[str]) -> None:
        super().__init__()
        self.model = load_hf_model(model_or_path, self.tower)
        self.output_dim = self.model.config.hidden_size
        self.grad_checkpointing = False
        self._hf_checkpointing = False  # what the wrapped model was last told

    @classmethod
    def from_pretrained(cls: type[E], path: str | os.PathLike[str], **kwargs: Any) -> E:
        """Load the wrapped model from a local ``save_pretrained`` directory."""
        return cls(path, **kwargs)

    def blocks(self) -> list[nn.Module]:
        # Every HF transformer keeps its layers in one ModuleList (BERT encoder.layer, GPT-2 h,
        # CLIP encoder.layers); the longest list is that stack, whatever the attribute name.
        lists = [m for m in self.model.modules() if isinstance(m, nn.ModuleList)]
        return list(max(lists, key=len)) if lists else []

    def _sync_grad_checkpointing(self) -> None:
        # HF checkpoints inside its layers (only in training mode), so hand the flag over.
        # transformers 5 renamed the switch to activation_checkpointing_*; 4.x has only gradient_*.
        model = self.model
        if self.grad_checkpointing == self._hf_checkpointing:
            return
        if self.grad_checkpointing:
            kwargs = {"use_reentrant": False}
            if hasattr(model, "activation_checkpointing_enable"):
                model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
            else:
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        elif hasattr(model, "activation_checkpointing_disable"):
            model.activation_checkpointing_disable()
        else:
            model.gradient_checkpointing_disable()
        self._hf_checkpointing = self.grad_checkpointing


class HFTextEncoder(_HFEncoder):
    """Any ``AutoModel`` text model (BERT, MiniLM, GPT-2, a CLIP text tower ...) with
    ``cls``/``mean``/``eos`` pooling (``eos`` on right-padded CLIP text equals its pooler).

    Without a mask, tokens equal to the model's ``pad_token_id`` (if it has one) are padding.
    """

    modality = "text"
    tower = "text"

    def __init__(self, model_or_path: PreTrainedModel | str | os.PathLike[str], pooling: str = "cls") -> None:
        super().__init__(model_or_path)
        self.pooling = check_choice("pooling", pooling, ("cls", "mean", "eos"))
        # An encoder never decodes step by step: skip building a KV cache (GPT-2 would by default).
        self._no_cache = {"use_cache": False} if "use_cache" in inspect.signature(self.model.forward).parameters else {}

    @property
    def vocab_size(self) -> int:
        return self.model.config.vocab_size

    def forward(self, x: Tensor, mask: Tensor | None = None) -> EncoderOutput:
        pad_id = self.model.config.pad_token_id
        if mask is None and pad_id is not None:
            mask = x != pad_id
        self._sync_grad_checkpointing()
        out = self.model(input_ids=x, attention_mask=None if mask is None else mask.long(), **self._no_cache)
        tokens = out.last_hidden_state  # (B, T, D)
        mask = None if mask is None else mask.bool()
        return EncoderOutput(tokens, pool_tokens(tokens, mask, self.pooling), mask)


class HFImageEncoder(_HFEncoder):
    """A ``ViTModel`` / ``CLIPVisionModel`` (or the vision tower of a CLIP checkpoint);
    pooled = ``pooler_output``, else the CLS token."""

    modality = "image"
    tower = "vision"

    @property
    def image_size(self) -> int:
        """The input size the model's position embeddings were built for."""
        return self.model.config.image_size

    def forward(self, x: Tensor, mask: Tensor | None = None) -> EncoderOutput:
        """x (B, 3, H, W) at the model's image size; ``mask`` is ignored."""
        self._sync_grad_checkpointing()
        out = self.model(pixel_values=x)
        tokens = out.last_hidden_state  # (B, T, D)
        pooled = getattr(out, "pooler_output", None)
        return EncoderOutput(tokens, tokens[:, 0] if pooled is None else pooled, None)
