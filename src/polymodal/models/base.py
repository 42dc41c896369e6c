"""The base of every composed model: towers in one ``nn.ModuleDict`` keyed by modality.

Every model takes ``inputs: dict[modality, (x, mask)]`` and an optional ``present: dict[modality, (B,) bool]``
(False where a sample lacks that modality); a modality left out of ``inputs`` is absent from the whole batch
and its tower does not run. Evaluation drops a modality by passing ``present`` all False, through the
model's own forward.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from polymodal.models.config import ComponentConfig, ModelConfig, parse_model_config
from polymodal.modules.encoders import ENCODERS, Encoder, EncoderOutput
from polymodal.registry import Registry

ModalityInput = tuple[Tensor, Tensor | None]
Inputs = Mapping[str, ModalityInput]
Presence = Mapping[str, Tensor]


class ComposedModel(nn.Module):
    """Base of the composed models; ``from_config`` builds the parts through the registries and passes them to
    ``__init__`` (so a model can equally be composed by hand, without a config, and then not saved)."""

    config: Any = None
    capabilities: ClassVar[frozenset[str]] = frozenset()  # what the model can serve: embed, caption, answer, classify

    def __init__(self, encoders: Mapping[str, nn.Module]) -> None:
        super().__init__()
        self.encoders = nn.ModuleDict(dict(encoders))

    @classmethod
    def from_config(cls, config: Any) -> ComposedModel:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def modalities(self) -> list[str]:
        return list(self.encoders)

    def encode(
        self, inputs: Inputs, present: Presence | None = None
    ) -> tuple[dict[str, EncoderOutput], dict[str, Tensor]]:
        """Run the tower of each given modality; presence defaults to all True."""
        features: dict[str, EncoderOutput] = {}
        masks: dict[str, Tensor] = {}
        for name, value in inputs.items():
            if name not in self.encoders:
                raise KeyError(f"{type(self).__name__} has no encoder for modality {name!r}; it has {self.modalities}")
            x, mask = modality_input(name, value)
            features[name] = self.encoders[name](x, mask)
            given = None if present is None else present.get(name)
            masks[name] = given if given is not None else torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
        return features, masks


def modality_input(modality: str, value: object) -> tuple[Tensor, Tensor | None]:
    """``value`` as a model's input for ``modality``: the pair (x, mask), mask None where every position is real."""
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return value[0], value[1]
    given = f"a tensor of shape {tuple(value.shape)}" if isinstance(value, Tensor) else f"a {type(value).__name__}"
    raise TypeError(f"inputs[{modality!r}]: expected the pair (x, mask), mask None if none; got {given}")


def build_encoders(components: Mapping[str, ComponentConfig]) -> dict[str, Encoder]:
    return {modality: ENCODERS.build(c.name, **c.params) for modality, c in components.items()}


MODELS: Registry[Callable[[Any], ComposedModel]] = Registry("model kind")


def build_model(config: ModelConfig | Mapping[str, Any]) -> ComposedModel:
    """Build the composed model a model config describes; a plain mapping is validated by ``parse_model_config``
    first, so its mistakes are ConfigErrors naming the field."""
    if isinstance(config, Mapping):
        config = parse_model_config(dict(config))
    model = MODELS.get(config.kind)(config)
    model.config = config
    return model
