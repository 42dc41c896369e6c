"""Per embedding tower, whether ``precision="auto"``'s reduced precision keeps its embeddings close to fp32.

bf16 autocast is close to fp32 for transformer towers (worst cosine 0.99997-0.99999 on a ViT-B/32-size CLIP) but
not for every tower: the demo CLIP's small conv image tower strays to a worst cosine of 0.94 on ShapesWorld images.
So under ``auto`` each tower with a fixed sample (images, texts, sounds, clips) is checked once here: one that
falls below ``COSINE_FLOOR`` on the sample runs in fp32. The result is cached per model, machine, torch and polymodal
version.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import replace
from pathlib import Path

import torch

from polymodal.backends.base import EMBED, Backend, embed, media
from polymodal.fsutil import default_cache_dir, write_atomic
from polymodal.hardware import PRECISION_ENV, PrecisionChoice, cpu_info, kernels_note
from polymodal.version import __version__

PRECISION_DIR = "precision"  # under polymodal's cache directory: one small JSON per model and machine
log = logging.getLogger(__name__)


def choose_tower_precisions(
    backend: Backend, choice: PrecisionChoice, device: torch.device
) -> dict[str, PrecisionChoice]:
    """The towers that run in fp32 although the model runs in ``choice`` (an ``auto`` choice of bf16 or fp16):
    those whose embeddings of the fixed sample in that precision have a worst cosine under COSINE_FLOOR to fp32."""
    if choice.requested != "auto" or choice.precision == "fp32" or os.environ.get(PRECISION_ENV, "").strip():
        return {}  # asked for by name (or pinned by the environment): runs as asked
    from polymodal.export.towers import SAMPLES, fixed_sample
    from polymodal.export.variants import COSINE_FLOOR

    towers = sorted(media(backend, EMBED) & SAMPLES.keys())
    if not towers:
        return {}
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else ""
    parts = [backend.identity, choice.precision, str(device), gpu, cpu_info().describe(), kernels_note()]
    key = "|".join([*parts, f"torch {torch.__version__}", f"polymodal {__version__}"])
    cached = _cache_file(f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.json")
    worst: dict[str, float | None] = {}  # None: no sample can be made here (cached too: not tried each load)
    if cached is not None and cached.is_file():
        try:
            read = json.loads(cached.read_text(encoding="utf-8")).items()
            worst = {m: None if v is None else float(v) for m, v in read if m in towers}
        except (OSError, ValueError, TypeError, AttributeError):  # damaged: measured again
            worst = {}
    if set(worst) != set(towers):
        samples = {m: fixed_sample(m) for m in towers}  # built only when measuring
        worst = {m: None if x is None else _worst_cosine(backend, m, x, choice, device) for m, x in samples.items()}
        try:
            if cached is not None:
                cached.parent.mkdir(parents=True, exist_ok=True)
                write_atomic(cached, json.dumps(worst))
        except OSError as error:  # a read-only cache: measured again next time
            log.info("tower precision check not cached: %s", error)
    kept = {}
    for modality, cosine in worst.items():
        if cosine is not None and not cosine >= COSINE_FLOOR:  # NaN (bf16 overflowed) strays too
            reason = (
                f"{choice.precision} autocast strays from fp32 on this tower (worst cosine {cosine:.5f} on a fixed "
                f"sample, floor {COSINE_FLOOR})"
            )
            kept[modality] = replace(choice, precision="fp32", reason=reason)
            log.info("%s tower in fp32: %s", modality, reason)
    return kept


def _cache_file(name: str) -> Path | None:
    """``name`` under polymodal's cache directory; None where there is none (no home directory)."""
    try:
        return default_cache_dir() / PRECISION_DIR / name
    except RuntimeError:
        return None


def _worst_cosine(
    backend: Backend, modality: str, inputs: list[object], choice: PrecisionChoice, device: torch.device
) -> float:
    from polymodal.export.variants import cosines

    with torch.inference_mode():
        reference = embed(backend, modality, inputs).float().cpu().numpy()
        with choice.autocast(device):
            reduced = embed(backend, modality, inputs).float().cpu().numpy()
    return float(cosines(reduced, reference).min())
