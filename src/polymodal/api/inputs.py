"""Turn what users pass into what a backend embeds: decoded RGB PIL images (from paths, bytes, PIL images, numpy
arrays), strings, or the paths and encoded bytes of the media a model's processor decodes itself (audio)."""

from __future__ import annotations

import numbers
import os
from collections.abc import Sequence
from typing import Union

import numpy as np
from PIL import Image

from polymodal.api.video import to_clips
from polymodal.data.audio import Waveform
from polymodal.data.image import DEFAULT_MAX_PIXELS, decode_image

ImageInput = Union[str, "os.PathLike[str]", bytes, bytearray, Image.Image, np.ndarray]
MediaInput = Union[str, "os.PathLike[str]", bytes, bytearray]  # a file path or the encoded file (WAV, FLAC ...)
# A sound: a file, its bytes, a Waveform, or (samples, sample rate) as numpy or torch gives them.
SoundInput = MediaInput | Waveform | tuple


def to_image(value: ImageInput, *, max_pixels: int = DEFAULT_MAX_PIXELS, index: int | None = None) -> Image.Image:
    """One RGB image; errors name the input (its path, or its position in the call)."""
    where = None if isinstance(value, (str, os.PathLike)) else f"input #{index}" if index is not None else "input"
    return decode_image(value, max_pixels=max_pixels, source=where)  # type: ignore[arg-type]  # PIL, arrays too


def to_images(values: ImageInput | Sequence[ImageInput], *, max_pixels: int = DEFAULT_MAX_PIXELS) -> list[Image.Image]:
    """A list of RGB images from one input or a sequence of them."""
    if isinstance(values, (str, os.PathLike, bytes, bytearray, Image.Image, np.ndarray)):
        values = [values]
    return [to_image(v, max_pixels=max_pixels, index=i) for i, v in enumerate(values)]


def to_sounds(values: SoundInput | Sequence[SoundInput]) -> list[str | bytes | Waveform]:
    """A list of paths (as strings), encoded bytes and Waveforms from one sound or a sequence of them; a pair
    ``(samples, rate)`` is one sound."""
    if isinstance(values, (str, os.PathLike, bytes, bytearray, Waveform)) or _is_samples_and_rate(values):
        values = [values]
    out: list[str | bytes | Waveform] = []
    for i, value in enumerate(values):  # type: ignore[arg-type]
        if isinstance(value, (str, os.PathLike)):
            out.append(os.fspath(value))
        elif isinstance(value, (bytes, bytearray)):
            out.append(bytes(value))
        elif isinstance(value, Waveform):
            out.append(value)
        elif _is_samples_and_rate(value):
            try:
                out.append(Waveform(np.asarray(value[0]), value[1]))
            except ValueError as e:
                raise ValueError(f"input #{i}: {e}") from None
        else:
            raise ValueError(
                f"input #{i}: expected a file path, encoded bytes, a Waveform or (samples, sample rate), "
                f"got {type(value).__name__}"
            )
    return out


to_media = to_sounds  # its name before sounds could be decoded samples


def _is_samples_and_rate(value: object) -> bool:
    rate = value[1] if isinstance(value, tuple) and len(value) == 2 else None
    whole = isinstance(rate, numbers.Integral) or (isinstance(rate, float) and rate.is_integer())
    return whole and not isinstance(rate, bool) and hasattr(value[0], "__len__")  # type: ignore[index]


def modality_of(values: object) -> str:
    """What a task that takes any medium reads ``values`` as: sounds when every item is a sound (a path with a sound
    file's extension, a Waveform or a (samples, rate) pair), clips when every item is a clip (a video path or a
    decoded Clip), else images."""
    from polymodal.data.readers.base import media_kind
    from polymodal.data.video import Clip

    single = isinstance(values, (str, os.PathLike, bytes, bytearray, Waveform, Clip)) or _is_samples_and_rate(values)
    items = [values] if single or not isinstance(values, Sequence) else list(values)

    def kind(value: object) -> str | None:
        if isinstance(value, (str, os.PathLike)):
            return media_kind(value)
        if isinstance(value, Waveform) or _is_samples_and_rate(value):
            return "audio"
        return "video" if isinstance(value, Clip) else None

    kinds = {kind(v) for v in items}
    return kinds.pop() if len(kinds) == 1 and kinds <= {"audio", "video"} else "image"


def to_inputs(modality: str, values: object) -> list[object]:
    """``values`` as a list, one entry per item, to be batched and then :func:`decoded` a batch at a time (a long
    list of image paths never holds more than one batch of decoded images): images with their position, strings,
    clips (paths, bytes, decoded Clips), or sounds (paths, bytes, Waveforms)."""
    if modality == "image":
        if isinstance(values, (str, os.PathLike, bytes, bytearray, Image.Image, np.ndarray)):
            values = [values]
        return list(enumerate(values))  # type: ignore[call-overload]
    if modality == "text":
        return [values] if isinstance(values, str) else [str(v) for v in values]  # type: ignore[attr-defined]
    if modality == "video":
        return list(to_clips(values))  # type: ignore[arg-type]
    return list(to_sounds(values))  # type: ignore[arg-type]


def decode_batch(modality: str, batch: Sequence[object]) -> list[object]:
    """What a backend takes for one batch of :func:`to_inputs`: RGB images decoded now (errors name the path, or the
    input's position in the call); other modalities as they are."""
    if modality != "image":
        return list(batch)
    return [to_image(value, index=index) for index, value in batch]  # type: ignore[misc]
