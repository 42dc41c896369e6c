"""Featurizers: the columns of a table -> one feature vector per row and input, with the offline pretrained towers.

Each media or text column is an input of its own, featurized by a locked pretrained tower (EfficientNet-Lite0 for
images and video frames, MiniLM for text, Resemblyzer's voice encoder plus log-mel statistics for audio); the
numeric and categorical columns together are one ``tabular`` input. A featurizer is registered by column kind in
:data:`FEATURIZERS`, so a new kind is one class. A missing cell or a bad file leaves the row's input absent (and a
bad file is counted, naming the table, row and column); the tabular input is always present.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator, Sequence
from functools import lru_cache
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polymodal.chunking import ChunkSizer, map_in_sized_calls
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
    version = 1  # of what the featurizer computes; a saved predictor keeps the version it was fitted with

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

    def cell_counts(self, table: Table, present: Tensor) -> dict[str, tuple[int, int]]:
        """Per column this input reads, given ``present`` from :meth:`transform`: (cells with a value, bad cells)."""
        return {}

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


class TowerFeaturizer(Featurizer):
    """One column through a pretrained tower: each cell is prepared (decoded, preprocessed) on its own, prepared cells
    are collated into a batch, and :meth:`forward` runs a tower on it. The locked packaged tower featurizes, unless
    fine-tuning gave this featurizer a ``tower`` of its own; :meth:`forward` is the same in both cases."""

    def __init__(self, columns: Sequence[str]) -> None:
        super().__init__(columns)
        self.tower: nn.Module | None = None  # fine-tuned weights of its own; None: the packaged tower, locked
        self.sizer = ChunkSizer(BATCH_SIZE)  # tower calls take the size measured fastest here (not saved)

    def packaged_tower(self) -> nn.Module:
        raise NotImplementedError

    def reference(self, value: Any, resolver: PathResolver, row: int) -> tuple[Any, bytes]:
        """What :meth:`prepare` reads for a cell (a resolved path), and the digest that files its features."""
        path = resolver.resolve(str(value).strip(), self.name, row)
        try:
            return path, digest_file(path)
        except OSError as e:
            raise BadSampleError(
                f"cannot read the file: {e.strerror or e}",
                source=resolver.source,
                row=row,
                field=self.name,
                kind="missing_file",
            ) from None

    def prepare(self, reference: Any, source: str, row: int) -> Any:
        """One cell, ready to collate (or BadSampleError naming the table, row and column)."""
        raise NotImplementedError

    def collate(self, prepared: list[Any]) -> Any:
        return torch.stack(prepared)

    def forward(self, tower: nn.Module, batch: Any) -> Tensor:
        """(n, dim) features of a collated batch; differentiable when the tower trains."""
        raise NotImplementedError

    def trainable_tower(self) -> nn.Module:
        """A copy of the tower in use, every parameter trainable (fine-tuning)."""
        tower = copy.deepcopy(self.tower if self.tower is not None else self.packaged_tower())
        tower.requires_grad_(True)
        return tower.train()

    @property
    def store_id(self) -> str:
        return super().store_id if self.tower is None else ""  # a tuned tower's features are never stored

    def cell_counts(self, table: Table, present: Tensor) -> dict[str, tuple[int, int]]:
        given = sum(not is_missing(v) for v in table.values(self.name))
        return {self.name: (given, given - int(present.sum()))}  # a cell with a value is absent only when bad

    def transform(
        self, table: Table, bad: BadSampleLog, progress: Progress | None = None, store: FeatureStore | None = None
    ) -> tuple[Tensor, Tensor]:
        store = store if self.tower is None else None
        features = torch.zeros(len(table), self.dim)
        present = torch.zeros(len(table), dtype=torch.bool)
        resolver = table.resolver()
        for start, chunk in _chunks(len(table)):
            references: dict[int, tuple[Any, bytes]] = {}
            for i in chunk:
                value = table.rows[i].get(self.name)
                if not is_missing(value):
                    try:
                        references[i] = self.reference(value, resolver, table.row_numbers[i])
                    except BadSampleError as e:
                        bad.record(e)
            stored = store.get(self.store_id, [d for _, d in references.values()], self.dim) if store else {}
            prepared, rows = [], []
            for i, (reference, key) in references.items():
                if key in stored:
                    features[i], present[i] = stored[key], True
                    continue
                try:
                    prepared.append(self.prepare(reference, table.source, table.row_numbers[i]))
                    rows.append(i)
                except BadSampleError as e:
                    bad.record(e)
            if prepared:  # the tower is loaded only when something is not in the store
                tower = (self.tower if self.tower is not None else self.packaged_tower()).eval()

                def run(part: Sequence[Any], tower: nn.Module = tower) -> Tensor:
                    return self.forward(tower, self.collate(list(part))).float()

                with torch.inference_mode():
                    features[rows] = torch.cat(map_in_sized_calls(self.sizer, run, prepared))
                present[rows] = True
                if store is not None:
                    store.put(self.store_id, [references[i][1] for i in rows], features[rows])
            if progress is not None:
                progress(start + len(chunk))
        return features, present


@lru_cache(maxsize=1)
def _image_tower() -> nn.Module:
    from polymodal.pretrained.imagenet import load_efficientnet_lite0

    # channels-last convolutions run about twice as fast on CPU, with the same fp32 results.
    return load_efficientnet_lite0().to(memory_format=torch.channels_last)


@lru_cache(maxsize=1)
def _image_pipeline() -> ImagePipeline:
    from polymodal.pretrained.imagenet import EFFICIENTNET_LITE0_PREPROCESS

    return ImagePipeline.for_training(EFFICIENTNET_LITE0_PREPROCESS, None)


@FEATURIZERS.register("image")
class ImageFeaturizer(TowerFeaturizer):
    """EfficientNet-Lite0 (ImageNet weights): the 1280-d mean of its last feature map at 224 px."""

    kind = "image"
    dim = 1280

    def packaged_tower(self) -> nn.Module:
        return _image_tower()

    def prepare(self, reference: Any, source: str, row: int) -> Tensor:
        return _image_pipeline()(decode_image(reference, source=source, row=row, field=self.name), None)

    def collate(self, prepared: list[Tensor]) -> Tensor:
        return torch.stack(prepared).contiguous(memory_format=torch.channels_last)

    def forward(self, tower: nn.Module, batch: Tensor) -> Tensor:
        return tower(batch).pooled  # type: ignore[no-any-return]


@FEATURIZERS.register("video")
class VideoFeaturizer(ImageFeaturizer):
    """Eight frames sampled uniformly over the clip, each through the image tower, averaged (CLIP4Clip's meanP)."""

    kind = "video"
    sampling = VideoSampling(frames=8)

    def prepare(self, reference: Any, source: str, row: int) -> Tensor:
        clip = decode_video(reference, self.sampling, source=source, row=row, field=self.name)
        if not clip.frames:
            raise BadSampleError("no frames", source=source, row=row, field=self.name, kind="empty_file")
        pipeline = _image_pipeline()
        return torch.stack([pipeline(frame, None) for frame in clip.frames])  # (F, 3, 224, 224)

    def collate(self, prepared: list[Tensor]) -> tuple[Tensor, list[int]]:
        frames = torch.cat(prepared).contiguous(memory_format=torch.channels_last)
        return frames, [len(p) for p in prepared]

    def forward(self, tower: nn.Module, batch: tuple[Tensor, list[int]]) -> Tensor:
        frames, counts = batch
        return torch.stack([part.mean(0) for part in tower(frames).pooled.split(counts)])


@lru_cache(maxsize=1)
def _voice_tower() -> nn.Module:
    from polymodal.pretrained.speaker import load_speaker_lstm

    return load_speaker_lstm()


AUDIO_SECONDS = 10.0  # the part of each clip that is featurized
SPEECH_BAND_HZ = (300.0, 3400.0)  # a telephone's band: what every recording of a voice keeps
FLOOR_DB = 60.0  # log-mel values more than this below the clip's loudest are the floor


@FEATURIZERS.register("audio")
class AudioFeaturizer(TowerFeaturizer):
    """Who speaks and how: Resemblyzer's 256-d voice embedding beside the per-band mean and standard deviation of
    the log-mel bands over the clip's sound and its log duration (pitch, timbre, pace).

    Version 2 (the default) reads each clip at one level (-30 dBFS) and only the mel bands inside the telephone
    band (:data:`SPEECH_BAND_HZ`; the others are the floor), so a quieter recording, a phone call or a low-bitrate
    MP3 of the same voice gives the same features (``benchmarks/fit_audio_conditions.py``). Version 1 read the level
    and all 40 bands: predictors saved with it keep it."""

    kind = "audio"
    bands = 40

    def __init__(self, columns: Sequence[str], version: int = 2) -> None:
        super().__init__(columns)
        if version not in (1, 2):
            raise ValueError(f"audio features version {version} is not known to this polymodal; upgrade it")
        self.version = version
        self.dim = 256 + 2 * (self.bands if version == 1 else int(_speech_band().sum())) + 1

    @property
    def store_id(self) -> str:
        stored = super().store_id
        return stored if self.version == 1 or not stored else f"{stored}/speech-band"

    def state(self) -> dict[str, Any]:
        return {**super().state(), "version": self.version}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> AudioFeaturizer:
        return cls(state["columns"], state.get("version", 1))  # saved before versions: version 1

    def packaged_tower(self) -> nn.Module:
        return _voice_tower()

    def prepare(self, reference: Any, source: str, row: int) -> Tensor:
        settings = _voice_features()
        wave = decode_audio(reference, settings.sample_rate, source=source, row=row, field=self.name)
        wave = wave[: settings.clip_samples]
        return wave if self.version == 1 else settings.leveled(wave)

    def collate(self, prepared: list[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """(log-mel (n, 40, frames), frame mask, statistics (n, 2 * bands + 1)): the statistics are fixed, the mel
        feeds the tower."""
        settings = _voice_features()
        lengths = torch.tensor([len(w) for w in prepared])
        waves = torch.zeros(len(prepared), int(lengths.max()))
        for i, wave in enumerate(prepared):
            waves[i, : len(wave)] = wave
        mel = settings(waves)
        mask = settings.frame_mask(lengths, mel.shape[-1])
        weights = mask.unsqueeze(1).to(mel.dtype)  # (n, 1, frames)
        statistics_of = mel
        if self.version >= 2:
            band = _speech_band()
            loudest = mel[:, band].masked_fill(~mask.unsqueeze(1), -math.inf).amax(dim=(1, 2), keepdim=True)
            floor = loudest - FLOOR_DB / 10 * math.log(10)  # dB of power -> natural log
            banded = torch.where(band[None, :, None], torch.maximum(mel, floor), floor)
            mel = torch.where(mask.unsqueeze(1), banded, mel)  # padding as it was: a clip's batch-mates don't count
            statistics_of = mel[:, band]
        count = weights.sum(-1).clamp(min=1)
        mean = (statistics_of * weights).sum(-1) / count
        std = (((statistics_of - mean.unsqueeze(-1)) ** 2 * weights).sum(-1) / count).sqrt()
        seconds = (lengths.float() / settings.sample_rate).clamp(min=1e-3).log().unsqueeze(-1)
        return mel, mask, torch.cat([mean, std, seconds], dim=-1)

    def forward(self, tower: nn.Module, batch: tuple[Tensor, Tensor, Tensor]) -> Tensor:
        mel, mask, statistics = batch
        return torch.cat([tower(mel, mask).pooled, statistics.to(mel.dtype)], dim=-1)


@lru_cache(maxsize=1)
def _speech_band() -> Tensor:
    """(40,) bool: the voice features' mel bands whose centre frequency lies in :data:`SPEECH_BAND_HZ`."""
    filters = _voice_features().mel_filters()  # (frequencies, bands)
    hz = torch.linspace(0, _voice_features().sample_rate / 2, filters.shape[0])
    centres = (filters * hz[:, None]).sum(0) / filters.sum(0)
    return (centres > SPEECH_BAND_HZ[0]) & (centres < SPEECH_BAND_HZ[1])


@lru_cache(maxsize=1)
def _voice_features() -> Any:
    from polymodal.pretrained.speaker import RESEMBLYZER_FEATURES

    return RESEMBLYZER_FEATURES.model_copy(update={"clip_seconds": AUDIO_SECONDS})


@lru_cache(maxsize=1)
def _text_tower() -> Any:
    from transformers.utils import logging as hf_logging

    from polymodal.pretrained.minilm import MiniLM

    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # its "Loading weights" bar would break fit's own progress lines
    try:
        return MiniLM.load()
    finally:
        if shown:
            hf_logging.enable_progress_bar()


TEXT_TOKENS = 256  # MiniLM's own limit (sentence-transformers' max_seq_length)


@FEATURIZERS.register("text")
class TextFeaturizer(TowerFeaturizer):
    """MiniLM (all-MiniLM-L6-v2): the 384-d unit sentence embedding of each cell (at most 256 tokens)."""

    kind = "text"
    dim = 384

    def packaged_tower(self) -> nn.Module:
        return _text_tower().encoder  # type: ignore[no-any-return]

    def reference(self, value: Any, resolver: PathResolver, row: int) -> tuple[Any, bytes]:
        text = str(value)
        return text, digest_bytes(text.encode("utf-8", "surrogatepass"))

    def prepare(self, reference: Any, source: str, row: int) -> str:
        return str(reference)

    def collate(self, prepared: list[str]) -> tuple[Tensor, Tensor]:
        return _text_tower().tokenizer.encode_batch(prepared, TEXT_TOKENS)  # type: ignore[no-any-return]

    def forward(self, tower: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
        return F.normalize(tower(*batch).pooled, dim=-1)


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

    def cell_counts(self, table: Table, present: Tensor) -> dict[str, tuple[int, int]]:
        counts = {}
        for column in self.numeric:  # a category is never bad
            given = [v for v in table.values(column) if not is_missing(v)]
            counts[column] = (len(given), sum(as_number(v) is None for v in given))
        return counts

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
