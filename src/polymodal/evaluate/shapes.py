"""ShapesWorld suites: what the demo reports for each kind of model, on any split.

- dual encoder: image<->text retrieval (every caption, Karpathy protocol) and zero-shot
  classification of shape, colour and colour-shape on the single-object images (with
  several prompt templates averaged per class, as CLIP does);
- fusion classifier: accuracy on the true/false statements;
- captioner: BLEU-1..4, ROUGE-L and CIDEr-D of greedy captions against all reference captions;
- VQA: exact-match accuracy, overall and per question type (one reference answer per question,
  so the 10-annotator VQA formula does not apply).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from polymodal.data.image import decode_image
from polymodal.data.schema import Sample
from polymodal.data.transforms import ImagePipeline
from polymodal.evaluate.bundle import ModelBundle
from polymodal.evaluate.prompts import SHAPES_TEMPLATES, zero_shot_classifier
from polymodal.evaluate.scoring import caption_scores
from polymodal.metrics.retrieval import retrieval_metrics
from polymodal.models import Captioner, DualEncoder, FusionClassifier, VQAModel

# Class phrases fill the "{}"; build_prompts turns "a orange ..." into "an orange ...".
ZERO_SHOT_TEMPLATES = {
    "shape": SHAPES_TEMPLATES,
    "color": ["{} shape", "a {} object", "a picture of something {}"],
    "color_shape": SHAPES_TEMPLATES,
}
SHAPES = ["circle", "square", "triangle", "diamond", "star", "hexagon", "cross", "heart"]
COLORS = ["red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink"]


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def load_images(bundle: ModelBundle, samples: Sequence[Sample]) -> torch.Tensor:
    pipeline = ImagePipeline(bundle.preprocess)
    return torch.stack([pipeline(decode_image(s.image, source=s.source, row=s.row)) for s in samples])  # (N, 3, H, W)


def _tokens(bundle: ModelBundle, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    assert bundle.tokenizer is not None, f"{bundle.path}: model has no tokenizer"
    return bundle.tokenizer.encode_batch(list(texts), bundle.max_text_length)


@torch.no_grad()
def embed_texts(bundle: ModelBundle, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
    model: DualEncoder = bundle.model  # type: ignore[assignment]
    out = [model.encode_text(*_tokens(bundle, chunk)) for chunk in _chunks(texts, batch_size)]
    return torch.cat(out)


@torch.no_grad()
def embed_images(bundle: ModelBundle, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    model: DualEncoder = bundle.model  # type: ignore[assignment]
    return torch.cat([model.encode_image(chunk) for chunk in images.split(batch_size)])


def _objects(sample: Sample) -> list[dict[str, str]]:
    return sample.metadata.get("objects", [])


def evaluate_dual_encoder(bundle: ModelBundle, samples: Sequence[Sample]) -> dict[str, Any]:
    images = load_images(bundle, samples)
    image_emb = embed_images(bundle, images)
    texts, owner = [], []
    for i, s in enumerate(samples):
        texts.extend(s.text)
        owner.extend([i] * len(s.text))
    text_emb = embed_texts(bundle, texts)
    retrieval = retrieval_metrics(image_emb, text_emb, owner, ks=(1, 5, 10))

    single = [i for i, s in enumerate(samples) if len(_objects(s)) == 1]
    zero_shot: dict[str, float] = {}
    if single:
        objs = [_objects(samples[i])[0] for i in single]
        for task, templates in ZERO_SHOT_TEMPLATES.items():
            if task == "shape":
                classes = [{"shape": s} for s in SHAPES]
            elif task == "color":
                classes = [{"color": c} for c in COLORS]
            else:
                classes = [{"color": c, "shape": s} for c in COLORS for s in SHAPES]
            names = [" ".join(cls[k] for k in ("color", "shape") if k in cls) for cls in classes]
            class_emb = zero_shot_classifier(lambda texts: embed_texts(bundle, texts), names, templates)  # (C, D)
            predicted = (image_emb[single] @ class_emb.T).argmax(1).tolist()  # (N, C) -> (N,)
            correct = [all(obj[k] == classes[p][k] for k in classes[p]) for obj, p in zip(objs, predicted)]
            zero_shot[f"zero_shot_{task}"] = sum(correct) / len(correct)
    return {**retrieval, **zero_shot, "n_images": len(samples), "n_texts": len(texts), "n_zero_shot": len(single)}


@torch.no_grad()
def evaluate_statements(bundle: ModelBundle, samples: Sequence[Sample], batch_size: int = 128) -> dict[str, Any]:
    model: FusionClassifier = bundle.model  # type: ignore[assignment]
    pairs = [(i, st) for i, s in enumerate(samples) for st in s.statements]
    images = load_images(bundle, samples)
    correct = 0
    for chunk in _chunks(pairs, batch_size):
        ids, mask = _tokens(bundle, [st.text for _, st in chunk])
        logits = model({"image": (images[[i for i, _ in chunk]], None), "text": (ids, mask)})
        labels = torch.tensor([int(st.label) for _, st in chunk])
        correct += int((logits.argmax(-1) == labels).sum())
    return {"statement_accuracy": correct / max(len(pairs), 1), "n_statements": len(pairs)}


@torch.no_grad()
def generate_captions(bundle: ModelBundle, samples: Sequence[Sample], batch_size: int = 128, **kwargs: Any) -> list[str]:
    model: Captioner = bundle.model  # type: ignore[assignment]
    assert bundle.tokenizer is not None
    images = load_images(bundle, samples)
    out = []
    for chunk in images.split(batch_size):
        ids = model.generate(chunk, **{"strategy": "greedy", "max_new_tokens": bundle.max_text_length - 1, **kwargs})
        out.extend(bundle.tokenizer.decode(row) for row in ids)
    return out


def evaluate_captioner(bundle: ModelBundle, samples: Sequence[Sample]) -> dict[str, Any]:
    predictions = generate_captions(bundle, samples)
    ids = [s.id for s in samples]
    metrics, _, _ = caption_scores({s.id: s.text for s in samples}, dict(zip(ids, predictions)), with_ci=False)
    return {
        **metrics,
        "examples": [{"id": s.id, "caption": p, "reference": s.text[0]} for s, p in list(zip(samples, predictions))[:8]],
    }


@torch.no_grad()
def evaluate_vqa(bundle: ModelBundle, samples: Sequence[Sample], batch_size: int = 128) -> dict[str, Any]:
    model: VQAModel = bundle.model  # type: ignore[assignment]
    if bundle.answers is None:
        raise ValueError(f"{bundle.path}: a classifying VQA model needs its answers.json")
    pairs = [(i, qa) for i, s in enumerate(samples) for qa in s.qa]
    images = load_images(bundle, samples)
    hits: dict[str, list[bool]] = defaultdict(list)
    for chunk in _chunks(pairs, batch_size):
        ids, mask = _tokens(bundle, [qa.question for _, qa in chunk])
        predicted = model(images[[i for i, _ in chunk]], ids, mask).argmax(-1).tolist()
        for (_, qa), p in zip(chunk, predicted):
            hits[qa.type or "all"].append(bundle.answers[p] == qa.answer)
    every = [h for values in hits.values() for h in values]
    return {
        "vqa_accuracy": sum(every) / max(len(every), 1),
        **{f"vqa_accuracy_{t}": sum(v) / len(v) for t, v in sorted(hits.items())},
        "n_questions": len(every),
    }


def evaluate_bundle(bundle: ModelBundle, samples: Sequence[Sample]) -> dict[str, Any]:
    """Run the suite that fits the model's kind."""
    model = bundle.model
    if isinstance(model, DualEncoder):
        return evaluate_dual_encoder(bundle, samples)
    if isinstance(model, FusionClassifier):
        return evaluate_statements(bundle, samples)
    if isinstance(model, Captioner):
        return evaluate_captioner(bundle, samples)
    if isinstance(model, VQAModel):
        return evaluate_vqa(bundle, samples)
    raise TypeError(f"no ShapesWorld suite for {type(model).__name__}")
