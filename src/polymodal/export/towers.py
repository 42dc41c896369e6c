"""A model's embedding towers run from its ONNX export where onnxruntime is faster on this machine.

Which runtime is faster depends on the CPU and the tower: a small conv image tower ran 2.4x faster in onnxruntime
than in PyTorch on AVX2 kernels, while a BERT text tower is faster in PyTorch, which skips its padding. So each tower
the export and the model share is timed both ways on a fixed sample when the model loads, and the export is checked
against the model in fp32 on that sample (cosine, so an export of another model is refused); when the two rates come
close to the margin, both are timed in calls of the model's batch size too. The tower runs in
onnxruntime when it is at least ``SPEEDUP_MARGIN`` faster there and keeps cosine >= ``COSINE_FLOOR`` to fp32 (or is
no further from fp32 than PyTorch in the model's precision); otherwise in PyTorch.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from polymodal.backends.base import EMBED, Backend, embed, media, text_lengths
from polymodal.export.check import SAMPLE_TEXTS
from polymodal.export.onnx import (
    MANIFEST_FILE,
    SAMPLE_SIZE,
    choose_again,
    export_onnx,
    sample_images,
    sample_sounds,
    sample_videos,
)
from polymodal.export.runtime import OnnxEmbedder
from polymodal.export.source import ExportError, NotExportable
from polymodal.export.variants import COSINE_FLOOR, SPEEDUP_MARGIN, chosen_elsewhere, cosines
from polymodal.fsutil import default_cache_dir, write_atomic
from polymodal.version import __version__

TOWER_CHOICES = ("auto", "all")
AUTO_EXPORT = "auto"  # export= value: the model's export in the cache, made on first use
EXPORTS_DIR = "exports"  # under polymodal's cache directory
FAILED_SUFFIX = ".failed"  # beside a cached export's directory: why the model could not be exported
# Part of a cached export's key: changed whenever what an export holds changes (its graphs, its variants), so that
# a cache made by an older polymodal of the same version number is not reused. 2: int8-avx2, EOS-only CLIP text.
CACHE_FORMAT = "export format 2"
log = logging.getLogger(__name__)
ROUNDS = 3  # timed calls per runtime after a warm-up; the fastest counts
# Rates on the sample within this factor of the margin, either way: both runtimes are timed again in calls of the
# model's batch size, and each counts at its faster call size (a close call on a few items can turn on a batch).
CLOSE_CALL = 1.5
# Below this the export is not of this model (another checkpoint, other preprocessing), not merely less precise.
SAME_MODEL_COSINE = 0.99
# What each tower is timed and checked on: decoded inputs, so preprocessing and tokenizing are part of both runs.
SAMPLES: dict[str, Callable[[], list[Any]]] = {
    "image": lambda: sample_images(SAMPLE_SIZE),
    "audio": lambda: sample_sounds(SAMPLE_SIZE),
    "video": lambda: sample_videos(SAMPLE_SIZE),
    "text": lambda: list(SAMPLE_TEXTS),
}


@functools.cache
def _built_sample(modality: str) -> tuple[Any, ...] | None:
    try:
        return tuple(SAMPLES[modality]())
    except ImportError as error:
        log.info("no fixed %s sample: %s", modality, error)
        return None


def fixed_sample(modality: str) -> list[Any] | None:
    """``modality``'s fixed sample, made once per process (a load checks precision, then the export, on it); None
    where there is none, or it cannot be made here (sounds need soundfile, clips PyAV, as reading any does)."""
    if modality not in SAMPLES:
        return None
    built = _built_sample(modality)
    return None if built is None else list(built)


@dataclass(frozen=True)
class TowerRuntime:
    """Where one embedding tower runs and why."""

    modality: str
    runtime: str  # "onnx" or "torch"
    reason: str
    variant: str | None = None  # the export's variant onnxruntime runs
    torch_items_per_second: float | None = None
    onnx_items_per_second: float | None = None
    cosine_min: float | None = None  # onnxruntime against PyTorch fp32 on the sample, worst row
    torch_cosine_min: float | None = None  # PyTorch in the model's precision against PyTorch fp32, worst row

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        """``image tower in onnxruntime: faster here: ...``."""
        return f"{self.modality} tower in {'onnxruntime' if self.runtime == 'onnx' else 'PyTorch'}: {self.reason}"


class ExportTowers:
    """A backend whose embeddings of ``onnx_modalities`` come from an export in onnxruntime; everything else
    (other towers, captioning, answering, its attributes) is the wrapped backend's."""

    def __init__(self, backend: Backend, embedder: OnnxEmbedder, onnx_modalities: frozenset[str]) -> None:
        self.backend = backend
        self.embedder = embedder
        self.onnx_modalities = onnx_modalities

    def __getattr__(self, name: str) -> Any:
        if name == "backend":  # not set yet (copy, pickle): no endless lookup
            raise AttributeError(name)
        return getattr(self.backend, name)

    def embed(self, modality: str, refs: Sequence[Any]) -> torch.Tensor:
        if modality in self.onnx_modalities:
            # The export takes fp32 inputs: its preprocessing (an audio tower's mel features, a Clip's frames) must
            # not run in the bf16 autocast the model keeps for its PyTorch towers.
            with torch.autocast("cpu", enabled=False):
                return torch.from_numpy(self.embedder.embed(modality, refs))
        return embed(self.backend, modality, refs)

    def embed_images(self, images: Sequence[Any]) -> torch.Tensor:
        return self.embed("image", images)

    def embed_text(self, texts: Sequence[str]) -> torch.Tensor:
        return self.embed("text", texts)

    def text_lengths(self, texts: Sequence[str]) -> list[int]:
        """Token counts by the tokenizer that will embed ``texts``: the export's when its text tower runs them (which
        then finds their ids again), else the wrapped backend's."""
        if "text" in self.onnx_modalities:
            return self.embedder.text_lengths(texts)
        return text_lengths(self.backend, texts)

    def to(self, device: str | torch.device) -> ExportTowers:
        self.backend = self.backend.to(device)
        return self


