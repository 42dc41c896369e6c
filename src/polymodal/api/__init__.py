"""``polymodal.load(...)`` and the :class:`Model` handle it returns."""

from polymodal.api.inputs import ImageInput, MediaInput, to_image, to_images, to_media
from polymodal.api.model import Model, load
from polymodal.api.video import VideoInput, VideoSegment

__all__ = [
    "ImageInput",
    "MediaInput",
    "Model",
    "VideoInput",
    "VideoSegment",
    "load",
    "to_image",
    "to_images",
    "to_media",
]
