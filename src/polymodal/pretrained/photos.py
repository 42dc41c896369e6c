"""A tiny labelled set of real photographs that is available offline: a zero-shot smoke benchmark.

The photographs ship inside scikit-image (``skimage.data``) and scikit-learn (``load_sample_images``),
both test dependencies, so nothing is downloaded. Only photos of one clear object or scene are used
(not textures, micrographs or silhouettes). Four labels (dog, bird, car, horse) have no photo: they
are distractors that a confused model can pick.
"""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

# (source, image name, true label). Labels are what the API wraps in "a photo of a {}.".
PHOTOS: tuple[tuple[str, str, str], ...] = (
    ("skimage", "chelsea", "cat"),
    ("skimage", "coffee", "cup of coffee"),
    ("skimage", "rocket", "rocket"),
    ("skimage", "astronaut", "astronaut"),
    ("skimage", "camera", "photographer"),
    ("skimage", "coins", "pile of coins"),
    ("skimage", "clock", "clock"),
    ("skimage", "brick", "brick wall"),
    ("skimage", "page", "page of text"),
    ("skimage", "stereo_motorcycle", "motorcycle"),
    ("sklearn", "china", "temple"),
    ("sklearn", "flower", "flower"),
)
DISTRACTORS = ("dog", "bird", "car", "horse")
LABELS: tuple[str, ...] = tuple(dict.fromkeys([label for _, _, label in PHOTOS] + list(DISTRACTORS)))


@dataclass(frozen=True)
class Photo:
    name: str
    label: str
    image: Image.Image  # RGB


def _load(source: str, name: str) -> Image.Image:
    if source == "skimage":
        import skimage.data

        pixels = getattr(skimage.data, name)()
        if name == "stereo_motorcycle":
            pixels = pixels[0]  # (left, right, disparity): the left view
    else:
        from sklearn.datasets import load_sample_images

        sample = load_sample_images()
        pixels = sample.images[[f.rsplit("/", 1)[-1] for f in sample.filenames].index(f"{name}.jpg")]
    return Image.fromarray(pixels).convert("RGB")  # grayscale photos (camera, coins ...) become RGB


def real_photos() -> list[Photo]:
    """The labelled photos of :data:`PHOTOS` (needs scikit-image and scikit-learn, ``polymodal[test]``)."""
    try:
        return [Photo(name, label, _load(source, name)) for source, name, label in PHOTOS]
    except ImportError as e:
        hint = "pip install 'polymodal[test]'"
        raise ImportError(f"the real-photo set needs scikit-image and scikit-learn: {hint} ({e})") from e