def _best_rate(fn: Callable[[], Any], items: int) -> float:
    """Items/s of ``fn``'s fastest of ``ROUNDS`` calls; the caller has called it once already (the warm-up)."""
    best = float("inf")
    for _ in range(ROUNDS):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return items / best


def choose_tower_runtime(
    backend: Backend,
    embedder: OnnxEmbedder,
    modality: str,
    towers: str,
    autocast: Callable[[str], contextlib.AbstractContextManager[Any]],
    batch_size: int | None = None,
) -> TowerRuntime:
    """Time and check ``modality``'s tower in PyTorch (under ``autocast(modality)``, as the model runs it) and in the
    export, on the fixed sample and, in a close call, in calls of ``batch_size`` too."""
    variant = embedder.variants[modality]
    inputs = fixed_sample(modality)
    if inputs is None:
        return TowerRuntime(modality, "torch", f"no sample to check the export's {modality} tower on", variant)

    def by_torch(precise: bool = False, items: list[Any] = inputs) -> np.ndarray:
        with torch.inference_mode(), contextlib.nullcontext() if precise else autocast(modality):
            return embed(backend, modality, items).float().cpu().numpy()

    def by_onnx(items: list[Any] = inputs) -> np.ndarray:
        return embedder.embed(modality, items)

    # Both runtimes against the model in fp32: the export must be this model's, and may replace PyTorch when it is
    # as accurate as the floor asks or as PyTorch itself is in its precision (bf16 autocast strays too).
    reference = by_torch(precise=True)
    worst = float(cosines(by_onnx(), reference).min())
    if worst < SAME_MODEL_COSINE:
        raise ExportError(
            f"{embedder.directory}: its {modality} tower is not this model's: cosine {worst:.4f} to the model's own "
            f"fp32 embeddings of a fixed sample (an export of another checkpoint?)"
        )
    torch_worst = float(cosines(by_torch(), reference).min())  # these first calls were the warm-ups
    torch_rate, onnx_rate = _best_rate(by_torch, len(inputs)), _best_rate(by_onnx, len(inputs))
    calls = f"calls of {len(inputs)}"
    strays = worst < min(COSINE_FLOOR, torch_worst)
    close = SPEEDUP_MARGIN / CLOSE_CALL <= onnx_rate / torch_rate <= SPEEDUP_MARGIN * CLOSE_CALL
    # (A text batch here is padded to its longest sample, as the model's length-sorted batches are to theirs.)
    if close and towers == "auto" and not strays and batch_size is not None and batch_size > len(inputs):
        batch = [inputs[i % len(inputs)] for i in range(batch_size)]
        by_torch(items=batch)  # warm-ups: a new shape
        by_onnx(batch)
        torch_rate = max(torch_rate, _best_rate(lambda: by_torch(items=batch), batch_size))
        onnx_rate = max(onnx_rate, _best_rate(lambda: by_onnx(batch), batch_size))
        calls = f"the faster of calls of {len(inputs)} and {batch_size} for each"
    measured = (
        f"{onnx_rate:.0f} against {torch_rate:.0f} items/s in PyTorch ({calls}); cosine to fp32 {worst:.5f} against "
        f"{torch_worst:.5f}"
    )
    if towers == "all":
        runtime, reason = "onnx", f"asked for ({measured})"
    elif strays:
        runtime, reason = "torch", f"onnxruntime {variant} strays from fp32 here ({measured})"
    elif onnx_rate < SPEEDUP_MARGIN * torch_rate:
        runtime, reason = "torch", f"onnxruntime {variant} not {SPEEDUP_MARGIN}x faster ({measured})"
    else:
        runtime, reason = "onnx", f"faster here: {measured}"
    return TowerRuntime(
        modality,
        runtime,
        reason,
        variant,
        round(torch_rate, 1),
        round(onnx_rate, 1),
        round(worst, 6),
        round(torch_worst, 6),
    )


