"""What every reader shares: strict/lenient error routing, safe media paths, and the one
function that turns a loosely typed record (a JSONL row, a CSV row, a tar sample's members)
into a :class:`~polymodal.data.schema.Sample`.

Readers check *structure*: JSON, field types, path containment, file existence. Image
*content* (truncated files, bombs, text named ``.jpg``) is checked by
:func:`polymodal.data.image.decode_image`, which ``polymodal data check`` runs on every sample.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from polymodal.data.errors import BadSampleError, BadSampleLog, path_problem
from polymodal.data.processors import PROCESSORS
from polymodal.data.schema import QA, Label, MediaRef, Sample, Statement

IMAGE_EXTENSIONS = frozenset({"jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff"})
AUDIO_EXTENSIONS = frozenset({"wav", "flac", "mp3", "ogg", "opus", "aiff", "aif", "m4a", "mka"})
VIDEO_EXTENSIONS = frozenset({"mp4", "m4v", "webm", "avi", "mkv", "mov", "ts", "mts", "m2ts", "mpg", "mpeg", "3gp"})
# The media a folder of files may hold, by extension.
MEDIA_EXTENSIONS = {"image": IMAGE_EXTENSIONS, "audio": AUDIO_EXTENSIONS, "video": VIDEO_EXTENSIONS}


def media_kind(name: str | os.PathLike[str]) -> str | None:
    """``image``, ``audio`` or ``video`` by a file's extension; None for anything else and for hidden files."""
    base = os.path.basename(os.fspath(name))
    if base.startswith("."):
        return None
    extension = base.rpartition(".")[2].lower()
    return next((kind for kind, extensions in MEDIA_EXTENSIONS.items() if extension in extensions), None)


def embedded_kind(kind: str, media: Collection[str]) -> str:
    """What a file of ``kind`` is embedded as by a model that embeds ``media``: a clip's sound track is a sound to a
    model that embeds sound but not video."""
    return "audio" if kind == "video" and "audio" in media and "video" not in media else kind


# Row keys with a meaning of their own; every other key goes into ``Sample.metadata``.
MEDIA_FIELDS = ("image", "audio", "video")
# The fields whose strings become ``Sample.text``, in this order; ``caption`` is what users write for one.
TEXT_FIELDS = ("text", "caption", "captions")
RESERVED_FIELDS = frozenset({"id", "label", "qa", "statements", "metadata", *MEDIA_FIELDS, *TEXT_FIELDS})

# Turns a media field's raw value into a MediaRef (or raises BadSampleError).
MediaResolver = Callable[[Any, str], MediaRef]


def resolve_log(strict: bool, bad_log: BadSampleLog | None) -> BadSampleLog:
    """The log that routes a reader's errors: ``strict=True`` always raises at the first one."""
    if bad_log is None or (strict and not bad_log.strict):
        return BadSampleLog(strict=strict)
    return bad_log


def file_error(reason: str, path: str | os.PathLike, kind: str) -> BadSampleError:
    """An error about a whole input file (missing, empty, not JSON): raised in both modes,
    because there is nothing left to read past it."""
    return BadSampleError(reason, source=str(path), kind=kind)


def require_file(path: str | os.PathLike) -> Path:
    """``path`` as a Path, or a BadSampleError if it is not a readable, non-empty file."""
    p = Path(path)
    if (problem := path_problem(p)) is not None:
        raise file_error(problem[0], p, problem[1])
    return p


def load_json_file(path: str | os.PathLike) -> Any:
    """Parse a whole JSON file (COCO, Karpathy, VQA annotations) or raise naming the file."""
    p = require_file(path)
    try:
        with open(p, encoding="utf-8") as f:
            return json.load(f)
    except UnicodeDecodeError as e:
        raise file_error(f"not valid UTF-8 ({e.reason} at byte {e.start})", p, "bad_encoding") from None
    except json.JSONDecodeError as e:
        raise file_error(f"invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}", p, "bad_json") from None


def expect_list(data: Any, key: str, path: str | os.PathLike) -> list[Any]:
    """``data[key]`` of a top-level JSON object, which must be a list."""
    if not isinstance(data, dict):
        raise file_error(f"expected a JSON object at the top level, got {type(data).__name__}", path, "invalid")
    value = data.get(key)
    if not isinstance(value, list):
        found = "missing" if value is None else f"a {type(value).__name__}"
        raise BadSampleError(f"expected a list, {found}", source=str(path), field=key, kind="invalid")
    return value


