"""Wrappers that give Hugging Face ``transformers`` models the encoder interface: text, vision and audio towers.

Models load from a local directory only (``local_files_only=True``): nothing downloads at
run time. ``transformers`` is imported lazily so that importing polymodal stays fast.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import math
import os
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polymodal.modules.encoders.audio import patch_token_mask
from polymodal.modules.encoders.base import Encoder, EncoderOutput, last_index, masked_mean
from polymodal.modules.encoders.image import PIXELS
from polymodal.modules.encoders.pooling import check_choice, pool_tokens
from polymodal.modules.encoders.text import check_text_inputs
from polymodal.modules.layers import Packing, attention_mask, scaled_dot_product
from polymodal.registry import resolve_path

if TYPE_CHECKING:
    from transformers import PreTrainedModel

E = TypeVar("E", bound="_HFEncoder")


# Set while a saved model is built: its own weights replace the towers' next, so a tower is built from its
# directory's config alone (the checkpoint's weights are never read, and a saved model keeps only the configs).
_ARCHITECTURE_ONLY: ContextVar[bool] = ContextVar("polymodal_hf_architecture_only", default=False)


@contextlib.contextmanager
def architecture_only() -> Iterator[None]:
    """Within it, Hugging Face towers are built from their directory's config, with untrained weights."""
    token = _ARCHITECTURE_ONLY.set(True)
    try:
        yield
    finally:
        _ARCHITECTURE_ONLY.reset(token)


def load_hf_model(model_or_path: PreTrainedModel | str | os.PathLike[str], tower: str | None = None) -> PreTrainedModel:
    """An already-built model as is, or a model loaded from a local directory (or ``SCHEME:NAME``, such as
    ``pretrained:minilm``: see :data:`polymodal.registry.PATH_SCHEMES`).

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
        model_class = MODEL_MAPPING[type(sub_config)]
        if _ARCHITECTURE_ONLY.get():
            return model_class._from_config(sub_config)
        return model_class.from_pretrained(model_or_path, local_files_only=True)
    if _ARCHITECTURE_ONLY.get():
        return AutoModel.from_config(config)
    return AutoModel.from_pretrained(model_or_path, local_files_only=True)


class _HFEncoder(Encoder):
    """Shared parts: layer discovery for freezing, and HF's own gradient checkpointing."""

    tower: str | None = None  # which tower of a dual (CLIP-like) checkpoint to load

    def __init__(self, model_or_path: PreTrainedModel | str | os.PathLike[str]) -> None:
        super().__init__()
        self.model = self._load(model_or_path)
        self.output_dim = self.model.config.hidden_size
        self.grad_checkpointing = False
        self._hf_checkpointing = False  # what the wrapped model was last told

    def _load(self, model_or_path: PreTrainedModel | str | os.PathLike[str]) -> PreTrainedModel:
        return load_hf_model(model_or_path, self.tower)

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


# Text architectures whose inference runs on the real tokens only (:func:`packed_bert_states`): BERT's layer layout
# with absolute positions counted from 0 (MiniLM and other sentence encoders are BERT models).
PACKED_TEXT_MODEL_TYPES = ("bert",)


def packs_text(model: PreTrainedModel) -> bool:
    """Whether :func:`packed_bert_states` computes ``model``'s hidden states: a BERT encoder, absolute positions."""
    config = model.config
    return (
        config.model_type in PACKED_TEXT_MODEL_TYPES
        and not getattr(config, "is_decoder", False)
        and getattr(config, "position_embedding_type", "absolute") == "absolute"
        and hasattr(model, "embeddings")
        and hasattr(model, "encoder")
    )


