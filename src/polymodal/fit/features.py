"""Featurizers: the columns of a table -> one feature vector per row and input, with the offline pretrained towers.

Each media or text column is an input of its own, featurized by a locked pretrained tower (EfficientNet-Lite0 for
images and video frames, MiniLM for text, Resemblyzer's voice encoder plus log-mel statistics for audio); the
numeric and categorical columns together are one ``tabular`` input. A featurizer is registered by column kind in
:data:`FEATURIZERS`, so a new kind is one class. A missing cell or a bad file leaves the row's input absent (and a
bad file is counted, naming the table, row and column); the tabular input is always present.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from functools import lru_cache
from typing import Any, ClassVar

import torch
from torch import Tensor

from polymodal.data.audio import decode_audio
from polymodal.data.errors import BadSampleError, BadSampleLog
from polymodal.data.image import decode_image
from polymodal.data.readers.base import PathResolver
from polymodal.data.transforms import ImagePipeline
from polymodal.data.video import VideoSampling, decode_video
from polymodal.fit.columns import MEDIA_KINDS, as_number, is_missing
from polymodal.fit.store import FeatureStore, digest_bytes, digest_file
from polymodal.fit.table import Table
from polymodal.registry import Registry

TABULAR_INPUT = "tabular"
FEATURE_VERSION = 1  # bump when a featurizer's output changes: stored vectors of the old one are then not used
BATCH_SIZE = 32
Progress = Callable[[int], None]  # called with the number of rows done so far in one input


class Featurizer:
    """Columns in, ``(features (N, dim) float32, present (N,) bool)`` out; ``state()`` is what a saved model keeps."""

    kind: ClassVar[str]
    dim: int

    def __init__(self, columns: Sequence[str]) -> None:
        self.columns = list(columns)

    @property
    def name(self) -> str:
        """The input's name in the model: the column, or ``tabular`` for the numeric and categorical columns."""
        return self.columns[0]

    def fit(self, table: Table) -> None:
        """Learn what the features need from the training rows (only the tabular featurizer learns)."""

    def transform(
        self, table: Table, bad: BadSampleLog, progress: Progress | None = None, store: FeatureStore | None = None
    ) -> tuple[Tensor, Tensor]:
        """Features and presence per row of ``table``; vectors already in ``store`` are not computed again."""
        raise NotImplementedError

    @property
    def store_id(self) -> str:
        """What the feature store files this featurizer's vectors under (changes when its output would)."""
        return f"{self.kind}/v{FEATURE_VERSION}"

    def state(self) -> dict[str, Any]:
        return {"kind": self.kind, "columns": self.columns}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Featurizer:
        return cls(state["columns"])


FEATURIZERS: Registry[type[Featurizer]] = Registry("featurizer")


def featurizer_from_state(state: dict[str, Any]) -> Featurizer:
    return FEATURIZERS.get(state["kind"]).from_state(state)


class MediaFeaturizer(Featurizer):
    """A column of file paths embedded ``BATCH_SIZE`` files at a time; a missing cell or a bad file is absent."""

    def load(self, path: str, field: str, source: str, row: int) -> Any:
        """One decoded file, ready for :meth:`embed` (or BadSampleError)."""
        raise NotImplementedError

    def embed(self, decoded: list[Any]) -> Tensor:
        """(n, dim) features of decoded files."""
        raise NotImplementedError

    def transform(
        self, table: Table, bad: BadSampleLog, progress: Progress | None = None, store: FeatureStore | None = None
    ) -> tuple[Tensor, Tensor]:
        column = self.name
        features = torch.zeros(len(table), self.dim)
        present = torch.zeros(len(table), dtype=torch.bool)
        resolver = PathResolver(table.root, table.source)
        for start, chunk in _chunks(len(table)):
            paths: dict[int, tuple[str, bytes]] = {}
            for i in chunk:
                value = table.rows[i].get(column)
                if is_missing(value):
                    continue
                try:
                    path = resolver.resolve(str(value).strip(), column, table.row_numbers[i])
                    paths[i] = (path, digest_file(path))
                except BadSampleError as e:
                    bad.record(e)
                except OSError as e:
                    bad.record(_unreadable(table, i, column, e))
            stored = store.get(self.store_id, [d for _, d in paths.values()], self.dim) if store else {}
            decoded, rows = [], []
            for i, (path, key) in paths.items():
                if key in stored:
                    features[i], present[i] = stored[key], True
                    continue
                try:
                    decoded.append(self.load(path, column, table.source, table.row_numbers[i]))
                    rows.append(i)
                except BadSampleError as e:
                    bad.record(e)
            if decoded:
                with torch.inference_mode():
                    features[rows] = self.embed(decoded).float()
                present[rows] = True
                if store is not None:
                    store.put(self.store_id, [paths[i][1] for i in rows], features[rows])
            if progress is not None:
                progress(start + len(chunk))
        return features, present


def _unreadable(table: Table, index: int, column: str, error: OSError) -> BadSampleError:
    return BadSampleError(
        f"cannot read the file: {error.strerror or error}",
        source=table.source,
        row=table.row_numbers[index],
        field=column,
        kind="missing_file",
    )


