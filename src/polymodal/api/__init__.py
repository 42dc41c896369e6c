"""``polymodal.load(...)`` and the :class:`Model` handle it returns."""

from polymodal.api.inputs import ImageInput, to_image, to_images
from polymodal.api.model import Model, load

__all__ = ["ImageInput", "Model", "load", "to_image", "to_images"]
