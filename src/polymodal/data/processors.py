"""Per-modality processing behind one small interface: a sample's reference in, a model input out.

A :class:`Processor` turns one reference (a path, encoded bytes, a string, an inline value) into a
per-sample value (``prepare``, raising :class:`BadSampleError` for a bad one) and stacks a batch of
them, ``None`` where a sample lacks the modality, into a :class:`ModalityBatch` (``collate``).
``settings()`` and ``save_files()`` are what a saved model directory keeps, so inference prepares
inputs exactly as training did; ``PROCESSORS`` maps a modality name to the processor class that
rebuilds itself from them (``from_settings``). A new modality is one processor registered here plus
its encoders in ``polymodal.modules.encoders``; audio is one (``AudioProcessor``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, Field, model_validator

from polymodal.config import Config, ConfigError
from polymodal.data.audio import AudioFeatures, decode_audio
from polymodal.data.image import decode_image
from polymodal.data.schema import Modality
from polymodal.data.text import TextTokenizer, pad_ids
from polymodal.data.transforms import Augment, ImagePipeline, ImagePreprocess
from polymodal.data.video import Clip, VideoSampling, decode_video
from polymodal.fsutil import UnreadableFileError
from polymodal.registry import Registry

TOKENIZER_DIR = "tokenizer"


@dataclass
class ModalityBatch:
    """One modality of a batch: the model's ``(x, mask)`` and which samples have it."""

    x: torch.Tensor | None  # (B, ...) or (N, ...) with ``owner``; None when no sample has the modality
    mask: torch.Tensor | None  # padding mask, True = real (sequences); None when every position is real
    present: torch.Tensor  # (B,) bool
    owner: torch.Tensor | None = None  # (N,) sample row of each x row, when a sample has several values


