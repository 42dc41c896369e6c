"""MSR-VTT: ``train_val_videodatainfo.json`` / ``test_videodatainfo.json`` (``videos``: video_id, split, category;
``sentences``: caption, video_id) -> one video Sample per clip holding all its captions; and the 1k-A test split CSV
(``MSRVTT_JSFUSION_test.csv``: key, vid_key, video_id, sentence) -> one Sample per row, a clip and its one sentence,
as the retrieval papers evaluate it.

Clips are ``{video_id}.mp4`` (any video format) in the video folder: the first of ``videos/all/``, ``videos/``,
``TrainValVideo/``, ``TestVideo/`` beside the annotation file, else its folder."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from polymodal.data.errors import BadSampleError, BadSampleLog
from polymodal.data.readers.base import VIDEO_EXTENSIONS, PathResolver, expect_list, load_json_file, resolve_log
from polymodal.data.readers.caption_csv import csv_header, csv_rows, files_by_stem, first_folder
from polymodal.data.schema import Sample

CSV_COLUMNS = ("video_id", "sentence")


def is_msrvtt_csv(path: str | os.PathLike) -> bool:
    """True for a CSV file with the 1k-A split's columns."""
    return Path(path).suffix.lower() == ".csv" and set(CSV_COLUMNS) <= set(csv_header(path))


def is_msrvtt_json(data: Any) -> bool:
    return isinstance(data, dict) and isinstance(data.get("videos"), list) and isinstance(data.get("sentences"), list)


def default_video_dir(path: str | os.PathLike) -> Path:
    base = Path(path).parent
    return first_folder(base / "videos" / "all", base / "videos", base / "TrainValVideo", base / "TestVideo", base)


def read_msrvtt(
    path: str | os.PathLike,
    video_dir: str | os.PathLike | None = None,
    strict: bool = False,
    bad_log: BadSampleLog | None = None,
    *,
    split: str | None = None,
    data: Any = None,
) -> Iterator[Sample]:
    """Samples of an MSR-VTT JSON (``split``: keep ``train``, ``validate`` or ``test`` clips only) or 1k-A CSV;
    ``data``: the JSON already parsed."""
    videos = Path(video_dir) if video_dir is not None else default_video_dir(path)
    log = resolve_log(strict, bad_log)
    if Path(path).suffix.lower() == ".csv":
        return _csv_samples(Path(path), videos, log)
    return _json_samples(Path(path), load_json_file(path) if data is None else data, videos, split, log)


def _resolve(files: dict[str, str], resolver: PathResolver, videos: Path, video_id: str, source: Path, row: int) -> str:
    name = files.get(video_id)
    if name is None:
        raise BadSampleError(
            f"no video named {video_id!r} in {videos}",
            source=str(source),
            row=row,
            field="video_id",
            sample_id=video_id,
            kind="missing_file",
        )
    return resolver.resolve(name, "video", row, sample_id=video_id)


def _csv_samples(path: Path, videos: Path, log: BadSampleLog) -> Iterator[Sample]:
    files, resolver = files_by_stem(videos, VIDEO_EXTENSIONS), PathResolver(videos, str(path))
    for row, record in csv_rows(path, CSV_COLUMNS):
        video_id, sentence = record["video_id"], record["sentence"]
        try:
            if not video_id or not sentence:
                field = "video_id" if not video_id else "sentence"
                raise BadSampleError(f"{field} is empty", source=str(path), row=row, field=field, sample_id=video_id)
            ref = _resolve(files, resolver, videos, video_id, path, row)
        except BadSampleError as e:
            log.record(e)
            continue
        key = record.get("key") or video_id
        yield Sample(id=key, video=ref, text=[sentence], metadata={"video_id": video_id}, source=str(path), row=row)


def _json_samples(path: Path, data: Any, videos: Path, split: str | None, log: BadSampleLog) -> Iterator[Sample]:
    clips, sentences = expect_list(data, "videos", path), expect_list(data, "sentences", path)
    captions: dict[str, list[str]] = {}
    for i, item in enumerate(sentences):
        if isinstance(item, dict) and isinstance(item.get("video_id"), str) and isinstance(item.get("caption"), str):
            captions.setdefault(item["video_id"], []).append(item["caption"])
        else:
            log.record(
                BadSampleError("expected video_id and caption strings", source=str(path), row=i + 1, field="sentences")
            )
    files, resolver = files_by_stem(videos, VIDEO_EXTENSIONS), PathResolver(videos, str(path))
    for i, item in enumerate(clips):
        row = i + 1  # the clip's 1-based index in ``videos``
        try:
            if not isinstance(item, dict) or not isinstance(item.get("video_id"), str):
                raise BadSampleError(
                    "expected an object with a video_id string", source=str(path), row=row, field="videos"
                )
            video_id = item["video_id"]
            if split is not None and item.get("split") != split:
                continue
            if video_id not in captions:
                raise BadSampleError("no sentences", source=str(path), row=row, field="sentences", sample_id=video_id)
            ref = _resolve(files, resolver, videos, video_id, path, row)
        except BadSampleError as e:
            log.record(e)
            continue
        meta = {k: item[k] for k in ("split", "category") if k in item}
        yield Sample(id=video_id, video=ref, text=captions[video_id], metadata=meta, source=str(path), row=row)
