"""``open_dataset``: pick the reader from what the path is.

- ``*.csv`` with AudioCaps / Clotho columns      -> AudioCaps / Clotho (``audio_dir=``; default beside it)
- ``*.csv`` with Kinetics / MSR-VTT 1k-A columns -> Kinetics / MSR-VTT (``video_dir=``; default beside it)
- ``*.jsonl`` / ``*.csv``                         -> manifest
- ``*.tar``, a brace pattern, a dir of ``*.tar``   -> WebDataset shards
- a directory with media files at its top level  -> a media folder (every file under it, unlabelled)
- a directory with class sub-folders of images    -> ImageFolder (unless it holds manifests)
- ``*.json`` with ``videos`` and ``sentences``    -> MSR-VTT (``video_dir=``, ``split=``)
- ``*.json`` with ``questions``                   -> VQAv2 (``image_dir=``, ``annotations=``)
- ``*.json`` with ``images`` holding ``sentences`` -> Karpathy split (``image_root=``, ``split=``)
- ``*.json`` with ``images`` and ``annotations``  -> COCO captions (``image_root=``)

For the JSON formats the image directory (``image_root``, or ``image_dir`` for VQA) defaults
to the JSON file's directory.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from polymodal.data.errors import BadSampleLog
from polymodal.data.readers.audiocaps import is_audiocaps, read_audiocaps
from polymodal.data.readers.base import load_json_file, resolve_log
from polymodal.data.readers.classfolders import is_class_folders, read_class_folders
from polymodal.data.readers.clotho import is_clotho, read_clotho
from polymodal.data.readers.coco import _splits, coco_captions_samples, karpathy_samples
from polymodal.data.readers.esc50 import is_esc50, read_esc50
from polymodal.data.readers.kinetics import is_kinetics, read_kinetics
from polymodal.data.readers.manifest import MANIFEST_SUFFIXES, read_manifest
from polymodal.data.readers.mediafolder import is_media_folder, read_media_folder
from polymodal.data.readers.msrvtt import is_msrvtt_csv, is_msrvtt_json, read_msrvtt
from polymodal.data.readers.vqa import read_vqa
from polymodal.data.readers.webdataset import is_shard_pattern, read_shards
from polymodal.data.schema import Sample

FORMATS = (
    "manifest",
    "webdataset",
    "imagefolder",
    "mediafolder",
    "esc50",
    "audiocaps",
    "clotho",
    "kinetics",
    "msrvtt",
    "vqa",
    "karpathy",
    "coco_captions",
)


def detect_format(path: str | os.PathLike) -> str:
    """The name of the reader for ``path`` (one of :data:`FORMATS`), or ValueError saying why not."""
    return _detect(path)[0]


def _detect(path: str | os.PathLike) -> tuple[str, Any]:
    """(format, the parsed JSON for the JSON formats else None)."""
    p = Path(path)
    if is_audiocaps(p):
        return "audiocaps", None
    if is_clotho(p):
        return "clotho", None
    if is_kinetics(p):
        return "kinetics", None
    if is_msrvtt_csv(p):
        return "msrvtt", None
    if p.suffix.lower() in MANIFEST_SUFFIXES:
        return "manifest", None
    if p.is_dir() and is_esc50(p):  # before media folders: the ESC-50 repository has esc50.gif at its top
        return "esc50", None
    if is_media_folder(p):  # before shards and manifests: a .tar or a labels.csv beside the photos is not the data
        return "mediafolder", None
    if is_shard_pattern(p) or (p.is_dir() and any(p.glob("*.tar"))):
        return "webdataset", None
    if p.is_dir():
        # A folder of manifests (ShapesWorld: train.jsonl, val.jsonl + images/) would also
        # pass for an ImageFolder with one class "images": the manifests win, and the user
        # must say which split.
        manifests = sorted(q.name for q in p.iterdir() if q.suffix.lower() in MANIFEST_SUFFIXES)
        if manifests:
            raise ValueError(f"{p}: directory holds manifests ({', '.join(manifests)}): pass one of them")
        if is_class_folders(p):
            return "imagefolder", None
        raise ValueError(
            f"{p}: directory is neither a folder of media files, class folders, ESC-50 nor a folder of .tar shards"
        )
    if p.suffix.lower() == ".json":
        data = load_json_file(p)
        return _json_format(data, p), data
    raise ValueError(f"{p}: cannot tell the dataset format (expected .jsonl, .csv, .json, .tar or a directory)")


def _json_format(data: Any, path: Path) -> str:
    if is_msrvtt_json(data):
        return "msrvtt"
    if isinstance(data, dict) and isinstance(data.get("questions"), list):
        return "vqa"
    images = data.get("images") if isinstance(data, dict) else None
    if isinstance(images, list):
        if images and isinstance(images[0], dict) and "sentences" in images[0]:
            return "karpathy"
        if isinstance(data.get("annotations"), list):
            return "coco_captions"
    raise ValueError(f"{path}: JSON is not COCO captions, a Karpathy split, VQAv2 questions or MSR-VTT")


def open_dataset(
    path: str | os.PathLike,
    strict: bool = False,
    bad_log: BadSampleLog | None = None,
    **kw: Any,
) -> Iterator[Sample]:
    """Samples of the dataset at ``path`` with the reader :func:`detect_format` picks; ``kw``
    goes to that reader (e.g. ``split="test"`` for Karpathy, ``per="question"`` for VQA)."""
    return open_dataset_with_format(path, strict, bad_log, **kw)[1]


def open_dataset_with_format(
    path: str | os.PathLike,
    strict: bool = False,
    bad_log: BadSampleLog | None = None,
    **kw: Any,
) -> tuple[str, Iterator[Sample]]:
    """(format name, samples): :func:`open_dataset` for callers that report the format too,
    without detecting (and parsing a large JSON) twice."""
    found = find_dataset(path)
    return found.format, found.open(strict, bad_log, **kw)


@dataclass(frozen=True)
class FoundDataset:
    """A dataset whose format is known (and its JSON parsed, for the JSON formats): open it with the options its
    reader takes, which may depend on the format."""

    path: str | os.PathLike
    format: str
    parsed: Any = None

    def open(self, strict: bool = False, bad_log: BadSampleLog | None = None, **kw: Any) -> Iterator[Sample]:
        return _open(self.format, self.parsed, self.path, strict, bad_log, dict(kw))


def find_dataset(path: str | os.PathLike) -> FoundDataset:
    """The dataset at ``path`` with its format detected (ValueError saying why there is none)."""
    fmt, data = _detect(path)
    return FoundDataset(path, fmt, data)


def _open(
    fmt: str, data: Any, path: str | os.PathLike, strict: bool, bad_log: BadSampleLog | None, kw: dict[str, Any]
) -> Iterator[Sample]:
    if fmt == "manifest":
        return read_manifest(path, strict, bad_log, **kw)
    if fmt == "webdataset":
        return read_shards(path, strict, bad_log, **kw)
    if fmt == "imagefolder":
        return read_class_folders(path, strict, bad_log, **kw)
    if fmt == "mediafolder":
        return read_media_folder(path, **kw)
    if fmt == "esc50":
        return read_esc50(path, strict, bad_log, **kw)
    if fmt in ("audiocaps", "clotho"):
        read = read_audiocaps if fmt == "audiocaps" else read_clotho
        return read(path, kw.pop("audio_dir", None), strict, bad_log, **kw)
    if fmt == "kinetics":
        return read_kinetics(path, kw.pop("video_dir", None), strict, bad_log, **kw)
    if fmt == "msrvtt":
        return read_msrvtt(path, kw.pop("video_dir", None), strict, bad_log, data=data, **kw)
    if fmt == "vqa":
        # image_root is accepted as well, so one option serves every JSON format.
        image_dir = kw.pop("image_dir", None) or kw.pop("image_root", None) or Path(path).parent
        return read_vqa(path, image_dir, kw.pop("annotations", None), strict, bad_log, **kw)
    # Karpathy and COCO files are large: reuse the JSON parsed for detection.
    log = resolve_log(strict, bad_log)
    image_root = kw.pop("image_root", Path(path).parent)
    if fmt == "karpathy":
        return karpathy_samples(data, path, image_root, _splits(kw.pop("split", None)), log, **kw)
    return coco_captions_samples(data, path, image_root, log, **kw)
