"""Run an export with onnxruntime (no PyTorch model needed): whichever of the image, text, audio and video towers it
has."""

from __future__ import annotations

import json
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from polymodal.data.audio import AudioFeatures
from polymodal.data.processors import AudioProcessor, TextProcessor, VideoProcessor
from polymodal.data.text import TextTokenizer
from polymodal.data.transforms import ImagePreprocess
from polymodal.export.onnx import PARTS, ExportError, manifest_path, require_onnx
from polymodal.export.variants import VARIANTS, chosen_elsewhere, make_session, variant_file
from polymodal.interop.preprocess import HFImagePreprocess

log = logging.getLogger(__name__)
KEPT_THREAD_COUNTS = 2  # sessions are kept for this many thread counts, the latest used


class OnnxEmbedder:
    """``embed_images``/``embed_text``/``embed_audio``/``embed_video`` over the towers an export holds; only those are
    loaded, and asking for another raises ExportError.

    Each tower runs the variant its export chose for it (``default`` in export.json, fp32 in exports made before
    variants) unless ``variant`` names one for all towers. ``threads`` fixes onnxruntime's intra-op threads; without
    it each run takes polymodal's thread budget of the calling thread (torch's intra-op threads, which
    :class:`polymodal.hardware.ThreadBudget` sets and a server's changes with the load), its sessions built for
    that count on first use. ``optimization`` is onnxruntime's graph
    optimisation level (disable, basic, extended, all), ``batch_size`` splits larger inputs into runs of that
    many items and ``spinning=False`` lets onnxruntime's threads sleep between runs (for a process that computes
    with torch too).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        threads: int | None = None,
        *,
        variant: str | None = None,
        optimization: str = "all",
        batch_size: int | None = None,
        spinning: bool = True,
    ) -> None:
        require_onnx()
        self.directory = Path(directory)
        path = manifest_path(self.directory)
        if batch_size is not None and batch_size < 1:
            raise ExportError(f"batch_size {batch_size}: give a whole number >= 1")
        self.manifest: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        self.batch_size = batch_size
        # The cores this process uses for torch (polymodal.hardware chooses them), not onnxruntime's own count of
        # the host's cores: no oversubscription beside torch or FAISS.
        self.fixed_threads = threads
        self.threads = threads or torch.get_num_threads()  # the thread count of the latest run
        self.optimization, self.spinning = optimization, spinning
        elsewhere = None if variant else chosen_elsewhere(self.manifest)
        if elsewhere:
            log.warning(
                "%s: its default variants were chosen on another machine (%s); `polymodal export %s --choose` "
                "chooses them for this one",
                self.directory,
                elsewhere,
                self.directory,
            )
        self.variants: dict[str, str] = {
            modality: self._variant(part, variant) for modality, part in PARTS.items() if part in self.manifest
        }
        # Per thread count (the latest KEPT_THREAD_COUNTS), each tower's session: one is built for the count at
        # load, so that a broken file fails here, and others when a run first asks for them.
        self._sessions: OrderedDict[int, dict[str, Any]] = OrderedDict()
        self._sessions_lock = threading.Lock()
        self._building: dict[tuple[int, str], threading.Event] = {}  # sessions being built, set when done
        for modality in self.variants:
            self._session(modality, self.threads)
        self.preprocess: ImagePreprocess | None = None
        if "image" in self.variants:
            pre = dict(self.manifest["image_encoder"]["preprocess"])
            floor = pre.pop("crop_offsets", "round") == "floor"
            self.preprocess = (HFImagePreprocess if floor else ImagePreprocess).from_dict(pre)
        self.tokenizer: TextTokenizer | None = None
        self.max_length: int | None = None
        self.text: TextProcessor | None = None  # tokenizes, keeping recent texts' ids (lengths, then batches)
        if "text" in self.variants:
            tok = self.manifest["text_encoder"].get("tokenizer")
            self.tokenizer = TextTokenizer.load(self.directory / tok["dir"]) if tok else None
            self.max_length = int(self.manifest["text_encoder"]["max_length"])
            self.text = TextProcessor(self.tokenizer, self.max_length) if self.tokenizer is not None else None
        self.audio: AudioProcessor | None = None
        if "audio" in self.variants:
            self.audio = AudioProcessor(AudioFeatures.model_validate(self.manifest["audio_encoder"]["features"]))
        self.video: VideoProcessor | None = None
        if "video" in self.variants:
            entry = self.manifest["video_encoder"]
            self.video = VideoProcessor.from_settings(
                {**entry["sampling"], "image": entry["preprocess"]}, self.directory
            )

    def _variant(self, part: str, asked: str | None) -> str:
        """The variant to run for ``part``: ``asked``, else the export's recorded default, else fp32."""
        entry = self.manifest[part]
        name = asked or entry.get("default", "fp32")
        if name not in VARIANTS:
            raise ExportError(f"variant {name!r}: choose one of {', '.join(VARIANTS)}")
        if name != "fp32" and name not in entry.get("variants", {}):
            raise ExportError(
                f"{self.directory}: the export has no {name} variant of {part} (it has "
                f"{', '.join(['fp32', *entry.get('variants', {})])}); export again with quantisation"
            )
        return name

    def _session(self, modality: str, threads: int) -> Any:
        """``modality``'s session on ``threads`` intra-op threads, built if this count has none yet: outside the lock
        (other runs go on meanwhile) and once (runs that ask for it meanwhile wait for that build). The least
        recently used count is dropped once the new session exists."""
        key = (threads, modality)
        while True:
            with self._sessions_lock:
                session = self._sessions.get(threads, {}).get(modality)
                if session is not None:
                    self._sessions.move_to_end(threads)
                    return session
                building = self._building.get(key)
                if building is None:
                    building = self._building[key] = threading.Event()
                    break
            building.wait()  # another run builds it; then look again (its build may have failed)
        try:
            if self._sessions and threads not in self._sessions:  # the thread budget changed since load
                log.info("%s: building the %s tower's session for %d threads", self.directory, modality, threads)
            file = variant_file(self.manifest[PARTS[modality]]["file"], self.variants[modality])
            session = make_session(self.directory / file, threads, self.optimization, self.spinning)
            with self._sessions_lock:
                self._sessions.setdefault(threads, {})[modality] = session
                self._sessions.move_to_end(threads)
                while len(self._sessions) > KEPT_THREAD_COUNTS:
                    self._sessions.popitem(last=False)
            return session
        finally:
            with self._sessions_lock:
                del self._building[key]
            building.set()

    @property
    def sessions(self) -> dict[str, Any]:
        """Each tower's session at the calling thread's thread count."""
        threads = self._run_threads()
        return {modality: self._session(modality, threads) for modality in self.variants}

    def _run_threads(self) -> int:
        return self.fixed_threads or torch.get_num_threads()

    @property
    def modalities(self) -> list[str]:
        return sorted(self.variants)

    def _require(self, modality: str) -> None:
        if modality not in self.variants:
            raise ExportError(f"{self.directory}: the export has no {modality} tower; it has {self.modalities}")

    def _run(self, modality: str, feeds: dict[str, np.ndarray]) -> np.ndarray:
        self._require(modality)
        threads = self._run_threads()
        self.threads = threads
        session = self._session(modality, threads)
        items = len(next(iter(feeds.values())))
        step = self.batch_size or items
        if items <= step:
            return session.run(None, feeds)[0]
        runs = [
            session.run(None, {name: value[start : start + step] for name, value in feeds.items()})[0]
            for start in range(0, items, step)
        ]
        return np.concatenate(runs)

    @property
    def image_session(self) -> Any:
        """The image tower's session at the calling thread's thread count (built if it has none)."""
        return self._session("image", self._run_threads()) if "image" in self.variants else None

    @property
    def text_session(self) -> Any:
        """The text tower's session at the calling thread's thread count (built if it has none)."""
        return self._session("text", self._run_threads()) if "text" in self.variants else None

    def embed_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """(N, 3, S, S) float32 -> (N, D)."""
        return self._run("image", {"pixel_values": np.ascontiguousarray(pixels, dtype=np.float32)})

    def embed_ids(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """(N, T) int64 ids and 1/0 mask -> (N, D)."""
        feeds = {"input_ids": input_ids.astype(np.int64), "attention_mask": attention_mask.astype(np.int64)}
        return self._run("text", feeds)

    def embed_features(self, features: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """(N, channels, frames) float32 audio features and (N, frames) 1/0 frame mask -> (N, D)."""
        feeds = {
            "audio_features": np.ascontiguousarray(features, dtype=np.float32),
            "audio_mask": np.asarray(mask).astype(np.int64),
        }
        return self._run("audio", feeds)

    def embed_frames(self, frames: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """(N, T, 3, S, S) float32 preprocessed frames and (N, T) 1/0 frame mask -> (N, D)."""
        feeds = {
            "video_frames": np.ascontiguousarray(frames, dtype=np.float32),
            "video_mask": np.asarray(mask).astype(np.int64),
        }
        return self._run("video", feeds)

    def embed(self, modality: str, refs: Sequence[Any]) -> np.ndarray:
        """(N, D) embeddings of ``refs`` of ``modality``: decoded images, strings, or media files (paths, bytes)."""
        methods = {
            "image": self.embed_images,
            "text": self.embed_text,
            "audio": self.embed_audio,
            "video": self.embed_video,
        }
        self._require(modality)
        return methods[modality](refs)

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        self._require("image")
        assert self.preprocess is not None  # loaded with the image tower
        return self.embed_pixels(np.stack([self.preprocess.to_tensor(img).numpy() for img in images]))

    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        ids, mask = self._text_processor().batch(list(texts))
        return self.embed_ids(ids.numpy(), mask.numpy())

    def text_lengths(self, texts: Sequence[str]) -> list[int]:
        """Token counts of ``texts`` as the text tower reads them; their ids are kept for the batches that follow."""
        return [len(ids) for ids in self._text_processor().prepare_many(texts)]

    def _text_processor(self) -> TextProcessor:
        self._require("text")
        if self.text is None:
            raise ExportError(f"{self.directory}: the export has no tokenizer/; use embed_ids")
        return self.text

    def embed_audio(self, clips: Sequence[str | os.PathLike[str] | bytes]) -> np.ndarray:
        """Audio files (paths) or their encoded bytes -> (N, D): decoded, cropped or padded and turned into features
        by polymodal's AudioProcessor with the export's settings."""
        self._require("audio")
        assert self.audio is not None  # loaded with the audio tower
        x, mask = self.audio.batch(list(clips))
        assert mask is not None  # an audio batch always has a frame mask
        return self.embed_features(x.numpy(), mask.numpy())

    def embed_video(self, clips: Sequence[str | os.PathLike[str] | bytes]) -> np.ndarray:
        """Video files, folders of frames (paths) or encoded bytes -> (N, D): the frames the export's sampling picks,
        preprocessed and padded to T by polymodal's VideoProcessor with the export's settings."""
        self._require("video")
        assert self.video is not None  # loaded with the video tower
        x, mask = self.video.batch(list(clips))
        assert mask is not None  # a video batch always has a frame mask
        return self.embed_frames(x.numpy(), mask.numpy())


OnnxDualEncoder = OnnxEmbedder  # the image-text name, kept for existing callers