class Processor:
    """Base of every modality's processing; subclasses set ``modality`` and implement the methods."""

    modality: ClassVar[str]
    # A reference in a manifest is a file to resolve against the manifest's folder (True), or the value itself.
    reads_files: ClassVar[bool] = True
    # The settings ``from_settings`` reads (a recipe's ``data.processors.<modality>``), so a recipe is checked
    # against them before any data is read and ``polymodal models processors`` lists them; None: free-form.
    settings_model: ClassVar[type[BaseModel] | None] = None

    @property
    def deterministic(self) -> bool:
        """The same reference always gives the same value (so a dataset may memoise it)."""
        return True

    def prepare(
        self, ref: Any, generator: torch.Generator | None = None, *, source: str | None = None, row: int | None = None
    ) -> Any:
        """One reference -> the per-sample value; raises BadSampleError naming ``source:row``."""
        raise NotImplementedError

    def collate(self, values: Sequence[Any | None]) -> ModalityBatch:
        raise NotImplementedError

    def settings(self) -> dict[str, Any]:
        """JSON-able settings a saved model keeps (``from_settings`` rebuilds the processor from them)."""
        return {}

    def save_files(self, directory: Path) -> None:
        """Write files the settings refer to (a tokenizer) into a model directory."""

    def for_inference(self) -> Processor:
        """The same processing without training-time augmentation (what validation and a saved model use)."""
        return self

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], directory: Path) -> Processor:
        raise NotImplementedError

    def batch(self, refs: Sequence[Any]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(x, mask)`` for a list of references (at inference, with the processor a model was saved with)."""
        out = self.collate([self.prepare(r) for r in refs])
        if out.x is None:
            raise ValueError(f"{self.modality}: nothing to prepare")
        return out.x, out.mask


def _check_processor(name: str, processor: Callable[..., Processor]) -> None:
    """A processor's name is its modality, and the manifest column the readers route to it: refuse one that
    disagrees with the modality its class declares, or a column that means something else (``label``, ``id``)."""
    declared = getattr(processor, "modality", None)
    if isinstance(declared, str) and declared != name:
        raise ValueError(
            f"processor {name!r}: {getattr(processor, '__name__', processor)} declares modality {declared!r}; "
            f"register it as {declared!r} (or set its modality to {name!r})"
        )
    if name in {m.value for m in Modality}:  # the built-in modalities are reserved columns for their own processor
        return
    from polymodal.data.readers.base import RESERVED_FIELDS  # here: the readers import this module

    if name in RESERVED_FIELDS:
        raise ValueError(
            f"processor {name!r}: {name!r} is a manifest column with a meaning of its own (reserved: "
            f"{', '.join(sorted(RESERVED_FIELDS))}), so no column would reach the processor; choose another name"
        )


PROCESSORS: Registry[Callable[..., Processor]] = Registry("processor", _check_processor)


def stack_present(values: Sequence[torch.Tensor | None], modality: str) -> ModalityBatch:
    """Stack same-shape tensors; a missing value becomes zeros and ``present`` False."""
    present = torch.tensor([v is not None for v in values], dtype=torch.bool)
    given = [v for v in values if v is not None]
    if not given:
        return ModalityBatch(None, None, present)
    shapes = {tuple(v.shape) for v in given}
    if len(shapes) > 1:
        raise ValueError(f"{modality} values in one batch differ in shape: {sorted(shapes)}")
    blank = torch.zeros_like(given[0])
    return ModalityBatch(torch.stack([blank if v is None else v for v in values]), None, present)


@PROCESSORS.register("image")
class ImageProcessor(Processor):
    """Decode (safely) -> augment (training only) -> resize, crop, normalise: (3, S, S) float tensors."""

    modality = "image"
    settings_model = ImagePreprocess

    def __init__(self, preprocess: ImagePreprocess, augment: Augment | None = None) -> None:
        self.preprocess = preprocess
        self.pipeline = ImagePipeline.for_training(preprocess, augment)

    @property
    def deterministic(self) -> bool:
        return not self.pipeline.ops

    def for_inference(self) -> ImageProcessor:
        return ImageProcessor(self.preprocess)

    def prepare(
        self, ref: Any, generator: torch.Generator | None = None, *, source: str | None = None, row: int | None = None
    ) -> torch.Tensor:
        return self.pipeline(decode_image(ref, source=source, row=row), generator)  # PIL images, arrays too

    def collate(self, values: Sequence[torch.Tensor | None]) -> ModalityBatch:
        return stack_present(values, self.modality)

    def settings(self) -> dict[str, Any]:
        return self.preprocess.to_dict()

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], directory: Path) -> ImageProcessor:
        return cls(ImagePreprocess.from_dict(dict(settings)))


ENCODED_MEMO = 16384  # texts whose ids a TextProcessor keeps between calls


@PROCESSORS.register("text")
class TextProcessor(Processor):
    """Tokenize (special tokens kept, truncated to ``max_length``) -> right-padded ids with a mask.

    A sample may carry several texts (all captions of an image for retrieval): its value is then a list of
    id lists, and the batch has one row per text with ``owner`` naming the sample.
    """

    modality = "text"
    reads_files = False

    def __init__(self, tokenizer: TextTokenizer, max_length: int = 32) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length
        # prepare_many's latest texts -> ids: a corpus is tokenized to be batched by length, then again per batch.
        self._encoded: dict[str, tuple[int, ...]] = {}
        self._encoded_by: tuple[int, int] = (id(tokenizer), max_length)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_encoded": {}}  # a worker process starts with no memo

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_id

    def prepare(
        self, ref: Any, generator: torch.Generator | None = None, *, source: str | None = None, row: int | None = None
    ) -> list[int]:
        return self.tokenizer.encode(str(ref), self.max_length)

    def prepare_many(self, texts: Sequence[str]) -> list[list[int]]:
        """Ids of each text; the texts of recent calls (up to ENCODED_MEMO) are not tokenized again."""
        texts = list(texts)
        memo = self._encoded
        if self._encoded_by != (id(self.tokenizer), self.max_length):  # another tokenizer or length: other ids
            memo = self._encoded = {}
            self._encoded_by = (id(self.tokenizer), self.max_length)
        known = {text: memo[text] for text in texts if text in memo}
        missing = [text for text in dict.fromkeys(texts) if text not in known]
        if missing:
            fresh = dict(zip(missing, map(tuple, self.tokenizer.encode_many(missing, self.max_length))))
            known.update(fresh)
            if len(fresh) <= ENCODED_MEMO:  # a larger call is not kept: the memo stays small
                if len(memo) + len(fresh) > ENCODED_MEMO:
                    # A new memo (another thread may still be reading the old one) with this call's texts.
                    memo = self._encoded = dict(known) if len(known) <= ENCODED_MEMO else {}
                memo.update(fresh)
        return [list(known[text]) for text in texts]

    def collate(self, values: Sequence[Any]) -> ModalityBatch:
        present = torch.tensor([bool(v) for v in values], dtype=torch.bool)
        if not any(present):
            return ModalityBatch(None, None, present)
        if not any(v and isinstance(v[0], (list, tuple)) for v in values):
            ids, mask = pad_ids([v or [] for v in values], self.pad_id)  # a missing text: a row of padding
            return ModalityBatch(ids, mask, present)
        rows, owner = [], []
        for i, value in enumerate(values):
            for seq in value or []:
                rows.append(list(seq))
                owner.append(i)
        ids, mask = pad_ids(rows, self.pad_id)  # (N, T)
        return ModalityBatch(ids, mask, present, torch.tensor(owner))

    def batch(self, refs: Sequence[Any]) -> tuple[torch.Tensor, torch.Tensor]:
        return pad_ids(self.prepare_many([str(r) for r in refs]), self.pad_id)

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        return self.tokenizer.decode(ids)

    def settings(self) -> dict[str, Any]:
        return {"max_length": self.max_length}

    def save_files(self, directory: Path) -> None:
        self.tokenizer.save(directory / TOKENIZER_DIR)

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], directory: Path) -> TextProcessor:
        tokenizer_dir = directory / TOKENIZER_DIR
        if not tokenizer_dir.is_dir():
            raise FileNotFoundError(f"{directory}: the text processor needs its tokenizer in {TOKENIZER_DIR}/")
        return cls(TextTokenizer.load(tokenizer_dir), int(settings.get("max_length", 32)))


def build_processor(modality: str, settings: Mapping[str, Any], directory: Path) -> Processor:
    """The registered processor of ``modality`` rebuilt from saved settings."""
    if modality not in PROCESSORS:
        raise KeyError(
            f"{directory}: the model has a {modality!r} input but no processor is registered for it; "
            f"registered: {', '.join(PROCESSORS.names())}"
        )
    return processor_from_settings(modality, settings, directory, f"{directory}: processors.json's {modality!r}")


def processor_from_settings(modality: str, settings: Mapping[str, Any], directory: Path, where: str) -> Processor:
    """``PROCESSORS[modality].from_settings``; settings it refuses (a plugin's processor may raise anything) are a
    ConfigError naming ``where`` they were given, the class and its error."""
    builder = PROCESSORS.get(modality)
    try:
        return builder.from_settings(settings, directory)  # type: ignore[attr-defined, no-any-return]
    except (ConfigError, UnreadableFileError):  # already naming what is wrong (a damaged tokenizer file ...)
        raise
    except Exception as e:
        name = getattr(builder, "__name__", modality)
        raise ConfigError(f"{where}: {name} refused the settings {dict(settings)}: {type(e).__name__}: {e}") from e


class AudioAugment(Config):
    """Training-time audio augmentation: a random window of a longer clip, a random gain, and SpecAugment's time
    and frequency masks (Park et al. 2019): spans of frames and of bands set to the clip's mean feature."""

    random_crop: bool = True
    gain_db: float = Field(6.0, ge=0, description="gain drawn uniformly in [-gain_db, +gain_db] dB; 0: off")
    time_masks: int = Field(0, ge=0, description="spans of frames masked per clip")
    time_mask_seconds: float = Field(0.1, gt=0, description="each time mask's width, drawn in [0, this]")
    freq_masks: int = Field(0, ge=0, description="spans of bands (mel or MFCC) masked per clip")
    freq_mask_bands: int = Field(8, ge=1, description="each frequency mask's width, drawn in [0, this]")


def check_audio_augment(features: AudioFeatures, augment: AudioAugment | None) -> None:
    """Refuse augmentation the features cannot take (ConfigError)."""
    if augment is not None and augment.freq_masks and features.kind == "waveform":
        raise ConfigError("audio augment: freq_masks need spectrogram features (kind log_mel or mfcc), not waveform")


class AudioSettings(AudioFeatures):
    """What a recipe's ``data.processors.audio`` holds: the features, and the training-time ``augment``."""

    augment: AudioAugment | None = None

    @model_validator(mode="after")
    def _augment_fits(self) -> AudioSettings:
        check_audio_augment(self, self.augment)
        return self


@dataclass
class MaskedClip:
    """A training clip with the SpecAugment spans drawn for it: ``[start, end)`` in samples and in bands."""

    wave: torch.Tensor
    time_spans: list[tuple[int, int]]
    band_spans: list[tuple[int, int]]


def _spans(count: int, width: int, total: int, generator: torch.Generator | None) -> list[tuple[int, int]]:
    """``count`` spans of a width drawn in [0, ``width``] at uniform starts within ``total``."""
    out = []
    for _ in range(count):
        w = int(torch.randint(min(width, total) + 1, (), generator=generator))
        start = int(torch.randint(total - w + 1, (), generator=generator))
        out.append((start, start + w))
    return out


@PROCESSORS.register("audio")
class AudioProcessor(Processor):
    """Decode (safely, mono, resampled) -> a window of at most ``clip_seconds`` -> batched log-mel or MFCC frames, or
    the waveform, with a mask of the frames (samples) that hold sound (a shorter clip is padded with silence)."""

    modality = "audio"
    settings_model = AudioSettings

    def __init__(self, features: AudioFeatures | None = None, augment: AudioAugment | None = None) -> None:
        self.features = features or AudioFeatures()
        self.augment = augment
        check_audio_augment(self.features, augment)

    @property
    def deterministic(self) -> bool:
        return self.augment is None

    def for_inference(self) -> AudioProcessor:
        return AudioProcessor(self.features)

    def prepare(
        self, ref: Any, generator: torch.Generator | None = None, *, source: str | None = None, row: int | None = None
    ) -> torch.Tensor | MaskedClip:
        wave = (
            ref
            if isinstance(ref, torch.Tensor)
            else decode_audio(ref, self.features.sample_rate, source=source, row=row)
        )
        clip = self.features.clip_samples
        start = 0
        if wave.shape[-1] > clip and self.augment is not None and self.augment.random_crop:
            start = int(torch.randint(wave.shape[-1] - clip + 1, (), generator=generator))
        wave = self.features.leveled(wave[..., start : start + clip])
        if self.augment is not None and self.augment.gain_db > 0:
            gain_db = (torch.rand((), generator=generator) * 2 - 1) * self.augment.gain_db
            wave = wave * 10 ** (gain_db / 20)
        if self.augment is not None and (self.augment.time_masks or self.augment.freq_masks):
            width = round(self.augment.time_mask_seconds * self.features.sample_rate)
            return MaskedClip(
                wave,
                _spans(self.augment.time_masks, width, wave.shape[-1], generator),
                _spans(self.augment.freq_masks, self.augment.freq_mask_bands, self.features.channels, generator),
            )
        return wave

    def collate(self, values: Sequence[torch.Tensor | MaskedClip | None]) -> ModalityBatch:
        present = torch.tensor([v is not None for v in values], dtype=torch.bool)
        if not any(present):
            return ModalityBatch(None, None, present)
        clip = self.features.clip_samples
        waves = torch.zeros(len(values), clip)
        lengths = torch.zeros(len(values), dtype=torch.long)
        for i, v in enumerate(values):
            if v is not None:
                wave = v.wave if isinstance(v, MaskedClip) else v
                waves[i, : wave.shape[-1]] = wave
                lengths[i] = wave.shape[-1]
        features = self.features(waves)  # (B, channels, frames); a waveform: (B, 1, samples)
        mask = self.features.frame_mask(lengths, features.shape[-1])
        for i, v in enumerate(values):
            if isinstance(v, MaskedClip):
                self._spec_augment(features[i], mask[i], v)
        return ModalityBatch(features, mask, present)

    def _spec_augment(self, features: torch.Tensor, mask: torch.Tensor, clip: MaskedClip) -> None:
        """Set ``clip``'s masked frames and bands of its (channels, frames) ``features`` to their mean over real
        frames (in place)."""
        real = features[:, mask]
        fill = real.mean() if real.numel() else features.new_zeros(())
        per_frame = 1 if self.features.kind == "waveform" else self.features.hop_length
        for start, end in clip.time_spans:
            features[:, start // per_frame : -(-end // per_frame)] = fill
        for low, high in clip.band_spans:
            features[low:high, :] = fill

    def settings(self) -> dict[str, Any]:
        return self.features.model_dump(mode="json")

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], directory: Path) -> AudioProcessor:
        """From saved settings, or a recipe's ``data.processors.audio`` (which may add ``augment``)."""
        checked = AudioSettings.model_validate(dict(settings))
        return cls(AudioFeatures.model_validate(checked.model_dump(exclude={"augment"})), checked.augment)


class VideoAugment(Augment):
    """Training-time video augmentation: the image augmentation, drawn once per clip and applied identically to every
    frame, and a random frame of each segment (TSN) when sampling is ``segments``."""

    random_segments: bool = True


class VideoSettings(VideoSampling):
    """What a recipe's ``data.processors.video`` holds: the frame sampling, each frame's ``image`` preprocessing and
    the training-time ``augment``."""

    image: ImagePreprocess = Field(default_factory=ImagePreprocess, description="each frame's preprocessing")
    augment: VideoAugment | None = None


@PROCESSORS.register("video")
class VideoProcessor(Processor):
    """Decode (safely) the frames ``sampling`` picks -> augment (training only, the same for every frame) -> the image
    preprocessing per frame: (T, 3, S, S) float tensors, batched with a mask of the real frames (a clip with fewer
    frames than T is padded with zero frames)."""

    modality = "video"
    settings_model = VideoSettings

    def __init__(
        self, sampling: VideoSampling, preprocess: ImagePreprocess, augment: VideoAugment | None = None
    ) -> None:
        self.sampling = sampling
        self.preprocess = preprocess
        self.augment = augment
        self.pipeline = ImagePipeline.for_training(preprocess, augment)

    @property
    def random_segments(self) -> bool:
        return self.augment is not None and self.augment.random_segments and self.sampling.sampling == "segments"

    @property
    def deterministic(self) -> bool:
        return not self.pipeline.ops and not self.random_segments

    def for_inference(self) -> VideoProcessor:
        return VideoProcessor(self.sampling, self.preprocess)

    def prepare(
        self, ref: Any, generator: torch.Generator | None = None, *, source: str | None = None, row: int | None = None
    ) -> torch.Tensor:
        if isinstance(ref, Clip):  # decoded already (a segment): its frames as they are
            clip = ref
        else:
            clip = decode_video(ref, self.sampling, generator, random=self.random_segments, source=source, row=row)
        if not self.pipeline.ops:
            return torch.stack([self.preprocess.to_tensor(frame) for frame in clip.frames])  # (n, 3, S, S)
        # One seed per clip, replayed for each frame: every frame gets the same crop and flip.
        seed = int(torch.randint(2**62, (), generator=generator))
        return torch.stack([self.pipeline(frame, torch.Generator().manual_seed(seed)) for frame in clip.frames])

    def collate(self, values: Sequence[torch.Tensor | None]) -> ModalityBatch:
        present = torch.tensor([v is not None for v in values], dtype=torch.bool)
        given = [v for v in values if v is not None]
        if not given:
            return ModalityBatch(None, None, present)
        shapes = {tuple(v.shape[1:]) for v in given}
        if len(shapes) > 1:
            raise ValueError(f"video frames in one batch differ in shape: {sorted(shapes)}")
        frames = self.sampling.frames
        x = torch.zeros(len(values), frames, *given[0].shape[1:])  # (B, T, 3, S, S)
        mask = torch.zeros(len(values), frames, dtype=torch.bool)  # (B, T), True = a real frame
        for i, v in enumerate(values):
            if v is not None:
                x[i, : len(v)] = v[:frames]
                mask[i, : len(v)] = True
        return ModalityBatch(x, mask, present)

    def settings(self) -> dict[str, Any]:
        return {**self.sampling.model_dump(mode="json"), "image": self.preprocess.to_dict()}

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], directory: Path) -> VideoProcessor:
        """From saved settings, or a recipe's ``data.processors.video`` (``image``: the per-frame ImagePreprocess;
        ``augment``: training-time VideoAugment)."""
        checked = VideoSettings.model_validate(dict(settings))
        return cls(
            VideoSampling.model_validate(checked.model_dump(exclude={"image", "augment"})),
            checked.image,
            checked.augment,
        )
