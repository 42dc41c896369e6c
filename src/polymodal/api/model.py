"""The Python API: one handle over any loaded model, taking the inputs users have and returning numpy."""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import torch
from PIL import Image

from polymodal.api.audio import AudioSegment, AudioSegments, segment_sound
from polymodal.api.inputs import ImageInput, MediaInput, SoundInput, decode_batch, modality_of, to_inputs
from polymodal.api.precision import choose_tower_precisions
from polymodal.api.predictor import PredictorBackend
from polymodal.api.timeline import TimedCaption, merge_repeats
from polymodal.api.video import VideoInput, VideoSegments, middle_frame, segment_clip, to_clips
from polymodal.backends import ANSWER, CAPTION, EMBED, GENERATE, PREDICT, Backend, TaskNotSupported, load_backend
from polymodal.backends.base import accepts, embed, logit_scale, media, text_lengths, video_embedding
from polymodal.backends.video import IMAGE_FRAMES
from polymodal.chunking import ChunkSizer, batched, map_in_sized_calls
from polymodal.data.processors import ENCODED_MEMO
from polymodal.data.readers.base import embedded_kind
from polymodal.data.video import Clip, VideoSampling
from polymodal.hardware import PrecisionChoice, choose_precision, normalize_precision, release_idle_threads
from polymodal.modules.generators.unet import SAMPLERS

if TYPE_CHECKING:
    from polymodal.data.errors import BadSampleLog
    from polymodal.export.towers import TowerRuntime
    from polymodal.fit import Predictions, Problem, Table, TablePredictor

T = TypeVar("T")
# What ``generate`` accepts: beyond these a call is a mistake (or hours of CPU), not a request.
MAX_IMAGES_PER_TEXT = 64
MAX_STEPS = 1000  # the schedulers' training timesteps: more sampling steps than that are not steps
MAX_GUIDANCE = 50.0
MAX_SEED = 2**53 - 1  # every seed survives a JSON round trip through JavaScript numbers


def _batches_by_length(items: Sequence[T], lengths: Sequence[int], size: int) -> Iterator[Sequence[T]]:
    """``items`` sorted by ``lengths`` (ascending) in batches padded to at most ``size`` x the longest length: a
    batch of short items holds more than ``size`` of them, and none needs more room than ``size`` of the longest."""
    budget = size * max(max(lengths, default=1), 1)
    start = 0
    for end, length in enumerate(lengths, start=1):
        if (end - start) * max(length, 1) > budget:
            yield items[start : end - 1]
            start = end - 1
    if start < len(items):
        yield items[start:]


