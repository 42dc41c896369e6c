"""A transformers ``preprocessor_config.json`` read into polymodal's :class:`ImagePreprocess`.

CLIP resizes the shortest side and centre-crops; BLIP and ViT resize straight to a square.
Both map onto ``ImagePreprocess`` (``crop="center"`` / ``crop="none"``), so HF checkpoints run
through the same PIL + torch pipeline as polymodal models.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from PIL import Image

from polymodal.data.transforms import ImagePreprocess
from polymodal.interop.hub import HFLoadError

PREPROCESSOR_FILE = "preprocessor_config.json"
_RESAMPLE = {int(Image.Resampling.BICUBIC): "bicubic", int(Image.Resampling.BILINEAR): "bilinear"}


class HFImagePreprocess(ImagePreprocess):
    """transformers' centre crop floors the offsets ((W - S) // 2) where polymodal rounds them;
    the two differ by a pixel when W - S is 3 mod 4, so HF checkpoints keep HF's rule."""

    def center_crop_box(self, width: int, height: int) -> tuple[int, int, int, int]:
        size = self.image_size
        left, top = (width - size) // 2, (height - size) // 2
        return left, top, left + size, top + size


def _square(value: Any, field: str, source: Path) -> int:
    """An int, or {"height": h, "width": w} with h == w (batches need one input shape)."""
    if isinstance(value, int):
        return value
    if isinstance(value, dict) and "height" in value and value.get("height") == value.get("width"):
        return int(value["height"])
    raise HFLoadError(f"{source}: {field}={value!r} is not supported (need a square size)")


def preprocess_from_hf(config: dict[str, Any], source: Path = Path(PREPROCESSOR_FILE)) -> HFImagePreprocess:
    """Map an image processor dict (CLIP/BLIP/ViT keys) onto :class:`HFImagePreprocess`."""
    resample = int(config.get("resample", int(Image.Resampling.BICUBIC)))
    if resample not in _RESAMPLE:
        raise HFLoadError(f"{source}: resample={resample} is not supported (bicubic=3, bilinear=2)")
    if config.get("do_rescale", True) and abs(float(config.get("rescale_factor", 1 / 255)) - 1 / 255) > 1e-9:
        raise HFLoadError(f"{source}: rescale_factor={config['rescale_factor']} is not supported (only 1/255)")
    normalize = config.get("do_normalize", True)
    mean = tuple(config.get("image_mean", (0.5, 0.5, 0.5))) if normalize else (0.0, 0.0, 0.0)
    std = tuple(config.get("image_std", (0.5, 0.5, 0.5))) if normalize else (1.0, 1.0, 1.0)
    size = config.get("size", 224)
    if config.get("do_center_crop"):
        short = size.get("shortest_edge") if isinstance(size, dict) else size
        if not isinstance(short, int):
            raise HFLoadError(f"{source}: size={size!r} with a centre crop needs a shortest_edge")
        crop = _square(config.get("crop_size", short), "crop_size", source)
        return HFImagePreprocess(
            image_size=crop, resize=short, crop="center", mean=mean, std=std, interpolation=_RESAMPLE[resample]
        )
    side = _square(size, "size", source)
    return HFImagePreprocess(image_size=side, crop="none", mean=mean, std=std, interpolation=_RESAMPLE[resample])


def load_hf_preprocess(directory: str | os.PathLike[str]) -> HFImagePreprocess:
    """Read ``preprocessor_config.json`` from a checkpoint directory."""
    path = Path(directory) / PREPROCESSOR_FILE
    if not path.is_file():
        raise HFLoadError(f"{directory}: no {PREPROCESSOR_FILE}; the checkpoint does not say how to preprocess images")
    return preprocess_from_hf(json.loads(path.read_text(encoding="utf-8")), path)
