"""``polymodal.load(...)`` and the :class:`Model` handle it returns."""

from polymodal.api.audio import AudioSegment, AudioSegments, Waveform
from polymodal.api.inputs import ImageInput, MediaInput, SoundInput, to_image, to_images, to_media, to_sounds
from polymodal.api.model import Model, load
from polymodal.api.video import VideoInput, VideoSegment

__all__ = [
    "AudioSegment",
    "AudioSegments",
    "ImageInput",
    "MediaInput",
    "Model",
    "SoundInput",
    "VideoInput",
    "VideoSegment",
    "Waveform",
    "load",
    "to_image",
    "to_images",
    "to_media",
    "to_sounds",
]
