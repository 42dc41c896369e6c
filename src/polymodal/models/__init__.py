"""Composed models: DualEncoder, FusionClassifier, Captioner, VQAModel; save/load; presets."""

import polymodal.pretrained  # noqa: F401 - registers the encoders of packaged weights before any config is built
from polymodal.models.base import ComposedModel, build_model, load_model, parse_model_config
from polymodal.models.captioner import Captioner
from polymodal.models.dual_encoder import DualEncoder
from polymodal.models.fusion_classifier import FusionClassifier
from polymodal.models.presets import PRESETS, build_preset
from polymodal.models.vqa import VQAModel

MODEL_CLASSES: dict[str, type[ComposedModel]] = {
    "dual_encoder": DualEncoder,
    "fusion_classifier": FusionClassifier,
    "captioner": Captioner,
    "vqa": VQAModel,
}

__all__ = [
    "MODEL_CLASSES",
    "PRESETS",
    "Captioner",
    "ComposedModel",
    "DualEncoder",
    "FusionClassifier",
    "VQAModel",
    "build_model",
    "build_preset",
    "load_model",
    "parse_model_config",
]
