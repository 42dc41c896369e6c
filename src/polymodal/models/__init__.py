"""Composed models over any modalities: embedding, fusion classifier, captioner, question answering, text-to-image
generators (diffusion, GAN); the saved-model directory; weight transfer; presets."""

import polymodal.pretrained  # noqa: F401 - registers the encoders of packaged weights before any config is built
from polymodal.models.base import MODELS, ComposedModel, build_model
from polymodal.models.captioner import Captioner
from polymodal.models.config import ModelConfig, parse_model_config
from polymodal.models.embedding import EmbeddingModel
from polymodal.models.fusion_classifier import FusionClassifier
from polymodal.models.generator import AdversarialGenerator, DiffusionGenerator
from polymodal.models.presets import PRESETS, build_preset
from polymodal.models.question_answering import QuestionAnswerer
from polymodal.models.saved import SavedModel, find_model_dir, load_model, save_model

__all__ = [
    "MODELS",
    "PRESETS",
    "AdversarialGenerator",
    "Captioner",
    "ComposedModel",
    "DiffusionGenerator",
    "EmbeddingModel",
    "FusionClassifier",
    "ModelConfig",
    "QuestionAnswerer",
    "SavedModel",
    "build_model",
    "build_preset",
    "find_model_dir",
    "load_model",
    "parse_model_config",
    "save_model",
]