def packed_bert_states(model: PreTrainedModel, ids: Tensor, mask: Tensor) -> Tensor:
    """A BERT model's last hidden states (B, T, D) for ``ids`` (B, T), computed on the real tokens only.

    transformers runs every linear layer on the padding too: much of the work on a batch of texts of unequal length.
    Here embeddings, projections, feed-forward layers and norms run on the packed real tokens, through the model's
    own modules; attention alone runs padded, with padding masked out. Real tokens get transformers' values (token
    type 0, as transformers assumes without ``token_type_ids``); padded positions are zero.
    """
    embeddings = model.embeddings
    if ids.size(1) > embeddings.position_embeddings.num_embeddings:
        limit = embeddings.position_embeddings.num_embeddings
        raise ValueError(f"texts of {ids.size(1)} tokens: this model reads at most {limit} (max_position_embeddings)")
    packing = Packing(mask)
    x = embeddings.word_embeddings(packing.pack(ids)) + embeddings.token_type_embeddings.weight[0]
    x = embeddings.LayerNorm(x + embeddings.position_embeddings(packing.positions()))
    keys = attention_mask(packing.mask, packing.length, packing.length, causal=False)
    heads = model.config.num_attention_heads
    for layer in model.encoder.layer:
        projections = layer.attention.self
        qkv = torch.cat([projections.query(x), projections.key(x), projections.value(x)], dim=-1)  # (N, 3D)
        q, k, v = packing.pad(qkv).unflatten(-1, (3, heads, -1)).permute(2, 0, 3, 1, 4)  # 3 x (B, H, T, hd)
        attended = scaled_dot_product(q, k, v, attn_mask=keys).transpose(1, 2).flatten(2)  # (B, T, D)
        x = layer.attention.output(packing.pack(attended), x)  # dense, residual, LayerNorm
        x = layer.output(layer.intermediate(x), x)
    return packing.pad(x)