@lru_cache(maxsize=1)
def _image_tower() -> Any:
    from polymodal.pretrained.imagenet import load_efficientnet_lite0

    # channels-last convolutions run about twice as fast on CPU, with the same fp32 results.
    return load_efficientnet_lite0().to(memory_format=torch.channels_last)


def _image_pipeline() -> ImagePipeline:
    from polymodal.pretrained.imagenet import EFFICIENTNET_LITE0_PREPROCESS

    return ImagePipeline.for_training(EFFICIENTNET_LITE0_PREPROCESS, None)


@FEATURIZERS.register("image")
class ImageFeaturizer(MediaFeaturizer):
    """EfficientNet-Lite0 (ImageNet weights, locked): the 1280-d mean of its last feature map at 224 px."""

    kind = "image"
    dim = 1280

    def load(self, path: str, field: str, source: str, row: int) -> Tensor:
        return _image_pipeline()(decode_image(path, source=source, row=row, field=field), None)

    def embed(self, decoded: list[Tensor]) -> Tensor:
        pixels = torch.stack(decoded).contiguous(memory_format=torch.channels_last)
        return _image_tower()(pixels).pooled  # type: ignore[no-any-return]


@FEATURIZERS.register("video")
class VideoFeaturizer(MediaFeaturizer):
    """Eight frames sampled uniformly over the clip, each through the image featurizer's tower, averaged (meanP)."""

    kind = "video"
    dim = 1280
    sampling = VideoSampling(frames=8)

    def load(self, path: str, field: str, source: str, row: int) -> Tensor:
        clip = decode_video(path, self.sampling, source=source, row=row, field=field)
        if not clip.frames:
            raise BadSampleError("no frames", source=source, row=row, field=field, kind="empty_file")
        pipeline = _image_pipeline()
        return torch.stack([pipeline(frame, None) for frame in clip.frames])  # (F, 3, 224, 224)

    def embed(self, decoded: list[Tensor]) -> Tensor:
        frames = _image_tower()(torch.cat(decoded).contiguous(memory_format=torch.channels_last)).pooled  # (sum F, D)
        return torch.stack([part.mean(0) for part in frames.split([len(d) for d in decoded])])


@lru_cache(maxsize=1)
def _voice_tower() -> Any:
    from polymodal.pretrained.speaker import load_speaker_lstm

    return load_speaker_lstm()


AUDIO_SECONDS = 10.0  # the part of each clip that is featurized


@FEATURIZERS.register("audio")
class AudioFeaturizer(MediaFeaturizer):
    """Who speaks and how: Resemblyzer's 256-d voice embedding (locked) beside the per-band mean and standard
    deviation of the 40 log-mel bands over the clip's sound and its log duration (pitch, loudness, pace)."""

    kind = "audio"
    bands = 40
    dim = 256 + 2 * 40 + 1

    def load(self, path: str, field: str, source: str, row: int) -> Tensor:
        from polymodal.pretrained.speaker import RESEMBLYZER_FEATURES

        wave = decode_audio(path, RESEMBLYZER_FEATURES.sample_rate, source=source, row=row, field=field)
        return wave[: round(AUDIO_SECONDS * RESEMBLYZER_FEATURES.sample_rate)]

    def embed(self, decoded: list[Tensor]) -> Tensor:
        from polymodal.pretrained.speaker import RESEMBLYZER_FEATURES

        settings = RESEMBLYZER_FEATURES.model_copy(update={"clip_seconds": AUDIO_SECONDS})
        lengths = torch.tensor([len(w) for w in decoded])
        waves = torch.zeros(len(decoded), int(lengths.max()))
        for i, wave in enumerate(decoded):
            waves[i, : len(wave)] = wave
        mel = settings(waves)  # (n, 40, frames) log-mel
        mask = settings.frame_mask(lengths, mel.shape[-1])
        voice = _voice_tower()(mel, mask).pooled  # (n, 256)
        weights = mask.unsqueeze(1).to(mel.dtype)  # (n, 1, frames)
        count = weights.sum(-1).clamp(min=1)
        mean = (mel * weights).sum(-1) / count
        std = (((mel - mean.unsqueeze(-1)) ** 2 * weights).sum(-1) / count).sqrt()
        seconds = (lengths.float() / settings.sample_rate).clamp(min=1e-3).log().unsqueeze(-1)
        return torch.cat([voice, mean, std, seconds], dim=-1)


@lru_cache(maxsize=1)
def _text_tower() -> Any:
    from polymodal.pretrained.minilm import MiniLM

    return MiniLM.load()


