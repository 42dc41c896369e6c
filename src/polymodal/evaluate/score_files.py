"""Read the standard result/annotation files ``polymodal score`` takes; errors name the file and the entry.

- caption references: a COCO captions annotation file ``{"annotations": [{"image_id", "caption"}]}``
  or a plain list of ``{"image_id", "caption"}``;
- caption predictions: the COCO results format ``[{"image_id", "caption"}]``;
- VQA references: a VQAv2 annotations file ``{"annotations": [{"question_id", "answers": [{"answer"}],
  "answer_type", "question_type"}]}``;
- VQA predictions: the VQA results format ``[{"question_id", "answer"}]``.

Entries are numbered from 0 (``annotations[3]``, ``preds[17]``) as in the JSON list.
"""

from __future__ import annotations

import os
from typing import Any

from polymodal.data.errors import BadSampleError
from polymodal.data.readers.base import load_json_file


def _is_id(value: Any) -> bool:
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def _entries(path: str | os.PathLike, data: Any, key: str | None) -> tuple[list[Any], str]:
    """The list of entries (top-level list, or ``data[key]``) and its name for error messages."""
    if isinstance(data, list):
        return data, "entry"
    if key is not None and isinstance(data, dict) and isinstance(data.get(key), list):
        return data[key], key
    expected = f'a JSON list or an object with a "{key}" list' if key else "a JSON list"
    raise BadSampleError(f"expected {expected}", source=str(path), kind="invalid")


def _bad(path: str | os.PathLike, name: str, i: int, field: str, reason: str) -> BadSampleError:
    # row is 0-based here to match the JSON list index shown in the message.
    return BadSampleError(f"{name}[{i}]: {reason}", source=str(path), field=field, kind="invalid")


def _field(path: str | os.PathLike, name: str, i: int, entry: Any, key: str, kind: str) -> Any:
    if not isinstance(entry, dict):
        raise _bad(path, name, i, key, f"expected an object, got {type(entry).__name__}")
    if key not in entry:
        raise _bad(path, name, i, key, f"missing {key!r} (keys: {sorted(entry)})")
    value = entry[key]
    if kind == "id" and not _is_id(value):
        raise _bad(path, name, i, key, f"{key} must be an int or string, got {value!r}")
    if kind == "text" and not isinstance(value, str):
        raise _bad(path, name, i, key, f"{key} must be a string, got {value!r}")
    return value


def load_caption_refs(path: str | os.PathLike) -> dict[Any, list[str]]:
    """image_id -> reference captions."""
    entries, name = _entries(path, load_json_file(path), "annotations")
    out: dict[Any, list[str]] = {}
    for i, entry in enumerate(entries):
        image_id = _field(path, name, i, entry, "image_id", "id")
        out.setdefault(image_id, []).append(_field(path, name, i, entry, "caption", "text"))
    if not out:
        raise BadSampleError("no reference captions", source=str(path), kind="empty_file")
    return out


def _predictions(
    path: str | os.PathLike, id_key: str, value_key: str, known: dict[Any, Any], twice: str, unknown: str
) -> dict[Any, str]:
    """id -> prediction from a COCO/VQA result list; an id predicted twice or unknown to ``known`` names its row."""
    entries, name = _entries(path, load_json_file(path), None)
    out: dict[Any, str] = {}
    for i, entry in enumerate(entries):
        key = _field(path, name, i, entry, id_key, "id")
        value = _field(path, name, i, entry, value_key, "text")
        if key in out:
            raise _bad(path, name, i, id_key, f"{id_key} {key!r} {twice}")
        if key not in known:
            raise _bad(path, name, i, id_key, f"{id_key} {key!r} {unknown}")
        out[key] = value
    return out


def load_caption_preds(path: str | os.PathLike, refs: dict[Any, list[str]]) -> dict[Any, str]:
    """image_id -> predicted caption; each id once and with references."""
    out = _predictions(path, "image_id", "caption", refs, "is predicted twice", "has no reference captions")
    if not out:
        raise BadSampleError("no predictions", source=str(path), kind="empty_file")
    return out


def load_vqa_refs(
    path: str | os.PathLike,
) -> tuple[dict[Any, list[str]], dict[Any, str | None], dict[Any, Any]]:
    """(question_id -> human answers, question_id -> answer_type, question_id -> image_id where given) from a VQAv2
    annotations file; the images let a confidence interval resample each image's questions together."""
    data = load_json_file(path)
    if isinstance(data, dict) and "questions" in data and "annotations" not in data:
        raise BadSampleError(
            "holds questions but no answers: pass the annotations file (v2_mscoco_*_annotations.json)",
            source=str(path),
            kind="invalid",
        )
    entries, name = _entries(path, data, "annotations")
    answers: dict[Any, list[str]] = {}
    types: dict[Any, str | None] = {}
    images: dict[Any, Any] = {}
    for i, entry in enumerate(entries):
        qid = _field(path, name, i, entry, "question_id", "id")
        raw = _field(path, name, i, entry, "answers", "list")
        if (
            not isinstance(raw, list)
            or not raw
            or not all(isinstance(a, dict) and isinstance(a.get("answer"), str) for a in raw)
        ):
            raise _bad(path, name, i, "answers", 'answers must be a non-empty list of {"answer": string}')
        answers[qid] = [a["answer"] for a in raw]
        kind = entry.get("answer_type")
        types[qid] = kind if isinstance(kind, str) else None
        if isinstance(entry.get("image_id"), (int, str)):
            images[qid] = entry["image_id"]
    if not answers:
        raise BadSampleError("no annotations", source=str(path), kind="empty_file")
    return answers, types, images


def load_vqa_preds(path: str | os.PathLike, answers: dict[Any, list[str]]) -> dict[Any, str]:
    """question_id -> predicted answer; each id once, known to the annotations, and all of them covered."""
    out = _predictions(path, "question_id", "answer", answers, "is answered twice", "is not in the annotations")
    missing = [q for q in answers if q not in out]
    if missing:
        raise BadSampleError(
            f"no answer for {len(missing)} annotated question(s), e.g. question_id {missing[0]!r}",
            source=str(path),
            kind="invalid",
        )
    return out
