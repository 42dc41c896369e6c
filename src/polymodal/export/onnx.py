"""Export an embedding model's towers to ONNX: ``image_encoder.onnx``, ``text_encoder.onnx``, ``audio_encoder.onnx``,
``video_encoder.onnx`` (those the model has) and ``export.json`` (inputs, outputs, preprocessing, audio features, video
sampling), plus the tokenizer.

Exporter: ``torch.onnx.export(..., dynamo=True)``, the torch.export-based exporter that is the
default since torch 2.9. The TorchScript exporter (``dynamo=False``) also handles these
towers on torch 2.13 and is faster to run, but it is deprecated there and emits a warning
on every call; the dynamo path is the one that keeps working. Batch (and, for text, sequence
length) are dynamic dimensions, so one file serves any batch size; audio channels and frames are fixed by the
saved features (every clip is cropped or padded to ``clip_seconds``), video frames by the saved sampling (T frames,
a shorter clip padded and masked).

Every export is checked before it is written: onnxruntime must reproduce PyTorch on the
example inputs (``max_abs_diff`` in export.json), else nothing is written. Beside each fp32 graph its int8 variants are
written, and each tower's default variant is chosen from measurements on this machine (see :mod:`.variants`): speed
on a fixed sample (which also calibrates int8-mixed), accuracy on that sample and on a held-out check set
(:mod:`.check`).
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor, nn

from polymodal.data.audio import AudioFeatures
from polymodal.data.processors import VideoProcessor
from polymodal.export.check import CHECK_BATCH, SAMPLE_TEXTS, check_set, read_check_images, read_check_texts
from polymodal.export.graph import expand_mask_queries, fold_head_transposes
from polymodal.export.source import ExportError, ExportSource, NotExportable, load_export_source, without_notes
from polymodal.export.variants import (
    CHECK_FILE,
    QUANTIZERS,
    check_default,
    choose_variants,
    save_check,
    save_sample,
    variant_file,
)
from polymodal.fsutil import atomic_directory
from polymodal.models import EmbeddingModel
from polymodal.modules.encoders.base import Encoder
from polymodal.modules.encoders.text import RecurrentEncoder
from polymodal.version import __version__

IMAGE_FILE = "image_encoder.onnx"
TEXT_FILE = "text_encoder.onnx"
AUDIO_FILE = "audio_encoder.onnx"
VIDEO_FILE = "video_encoder.onnx"
MIN_OPSET = 18  # the lowest the dynamo exporter writes (it raises a lower one to this, with a log line)
DEFAULT_OPSET = 23  # the first with an Attention operator: onnxruntime runs each attention as one kernel (.graph)
MANIFEST_FILE = "export.json"
TOKENIZER_DIR = "tokenizer"
CHECK_TOLERANCE = 1e-4
TOWERS = ("image", "text", "audio", "video")  # export and manifest order (image-text exports keep their layout)
PARTS = {m: f"{m}_encoder" for m in TOWERS}  # manifest key per modality


def require_onnx() -> None:
    """onnx, onnxscript and onnxruntime come with the ``onnx`` extra."""
    import importlib.util

    missing = [m for m in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(m) is None]
    if missing:
        raise ExportError(f"ONNX export needs {', '.join(missing)}: pip install 'polymodal[onnx]'")


class ImageTower(nn.Module):
    """pixel_values (B, 3, S, S) -> image_embeds (B, D), unit norm."""

    def __init__(self, model: EmbeddingModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: Tensor) -> Tensor:
        return self.model.embed("image", pixel_values)


class TextTower(nn.Module):
    """input_ids (B, T) int64, attention_mask (B, T) int64 1/0 -> text_embeds (B, D), unit norm.

    The mask is int64 in the graph (the ONNX convention runtimes expect) and made bool here.
    """

    def __init__(self, model: EmbeddingModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        return self.model.embed("text", input_ids, attention_mask.bool())


class MaskedTower(nn.Module):
    """The audio and video towers: ``{modality}_features``/``_frames`` float32 and ``{modality}_mask`` (B, positions)
    int64 1/0 -> ``{modality}_embeds`` (B, D), unit norm. An image encoder inside (a video tower's frame tower) is
    told it always gets some real frames."""

    def __init__(self, model: EmbeddingModel, modality: str) -> None:
        super().__init__()
        self.model, self.modality = model, modality
        for module in model.encoders[modality].modules():
            if isinstance(module, Encoder) and module.modality == "image":
                module.register_forward_pre_hook(_some_real_frames)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        return self.model.embed(self.modality, x, mask.bool())


def _some_real_frames(module: nn.Module, args: tuple[Tensor, ...]) -> None:
    """A frame tower sees only the clips' real frames, a count the exporter knows only as a symbol; telling it the
    count is not zero lets batch norm trace (its kernel branches on an empty batch)."""
    torch._check(args[0].shape[0] > 0)


def _example_video(processor: VideoProcessor) -> tuple[Tensor, Tensor]:
    """Two clips of distinct frames preprocessed and padded by polymodal's own VideoProcessor, the second half as
    long: real frames and a real padded mask, as inference makes them."""
    t, size = processor.sampling.frames, processor.preprocess.image_size
    frames = [
        processor.preprocess.to_tensor(Image.new("RGB", (size + 8, size), (40 * i % 256, 200 - 20 * i % 200, 90)))
        for i in range(t)
    ]
    batch = processor.collate([torch.stack(frames), torch.stack(frames[: max(1, t // 2)])])
    assert batch.x is not None and batch.mask is not None  # both clips are present
    return batch.x, batch.mask.long()


def _example_audio(features: AudioFeatures) -> tuple[Tensor, Tensor]:
    """Two tones through polymodal's own AudioProcessor, the second half the clip long: real features and a real
    padded mask, as inference computes them."""
    from polymodal.data.processors import AudioProcessor

    t = torch.arange(features.clip_samples) / features.sample_rate
    waves = [0.5 * torch.sin(2 * torch.pi * 440 * t), 0.5 * torch.sin(2 * torch.pi * 880 * t[: max(1, len(t) // 2)])]
    x, mask = AudioProcessor(features).batch(waves)
    assert mask is not None  # an audio batch always has a frame mask
    return x, mask.long()


SAMPLE_SIZE = 8


def _sample(modality: str, source: ExportSource, tower: Tower) -> tuple[Tensor, ...]:
    """The fixed calibration sample: int8-mixed's smoothing scales come from it and the variants are timed on it
    (their accuracy is also checked on a held-out set, :mod:`.check`). Images and texts through the export's own
    preprocessing and tokenizer (seeded, so every export of a model uses the same inputs); audio and video their
    example clips."""
    if modality == "image":
        assert source.preprocess is not None  # an image tower's source always has one
        return (torch.stack([source.preprocess.to_tensor(img) for img in sample_images(SAMPLE_SIZE)]),)
    if modality == "text":
        assert source.max_length is not None  # a text tower's source always has one
        if source.tokenizer is not None:
            ids, mask = source.tokenizer.encode_batch(list(SAMPLE_TEXTS), source.max_length)
            return ids, mask.long()
        generator = torch.Generator().manual_seed(0)
        ids = torch.randint(5, 20, (SAMPLE_SIZE, source.max_length), generator=generator)
        lengths = (torch.arange(1, SAMPLE_SIZE + 1) * source.max_length // SAMPLE_SIZE).clamp(min=1)
        return ids, (torch.arange(source.max_length) < lengths[:, None]).long()
    return tower.args


def sample_images(count: int) -> list[Image.Image]:
    """Seeded pictures with some structure (a colour gradient and a few filled shapes), not noise: activations like
    a photo's are what quantisation error depends on."""
    rng = np.random.RandomState(0)
    images = []
    for _ in range(count):
        width, height = int(rng.randint(200, 320)), int(rng.randint(200, 320))
        start, stop = rng.randint(0, 256, 3), rng.randint(0, 256, 3)
        ramp = np.linspace(0, 1, width)[None, :, None]
        pixels = (start + (stop - start) * ramp) * np.ones((height, 1, 1))
        image = Image.fromarray(pixels.astype(np.uint8))
        draw = ImageDraw.Draw(image)
        for _ in range(4):
            x0, y0 = int(rng.randint(0, width - 20)), int(rng.randint(0, height - 20))
            box = (x0, y0, x0 + int(rng.randint(10, width // 2)), y0 + int(rng.randint(10, height // 2)))
            colour = tuple(int(c) for c in rng.randint(0, 256, 3))
            (draw.ellipse if rng.rand() < 0.5 else draw.rectangle)(box, fill=colour)
        images.append(image)
    return images


def sample_sounds(count: int) -> list[bytes]:
    """Seeded sounds with some structure, FLAC-encoded: two or three ShapesWorld object sounds (a shape's timbre at
    a colour's pitch) over faint noise, 0.6 to 2.3 s long (a 2 s tower pads some and crops others)."""
    from polymodal.data.shapes import COLORS, SHAPES, SIZES
    from polymodal.data.shapes_audio import encode_flac, mix_sounds, object_sound

    sounds = []
    for i in range(count):
        rng = np.random.default_rng(i)
        seconds = 0.6 + 1.7 * i / max(count - 1, 1)
        events = [
            (
                float(at),
                object_sound(str(rng.choice(SHAPES)), str(rng.choice(list(COLORS))), str(rng.choice(list(SIZES))), rng),
            )
            for at in np.sort(rng.uniform(0, seconds * 0.8, int(rng.integers(2, 4))))
        ]
        sounds.append(encode_flac(mix_sounds(events, seconds, bool(i % 2), rng)))
    return sounds


def sample_videos(count: int) -> list[bytes]:
    """Seeded ShapesWorld clips (moving and changing shapes over a plain or textured ground), MPEG-4 at 96 px: 3 to
    3 + 4 * (count - 1) frames, so a tower of T frames pads some clips and samples others."""
    from polymodal.data.shapes_video import encode_mp4, make_clip
    from polymodal.data.video import require_av

    require_av()  # the ImportError that says how to install it
    return [encode_mp4(make_clip(0, i, 3 + 4 * i, 96, novel=False)[0]) for i in range(count)]


def _example_text(source: ExportSource) -> tuple[Tensor, Tensor]:
    # Batch 2 and length >= 2 with real padding: torch.export specialises dimensions of size 1.
    assert source.max_length is not None  # a text tower's source always has one
    length = min(8, source.max_length)
    ids = torch.randint(5, 20, (2, length))
    if source.tokenizer is not None:
        texts = ["a photo of a small red circle", "a square"]
        ids, mask = source.tokenizer.encode_batch(texts, length)
        return ids, mask.long()
    mask = torch.ones_like(ids)
    mask[1, length // 2 :] = 0
    return ids, mask


def _export_one(
    module: nn.Module,
    args: tuple[Tensor, ...],
    names: list[str],
    output: str,
    dynamic: dict[str, dict[int, Any]],
    path: Path,
    opset: int | None,
) -> tuple[float, int]:
    """Export ``module`` to ``path``; return onnxruntime's max |difference| from PyTorch on ``args``
    and the graph's ONNX opset."""
    import onnxruntime as ort

    with (
        warnings.catch_warnings(),
        without_notes("torch.onnx._internal.exporter._registration", "torchvision is not installed"),
    ):
        warnings.simplefilter("ignore")  # the exporter is chatty about deprecations inside torch
        program = torch.onnx.export(
            module,
            args,
            str(path),
            dynamo=True,
            input_names=names,
            output_names=[output],
            dynamic_shapes=dynamic,
            opset_version=opset or DEFAULT_OPSET,
            external_data=False,
            verbose=False,
        )
    _rewrite_attention(path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {n: a.numpy() for n, a in zip(names, args)})[0]
    with torch.inference_mode():
        want = module(*args)
    return float((torch.from_numpy(got) - want).abs().max()), int(program.model.opset_imports[""])


def _rewrite_attention(path: Path) -> None:
    """Rewrite the graph at ``path`` so that onnxruntime runs its attention, on 3-D tensors where it can
    (:mod:`.graph`)."""
    import onnx

    model = onnx.load(str(path))
    if fold_head_transposes(model) + expand_mask_queries(model):
        onnx.save(model, str(path))


def manifest_path(directory: Path) -> Path:
    """``directory``'s export.json, or an ExportError that says what ``directory`` is instead."""
    path = directory / MANIFEST_FILE
    if not directory.exists():
        raise ExportError(f"{directory}: no such export directory")
    if not path.is_file():
        raise ExportError(f"{directory}: no {MANIFEST_FILE}; not an ONNX export directory")
    return path


def export_onnx(
    model_path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    opset: int | None = None,
    overwrite: bool = False,
    quantize: bool = True,
    default: str = "auto",
    check_texts: str | os.PathLike[str] | None = None,
    check_images: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Export every tower of the embedding model at ``model_path`` into ``out``; returns export.json's content.

    ``quantize`` also writes each tower's int8 variants; ``default`` (auto or a variant name) is the variant the runtime
    loads: auto picks it per tower from this machine's measurements (:func:`.variants.choose_variants`).
    ``check_texts`` (a file, one text per line) and ``check_images`` (a directory) join the built-in held-out check
    set the variants must stay accurate on."""
    require_onnx()
    check_default(default)
    if opset is not None and opset < MIN_OPSET:
        raise ExportError(f"opset {opset}: the dynamo ONNX exporter writes opset {MIN_OPSET} or later")
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ExportError(f"{out}: directory exists and is not empty (pass overwrite=True / --overwrite to replace it)")
    # A user text that is also a calibration text would not be held out.
    user_texts = [t for t in read_check_texts(check_texts) if t not in SAMPLE_TEXTS] if check_texts is not None else []
    user_images = read_check_images(check_images) if check_images is not None else []
    source = load_export_source(model_path)
    for modality, given in (("text", check_texts), ("image", check_images)):
        if given is not None and modality not in source.modalities:
            raise ExportError(
                f"check {modality}s {given}: the model has no {modality} tower (it has {source.modalities})"
            )
    model = source.model.eval().float()
    batch = torch.export.Dim("batch", min=1)
    diffs: dict[str, float] = {}
    samples: dict[str, tuple[dict[str, Any], Any]] = {}
    checks: dict[str, list[tuple[dict[str, Any], Any]]] = {}
    used_opset = 0
    with atomic_directory(out) as tmp:
        for modality in TOWERS:
            if modality not in source.modalities:
                continue
            t = _tower(modality, source, model, batch)
            untraceable = _untraceable(model.encoders[modality])
            if untraceable:
                raise NotExportable(
                    f"the dynamo ONNX exporter cannot export the {modality} tower ({_tower_kind(model, modality)}): "
                    f"{untraceable}; nothing written"
                )
            try:
                diffs[modality], used_opset = _export_one(
                    t.module, t.args, t.names, t.output, t.dynamic, tmp / t.file, opset
                )
                if opset is not None and used_opset != opset:
                    raise ExportError(f"opset {opset} asked for, the exporter wrote {used_opset}; nothing written")
            except ExportError:
                raise
            except (OSError, MemoryError) as e:  # this machine, this moment
                raise ExportError(f"cannot export the {modality} tower: {_reason(e)}; nothing written") from e
            except Exception as e:  # the exporter and onnxruntime fail in many types; name the tower that failed
                raise NotExportable(
                    f"the dynamo ONNX exporter cannot export the {modality} tower ({_tower_kind(model, modality)}): "
                    f"{_reason(e)}; nothing written"
                ) from e
            sample = _sample(modality, source, t)
            with torch.inference_mode():
                samples[modality] = ({n: a.numpy() for n, a in zip(t.names, sample)}, t.module(*sample).numpy())
                checks[modality] = [
                    ({n: a.numpy() for n, a in zip(t.names, inputs)}, t.module(*inputs).numpy())
                    for inputs in check_set(modality, source, user_texts, user_images)
                ]
        worst = max(diffs.values())
        if worst > CHECK_TOLERANCE:
            raise ExportError(f"onnxruntime differs from PyTorch by {worst:.2e} (> {CHECK_TOLERANCE}); nothing written")
        if source.tokenizer is not None:
            source.tokenizer.save(tmp / TOKENIZER_DIR)
        manifest = _manifest(source, diffs, used_opset)
        user_rows = {"text": len(user_texts), "image": len(user_images)}
        for modality, batches in checks.items():
            rows = sum(len(embeds) for _, embeds in batches)
            manifest[PARTS[modality]]["check_set"] = {
                "file": CHECK_FILE,
                "rows": rows,
                "user_rows": user_rows.get(modality, 0),
                "batch_size": CHECK_BATCH,
            }
        save_sample(tmp, samples)
        save_check(tmp, checks)
        for modality in diffs if quantize else ():
            _quantize(tmp, manifest[PARTS[modality]], samples[modality][0])
        choose_variants(tmp, manifest, PARTS, threads=torch.get_num_threads(), default=default)
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def _quantize(directory: Path, entry: dict[str, Any], feeds: dict[str, Any]) -> None:
    """Write the tower's int8 variants beside its fp32 graph (``feeds``: its sample, which int8-mixed calibrates on)
    and note them in its manifest ``entry``; a variant the quantiser cannot build is left out with the reason (the
    fp32 export stands)."""
    for variant, build in QUANTIZERS.items():
        try:
            nodes = build(directory / entry["file"], directory / variant_file(entry["file"], variant), feeds)
        except Exception as e:  # the quantisers fail in many types on graphs they do not handle
            entry.setdefault("variants_not_built", {})[variant] = _reason(e)
            continue
        if nodes:
            entry.setdefault("variants", {})[variant] = {"quantized_nodes": nodes}


def choose_again(directory: str | os.PathLike[str], *, default: str = "auto") -> dict[str, Any]:
    """Time the variants of the export in ``directory`` on this machine from its saved sample, record each tower's
    default in its export.json (replaced atomically) and return the manifest."""
    require_onnx()
    directory = Path(directory)
    path = manifest_path(directory)
    manifest = choose_variants(
        directory, json.loads(path.read_text(encoding="utf-8")), PARTS, threads=torch.get_num_threads(), default=default
    )
    staged = path.with_name(f".{MANIFEST_FILE}.tmp")
    staged.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    os.replace(staged, path)
    return manifest


class Tower(NamedTuple):
    """One tower to export: its wrapper module, example inputs, input and output names, dynamic dimensions, file."""

    module: nn.Module
    args: tuple[Tensor, ...]
    names: list[str]
    output: str
    dynamic: dict[str, dict[int, Any]]  # by the module's forward arguments
    file: str


def _tower(modality: str, source: ExportSource, model: EmbeddingModel, batch: Any) -> Tower:
    if modality == "image":
        assert source.preprocess is not None  # an image tower's source always has one
        size = source.preprocess.image_size
        return Tower(
            ImageTower(model),
            (torch.randn(2, 3, size, size),),
            ["pixel_values"],
            "image_embeds",
            {"pixel_values": {0: batch}},
            IMAGE_FILE,
        )
    if modality == "text":
        sequence = torch.export.Dim("sequence", min=1, max=source.max_length)
        dims = {0: batch, 1: sequence}
        names = ["input_ids", "attention_mask"]
        return Tower(
            TextTower(model), _example_text(source), names, "text_embeds", dict.fromkeys(names, dims), TEXT_FILE
        )
    # audio or video: features or frames, and a mask of the real positions
    inputs = {
        "audio": ("audio_features", source.audio, _example_audio),
        "video": ("video_frames", source.video, _example_video),
    }
    name, settings, example = inputs[modality]
    assert settings is not None  # a tower's source always has what makes its inputs
    names = [name, f"{modality}_mask"]
    return Tower(
        MaskedTower(model, modality),
        example(settings),  # type: ignore[operator]
        names,
        f"{modality}_embeds",
        dict.fromkeys(["x", "mask"], {0: batch}),  # MaskedTower.forward's arguments
        {"audio": AUDIO_FILE, "video": VIDEO_FILE}[modality],
    )


def _tower_kind(model: EmbeddingModel, modality: str) -> str:
    """The tower's registered name (``audio_cnn``) when the model has a polymodal config, else its class."""
    component = getattr(getattr(model, "config", None), "encoders", {}).get(modality)
    return getattr(component, "name", None) or type(model.encoders[modality]).__name__


def _untraceable(tower: nn.Module) -> str | None:
    """Why torch.export cannot trace ``tower``, for the parts known to fail (None: try it)."""
    for name, module in tower.named_modules():
        if isinstance(module, RecurrentEncoder):
            part = f"its {name} ({type(module).__name__})" if name else "it"
            return (
                f"{part} packs each sequence's real steps by the lengths in the mask (pack_padded_sequence), "
                "a data-dependent shape torch.export cannot trace"
            )
    return None


def _reason(error: BaseException) -> str:
    """The innermost cause's type and first line: the exporter wraps the real reason in pages of advice."""
    while error.__cause__ is not None:
        error = error.__cause__
    first = next((line for line in str(error).splitlines() if line.strip()), "")
    return f"{type(error).__name__}: {first[:300]}"


def _manifest(source: ExportSource, diffs: dict[str, float], opset: int) -> dict[str, Any]:
    """What a consumer in any language needs to feed each graph."""
    dim = source.model.embed_dim
    embeds = {"dtype": "float32", "shape": ["batch", dim], "l2_normalized": True}
    manifest: dict[str, Any] = {
        "format": "onnx",
        "polymodal_version": __version__,
        "torch_version": torch.__version__,
        "exporter": "torch.onnx.export(dynamo=True)",
        "opset": opset,
        "source": {"kind": source.kind, "path": str(source.path)},
        "embed_dim": dim,
    }
    entries = {"image": _image_entry, "text": _text_entry, "audio": _audio_entry, "video": _video_entry}
    for modality, diff in diffs.items():
        manifest[PARTS[modality]] = entries[modality](source, embeds, diff)
    return manifest


def _image_entry(source: ExportSource, embeds: dict[str, Any], diff: float) -> dict[str, Any]:
    assert source.preprocess is not None
    size = source.preprocess.image_size
    preprocess = source.preprocess.to_dict()
    # HF checkpoints floor the centre-crop offsets, polymodal rounds them (see interop.preprocess).
    preprocess["crop_offsets"] = "floor" if source.kind == "hf-clip" else "round"
    return {
        "file": IMAGE_FILE,
        "inputs": [{"name": "pixel_values", "dtype": "float32", "shape": ["batch", 3, size, size]}],
        "outputs": [{"name": "image_embeds", **embeds}],
        "preprocess": preprocess,
        "max_abs_diff": diff,
    }


def _text_entry(source: ExportSource, embeds: dict[str, Any], diff: float) -> dict[str, Any]:
    tokenizer = source.tokenizer
    return {
        "file": TEXT_FILE,
        "inputs": [
            {"name": "input_ids", "dtype": "int64", "shape": ["batch", "sequence"]},
            {
                "name": "attention_mask",
                "dtype": "int64",
                "shape": ["batch", "sequence"],
                "values": "1 = token, 0 = padding",
            },
        ],
        "outputs": [{"name": "text_embeds", **embeds}],
        "max_length": source.max_length,
        "tokenizer": None
        if tokenizer is None
        else {"dir": TOKENIZER_DIR, "pad_id": tokenizer.pad_id, "padding": "right"},
        "max_abs_diff": diff,
    }


def _audio_entry(source: ExportSource, embeds: dict[str, Any], diff: float) -> dict[str, Any]:
    features = source.audio
    assert features is not None
    channels, frames = features.channels, features.frames(features.clip_samples)
    return {
        "file": AUDIO_FILE,
        "inputs": [
            {"name": "audio_features", "dtype": "float32", "shape": ["batch", channels, frames]},
            {
                "name": "audio_mask",
                "dtype": "int64",
                "shape": ["batch", frames],
                "values": "1 = the frame starts inside the clip, 0 = padding after a shorter clip",
            },
        ],
        "outputs": [{"name": "audio_embeds", **embeds}],
        # How a clip becomes audio_features: decode to mono at sample_rate, crop or zero-pad to clip_seconds, then
        # log-mel (or MFCC, or the waveform itself, per kind) with these STFT and mel settings.
        "features": features.model_dump(mode="json"),
        "max_abs_diff": diff,
    }


def _video_entry(source: ExportSource, embeds: dict[str, Any], diff: float) -> dict[str, Any]:
    processor = source.video
    assert processor is not None
    t, size = processor.sampling.frames, processor.preprocess.image_size
    return {
        "file": VIDEO_FILE,
        "inputs": [
            {"name": "video_frames", "dtype": "float32", "shape": ["batch", t, 3, size, size]},
            {
                "name": "video_mask",
                "dtype": "int64",
                "shape": ["batch", t],
                "values": "1 = a real frame, 0 = padding after a shorter clip (its frames are zeros)",
            },
        ],
        "outputs": [{"name": "video_embeds", **embeds}],
        # How a clip becomes video_frames: the frames `sampling` picks (VideoSampling: which frames, and the bounds
        # on what is decoded), each preprocessed as an image with `preprocess`, then zero-padded to T frames.
        "sampling": processor.sampling.model_dump(mode="json"),
        "preprocess": processor.preprocess.to_dict(),
        "max_abs_diff": diff,
    }
