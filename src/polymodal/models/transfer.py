"""Starting a model from another's weights, and which of its towers train, learn at their own rate or are cached.

Towers have the same names in every model kind (``encoders.<modality>``), so a CLIP run's towers initialise a
fusion classifier or a question answerer by name; ``init_map`` copies parts whose names differ.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from polymodal.config import ConfigError
from polymodal.models.saved import find_model_dir, load_model
from polymodal.modules.encoders import Encoder
from polymodal.modules.encoders.cache import CachedEncoder, FeatureCache


@dataclass
class TransferReport:
    source: str
    transferred: int
    total: int
    not_transferred: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def transfer_weights(model: nn.Module, source: str | Path, init_map: Mapping[str, str] | None = None) -> TransferReport:
    """Copy into ``model`` every tensor of the model saved at ``source`` whose name and shape match, plus the
    ``init_map`` pairs (this model's submodule -> the source's); raises ConfigError when nothing matches."""
    try:
        source_model = load_model(find_model_dir(source))
    except FileNotFoundError as e:
        raise ConfigError(f"model.init_from: {e}") from None
    own = model.state_dict()
    source_state = source_model.state_dict()
    transferred = {k: v for k, v in source_state.items() if k in own and own[k].shape == v.shape}
    transferred.update(_mapped_weights(init_map or {}, own, source_state))
    if not transferred:
        raise ConfigError(f"model.init_from {source}: no tensor matches this model by name and shape")
    model.load_state_dict(transferred, strict=False)
    return TransferReport(str(source), len(transferred), len(own), sorted(set(own) - set(transferred)))


def _mapped_weights(
    init_map: Mapping[str, str], own: dict[str, torch.Tensor], source: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """For each (target, origin) submodule pair, every source tensor under ``origin`` under its name below
    ``target``. A target tensor the source lacks (a bias the source layer has not) keeps its initialisation; a
    source tensor with no place, or another shape, is an error, not a silent half-transfer."""
    mapped = {}
    for target, origin in init_map.items():
        keys = [k for k in source if k.startswith(f"{origin}.")]
        if not keys:
            raise ConfigError(f"model.init_map.{target}: the source model has no weights under {origin!r}")
        for key in keys:
            name = target + key[len(origin) :]
            if name not in own:
                raise ConfigError(f"model.init_map.{target}: this model has no {name!r} to take {key!r}")
            if source[key].shape != own[name].shape:
                raise ConfigError(
                    f"model.init_map.{target}: {key!r} has shape {tuple(source[key].shape)}, "
                    f"{name!r} wants {tuple(own[name].shape)}"
                )
            mapped[name] = source[key]
    return mapped


def submodule(model: nn.Module, path: str, field_name: str) -> nn.Module:
    """``model.get_submodule(path)`` with an error naming the recipe field and the model's towers."""
    try:
        return model.get_submodule(path)
    except AttributeError:
        towers = sorted(name for name, m in model.named_modules() if isinstance(m, Encoder) and "inner" not in name)
        raise ConfigError(f"{field_name}.{path}: no such submodule; towers: {', '.join(towers)}") from None


def towers_in(module: nn.Module) -> list[Encoder]:
    """``module`` itself if it is a tower, else the outermost towers inside it."""
    if isinstance(module, Encoder):
        return [module]
    return [e for child in module.children() for e in towers_in(child)]


def freeze_towers(model: nn.Module, freeze: Mapping[str, int]) -> None:
    """Submodule path -> how many of its last blocks still train (0: frozen, and in eval mode if a tower)."""
    for path, trainable_blocks in freeze.items():
        module = submodule(model, path, "model.freeze")
        if hasattr(module, "freeze"):
            module.freeze(unfreeze_last=trainable_blocks)
        else:  # a container of towers (``encoders``): freeze each the same way
            module.requires_grad_(False)
            for encoder in towers_in(module):
                encoder.freeze(unfreeze_last=trainable_blocks)


def cache_towers(model: nn.Module, cache: Mapping[str, int]) -> None:
    """Tower path (``encoders.image``, or ``encoders`` for all) -> samples whose outputs its store keeps: each
    frozen tower there is replaced by a :class:`CachedEncoder` over the store shared by its weights."""
    for path, max_items in cache.items():
        parent = submodule(model, path, "model.cache")
        found = (
            [(path, parent)]
            if isinstance(parent, Encoder)
            else [(f"{path}.{name}", child) for name, child in parent.named_children() if isinstance(child, Encoder)]
        )
        if not found:
            raise ConfigError(f"model.cache.{path}: holds no encoder (tower) to cache")
        for tower_path, encoder in found:
            if isinstance(encoder, CachedEncoder):
                continue
            if not encoder.frozen:
                raise ConfigError(
                    f"model.cache.{path}: only a frozen tower can cache its outputs; add model.freeze: {{{path}: 0}}"
                )
            owner_path, _, name = tower_path.rpartition(".")
            owner = model.get_submodule(owner_path) if owner_path else model
            setattr(owner, name, CachedEncoder(encoder, FeatureCache.for_encoder(encoder, max_items)))
