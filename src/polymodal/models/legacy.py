"""Model directories of format 1 (``dual_encoder``/``vqa`` kinds, ``preprocess.json``) load as format-2 models.

Format 1 named towers per model kind (``dual_encoder``: ``image_encoder``/``text_encoder`` with
``image_projection``/``text_projection``; ``vqa``: ``answer_head``), kept image preprocessing in
``preprocess.json`` and gave the text length only in the model config. Each function here maps one of those
to format 2; nothing else in polymodal knows the old names.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import Tensor

_DECODER_FIELDS = ("vocab_size", "max_length", "pad_id", "bos_id", "eos_id")


# What a format-1 decoder config left out meant (the DecoderConfig defaults of that format).
_DECODER_DEFAULTS = {"width": 256, "depth": 2, "heads": 4}


def _decoder(old: dict[str, Any] | None) -> dict[str, Any] | None:
    if old is None or "name" in old:
        return old
    return {
        "name": "transformer",
        **{k: old[k] for k in _DECODER_FIELDS if k in old},
        "params": {**_DECODER_DEFAULTS, **{k: v for k, v in old.items() if k not in _DECODER_FIELDS}},
    }


def upgrade_config(config: dict[str, Any]) -> dict[str, Any]:
    """A format-1 model config in format 2 (a format-2 config is returned unchanged)."""
    kind = config.get("kind")
    c = dict(config)
    if kind == "dual_encoder":
        return {
            "kind": "embedding",
            "encoders": {"image": c["image_encoder"], "text": c["text_encoder"]},
            **{k: c[k] for k in ("embed_dim", "projection") if k in c},
        }
    if kind == "vqa":
        out = {
            "kind": "question_answering",
            "encoders": {"image": c["image_encoder"], "text": c["text_encoder"]},
            **{k: c[k] for k in ("fusion", "fusion_dim", "answer_mode", "num_answers") if k in c},
        }
        if c.get("decoder") is not None:
            out["decoder"] = _decoder(c["decoder"])
        return out
    if kind == "captioner" and "image_encoder" in c:
        encoders = {"image": c["image_encoder"]}
        if c.get("contrastive_text_encoder") is not None:
            encoders["text"] = c["contrastive_text_encoder"]
        return {
            "kind": "captioner",
            "encoders": encoders,
            "source": "image",
            "decoder": _decoder(c["decoder"]),
            **{k: c[k] for k in ("embed_dim",) if k in c},
        }
    if kind == "fusion_classifier" and ("head_hidden" in c or "dropout" in c or "head" not in c):
        params: dict[str, Any] = {"dropout": c.pop("dropout", 0.1)}
        hidden = c.pop("head_hidden", None)
        if hidden is not None:
            params["hidden"] = hidden
        return {**c, "head": {"name": "classification", "params": params}}
    return c


_RENAMES = {
    "dual_encoder": {
        "image_encoder.": "encoders.image.",
        "text_encoder.": "encoders.text.",
        "image_projection.": "projections.image.",
        "text_projection.": "projections.text.",
    },
    "captioner": {
        "image_encoder.": "encoders.image.",
        "text_encoder.": "encoders.text.",
        "image_projection.": "projections.image.",
        "text_projection.": "projections.text.",
    },
    "vqa": {"answer_head.": "head."},
}


def upgrade_state(config: dict[str, Any], state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Weights saved with the format-1 ``config`` under today's names (others are returned unchanged)."""
    renames = _RENAMES.get(str(config.get("kind")), {})
    if config.get("kind") == "captioner" and "image_encoder" not in config:
        renames = {}
    out = {}
    for key, value in state.items():
        for old, new in renames.items():
            if key.startswith(old):
                key = new + key[len(old) :]
                break
        out[key] = value
    return out


def legacy_processor_settings(config: dict[str, Any], preprocess_file: Path, has_tokenizer: bool) -> dict[str, Any]:
    """processors.json content for a format-1 directory: its preprocess.json and a text length from the config."""
    settings: dict[str, Any] = {}
    if preprocess_file.is_file():
        settings["image"] = json.loads(preprocess_file.read_text())
    elif "image_encoder" in config or "image" in (config.get("encoders") or {}):
        settings["image"] = {}  # format 1 then meant the default preprocessing
    if has_tokenizer:
        settings["text"] = {"max_length": _text_length(config)}
    return settings


def _text_length(config: dict[str, Any]) -> int:
    """The longest token sequence the text tower or decoder was built for (32 when it does not say)."""
    sections = [
        config.get("text_encoder"),
        (config.get("encoders") or {}).get("text"),
        config.get("decoder"),
        config.get("contrastive_text_encoder"),
    ]
    for section in sections:
        section = section or {}
        length = (section.get("params") or {}).get("max_length", section.get("max_length"))
        if length is not None:
            return int(length)
    return 32