@FEATURIZERS.register("text")
class TextFeaturizer(Featurizer):
    """MiniLM (all-MiniLM-L6-v2, locked): the 384-d unit sentence embedding of each cell (at most 256 tokens)."""

    kind = "text"
    dim = 384

    def transform(
        self, table: Table, bad: BadSampleLog, progress: Progress | None = None, store: FeatureStore | None = None
    ) -> tuple[Tensor, Tensor]:
        features = torch.zeros(len(table), self.dim)
        present = torch.zeros(len(table), dtype=torch.bool)
        for start, chunk in _chunks(len(table), 256):
            texts = {i: str(table.rows[i][self.name]) for i in chunk if not is_missing(table.rows[i].get(self.name))}
            keys = {i: digest_bytes(t.encode("utf-8", "surrogatepass")) for i, t in texts.items()}
            stored = store.get(self.store_id, list(keys.values()), self.dim) if store else {}
            rows = [i for i in texts if keys[i] not in stored]
            for i in texts:
                if keys[i] in stored:
                    features[i] = stored[keys[i]]
            if rows:
                features[rows] = _text_tower().embed([texts[i] for i in rows])
                if store is not None:
                    store.put(self.store_id, [keys[i] for i in rows], features[rows])
            present[list(texts)] = True
            if progress is not None:
                progress(start + len(chunk))
        return features, present


MAX_CATEGORIES = 50  # per categorical column: the most frequent values each get a slot, the rest share "other"


@FEATURIZERS.register("tabular")
class TabularFeaturizer(Featurizer):
    """The numeric and categorical columns as one vector: each number standardised (with a missing flag), each
    category one-hot over the training rows' most frequent values (plus "other" and "missing")."""

    kind = "tabular"

    def __init__(
        self,
        columns: Sequence[str],
        numeric: dict[str, tuple[float, float]] | None = None,
        categories: dict[str, list[str]] | None = None,
    ) -> None:
        super().__init__(columns)
        self.numeric = dict(numeric or {})  # column -> (mean, std)
        self.categories = dict(categories or {})  # column -> its values with a slot

    @property
    def name(self) -> str:
        return TABULAR_INPUT

    @property
    def dim(self) -> int:  # type: ignore[override]
        return 2 * len(self.numeric) + sum(len(v) + 2 for v in self.categories.values())

    def configure(self, numeric: Sequence[str], categorical: Sequence[str]) -> TabularFeaturizer:
        self.numeric = dict.fromkeys(numeric, (0.0, 1.0))
        self.categories = {c: [] for c in categorical}
        return self

    def fit(self, table: Table) -> None:
        for column in self.numeric:
            numbers = [n for n in (as_number(v) for v in table.values(column)) if n is not None]
            mean = sum(numbers) / len(numbers) if numbers else 0.0
            var = sum((n - mean) ** 2 for n in numbers) / len(numbers) if numbers else 1.0
            self.numeric[column] = (mean, math.sqrt(var) or 1.0)
        for column in self.categories:
            counts: dict[str, int] = {}
            for value in table.values(column):
                if not is_missing(value):
                    counts[str(value).strip()] = counts.get(str(value).strip(), 0) + 1
            self.categories[column] = sorted(counts, key=lambda v: (-counts[v], v))[:MAX_CATEGORIES]

    def transform(
        self, table: Table, bad: BadSampleLog, progress: Progress | None = None, store: FeatureStore | None = None
    ) -> tuple[Tensor, Tensor]:
        out = torch.zeros(len(table), self.dim)
        at = 0
        for column, (mean, std) in self.numeric.items():
            for i, value in enumerate(table.values(column)):
                number = None if is_missing(value) else as_number(value)
                if number is None:
                    if not is_missing(value):
                        bad.record(
                            BadSampleError(
                                f"{value!r} is not a number",
                                source=table.source,
                                row=table.row_numbers[i],
                                field=column,
                                kind="invalid",
                            )
                        )
                    out[i, at + 1] = 1.0  # missing
                else:
                    out[i, at] = (number - mean) / std
            at += 2
        for column, values in self.categories.items():
            slot = {v: k for k, v in enumerate(values)}
            for i, value in enumerate(table.values(column)):
                if is_missing(value):
                    out[i, at + len(values) + 1] = 1.0
                else:
                    out[i, at + slot.get(str(value).strip(), len(values))] = 1.0
            at += len(values) + 2
        if progress is not None:
            progress(len(table))
        return out, torch.ones(len(table), dtype=torch.bool)

    def state(self) -> dict[str, Any]:
        return {**super().state(), "numeric": self.numeric, "categories": self.categories}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> TabularFeaturizer:
        numeric = {k: (float(v[0]), float(v[1])) for k, v in state["numeric"].items()}
        return cls(state["columns"], numeric, state["categories"])


def featurizers_for(kinds: dict[str, str]) -> list[Featurizer]:
    """The inputs for columns of the given kinds (column -> kind; ``ignore`` dropped), in column order, with the
    tabular input last."""
    out: list[Featurizer] = []
    for column, kind in kinds.items():
        if kind in (*MEDIA_KINDS, "text"):
            out.append(FEATURIZERS.get(kind)([column]))
    numeric = [c for c, k in kinds.items() if k == "numeric"]
    categorical = [c for c, k in kinds.items() if k == "categorical"]
    if numeric or categorical:
        out.append(TabularFeaturizer([*numeric, *categorical]).configure(numeric, categorical))
    return out


def _chunks(total: int, size: int = BATCH_SIZE) -> Iterator[tuple[int, range]]:
    for start in range(0, total, size):
        yield start, range(start, min(total, start + size))