def cached_export(backend: Backend) -> Path:
    """The ONNX export of ``backend``'s model under polymodal's cache (``$POLYMODAL_CACHE_DIR/exports``, default
    ``~/.cache/polymodal/exports``), made on first use (its variants timed and chosen on this machine) and found
    again by the model's content identity."""
    import onnxruntime

    if not Path(backend.source).is_dir():  # a packaged model's name or a hub id: nothing on disk to export from
        raise ExportError(f"{backend.source} is not a model directory")
    key = (
        f"{backend.identity}|polymodal {__version__}|{CACHE_FORMAT}|onnxruntime {onnxruntime.__version__}"
        f"|torch {torch.__version__}"
    )
    directory = default_cache_dir() / EXPORTS_DIR / hashlib.sha256(key.encode()).hexdigest()[:24]
    manifest, failed = directory / MANIFEST_FILE, directory.with_suffix(FAILED_SUFFIX)
    if manifest.is_file() and not _chosen_elsewhere(manifest):
        return directory
    if failed.is_file():  # this model cannot be exported: not tried again at each load
        raise ExportError(_remembered(failed))
    directory.parent.mkdir(parents=True, exist_ok=True)
    with open(directory.with_suffix(".lock"), "w") as lock:  # one process exports; the others wait and reuse it
        fcntl.flock(lock, fcntl.LOCK_EX)
        if failed.is_file():
            raise ExportError(_remembered(failed))
        if not manifest.is_file():
            log.warning("exporting %s's towers to ONNX once (reused from %s later)", backend.name, directory)
            try:
                export_onnx(backend.source, directory, overwrite=True)
            except NotExportable as error:  # the model's structure, not this machine or this moment: remembered
                with contextlib.suppress(OSError):  # a read-only cache: tried again next time
                    write_atomic(failed, str(error))
                raise
        elif elsewhere := _chosen_elsewhere(manifest):  # a cache shared between machines, or an ISA cap
            log.warning(
                "choosing the cached export's variants again for this machine (they were chosen on %s)", elsewhere
            )
            choose_again(directory)
    return directory


def _remembered(failed: Path) -> str:
    return f"{failed.read_text(encoding='utf-8')} (remembered in {failed}: delete it to try again)"


def _chosen_elsewhere(manifest: Path) -> str | None:
    return chosen_elsewhere(json.loads(manifest.read_text(encoding="utf-8")))


def with_export_towers(
    backend: Backend,
    export: str | os.PathLike[str],
    *,
    towers: str = "auto",
    autocast: Callable[[str], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext,
    batch_size: int | None = None,
) -> tuple[Backend, dict[str, TowerRuntime]]:
    """``backend`` with the towers of the export at ``export`` that run faster in onnxruntime here (``towers="all"``:
    every tower the two share), and where each embedding tower runs and why. ``export="auto"``: the model's export
    in the cache, made now if missing; a model that cannot be exported keeps every tower in PyTorch, with the
    reason."""
    if towers not in TOWER_CHOICES:
        raise ValueError(f"towers must be one of {', '.join(TOWER_CHOICES)}, got {towers!r}")
    if str(export) == AUTO_EXPORT and not Path(export).is_dir():
        if not media(backend, EMBED):
            log.warning("export=auto: %s has no embedding towers to export; it runs in PyTorch", backend.name)
            return backend, {}
        try:
            export = cached_export(backend)
        except (ValueError, ImportError, OSError) as error:  # not exportable (ExportError), no onnxruntime, ...
            if towers == "all":
                raise ExportError(f"cannot export {backend.name}: {error}") from error
            log.warning("export=auto: cannot export %s (%s); its towers run in PyTorch", backend.name, error)
            reason = f"no ONNX export: {error}"
            return backend, {m: TowerRuntime(m, "torch", reason) for m in sorted(media(backend, EMBED))}
    # The process computes with torch too: onnxruntime's threads spin-waiting between runs would take its cores.
    embedder = OnnxEmbedder(Path(export).expanduser(), spinning=False)
    shared = sorted(set(embedder.modalities) & media(backend, EMBED))
    if not shared:
        raise ExportError(
            f"{embedder.directory}: its towers ({', '.join(embedder.modalities)}) are none of the model's "
            f"({', '.join(sorted(media(backend, EMBED))) or 'it embeds nothing'})"
        )
    runtimes = {m: choose_tower_runtime(backend, embedder, m, towers, autocast, batch_size) for m in shared}
    onnx = frozenset(m for m, choice in runtimes.items() if choice.runtime == "onnx")
    if towers == "all" and onnx != set(shared):
        left = ", ".join(f"{m}: {runtimes[m].reason}" for m in shared if m not in onnx)
        raise ExportError(f"{embedder.directory}: not every tower can run from the export ({left})")
    return (ExportTowers(backend, embedder, onnx) if onnx else backend), runtimes
