"""COCO captions JSON and Karpathy split JSON (COCO, Flickr30k): one Sample per image with
all of its captions.

Errors inside the JSON name the list entry: ``row`` is the 1-based index in ``images`` (or
``annotations``) and ``field`` the key, e.g. ``annotations.caption``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from polymodal.data.errors import BadSampleError, BadSampleLog
from polymodal.data.readers.base import PathResolver, Where, expect_list, load_json_file, resolve_log
from polymodal.data.schema import Sample

KARPATHY_SPLITS = ("train", "val", "test", "restval")


def read_coco_captions(
    annotations: str | os.PathLike,
    image_root: str | os.PathLike,
    strict: bool = False,
    bad_log: BadSampleLog | None = None,
) -> Iterator[Sample]:
    """Samples of a COCO captions file (``captions_train2017.json``); ``image_root`` holds
    the ``file_name`` of each image. Images without captions are kept (empty ``text``)."""
    return coco_captions_samples(load_json_file(annotations), annotations, image_root, resolve_log(strict, bad_log))


def coco_captions_samples(
    data: Any, source: str | os.PathLike, image_root: str | os.PathLike, log: BadSampleLog
) -> Iterator[Sample]:
    """Like :func:`read_coco_captions`, for JSON that is already parsed."""
    images = expect_list(data, "images", source)
    annotations = expect_list(data, "annotations", source)
    return _coco_samples(images, annotations, str(source), PathResolver(image_root, str(source)), log)


def _coco_samples(
    images: list[Any], annotations: list[Any], src: str, resolver: PathResolver, log: BadSampleLog
) -> Iterator[Sample]:
    # First pass: the image ids, so that a caption of an unknown image is reported.
    known = {e.get("id") for e in images if isinstance(e, dict) and _is_id(e.get("id"))}
    captions: dict[Any, list[str]] = {}
    for row, ann in enumerate(annotations, start=1):
        try:
            image_id, caption = _annotation(ann, known, Where(src, row))
        except BadSampleError as e:
            log.record(e)
            continue
        captions.setdefault(image_id, []).append(caption)

    seen: set[Any] = set()
    for row, entry in enumerate(images, start=1):
        try:
            image_id = _image_id(entry, seen, Where(src, row))
            path = resolver.resolve(entry.get("file_name"), "images.file_name", row, sample_id=str(image_id))
        except BadSampleError as e:
            log.record(e)
            continue
        extra = {k: v for k, v in entry.items() if k not in ("id", "file_name")}
        yield Sample(
            id=str(image_id),
            image=path,
            text=captions.get(image_id, []),
            metadata={"image_id": image_id, **extra},
            source=src,
            row=row,
        )


def _is_id(value: Any) -> bool:
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def _image_id(entry: Any, seen: set[Any], at: Where) -> Any:
    if not isinstance(entry, dict):
        raise at.error("images", f"expected an object, got {type(entry).__name__}")
    image_id = entry.get("id")
    if not _is_id(image_id):
        raise at.error("images.id", f"expected an int or string id, got {image_id!r}")
    if image_id in seen:
        raise at.error("images.id", f"duplicate image id {image_id!r}")
    seen.add(image_id)
    return image_id


def _annotation(ann: Any, known: set[Any], at: Where) -> tuple[Any, str]:
    if not isinstance(ann, dict):
        raise at.error("annotations", f"expected an object, got {type(ann).__name__}")
    image_id, caption = ann.get("image_id"), ann.get("caption")
    if not _is_id(image_id) or image_id not in known:
        raise at.error("annotations.image_id", f"no image with id {image_id!r}")
    if not isinstance(caption, str) or not caption.strip():
        raise at.error("annotations.caption", f"expected a non-empty string, got {caption!r}")
    return image_id, caption.strip()


def read_karpathy(
    path: str | os.PathLike,
    image_root: str | os.PathLike,
    split: str | Iterable[str] | None = None,
    strict: bool = False,
    bad_log: BadSampleLog | None = None,
) -> Iterator[Sample]:
    """Samples of a Karpathy split file (``dataset_coco.json``, ``dataset_flickr30k.json``).

    The image is ``image_root/filepath/filename`` (``filepath`` only exists for COCO).
    ``split`` keeps one or several of train/val/test/restval (``None``: all); entries of other
    splits are not validated. Ids: ``cocoid`` if present, else ``imgid``, else the file stem.
    """
    wanted = _splits(split)
    return karpathy_samples(load_json_file(path), path, image_root, wanted, resolve_log(strict, bad_log))


def _splits(split: str | Iterable[str] | None) -> set[str] | None:
    if split is None:
        return None
    wanted = {split} if isinstance(split, str) else set(split)
    unknown = wanted - set(KARPATHY_SPLITS)
    if unknown:
        raise ValueError(f"unknown Karpathy split(s) {sorted(unknown)}; choose from {', '.join(KARPATHY_SPLITS)}")
    return wanted


def karpathy_samples(
    data: Any,
    source: str | os.PathLike,
    image_root: str | os.PathLike,
    split: set[str] | None,
    log: BadSampleLog,
) -> Iterator[Sample]:
    """Like :func:`read_karpathy`, for JSON that is already parsed (``split`` validated)."""
    images = expect_list(data, "images", source)
    resolver = PathResolver(image_root, str(source))
    return _karpathy_samples(images, str(source), resolver, split, data.get("dataset"), log)


def _karpathy_samples(
    images: list[Any], src: str, resolver: PathResolver, split: set[str] | None, dataset: Any, log: BadSampleLog
) -> Iterator[Sample]:
    for row, entry in enumerate(images, start=1):
        if split is not None and not (isinstance(entry, dict) and entry.get("split") in split):
            continue
        try:
            yield _karpathy_sample(entry, row, src, resolver, dataset)
        except BadSampleError as e:
            log.record(e)


def _karpathy_sample(entry: Any, row: int, src: str, resolver: PathResolver, dataset: Any) -> Sample:
    at = Where(src, row)
    if not isinstance(entry, dict):
        raise at.error("images", f"expected an object, got {type(entry).__name__}")
    filename, filepath = entry.get("filename"), entry.get("filepath")
    if not isinstance(filename, str) or not filename:
        raise at.error("filename", f"expected a non-empty string, got {filename!r}")
    if filepath is not None and not isinstance(filepath, str):
        raise at.error("filepath", f"expected a string, got {filepath!r}")
    sentences = entry.get("sentences", [])
    if not isinstance(sentences, list):
        raise at.error("sentences", f"expected a list, got {type(sentences).__name__}")
    texts = []
    for i, s in enumerate(sentences):
        raw = s.get("raw") if isinstance(s, dict) else None
        if not isinstance(raw, str):
            raise at.error(f"sentences[{i}].raw", f"expected a string, got {raw!r}")
        texts.append(raw.strip())
    sample_id = str(entry.get("cocoid", entry.get("imgid", Path(filename).stem)))
    rel = f"{filepath}/{filename}" if filepath else filename
    keep = ("split", "imgid", "cocoid", "sentids", "filename", "filepath")
    metadata = {k: entry[k] for k in keep if k in entry}
    if dataset is not None:
        metadata["dataset"] = dataset
    return Sample(
        id=sample_id,
        image=resolver.resolve(rel, "filename", row, sample_id=sample_id),
        text=texts,
        metadata=metadata,
        source=src,
        row=row,
    )