class Model:
    """A loaded model: ``embed`` (``embed_text``, ``embed_image``, ``embed_audio``, ``embed_video``), ``classify``,
    ``caption``, ``answer``, ``generate``; ``predict`` for a fusion classifier or a fitted table predictor
    (``polymodal fit``).

    Images may be paths, bytes, PIL images or numpy arrays (H, W[, C]); sounds (and other media the model's
    processors decode) paths or encoded bytes (WAV, FLAC, OGG, MP3); videos paths, encoded bytes or decoded
    :class:`~polymodal.data.video.Clip` frames; one input or a list. A model with a video tower embeds clips with
    it; an image-text model without one embeds them zero-shot with its image tower per frame
    (``video_embedding`` says which). Work is done in
    batches of ``batch_size``. ``precision="auto"`` runs under bf16 autocast where the device has native bf16 and
    in fp32 elsewhere (``precision_choice`` says which and why); results are float32 either way. Given the model's
    ONNX ``export`` (``polymodal export``), each embedding tower the two share runs in onnxruntime where it measures
    faster on this machine (``export_towers="all"``: every one); ``tower_runtimes`` says which and why.
    ``export="auto"`` exports the model once into a cache (``~/.cache/polymodal/exports``) and reuses it.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        device: str = "cpu",
        precision: str = "auto",
        batch_size: int = 32,
        export: str | os.PathLike[str] | None = None,
        export_towers: str = "auto",
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = torch.device(device)
        # A backend that runs in one precision only (a fitted predictor) says which.
        fixed: PrecisionChoice | None = getattr(backend, "precision_choice", None)
        if fixed is not None and normalize_precision(precision) not in ("auto", fixed.precision):
            raise ValueError(f"model {backend.name} runs in {fixed.precision} only, not {precision}: {fixed.reason}")
        self.precision_choice = fixed or choose_precision(precision, self.device)
        self.backend = backend.to(device)
        self.precision = self.precision_choice.precision
        # Under auto, the embedding towers whose embeddings stray from fp32 in the chosen precision run in fp32.
        self.tower_precisions: dict[str, PrecisionChoice] = choose_tower_precisions(
            self.backend, self.precision_choice, self.device
        )
        self.batch_size = batch_size
        # Per thread count, then per media modality: the call size with the least time per item, learned as it
        # embeds (a server's thread budget follows the load, and the fastest size moves with the thread count).
        self._chunk_sizers: dict[int, dict[str, ChunkSizer]] = {}
        self._sizing_threads = torch.get_num_threads()  # the thread count of the latest sized call
        # Per embedding tower shared with ``export``: onnxruntime or PyTorch, whichever measured faster here.
        self.tower_runtimes: dict[str, TowerRuntime] = {}
        if export is not None:
            from polymodal.export.towers import with_export_towers

            self.backend, self.tower_runtimes = with_export_towers(
                self.backend, export, towers=export_towers, autocast=self._autocast, batch_size=batch_size
            )
            # A tower that runs from the export does not run in PyTorch's precision: nothing to report for it.
            onnx = {m for m, choice in self.tower_runtimes.items() if choice.runtime == "onnx"}
            self.tower_precisions = {m: c for m, c in self.tower_precisions.items() if m not in onnx}

    @property
    def chunk_sizers(self) -> dict[str, ChunkSizer]:
        """Per media modality, the call-size learner at the thread count of the latest embedding call (torch's
        thread count is per thread: a server computes in its batcher thread and reports from another)."""
        return self._chunk_sizers.setdefault(self._sizing_threads, {})

    def _sizer(self, modality: str) -> ChunkSizer:
        """The call-size learner of ``modality`` at the calling thread's torch thread count."""
        threads = torch.get_num_threads()
        self._sizing_threads = threads
        return self._chunk_sizers.setdefault(threads, {}).setdefault(modality, ChunkSizer(self.batch_size))

    # -- what it is -------------------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.backend.name

    @property
    def source(self) -> str:
        """What ``polymodal.load`` takes to load this model again (an absolute directory or a model name)."""
        return self.backend.source

    @property
    def identity(self) -> str:
        return self.backend.identity

    @property
    def capabilities(self) -> frozenset[str]:
        return self.backend.capabilities

    @property
    def embed_dim(self) -> int | None:
        return self.backend.embed_dim

    def __repr__(self) -> str:
        return f"Model({self.name!r}, capabilities={sorted(self.capabilities)}, precision={self.precision!r})"

    @property
    def predictor(self) -> TablePredictor | None:
        """The fitted table predictor of a ``polymodal fit`` directory (its ``problem``, ``columns``, ``summary``);
        None for any other model."""
        return self.backend.predictor if isinstance(self.backend, PredictorBackend) else None

    @property
    def predict_problem(self) -> Problem | None:
        """What ``predict`` predicts (``kind``, ``label``, ``classes``): a fitted predictor's problem, or a fusion
        classifier's, as its saved model records its outputs; None for a model that does not predict."""
        if self.predictor is not None:
            return self.predictor.problem
        if PREDICT not in self.capabilities:
            return None
        from polymodal.api.fusion import fusion_problem

        return fusion_problem(self.backend)  # type: ignore[arg-type]

    @property
    def predict_columns(self) -> dict[str, str]:
        """The columns ``predict`` knows, name -> kind: a fitted predictor's (``ignore`` for those it does not read),
        or a fusion classifier's modalities (each its own kind: image, audio, video, text ...)."""
        if self.predictor is not None:
            return {c.name: c.kind for c in self.predictor.columns}
        return {m: m for m in sorted(self.media(PREDICT))}

    def media(self, capability: str = EMBED) -> frozenset[str]:
        """The modalities the model has a tower for, for ``capability`` (for ``embed``: those it embeds into its
        space); ``accepts`` adds video embedded through the image tower."""
        return media(self.backend, capability)

    @property
    def video_embedding(self) -> str | None:
        """How ``embed("video", ...)`` works: ``"video tower"`` (the model's own), ``"image tower per frame ..."``
        (zero-shot, an image-text model without a video tower: CLIP4Clip's meanP over ``VideoSampling()`` frames,
        8 uniform ones, each through the model's image processing) or None (the model cannot embed clips)."""
        return video_embedding(self.backend)

    def accepts(self, capability: str = EMBED) -> frozenset[str]:
        """The modalities the API takes for ``capability``: ``media`` plus, for embed, video by frames."""
        return accepts(self.backend, capability)

    def _require(self, capability: str, task: str, modality: str | None = None) -> None:
        if capability not in self.capabilities:
            raise TaskNotSupported(self.backend, task)
        if modality is not None and modality not in self.accepts(capability):
            raise TaskNotSupported(self.backend, task, modality, self.accepts(capability))

    def _source(self, capability: str, task: str) -> str:
        """The one modality ``capability`` reads items of: what a captioner describes, a question answerer is asked
        about."""
        own = sorted(self.media(capability))
        if len(own) != 1:
            raise ValueError(f"model {self.name} reads {' and '.join(own)} together to {task}; pass items of one")
        return own[0]

    def tower_precision(self, modality: str | None = None) -> PrecisionChoice:
        """The precision ``modality``'s tower runs in: the model's, or the tower's own where that differs
        (``tower_precisions``)."""
        return self.tower_precisions.get(modality or "", self.precision_choice)

    def _autocast(self, modality: str | None = None) -> contextlib.AbstractContextManager[None]:
        return self.tower_precision(modality).autocast(self.device)

    def _map(
        self,
        fn: Callable[[Sequence[T]], torch.Tensor],
        items: Sequence[T],
        lengths: Callable[[Sequence[T]], Sequence[int]] | None = None,
        sized_by: str | None = None,
        tower: str | None = None,
    ) -> np.ndarray:
        """``fn`` over batches of ``items``, rows in the order of ``items``, in ``tower``'s precision. With
        ``lengths`` (of all items), more items than a batch are batched in order of length, so each batch pads only
        to its own longest (and short items go in larger batches, see :func:`_batches_by_length`), and the rows are
        put back in order. With ``sized_by`` (a modality), batches take the size its :class:`ChunkSizer` finds
        fastest."""
        order = None
        batches = batched(items, self.batch_size)
        if lengths is not None and len(items) > self.batch_size:
            counts = np.asarray(lengths(items))
            order = [int(i) for i in np.argsort(counts, kind="stable")]
            batches = _batches_by_length([items[i] for i in order], counts[order].tolist(), self.batch_size)

        def unit_rows(chunk: Sequence[T]) -> torch.Tensor:
            # Unit length in fp32: a tower under bf16 autocast normalises in bf16 (norms off by up to 0.4%).
            return torch.nn.functional.normalize(fn(chunk).float(), dim=-1).cpu()

        with self._autocast(tower):
            if sized_by is not None:
                parts = map_in_sized_calls(self._sizer(sized_by), unit_rows, items)
            else:
                parts = [unit_rows(chunk) for chunk in batches]
        if not parts:
            return np.zeros((0, self.embed_dim or 0), dtype=np.float32)
        rows = torch.cat(parts).numpy()
        if order is None:
            return rows
        restored = np.empty_like(rows)
        restored[order] = rows
        return restored

    # -- embeddings -------------------------------------------------------------------------------------------
    def embed(self, modality: str, items: object) -> np.ndarray:
        """(N, D) float32 unit vectors of ``items`` of ``modality`` (one of ``accepts()``): texts as strings,
        images, sounds and videos as above."""
        self._require(EMBED, "embed", modality)
        if modality == "video":
            frames = "image" if self.video_embedding == IMAGE_FRAMES else "video"
            return self._map(self._embed_clips, to_clips(items), tower=frames)  # type: ignore[arg-type]
        prepared = to_inputs(modality, items)
        if modality == "text":  # texts are batched by token count instead
            by_length = functools.partial(text_lengths, self.backend)
            # A window at a time, which the text processor's memo holds: each text is tokenized once, to be sorted
            # by length, and its ids are found again when its batch is embedded.
            windows = [prepared[start : start + ENCODED_MEMO] for start in range(0, len(prepared), ENCODED_MEMO)]
            parts = [
                self._map(lambda chunk: embed(self.backend, modality, chunk), window, by_length, tower=modality)
                for window in windows or [prepared]
            ]
            return parts[0] if len(parts) == 1 else np.concatenate(parts)
        return self._map(
            lambda chunk: embed(self.backend, modality, decode_batch(modality, chunk)),
            prepared,
            sized_by=modality,
            tower=modality,
        )

    def embed_text(self, texts: str | Sequence[str]) -> np.ndarray:
        """(N, D) float32 unit vectors."""
        return self.embed("text", texts)

    def embed_image(self, images: ImageInput | Sequence[ImageInput]) -> np.ndarray:
        """(N, D) float32 unit vectors."""
        return self.embed("image", images)

    def embed_audio(self, clips: SoundInput | Sequence[SoundInput]) -> np.ndarray:
        """(N, D) float32 unit vectors of sounds (paths, encoded bytes, Waveforms or ``(samples, rate)`` pairs),
        decoded and resampled as the model was trained; each is read from its start for the model's clip length."""
        return self.embed("audio", clips)

    def audio_segments(self, clip: str | bytes, seconds: float) -> AudioSegments:
        """A recording cut into ``seconds``-long segments at the model's sample rate, each with its start and end
        (pass their ``.sound`` to ``embed_audio`` or ``caption``), yielded as it is decoded (``count``: how many its
        length makes; ``close()`` or ``with`` lets go of the file early); see :func:`~polymodal.api.audio.segment_sound`
        for bad and cut files."""
        processor = getattr(getattr(self.backend, "saved", None), "processors", {}).get("audio")
        if processor is None:  # audio towers are polymodal models' own
            raise TaskNotSupported(self.backend, "read sounds")
        return segment_sound(clip, seconds, processor.features.sample_rate)

    def embed_video(self, clips: VideoInput | Sequence[VideoInput]) -> np.ndarray:
        """(N, D) float32 unit vectors of clips (paths, encoded bytes or decoded Clips), by the model's video tower
        or, without one, by its image tower per frame (see ``video_embedding``)."""
        return self.embed("video", clips)

    def video_sampling(self) -> VideoSampling:
        """The frames a clip is embedded from: the video processor's settings, or ``VideoSampling()`` by frames."""
        processor = getattr(getattr(self.backend, "saved", None), "processors", {}).get("video")
        return processor.sampling if processor is not None else VideoSampling()

    def video_segments(self, clip: str | bytes, seconds: float) -> VideoSegments:
        """``clip`` cut into ``seconds``-long segments, each with the frames its embedding reads (pass their
        ``.clip`` to ``embed_video``), yielded as the clip is decoded; a bad file raises BadSampleError (a bad
        header at the call, a clip that breaks off where it does)."""
        return segment_clip(clip, seconds, self.video_sampling())

    def _embed_clips(self, clips: Sequence[str | bytes | Clip]) -> torch.Tensor:
        if self.video_embedding == IMAGE_FRAMES:  # their frames through the image tower, in its learned call sizes
            sizer = self._sizer("image")
            return embed(self.backend, "video", clips, frame_batch=self.batch_size, frame_sizer=sizer)
        return embed(self.backend, "video", clips)  # the video processor decodes files and takes Clips as they are

    def _text_tensor(self, texts: list[str]) -> torch.Tensor:
        return torch.from_numpy(self.embed_text(texts))

    # -- tasks --------------------------------------------------------------------------------------------------
    def predict(
        self,
        rows: Table | str | os.PathLike[str] | Sequence[Mapping[str, Any]],
        *,
        bad_log: BadSampleLog | None = None,
    ) -> Predictions:
        """The prediction per row (``.labels``, ``.values``, ``.to_rows()``) of a fitted table predictor, or of a
        fusion classifier (its columns named after its modalities, ``media("predict")``: image, text ...): rows as
        dicts column -> value (media columns hold file paths: absolute, or relative to the working directory), a
        :class:`~polymodal.fit.Table`, or a table file. A bad file or a missing cell only removes that input; the
        errors are in ``.bad`` (and ``bad_log``, when given)."""
        self._require(PREDICT, "predict")
        if isinstance(self.backend, PredictorBackend):
            return self.backend.predict(rows, bad_log)
        from polymodal.api.fusion import predict_rows

        return predict_rows(self.backend, rows, batch_size=self.batch_size, autocast=self._autocast, bad_log=bad_log)

    def evaluate(self, rows: Table | str | os.PathLike[str] | Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """The metrics of a fitted table predictor or a fusion classifier on labelled rows (as ``predict`` takes
        them, with the label column: ``label`` for a fusion classifier): those fit.json reports for validation;
        see :meth:`polymodal.fit.TablePredictor.evaluate`."""
        self._require(PREDICT, "evaluate a table")
        if isinstance(self.backend, PredictorBackend):
            return self.backend.evaluate(rows)
        from polymodal.api.fusion import evaluate_rows

        return evaluate_rows(self.backend, rows, batch_size=self.batch_size, autocast=self._autocast)

    def classify(
        self,
        items: ImageInput | MediaInput | Sequence[ImageInput | MediaInput],
        labels: Sequence[str],
        *,
        modality: str | None = None,
        templates: str | Sequence[str] = "simple",
        top_k: int | None = None,
    ) -> list[list[tuple[str, float]]]:
        """Zero-shot classification of images, sounds or clips (``modality``: by default sounds or clips when every
        item is one, by its file's extension, else images): per item, (label, probability) pairs, most probable
        first.

        ``templates`` is a template set name (see ``polymodal.evaluate.prompts.TEMPLATES``) or a list of format
        strings with one ``{}``; class embeddings average over the templates (CLIP's prompt ensembling).
        """
        from polymodal.evaluate.prompts import TEMPLATES, zero_shot_classifier

        modality = modality or embedded_kind(modality_of(items), self.accepts())
        self._require(EMBED, "classify", modality)
        if "text" not in self.accepts():  # labels are matched as texts: a model of one tower embeds none
            task = "classify by text labels (zero-shot)"
            raise TaskNotSupported(self.backend, task, "without a text tower", self.capabilities)
        labels = [str(label).strip() for label in labels]
        if len(labels) < 2 or any(not label for label in labels):
            raise ValueError("classify needs at least two non-empty labels")
        if len(set(labels)) != len(labels):
            raise ValueError(f"labels must be distinct, got {labels}")
        if isinstance(templates, str):
            if templates not in TEMPLATES:
                raise ValueError(f"unknown template set {templates!r}; choose from {', '.join(sorted(TEMPLATES))}")
            templates = TEMPLATES[templates]
        classes = zero_shot_classifier(self._text_tensor, labels, list(templates))  # (C, D)
        item_emb = torch.from_numpy(self.embed(modality, items))  # (N, D)
        scale = logit_scale(self.backend, modality)  # the temperature it learned: calibrated probabilities
        probs = (scale * item_emb @ classes.float().T).softmax(dim=-1)  # (N, C)
        k = len(labels) if top_k is None else max(1, min(top_k, len(labels)))
        values, indices = probs.topk(k, dim=-1)
        return [[(labels[i], float(v)) for v, i in zip(vs.tolist(), ids.tolist())] for vs, ids in zip(values, indices)]

    def caption(
        self,
        items: ImageInput | MediaInput | Sequence[ImageInput | MediaInput],
        *,
        max_new_tokens: int = 30,
        num_beams: int = 1,
    ) -> list[str]:
        """A caption per item of the modality the captioner describes (images, or sounds for an audio captioner)."""
        self._require(CAPTION, "caption")
        source = self._source(CAPTION, "caption")
        prepared = to_inputs(source, items)
        out: list[str] = []
        with self._autocast():
            for chunk in batched(prepared, self.batch_size):
                batch = decode_batch(source, chunk)
                out.extend(self.backend.caption(batch, max_new_tokens=max_new_tokens, num_beams=num_beams))
        return out

    def caption_segments(
        self,
        clip: str | os.PathLike[str] | bytes,
        seconds: float,
        *,
        max_new_tokens: int = 30,
        num_beams: int = 1,
        merge: bool = True,
        progress: Callable[[int, int], None] | None = None,
        max_segments: int | None = None,
    ) -> list[TimedCaption]:
        """A long clip or recording described ``seconds`` at a time: each segment's caption with its start and end;
        with ``merge``, consecutive segments captioned alike as one span (a timeline of what happens). A captioner
        of clips reads each segment's frames, one of images the segment's middle frame, one of sounds its sound.
        ``progress(done, total)`` counts segments; more than ``max_segments`` is a ValueError before any is
        captioned. A bad file raises BadSampleError."""
        self._require(CAPTION, "caption")
        source = self._source(CAPTION, "caption")
        ref = os.fspath(clip) if isinstance(clip, os.PathLike) else clip
        with contextlib.ExitStack() as files:  # a caption that fails lets go of the recording at once
            if source == "audio":
                sounds = files.enter_context(self.audio_segments(ref, seconds))
                segments: Iterable[AudioSegment] = sounds
                if sounds.count is None:  # no length given (a live-recorded WebM): read whole, up to an hour
                    segments = list(sounds)
                total = sounds.count if sounds.count is not None else len(segments)  # type: ignore[arg-type]
                media: Iterator[tuple[float, float, object]] = ((s.start, s.end, s.sound) for s in segments)
                per_call = self.batch_size
            elif source in ("video", "image"):
                sampling = self.video_sampling()  # a picture captioner reads one frame of each segment: its middle
                if source == "image":
                    sampling = sampling.model_copy(update={"frames": 1})
                clips = files.enter_context(segment_clip(ref, seconds, sampling))
                media = ((s.start, s.end, s.clip if source == "video" else middle_frame(s.clip)) for s in clips)
                total, per_call = clips.count, clips.per_call(sampling.frames, self.batch_size)
            else:
                raise ValueError(f"model {self.name} captions {source}; only clips and sounds are cut into segments")
            if max_segments is not None and total > max_segments:
                raise ValueError(f"{total} segments of {seconds:g} s, more than {max_segments}: take longer segments")
            timed: list[TimedCaption] = []
            for chunk in batched(media, per_call):  # full-size frames: a bounded number of bytes of them at once
                texts = self.caption([item for *_, item in chunk], max_new_tokens=max_new_tokens, num_beams=num_beams)
                timed.extend(TimedCaption(start, end, text) for (start, end, _), text in zip(chunk, texts))
                if progress is not None:
                    progress(len(timed), total)
        return merge_repeats(timed) if merge else timed

    def answer(
        self,
        items: ImageInput | MediaInput | Sequence[ImageInput | MediaInput],
        questions: str | Sequence[str],
    ) -> list[str]:
        """One answer per (item, question) pair, the items of the modality the model answers about (images, or
        clips and sounds as paths or bytes); one item with many questions, or many with one, broadcast."""
        self._require(ANSWER, "answer questions")
        source = self._source(ANSWER, "answer questions")
        prepared = to_inputs(source, items)
        questions = [questions] if isinstance(questions, str) else list(questions)
        if len(prepared) == 1 and len(questions) > 1:
            prepared = prepared * len(questions)
        elif len(questions) == 1 and len(prepared) > 1:
            questions = questions * len(prepared)
        if len(prepared) != len(questions):
            raise ValueError(
                f"got {len(prepared)} {source} inputs and {len(questions)} questions; "
                "pass one of either or equal numbers"
            )
        pairs = list(zip(prepared, questions))
        out: list[str] = []
        with self._autocast():
            for chunk in batched(pairs, self.batch_size):
                out.extend(self.backend.answer(decode_batch(source, [p[0] for p in chunk]), [p[1] for p in chunk]))
        return out

    def texts_per_generate_call(self, n: int) -> int:
        """How many texts one model call of :meth:`generate` takes at ``n`` images each: as many as fit
        ``batch_size`` images, at least one."""
        return max(1, self.batch_size // n)

    def generate(
        self,
        texts: str | Sequence[str],
        n: int = 1,
        steps: int = 25,
        guidance: float = 3.0,
        seed: int = 0,
        sampler: str = "ddim",
    ) -> list[Image.Image]:
        """``n`` RGB images per text, text-major (``n`` for the first text, then the next ...), by a text-to-image
        model. Seeded: the same text, options and seed give the same pixels, whatever else is in the call (up to
        float rounding: kernels may sum in another order at another batch size).

        ``steps``, ``guidance`` (classifier-free; 1 turns it off) and ``sampler`` (one of ``SAMPLERS``) drive a
        diffusion model's sampling; a GAN draws in one pass and ignores them. Texts share model calls, as many per
        call as fit ``batch_size`` images (at least one text, whose ``n`` images stay together).
        """
        self._require(GENERATE, "generate images")
        prompts = check_generate_options(texts, n=n, steps=steps, guidance=guidance, seed=seed, sampler=sampler)
        out: list[Image.Image] = []
        # Texts batch safely: a model draws each text's noise from that text's own seeded generator.
        with self._autocast():
            for chunk in batched(prompts, self.texts_per_generate_call(n)):
                out.extend(
                    self.backend.generate(
                        chunk, num_per_text=n, steps=steps, guidance=guidance, seed=seed, sampler=sampler
                    )
                )
        return out


def check_generate_options(
    texts: str | Sequence[str], *, n: int, steps: int, guidance: float, seed: int, sampler: str
) -> list[str]:
    """The prompts of a ``generate`` call as a list, once every option is within bounds (else a ValueError that
    names the option and its range)."""
    prompts = [texts] if isinstance(texts, str) else list(texts)
    if not prompts:
        raise ValueError("generate needs at least one text")
    for i, prompt in enumerate(prompts):
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError(f"text #{i} is empty: give a prompt such as 'a red circle above a blue square'")
    for name, value, high in (("n", n, MAX_IMAGES_PER_TEXT), ("steps", steps, MAX_STEPS), ("seed", seed, MAX_SEED)):
        low = 0 if name == "seed" else 1
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"{name} must be an integer in {low}..{high}, got {value!r}")
    if isinstance(guidance, bool) or not isinstance(guidance, (int, float)) or not 0.0 <= guidance <= MAX_GUIDANCE:
        raise ValueError(f"guidance must be a number in 0..{MAX_GUIDANCE:g}, got {guidance!r}")
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
    return prompts


def load(
    model: str | Path | None = None,
    *,
    device: str = "cpu",
    precision: str = "auto",
    batch_size: int = 32,
    export: str | os.PathLike[str] | None = None,
    export_towers: str = "auto",
) -> Model:
    """Load a model: a polymodal model or run directory, a Hugging Face directory or hub id, ``polymodal-base``
    (the offline default, used when ``model`` is None), or a ``polymodal fit`` directory: a table predictor, whose
    :meth:`Model.predict` takes rows and whose other tasks are refused (it runs on the CPU, in fp32). ``export``:
    the model's ONNX export, whose towers run where they are faster (see :class:`Model`)."""
    from polymodal.fit import is_fit_dir

    if model is not None and is_fit_dir(Path(model).expanduser()):
        backend: Backend = PredictorBackend.load(Path(model).expanduser())
    else:
        backend = load_backend(model)
    loaded = Model(
        backend, device=device, precision=precision, batch_size=batch_size, export=export, export_towers=export_towers
    )
    # Loading computed in this thread; if the model is then used from another (a web framework's worker thread),
    # this thread's idle OpenMP workers would halve its speed on small batches (see release_idle_threads).
    release_idle_threads()
    return loaded
