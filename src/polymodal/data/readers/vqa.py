"""VQAv2: a questions JSON, optional annotations JSON (absent for test-dev/test), and a COCO
image directory.

``per="image"`` gives one Sample per image with all of its questions in ``qa`` (the shape
training wants); ``per="question"`` gives one Sample per question (the shape the official
evaluation scores). ``QA.type`` is the ``answer_type`` (yes/no, number, other);
``question_type`` and ``multiple_choice_answer`` go to metadata (lists aligned with ``qa``
in per-image mode).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any, Literal

from polymodal.data.errors import BadSampleError, BadSampleLog
from polymodal.data.readers.base import PathResolver, Where, expect_list, load_json_file, resolve_log
from polymodal.data.schema import QA, Sample

# COCO_val2014_000000000042.jpg; ``subtype`` defaults to the questions file's data_subtype.
DEFAULT_IMAGE_PATTERN = "COCO_{subtype}_{image_id:012d}.jpg"


def read_vqa(
    questions: str | os.PathLike,
    image_dir: str | os.PathLike,
    annotations: str | os.PathLike | None = None,
    strict: bool = False,
    bad_log: BadSampleLog | None = None,
    *,
    image_pattern: str = DEFAULT_IMAGE_PATTERN,
    subtype: str | None = None,
    per: Literal["image", "question"] = "image",
) -> Iterator[Sample]:
    """Samples of a VQAv2 split. ``image_pattern`` is formatted with ``image_id`` and
    ``subtype`` to name each image inside ``image_dir``.

    With ``annotations``, every question must have one (a mismatch is a bad sample).
    """
    if per not in ("image", "question"):
        raise ValueError(f"per must be 'image' or 'question', got {per!r}")
    q_data = load_json_file(questions)
    q_list = expect_list(q_data, "questions", questions)
    subtype = subtype if subtype is not None else q_data.get("data_subtype")
    if "{subtype" in image_pattern and not subtype:
        raise ValueError(f"{questions}: no data_subtype in the file; pass subtype= (e.g. 'val2014')")
    try:
        image_pattern.format(image_id=0, subtype=subtype)
    except (KeyError, IndexError, ValueError) as e:
        raise ValueError(f"image_pattern {image_pattern!r} may only use {{image_id}} and {{subtype}}: {e}") from None
    answers = None
    if annotations is not None:
        answers = _index_annotations(expect_list(load_json_file(annotations), "annotations", annotations))
    resolver = PathResolver(image_dir, str(questions))
    reader = _VQAReader(str(questions), resolver, image_pattern, subtype, answers, str(annotations))
    return reader.samples(q_list, per, resolve_log(strict, bad_log))


def _index_annotations(items: list[Any]) -> dict[Any, tuple[int, Any]]:
    """question_id -> (row in the annotations list, the entry); validated lazily per question."""
    out = {}
    for row, ann in enumerate(items, start=1):
        if isinstance(ann, dict) and isinstance(ann.get("question_id"), (int, str)):
            out[ann["question_id"]] = (row, ann)
    return out


class _VQAReader:
    def __init__(
        self,
        src: str,
        resolver: PathResolver,
        pattern: str,
        subtype: str | None,
        answers: dict[Any, tuple[int, Any]] | None,
        answers_src: str,
    ) -> None:
        self.src, self.resolver, self.pattern, self.subtype = src, resolver, pattern, subtype
        self.answers, self.answers_src = answers, answers_src
        self._images: dict[Any, str | BadSampleError] = {}  # image_id -> path, cached per image

    def samples(self, questions: list[Any], per: str, log: BadSampleLog) -> Iterator[Sample]:
        by_image: dict[Any, list[tuple[int, QA, dict[str, Any]]]] = {}
        for row, item in enumerate(questions, start=1):
            try:
                image_id, qa, extra = self._question(item, row)
                path = self._image(image_id, row)
            except BadSampleError as e:
                log.record(e)
                continue
            if per == "question":
                meta = {"image_id": image_id, **extra}
                yield Sample(id=str(qa.question_id), image=path, qa=[qa], metadata=meta, source=self.src, row=row)
            else:
                by_image.setdefault(image_id, []).append((row, qa, extra))
        for image_id, items in by_image.items():
            meta: dict[str, Any] = {"image_id": image_id}
            for key in ("question_type", "multiple_choice_answer"):
                meta[key] = [extra.get(key) for _, _, extra in items]
            image = self._images[image_id]
            assert isinstance(image, str)  # only images that resolved have questions here
            qas = [qa for _, qa, _ in items]
            yield Sample(id=str(image_id), image=image, qa=qas, metadata=meta, source=self.src, row=items[0][0])

    def _question(self, item: Any, row: int) -> tuple[Any, QA, dict[str, Any]]:
        at = Where(self.src, row)
        if not isinstance(item, dict):
            raise at.error("questions", f"expected an object, got {type(item).__name__}")
        image_id, question, qid = item.get("image_id"), item.get("question"), item.get("question_id")
        if not isinstance(image_id, int) or isinstance(image_id, bool):
            raise at.error("image_id", f"expected an int, got {image_id!r}")
        if not isinstance(question, str) or not question.strip():
            raise at.error("question", f"expected a non-empty string, got {question!r}")
        if not isinstance(qid, (int, str)) or isinstance(qid, bool):
            raise at.error("question_id", f"expected an int or string, got {qid!r}")
        if self.answers is None:
            return image_id, QA(question=question, answers=[], question_id=qid), {}
        if qid not in self.answers:
            raise at.error("question_id", f"question {qid!r} has no entry in the annotations file")
        arow, ann = self.answers[qid]
        in_annotations = Where(self.answers_src, arow, str(qid))  # the annotation entry is what to fix
        raw = ann.get("answers")
        valid = isinstance(raw, list) and all(isinstance(a, dict) and isinstance(a.get("answer"), str) for a in raw)
        if not valid:
            raise in_annotations.error("annotations.answers", "expected a list of {answer: string} objects")
        if ann.get("image_id", image_id) != image_id:
            reason = f"is {ann.get('image_id')!r} but the question says {image_id!r}"
            raise in_annotations.error("annotations.image_id", reason)
        answer_type = ann.get("answer_type")
        qa = QA(
            question=question,
            answers=[a["answer"] for a in raw],
            type=answer_type if isinstance(answer_type, str) else None,
            question_id=qid,
        )
        extra = {k: ann[k] for k in ("question_type", "multiple_choice_answer") if k in ann}
        return image_id, qa, extra

    def _image(self, image_id: int, row: int) -> str:
        if image_id not in self._images:
            try:
                name = self.pattern.format(image_id=image_id, subtype=self.subtype)
                self._images[image_id] = self.resolver.resolve(name, "image_id", row, sample_id=str(image_id))
            except BadSampleError as e:
                self._images[image_id] = e
        cached = self._images[image_id]
        if isinstance(cached, BadSampleError):
            # Name this question's row; the reason (which file is missing) is the same.
            raise BadSampleError(cached.reason, source=self.src, row=row, field="image_id", kind=cached.kind)
        return cached
