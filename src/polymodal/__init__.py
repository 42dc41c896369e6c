"""polymodal: compose, pretrain, fine-tune, evaluate and serve multimodal models."""

__version__ = "0.1.0"