class HFTextEncoder(_HFEncoder):
    """Any ``AutoModel`` text model (BERT, MiniLM, GPT-2, a CLIP text tower ...) with
    ``cls``/``mean``/``eos`` pooling (``eos`` on right-padded CLIP text equals its pooler).

    Without a mask, tokens equal to the model's ``pad_token_id`` (if it has one) are padding. In eval mode (not
    traced) a BERT model runs on the real tokens only (:func:`packed_bert_states`); its padded positions are zero.
    An ``eos``-pooled embedding of a CLIP text tower in eval mode runs its last layer for that token only
    (:func:`clip_pooled_text`).
    """

    modality = "text"
    name = "hf_text"
    tower = "text"

    def __init__(self, model_or_path: PreTrainedModel | str | os.PathLike[str], pooling: str = "cls") -> None:
        super().__init__(model_or_path)
        self.pooling = check_choice("pooling", pooling, ("cls", "mean", "eos"))
        self.packs = packs_text(self.model)
        self.pools_eos = self.pooling == "eos" and pools_clip_eos(self.model)
        # An encoder never decodes step by step: skip building a KV cache (GPT-2 would by default).
        self._no_cache = {"use_cache": False} if "use_cache" in inspect.signature(self.model.forward).parameters else {}

    @property
    def vocab_size(self) -> int:
        return self.model.config.vocab_size

    def _real_tokens(self, x: Tensor, mask: Tensor | None) -> Tensor | None:
        pad_id = self.model.config.pad_token_id
        return x != pad_id if mask is None and pad_id is not None else mask

    def check_inputs(self, x: Tensor, mask: Tensor | None = None) -> None:
        check_text_inputs(self, x, mask)

    def pooled(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        # Forward hooks on the encoder expect forward to run: they keep it.
        if self.pools_eos and not self.training and not (self._forward_hooks or self._forward_pre_hooks):
            self.check_inputs(x, mask)
            with self._naming_bad_ids(x):
                return clip_pooled_text(self.model, x, self._real_tokens(x, mask))
        return super().pooled(x, mask)

    @contextlib.contextmanager
    def _naming_bad_ids(self, ids: Tensor) -> Iterator[None]:
        """An IndexError inside the model (an embedding lookup on a CPU) caused by an id outside the vocabulary
        becomes an error naming it; the ids' range is read only then."""
        try:
            yield
        except IndexError as e:
            error = self.ids_out_of_range(ids, self.vocab_size)
            if error is None:
                raise
            raise error from e

    def forward(self, x: Tensor, mask: Tensor | None = None) -> EncoderOutput:
        self.check_inputs(x, mask)
        with self._naming_bad_ids(x):
            return self._forward(x, mask)

    def _forward(self, x: Tensor, mask: Tensor | None) -> EncoderOutput:
        mask = self._real_tokens(x, mask)
        # Exporting and compiling trace transformers' own graph: packing's shapes depend on the data.
        if mask is not None and self.packs and not self.training and not torch.compiler.is_compiling():
            tokens = packed_bert_states(self.model, x, mask)
        else:
            self._sync_grad_checkpointing()
            out = self.model(input_ids=x, attention_mask=None if mask is None else mask.long(), **self._no_cache)
            tokens = out.last_hidden_state  # (B, T, D)
        mask = None if mask is None else mask.bool()
        return EncoderOutput(tokens, pool_tokens(tokens, mask, self.pooling), mask)


def _is_clip_tower(model: nn.Module, nested: str, model_type: str, parts: tuple[str, ...]) -> bool:
    """``model`` (or its ``nested`` tower: transformers 4.x nests it) is a CLIP tower of ``model_type`` with
    ``parts`` and a non-empty layer stack."""
    model = getattr(model, nested, model)
    layers = getattr(getattr(model, "encoder", None), "layers", None)
    return (
        getattr(getattr(model, "config", None), "model_type", None) == model_type
        and all(hasattr(model, name) for name in ("embeddings", *parts))
        and layers is not None
        and len(layers) > 0
    )


def pools_clip_cls(model: nn.Module) -> bool:
    """Whether :func:`clip_pooled_image` computes ``model``'s pooled output: a CLIP vision transformer."""
    return _is_clip_tower(model, "vision_model", "clip_vision_model", ("pre_layrnorm", "post_layernorm"))


def pools_clip_eos(model: nn.Module) -> bool:
    """Whether :func:`clip_pooled_text` computes ``model``'s ``eos``-pooled output: a CLIP text transformer."""
    return _is_clip_tower(model, "text_model", "clip_text_model", ("final_layer_norm",))


def _clip_layer(
    layer: nn.Module,
    x: Tensor,
    *,
    causal: bool = False,
    queries: Callable[[Tensor], Tensor] | None = None,
    keys: Tensor | None = None,
) -> Tensor:
    """One CLIP encoder layer (pre-norm attention, then the MLP, each residual) through its own modules, for every
    token or only for the tokens ``queries`` picks ((B, T, D) -> (B, Q, D)), whose keys and values still come from
    all tokens (``keys``: an SDPA mask over them)."""
    attention = layer.self_attn
    normed = layer.layer_norm1(x)
    heads = attention.num_heads

    def split(t: Tensor) -> Tensor:
        return t.unflatten(-1, (heads, -1)).transpose(1, 2)  # (B, H, T, hd)

    if queries is not None:
        x = queries(x)
    q = split(attention.q_proj(normed if queries is None else queries(normed)))
    k, v = split(attention.k_proj(normed)), split(attention.v_proj(normed))
    attended = scaled_dot_product(q, k, v, attn_mask=keys, is_causal=causal)
    h = x + attention.out_proj(attended.transpose(1, 2).flatten(2))
    return h + layer.mlp(layer.layer_norm2(h))


def clip_pooled_image(model: nn.Module, pixels: Tensor) -> Tensor:
    """A CLIP vision transformer's ``pooler_output`` (the post-LayerNorm CLS token) with its last layer run for the
    CLS token alone: the last layer's queries, output projection and MLP on the other tokens feed nothing pooled
    (about 1/12 of a ViT-B/32's work)."""
    model = getattr(model, "vision_model", model)  # transformers 4.x nests it in CLIPVisionModel
    x = model.pre_layrnorm(model.embeddings(pixels))
    *layers, last = model.encoder.layers
    for layer in layers:
        x = _clip_layer(layer, x)
    return model.post_layernorm(_clip_layer(last, x, queries=lambda t: t[:, :1])[:, 0])


def clip_pooled_text(model: nn.Module, ids: Tensor, mask: Tensor | None) -> Tensor:
    """A CLIP text transformer's final-LayerNorm state at each right-padded row's last real token (``eos`` pooling),
    its last layer run for that token alone: under causal attention nothing else in that layer reaches it (about
    1/14 of a CLIP text tower's work on full-length texts)."""
    model = getattr(model, "text_model", model)  # transformers 4.x nests it in CLIPTextModel
    x = model.embeddings(input_ids=ids)
    *layers, last = model.encoder.layers
    for layer in layers:
        x = _clip_layer(layer, x, causal=True)
    ends = torch.full_like(ids[:, 0], ids.size(1) - 1) if mask is None else last_index(mask)  # (B,)
    seen = (torch.arange(ids.size(1), device=ids.device) <= ends[:, None])[:, None, None]  # (B, 1, 1, T)
    at_end = ends[:, None, None].expand(-1, 1, x.size(-1))  # gather, not take_along_dim: that fixes B when exported
    eos = _clip_layer(last, x, queries=lambda t: t.gather(1, at_end), keys=seen)
    return model.final_layer_norm(eos[:, 0])


class HFImageEncoder(_HFEncoder):
    """A ``ViTModel`` / ``CLIPVisionModel`` (or the vision tower of a CLIP checkpoint);
    pooled = ``pooler_output``, else the CLS token. An embedding of a CLIP tower in eval mode runs its last layer
    for the CLS token only (:func:`clip_pooled_image`)."""

    modality = "image"
    name = "hf_image"
    tower = "vision"

    def __init__(self, model_or_path: PreTrainedModel | str | os.PathLike[str]) -> None:
        super().__init__(model_or_path)
        self.pools_cls = pools_clip_cls(self.model)

    def check_inputs(self, x: Tensor, mask: Tensor | None = None) -> None:
        # transformers casts pixels to the model's dtype and checks the image size itself: any float will do.
        channels = getattr(self.model.config, "num_channels", 3)
        self.check_input(x, "images", ("batch", channels, "height", "width"), "float", PIXELS)

    def pooled(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        # Forward hooks on the encoder expect forward to run: they keep it.
        if self.pools_cls and not self.training and not (self._forward_hooks or self._forward_pre_hooks):
            self.check_inputs(x, mask)
            return clip_pooled_image(self.model, x)
        return super().pooled(x, mask)

    @property
    def image_size(self) -> int:
        """The input size the model's position embeddings were built for."""
        return self.model.config.image_size

    def forward(self, x: Tensor, mask: Tensor | None = None) -> EncoderOutput:
        """x (B, 3, H, W) at the model's image size; ``mask`` is ignored."""
        self.check_inputs(x, mask)
        self._sync_grad_checkpointing()
        out = self.model(pixel_values=x)
        tokens = out.last_hidden_state  # (B, T, D)
        pooled = getattr(out, "pooler_output", None)
        return EncoderOutput(tokens, tokens[:, 0] if pooled is None else pooled, None)


# The natural-log mel power of silence: polymodal's AudioFeatures floor the power at 1e-10 before the log.
SILENCE_LOG_MEL = math.log(1e-10)


@dataclass(frozen=True)
class AudioTower:
    """How one Hugging Face audio architecture is fed and where its audio tower and layer stack are."""

    input: str  # "waveform" (AudioFeatures kind waveform) or "log_mel"
    part: str | None  # attribute of the loaded model that holds the audio tower; None: the model itself
    layers: tuple[str, ...]  # dotted paths of the tower's layer stack (blocks()); the first that exists


AUDIO_TOWERS = {
    "wav2vec2": AudioTower("waveform", None, ("encoder.layers",)),
    "hubert": AudioTower("waveform", None, ("encoder.layers",)),
    "whisper": AudioTower("log_mel", "encoder", ("layers",)),
    "audio-spectrogram-transformer": AudioTower("log_mel", None, ("layers", "encoder.layer")),  # transformers 5, 4
    "clap": AudioTower("log_mel", "audio_model", ("audio_encoder.layers",)),
    "clap_audio_model": AudioTower("log_mel", "audio_model", ("audio_encoder.layers",)),
}
CLAP_AUDIO_CLASSES = ("ClapAudioModel", "ClapAudioModelWithProjection")


def _audio_tower(model_type: str, where: object) -> AudioTower:
    if model_type not in AUDIO_TOWERS:
        raise ValueError(
            f"{where}: model_type {model_type!r} is not a supported audio tower; supported: {', '.join(AUDIO_TOWERS)}"
        )
    return AUDIO_TOWERS[model_type]


def load_hf_audio_model(
    model_or_path: PreTrainedModel | str | os.PathLike[str],
) -> tuple[PreTrainedModel, str, dict[str, Any]]:
    """The audio tower of a model (built, or saved in a local directory), its ``model_type`` and the directory's
    ``preprocessor_config.json`` (empty when there is none): Whisper's encoder, CLAP's audio model, or the model.

    A checkpoint that lacks any weight of the tower is an error: transformers would fill it with random values
    (as a ``ClapAudioModel`` loaded from a ``ClapModel`` directory silently is), so a dual checkpoint loads whole
    and the tower is taken from it.
    """
    if not isinstance(model_or_path, (str, os.PathLike)):
        model_type = model_or_path.config.model_type
        spec = _audio_tower(model_type, type(model_or_path).__name__)
        return _tower_part(model_or_path, spec), model_type, {}
    import transformers
    from transformers import AutoConfig, AutoModel

    path = resolve_path(model_or_path)
    config = AutoConfig.from_pretrained(path, local_files_only=True)
    spec = _audio_tower(config.model_type, path)
    loader: Any = AutoModel
    if config.model_type == "clap_audio_model":  # no AutoModel entry: the class the directory names
        name = (config.architectures or ["ClapAudioModel"])[0]
        if name not in CLAP_AUDIO_CLASSES:
            raise ValueError(f"{path}: architecture {name!r} is not one of {', '.join(CLAP_AUDIO_CLASSES)}")
        loader = getattr(transformers, name)
    if _ARCHITECTURE_ONLY.get():
        model, missing = loader.from_config(config) if loader is AutoModel else loader._from_config(config), []
    else:
        model, info = loader.from_pretrained(path, local_files_only=True, output_loading_info=True)
        prefix = f"{spec.part}." if spec.part and hasattr(model, spec.part) else ""
        missing = sorted(k for k in info["missing_keys"] if k.startswith(prefix))
    if missing:
        raise ValueError(
            f"{path}: the checkpoint has no weights for {len(missing)} parameters of the audio tower "
            f"({', '.join(missing[:3])} ...); they would start from random values"
        )
    settings_file = Path(path) / "preprocessor_config.json"
    settings = json.loads(settings_file.read_text()) if settings_file.is_file() else {}
    return _tower_part(model, spec), config.model_type, settings


def _tower_part(model: PreTrainedModel, spec: AudioTower) -> PreTrainedModel:
    return getattr(model, spec.part) if spec.part and hasattr(model, spec.part) else model


def _zero_mean_unit_var(wave: Tensor, mask: Tensor | None) -> Tensor:
    """Each clip's real samples to mean 0 and variance 1, padding 0 (Wav2Vec2FeatureExtractor's do_normalize)."""
    weights = torch.ones_like(wave) if mask is None else mask.to(wave.dtype)
    count = weights.sum(-1, keepdim=True).clamp_min(1.0)
    mean = (wave * weights).sum(-1, keepdim=True) / count
    var = ((wave - mean).pow(2) * weights).sum(-1, keepdim=True) / count
    return (wave - mean) / torch.sqrt(var + 1e-7) * weights


class HFAudioEncoder(_HFEncoder):
    """A Hugging Face audio tower, chosen by the directory's ``model_type`` (see :data:`AUDIO_TOWERS`).

    Inputs are what polymodal's audio processor gives; model-specific scaling happens here, so the saved
    ``AudioFeatures`` stay plain:

    - ``wav2vec2`` / ``hubert``: the waveform (``kind: waveform``; (B, 1, samples) or (B, samples)) with a
      per-sample mask. ``normalize`` (default: the directory's ``do_normalize``, else True) scales each clip's
      real samples to zero mean and unit variance. The mask reaches the model only when its feature encoder
      uses layer norm (``feat_extract_norm: layer``); a group-norm model (wav2vec2-base) gets zero padding
      and no mask, as transformers advises, and its outputs then shift a little with the padding.
      One token per conv-encoder step; the token mask follows the model's own output lengths.
    - ``whisper`` (the encoder only): natural-log mel (B, num_mel_bins, frames) from Slaney-scale, Slaney-normed
      filters; padding frames become silence, the input is padded with silence to the model's 30 s (or cut by
      the one extra centred frame a full 30 s clip has) and scaled as WhisperFeatureExtractor does (log10,
      floor at max - 8, (x + 4) / 4). One token per two frames.
    - ``audio-spectrogram-transformer`` (AST): natural-log Kaldi-scale fbank (B, num_mel_bins, frames); padding
      frames are zeroed and the input zero-padded to ``max_length`` as ASTFeatureExtractor pads, then normalised
      with its mean and std (the directory's, else AudioSet's). Tokens: CLS, distillation, then the
      frequency-major patch grid; pooled = the model's pooler (mean of the first two).
    - ``clap`` / ``clap_audio_model`` (HTSAT audio tower): natural-log HTK mel (B, num_mel_bins, frames), turned
      into dB; padding frames become silence and the input is padded with silence to the extractor's frame
      count (the directory's ``nb_max_samples``, else the model's widest input). The tower folds time into
      image rows, so its tokens carry no time mask; pooled = its pooler. Fused checkpoints see every clip as
      short (no local fusion).
    """

    modality = "audio"
    name = "hf_audio"

    def __init__(self, model_or_path: PreTrainedModel | str | os.PathLike[str], normalize: bool | None = None) -> None:
        super().__init__(model_or_path)
        config = self.model.config
        self.normalize = bool(self._preprocessing.get("do_normalize", True)) if normalize is None else normalize
        if self.model_type == "whisper":
            self.output_dim = config.d_model
        elif self.model_type.startswith("clap"):
            self.output_dim = self.model.audio_encoder.num_features

    def _load(self, model_or_path: PreTrainedModel | str | os.PathLike[str]) -> PreTrainedModel:
        model, self.model_type, self._preprocessing = load_hf_audio_model(model_or_path)
        self.spec = AUDIO_TOWERS[self.model_type]
        return model

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        if enable and not self.model.supports_gradient_checkpointing:  # CLAP's audio model does not offer it
            raise ValueError(f"{type(self.model).__name__} ({self.model_type}) has no gradient checkpointing")
        super().set_grad_checkpointing(enable)

    def blocks(self) -> list[nn.Module]:
        modules = dict(self.model.named_modules())
        return list(next(modules[path] for path in self.spec.layers if path in modules))

    def forward(self, x: Tensor, mask: Tensor | None = None) -> EncoderOutput:
        """x: the waveform (B, 1, samples) or log-mel frames (B, mel bins, frames), as the tower takes (see the
        class); ``mask`` (B, samples or frames), True where the clip holds sound."""
        self.check_inputs(x, mask)
        mask = None if mask is None else mask.bool()
        self._sync_grad_checkpointing()
        if self.spec.input == "waveform":
            return self._waveform(x, mask)
        if self.model_type == "whisper":
            return self._whisper(x, mask)
        if self.model_type == "audio-spectrogram-transformer":
            return self._ast(x, mask)
        return self._clap(x, mask)

    def check_inputs(self, x: Tensor, mask: Tensor | None = None) -> None:
        if self.spec.input == "waveform":  # any dtype: forward casts the waveform to float32 (and normalises it)
            if not (isinstance(x, Tensor) and x.dim() == 2):  # (B, samples) is taken too
                hint = "or (batch, samples); set the audio processor's kind: waveform"
                self.check_input(x, f"a {self.model_type} waveform", ("batch", 1, "samples"), None, hint)
            if mask is not None:
                self.check_mask(mask, (x.shape[0], x.shape[-1]), "(batch, samples)")
            return
        bins = self._mel_bins
        hint = f"set the audio processor's kind: log_mel and n_mels: {bins}"
        self.check_input(
            x, f"{self.model_type} log-mel frames", ("batch", (bins, "mel bands"), "frames"), "float", hint
        )
        if mask is not None:
            self.check_mask(mask, (x.shape[0], x.shape[-1]), "(batch, frames)")

    @property
    def _mel_bins(self) -> int:
        return int(self.model.config.num_mel_bins)

    def _fixed_length(self, x: Tensor, mask: Tensor | None, frames: int, pad_value: float) -> tuple[Tensor, Tensor]:
        """Padding frames set to ``pad_value`` and the input padded to ``frames``; with the real-frame mask."""
        if x.shape[-1] > frames:
            raise ValueError(
                f"{self.model_type} takes at most {frames} frames, got {x.shape[-1]}: shorten the audio processor's "
                "clip_seconds"
            )
        real = torch.ones(x.shape[0], x.shape[-1], dtype=torch.bool, device=x.device) if mask is None else mask
        x = x.masked_fill(~real[:, None, :], pad_value)
        pad = frames - x.shape[-1]
        return F.pad(x, (0, pad), value=pad_value), F.pad(real, (0, pad), value=False)

    def _waveform(self, x: Tensor, mask: Tensor | None) -> EncoderOutput:
        if x.dim() == 3:
            x = x[:, 0]  # (B, 1, samples) -> (B, samples)
        wave = x.float() if mask is None else x.float().masked_fill(~mask, 0.0)
        if self.normalize:
            wave = _zero_mean_unit_var(wave, mask)
        with_mask = mask is not None and self.model.config.feat_extract_norm == "layer"
        out = self.model(input_values=wave, attention_mask=mask.long() if with_mask else None)
        tokens = out.last_hidden_state  # (B, T, D)
        token_mask = None
        if mask is not None:
            token_mask = self.model._get_feature_vector_attention_mask(tokens.shape[1], mask.long()).bool()
        return EncoderOutput(tokens, masked_mean(tokens, token_mask), token_mask)

    def whisper_features(self, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Natural-log mel (B, mel, frames) -> Whisper's ``input_features`` (B, mel, 2 * max_source_positions)
        and the mask of its real frames."""
        encoder = self.model
        frames = self.model.config.max_source_positions * encoder.conv1.stride[0] * encoder.conv2.stride[0]
        if x.shape[-1] == frames + 1:  # a full 30 s clip has one centred frame more; WhisperFeatureExtractor drops it
            x, mask = x[..., :frames], None if mask is None else mask[:, :frames]
        x, real = self._fixed_length(x, mask, frames, SILENCE_LOG_MEL)
        log10 = x / math.log(10)
        log10 = torch.maximum(log10, log10.amax(dim=(1, 2), keepdim=True) - 8.0)
        return (log10 + 4.0) / 4.0, real

    def _whisper(self, x: Tensor, mask: Tensor | None) -> EncoderOutput:
        features, real = self.whisper_features(x, mask)
        tokens = self.model(input_features=features).last_hidden_state  # (B, frames / 2, D)
        stride = self.model.conv1.stride[0] * self.model.conv2.stride[0]
        token_mask = real[:, ::stride]  # a token is centred on every second frame
        return EncoderOutput(tokens, masked_mean(tokens, token_mask), token_mask)

    def ast_features(self, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Natural-log fbank (B, mel, frames) -> AST's ``input_features`` (B, max_length, mel) and the real-frame
        mask."""
        x, real = self._fixed_length(x, mask, self.model.config.max_length, 0.0)
        if self.normalize:
            mean = float(self._preprocessing.get("mean", -4.2677393))  # AudioSet's, ASTFeatureExtractor's default
            std = float(self._preprocessing.get("std", 4.5689974))
            x = (x - mean) / (2 * std)
        return x.transpose(1, 2), real

    def _ast(self, x: Tensor, mask: Tensor | None) -> EncoderOutput:
        features, real = self.ast_features(x, mask)
        out = self.model(input_values=features)
        config = self.model.config
        freq_patches = (config.num_mel_bins - config.patch_size) // config.frequency_stride + 1
        patches = patch_token_mask(real, config.patch_size, config.time_stride, freq_patches)
        token_mask = F.pad(patches, (2, 0), value=True)  # CLS and distillation tokens first
        return EncoderOutput(out.last_hidden_state, out.pooler_output, token_mask)

    def clap_features(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Natural-log mel (B, mel, frames) -> CLAP's ``input_features`` (B, 1 or 4, frames, mel) in dB."""
        encoder = self.model.audio_encoder
        widest = encoder.spec_size * encoder.freq_ratio
        settings = self._preprocessing
        frames = settings["nb_max_samples"] // settings["hop_length"] + 1 if "nb_max_samples" in settings else widest
        db = x * (10 / math.log(10))
        db, _ = self._fixed_length(db, mask, min(frames, widest), 10 * math.log10(1e-10))
        features = db.transpose(1, 2).unsqueeze(1)  # (B, 1, frames, mel)
        return features.expand(-1, 4, -1, -1) if encoder.enable_fusion else features

    def _clap(self, x: Tensor, mask: Tensor | None) -> EncoderOutput:
        features = self.clap_features(x, mask)
        is_longer = torch.zeros(x.shape[0], 1, dtype=torch.bool, device=x.device)
        out = self.model(input_features=features, is_longer=is_longer)
        tokens = out.last_hidden_state.flatten(2).transpose(1, 2)  # (B, C, rows, cols) -> (B, rows * cols, C)
        return EncoderOutput(tokens, out.pooler_output, None)