class PathResolver:
    """Resolves relative media paths (against ``base``, default the root) and refuses any
    that escape the dataset root.

    Symlinks and ``..`` are resolved *before* the containment test, so ``../../etc/passwd``,
    an absolute path outside the root and a link inside the root pointing outside are all
    caught. The root itself may be a symlink (e.g. images on another disk).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        source: str,
        *,
        base: str | os.PathLike | None = None,
        check_exists: bool = True,
        checked_fields: Collection[str] | None = None,
    ) -> None:
        self.root = Path(root).resolve()
        self.base = Path(base).resolve() if base is not None else self.root  # relative paths start here
        self.source = source
        self.check_exists = check_exists
        # The media fields whose files must exist (None: all); a column the caller does not read loses no row.
        self.checked_fields = None if checked_fields is None else frozenset(checked_fields)

    def resolve(self, value: Any, field: str, row: int | None, sample_id: str | None = None) -> str:
        def bad(reason: str, kind: str) -> BadSampleError:
            return BadSampleError(reason, source=self.source, row=row, field=field, sample_id=sample_id, kind=kind)

        if not isinstance(value, str) or not value.strip():
            raise bad(f"expected a non-empty path string, got {value!r}", "invalid")
        if "\x00" in value:
            raise bad("path contains a NUL byte", "invalid")
        candidate = Path(value)
        if not candidate.is_absolute():
            candidate = self.base / candidate
        try:
            real = candidate.resolve()
            if not real.is_relative_to(self.root):
                raise bad(f"path {value!r} escapes the dataset root {self.root}", "unsafe_path")
            # A video may be a folder of frame images.
            checked = self.check_exists and (self.checked_fields is None or field in self.checked_fields)
            if checked and not real.is_file() and not (field == "video" and real.is_dir()):
                if not real.exists():
                    raise bad(f"{value}: no such file", "missing_file")
                raise bad(f"{value}: not a regular file", "unreadable")
        except (OSError, RuntimeError) as e:  # symlink loops, names too long, permissions
            raise bad(f"{value}: cannot resolve path ({e})", "unreadable") from None
        return str(real)

    def media(self, row: int | None, sample_id: str | None = None) -> MediaResolver:
        """A MediaResolver bound to one row, for :func:`record_to_sample`."""
        return lambda value, field: self.resolve(value, field, row, sample_id)


class Where:
    """Where a record came from; builds the errors that name its file, row and field."""

    def __init__(self, source: str, row: int | None, sample_id: str | None = None) -> None:
        self.source, self.row, self.sample_id = source, row, sample_id

    def error(self, field: str | None, reason: str, kind: str = "invalid") -> BadSampleError:
        return BadSampleError(
            reason, source=self.source, row=self.row, field=field, sample_id=self.sample_id, kind=kind
        )


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _texts(value: Any, field: str, at: Where) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(t, str) for t in value):
        return list(value)
    raise at.error(field, f"expected a string or a list of strings, got {_type_name(value)}")


def _scalar_label(value: Any, field: str, at: Where) -> Label:
    if isinstance(value, bool):  # bool is not a Label type; keep its meaning as 0/1
        return int(value)
    if isinstance(value, float) and not math.isfinite(value):
        raise at.error(field, f"label is {value} (not a finite number)", "nan_label")
    if isinstance(value, (int, float, str)):
        return value
    raise at.error(field, f"expected an int, float or string label, got {_type_name(value)}")


def _label(value: Any, at: Where, label_key: str | None, metadata: dict[str, Any]) -> Label | list[Label] | None:
    """Scalar or list labels go to ``Sample.label``. A dict label (ShapesWorld: several
    targets per image) is kept whole in ``metadata['label']``; ``label_key`` picks the entry
    that becomes ``Sample.label``, else it stays ``None`` so collate never sees a dict."""
    if value is None:
        return None
    if isinstance(value, dict):
        metadata["label"] = value
        if label_key is None:
            return None
        if label_key not in value:
            raise at.error(f"label.{label_key}", f"label has no key {label_key!r} (keys: {sorted(value)})")
        return _label(value[label_key], at, None, {})
    if isinstance(value, list):
        return [_scalar_label(v, "label", at) for v in value]
    return _scalar_label(value, "label", at)


def _answer_text(value: Any, field: str, at: Where) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):  # JSON true/false as a VQA-style yes/no answer
        return "yes" if value else "no"
    if isinstance(value, (int, float)) and math.isfinite(value):
        return str(value)  # counting answers may be stored as numbers
    raise at.error(field, f"expected a string answer, got {_type_name(value)}")


def _optional_type(item: dict[str, Any], field: str, at: Where) -> str | None:
    """The optional ``type`` string of a question or statement (groups them for per-type accuracy)."""
    kind = item.get("type")
    if kind is not None and not isinstance(kind, str):
        raise at.error(f"{field}.type", f"expected a string, got {_type_name(kind)}")
    return kind


def _qa_list(value: Any, at: Where) -> list[QA]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise at.error("qa", f"expected a list of questions, got {_type_name(value)}")
    out = []
    for i, item in enumerate(value):
        field = f"qa[{i}]"
        if not isinstance(item, dict):
            raise at.error(field, f"expected an object, got {_type_name(item)}")
        question = item.get("question")
        if not isinstance(question, str) or not question:
            raise at.error(f"{field}.question", f"expected a non-empty string, got {question!r}")
        if "answers" in item:
            raw = item["answers"]
            if not isinstance(raw, list):
                raise at.error(f"{field}.answers", f"expected a list, got {_type_name(raw)}")
            answers = [_answer_text(a, f"{field}.answers", at) for a in raw]
        elif "answer" in item:
            answers = [_answer_text(item["answer"], f"{field}.answer", at)]
        else:
            answers = []  # unanswered (test split) questions are allowed
        qtype = _optional_type(item, field, at)
        qid = item.get("question_id", item.get("id"))
        if qid is not None and (isinstance(qid, bool) or not isinstance(qid, (str, int))):
            raise at.error(f"{field}.question_id", f"expected a string or int, got {_type_name(qid)}")
        out.append(QA(question=question, answers=answers, type=qtype, question_id=qid))
    return out


_TRUE = {"true": True, "false": False, "yes": True, "no": False, "1": True, "0": False}


def _statements(value: Any, at: Where) -> list[Statement]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise at.error("statements", f"expected a list of statements, got {_type_name(value)}")
    out = []
    for i, item in enumerate(value):
        field = f"statements[{i}]"
        if not isinstance(item, dict):
            raise at.error(field, f"expected an object, got {_type_name(item)}")
        text, label = item.get("text"), item.get("label")
        if not isinstance(text, str) or not text:
            raise at.error(f"{field}.text", f"expected a non-empty string, got {text!r}")
        if isinstance(label, bool):
            truth = label
        elif isinstance(label, int) and label in (0, 1):
            truth = bool(label)
        elif isinstance(label, str) and label.lower() in _TRUE:
            truth = _TRUE[label.lower()]
        else:
            raise at.error(f"{field}.label", f"expected true/false, got {label!r}")
        out.append(Statement(text=text, label=truth, type=_optional_type(item, field, at)))
    return out


def record_to_sample(
    record: dict[str, Any],
    *,
    source: str,
    row: int | None,
    default_id: str,
    media: MediaResolver,
    label_key: str | None = None,
) -> Sample:
    """Validate one record and build its Sample, or raise BadSampleError naming the field.

    Fields: ``id``, ``image``/``audio``/``video`` (through ``media``), ``text``, ``caption`` and/or
    ``captions`` (each a string or list; all are kept, in that order), ``label``, ``qa`` (objects with
    ``question`` and ``answer`` or ``answers``, optional ``type``/``question_id``),
    ``statements`` (objects with ``text`` and a true/false ``label``), ``metadata`` (an object
    merged into the metadata); every other key goes to ``metadata`` unchanged. A record
    with none of the content fields is a bad sample of kind ``empty``.
    """
    raw_id = record.get("id")
    at = Where(source, row, str(raw_id) if isinstance(raw_id, (str, int)) else None)
    if raw_id is None:
        sample_id = default_id
    elif isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)) or raw_id == "":
        raise at.error("id", f"expected a non-empty string or int, got {raw_id!r}")
    else:
        sample_id = str(raw_id)
    at.sample_id = sample_id  # so that every later error in this row carries the id

    metadata: dict[str, Any] = {}
    extra = record.get("metadata")
    if isinstance(extra, dict):
        metadata.update(extra)
    elif extra is not None:
        metadata["metadata"] = extra
    # A column named after a registered modality beyond the built-in ones is that modality's reference.
    other = [k for k in record if k not in RESERVED_FIELDS and k in PROCESSORS and record[k] is not None]
    metadata.update({k: v for k, v in record.items() if k not in RESERVED_FIELDS and k not in other})

    try:
        refs = {f: (media(record[f], f) if record.get(f) is not None else None) for f in MEDIA_FIELDS}
        extra_media = {k: media(record[k], k) if PROCESSORS.get(k).reads_files else record[k] for k in other}
    except BadSampleError as e:
        e.sample_id = e.sample_id or sample_id  # resolvers do not know the id
        raise
    sample = Sample(
        id=sample_id,
        image=refs["image"],
        text=[text for field in TEXT_FIELDS for text in _texts(record.get(field), field, at)],
        audio=refs["audio"],
        video=refs["video"],
        label=_label(record.get("label"), at, label_key, metadata),
        qa=_qa_list(record.get("qa"), at),
        statements=_statements(record.get("statements"), at),
        media=extra_media,
        metadata=metadata,
        source=source,
        row=row,
    )
    if not sample.modalities() and sample.label is None and not sample.qa and not sample.statements:
        raise at.error(None, f"no image, text, audio, video, label, qa or statements{_renaming(metadata)}", "empty")
    return sample


def _renaming(columns: dict[str, Any]) -> str:
    """For a row with none of the known columns: what its own columns hold, when it is media a reader would read."""
    named = [(k, media_kind(v)) for k, v in columns.items() if isinstance(v, str) and media_kind(v)]
    if not named:
        return f" (its other columns: {', '.join(columns)})" if columns else " (no cell filled in but its id)"
    hints = ", ".join(f"{k!r} holds {kind} files: name it {kind!r}" for k, kind in named[:3])
    return f"; {hints}"
