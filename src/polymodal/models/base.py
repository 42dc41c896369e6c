"""Save and load composed models as self-describing directories.

A saved model directory holds everything inference needs, so it cannot drift from training:

    config.json         {"polymodal_version", "config": <model config>}
    model.safetensors   the weights (no pickle: loading never executes code)
    preprocess.json     image preprocessing the model was trained with (optional)
    tokenizer/          the text tokenizer (optional)

Directories are written atomically: into a temporary sibling, then renamed into place.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, ClassVar

from pydantic import TypeAdapter
from torch import nn

from polymodal import __version__
from polymodal.config import Config, ConfigError
from polymodal.models.config import ModelConfig
from polymodal.fsutil import atomic_directory
from polymodal.weights import load_weights, save_weights

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
PREPROCESS_FILE = "preprocess.json"
TOKENIZER_DIR = "tokenizer"


class ComposedModel(nn.Module):
    """Base of DualEncoder, FusionClassifier, Captioner and VQAModel.

    Subclasses implement ``from_config(config)``, which builds the submodules through the
    registries and passes them to ``__init__`` (so a model can equally be composed by hand).
    """

    config_class: ClassVar[type[Config]]
    config: Config | None = None

    @classmethod
    def from_config(cls, config: Any) -> ComposedModel:  # pragma: no cover - abstract
        raise NotImplementedError

    def save(self, directory: str | os.PathLike, *, preprocess: dict[str, Any] | None = None, tokenizer: Any = None) -> Path:
        """Write config, weights and (optionally) preprocessing and tokenizer to ``directory``."""
        if self.config is None:
            raise ValueError(
                f"{type(self).__name__} was composed by hand, without a config; build it with "
                "from_config() to save it as a directory"
            )
        target = Path(directory)
        with atomic_directory(target) as tmp:
            meta = {"polymodal_version": __version__, "config": self.config.model_dump(mode="json")}
            (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2))
            save_weights(self, tmp / WEIGHTS_FILE)
            if preprocess is not None:
                (tmp / PREPROCESS_FILE).write_text(json.dumps(preprocess, indent=2))
            if tokenizer is not None:
                tokenizer.save(tmp / TOKENIZER_DIR)
        return target


_CONFIG_ADAPTER: TypeAdapter[Any] = TypeAdapter(ModelConfig)


def parse_model_config(data: dict[str, Any], source: str = "<config>") -> Any:
    from pydantic import ValidationError

    from polymodal.config import format_validation_errors

    if not isinstance(data, dict) or "kind" not in data:
        raise ConfigError(f"{source}: model config needs a 'kind' (dual_encoder, fusion_classifier, captioner, vqa)")
    try:
        return _CONFIG_ADAPTER.validate_python(data)
    except ValidationError as e:
        raise ConfigError(format_validation_errors(e, source, type(None))) from None  # type: ignore[arg-type]


def build_model(config: Any) -> ComposedModel:
    """Build the composed model a (validated) model config describes."""
    from polymodal.models import MODEL_CLASSES

    return MODEL_CLASSES[config.kind].from_config(config)


def find_model_dir(path: str | os.PathLike) -> Path:
    """A saved model directory, given it or a run directory (its ``best/``, else ``model/``)."""
    path = Path(path)
    for candidate in (path, path / "best", path / "model"):
        if (candidate / CONFIG_FILE).is_file():
            return candidate
    raise FileNotFoundError(f"{path}: no saved model here (looked in ., best/, model/)")


def load_model(directory: str | os.PathLike) -> ComposedModel:
    """Load a model saved with ``save``; weights must match the config exactly."""
    directory = Path(directory)
    config_path = directory / CONFIG_FILE
    if not config_path.is_file():
        raise FileNotFoundError(f"{directory}: not a polymodal model directory (no {CONFIG_FILE})")
    meta = json.loads(config_path.read_text())
    config = parse_model_config(meta.get("config", {}), str(config_path))
    model = build_model(config)
    load_weights(model, directory / WEIGHTS_FILE)
    return model


def load_preprocess(directory: str | os.PathLike) -> dict[str, Any] | None:
    path = Path(directory) / PREPROCESS_FILE
    return json.loads(path.read_text()) if path.is_file() else None
