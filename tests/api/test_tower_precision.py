"""Under precision auto, an embedding tower whose bf16 embeddings stray from fp32 on the fixed sample runs in fp32:
the decision follows the measured cosine, is cached per model and machine, and the model embeds accordingly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import polymodal
from polymodal.api import precision as tower_precision
from polymodal.api.precision import choose_tower_precisions
from polymodal.backends.base import embed
from polymodal.export.towers import SAMPLES
from polymodal.export.variants import COSINE_FLOOR, cosines
from polymodal.hardware import PrecisionChoice
from tests.export.test_onnx import _images, _save_polymodal_clip

AUTO_BF16 = PrecisionChoice("auto", "bf16", "CPU runs bf16 natively (as if)")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _save_polymodal_clip(tmp_path_factory.mktemp("precision") / "model")


@pytest.fixture(autouse=True)
def cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("POLYMODAL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("POLYMODAL_PRECISION", raising=False)  # the suite pins fp32; these tests choose for auto
    return tmp_path / "cache"


def test_the_towers_kept_in_fp32_are_those_whose_bf16_strays_on_the_sample(model_dir: Path) -> None:
    backend = polymodal.load(model_dir, precision="fp32").backend
    kept = choose_tower_precisions(backend, AUTO_BF16, torch.device("cpu"))
    for modality in ("image", "text"):
        inputs = SAMPLES[modality]()
        with torch.inference_mode():
            reference = embed(backend, modality, inputs).float().numpy()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                reduced = embed(backend, modality, inputs).float().numpy()
        worst = float(cosines(reduced, reference).min())
        assert (modality in kept) == (worst < COSINE_FLOOR), (modality, worst)
        if modality in kept:
            assert kept[modality].precision == "fp32" and f"{worst:.5f}" in kept[modality].reason
    # Only an auto choice of a reduced precision is checked: what the user asked for runs as asked.
    assert choose_tower_precisions(backend, PrecisionChoice("bf16", "bf16", "asked"), torch.device("cpu")) == {}
    assert choose_tower_precisions(backend, PrecisionChoice("auto", "fp32", "no bf16"), torch.device("cpu")) == {}


def test_the_check_is_cached_per_model_and_machine(
    model_dir: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = polymodal.load(model_dir, precision="fp32").backend
    measured = []
    real = tower_precision._worst_cosine

    def counted(*args: object) -> float:
        measured.append(args[1])
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(tower_precision, "_worst_cosine", counted)
    first = choose_tower_precisions(backend, AUTO_BF16, torch.device("cpu"))
    assert sorted(measured) == ["image", "text"]
    assert choose_tower_precisions(backend, AUTO_BF16, torch.device("cpu")) == first and len(measured) == 2
    (cached,) = (cache / "precision").iterdir()
    for damaged in ("{not json", '{"image": "high", "text": 1.0}', "[1, 2]"):  # measured again, not an error
        cached.write_text(damaged)
        assert choose_tower_precisions(backend, AUTO_BF16, torch.device("cpu")) == first
    assert len(measured) == 8


def test_a_nan_cosine_keeps_the_tower_in_fp32(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    backend = polymodal.load(model_dir, precision="fp32").backend
    monkeypatch.setattr(tower_precision, "_worst_cosine", lambda b, modality, *a: float("nan"))
    kept = choose_tower_precisions(backend, AUTO_BF16, torch.device("cpu"))
    assert set(kept) == {"image", "text"} and "worst cosine nan" in kept["image"].reason


def test_a_model_runs_a_straying_tower_in_fp32_and_the_others_in_its_precision(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import polymodal.api.model as api_model

    monkeypatch.setattr(api_model, "choose_precision", lambda *a: AUTO_BF16)
    monkeypatch.setattr(tower_precision, "_worst_cosine", lambda b, modality, *a: 0.98 if modality == "image" else 1.0)
    model = polymodal.load(model_dir)
    assert model.precision == "bf16" and set(model.tower_precisions) == {"image"}
    assert "worst cosine 0.98000" in model.tower_precisions["image"].reason
    fp32 = polymodal.load(model_dir, precision="fp32")
    images, texts = _images(3), ["a red circle", "a big blue square left of a green triangle"]
    np.testing.assert_array_equal(model.embed_image(images), fp32.embed_image(images))  # no autocast at all
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.inference_mode():
        want = torch.nn.functional.normalize(embed(fp32.backend, "text", texts).float(), dim=-1).numpy()
    np.testing.assert_allclose(model.embed_text(texts), want, atol=1e-6)  # the text tower stays in bf16


def test_a_cache_that_cannot_be_written_or_a_pinned_precision_does_not_stop_a_load(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    backend = polymodal.load(model_dir, precision="fp32").backend
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache directory would be")
    monkeypatch.setenv("POLYMODAL_CACHE_DIR", str(blocked))
    monkeypatch.setattr(tower_precision, "_worst_cosine", lambda b, modality, *a: 0.5)
    assert set(choose_tower_precisions(backend, AUTO_BF16, torch.device("cpu"))) == {"image", "text"}
    monkeypatch.setenv("POLYMODAL_PRECISION", "bf16")  # pinned: every tower runs as pinned
    assert choose_tower_precisions(backend, AUTO_BF16, torch.device("cpu")) == {}


def test_embeddings_are_unit_vectors_in_fp32_whatever_the_towers_precision(model_dir: Path) -> None:
    """A tower under bf16 autocast normalises its output in bf16, whose norms are off by up to 0.4%: a cosine
    search over them ranks by norm too. Model.embed gives unit rows in fp32 in every precision."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # bf16 asked for on a CPU without native bf16: warned, still runs
        model = polymodal.load(model_dir, precision="bf16")
    for rows in (model.embed_image(_images(5)), model.embed_text(["a red circle", "a big blue square", "cat"])):
        assert rows.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, atol=2e-6)


def test_an_audio_tower_is_checked_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.export.test_onnx_audio import AUDIO_CNN, _save

    backend = polymodal.load(_save(tmp_path / "clap", AUDIO_CNN), precision="fp32").backend
    checked: list[tuple[str, int]] = []

    def worst(b: object, modality: str, inputs: list, *a: object) -> float:  # type: ignore[type-arg]
        checked.append((modality, len(inputs)))
        return 0.98 if modality == "audio" else 1.0

    monkeypatch.setattr(tower_precision, "_worst_cosine", worst)
    kept = choose_tower_precisions(backend, AUTO_BF16, torch.device("cpu"))
    assert sorted(checked) == [("audio", 8), ("text", 8)] and set(kept) == {"audio"}
    assert "worst cosine 0.98000" in kept["audio"].reason
    checked.clear()
    assert choose_tower_precisions(backend, AUTO_BF16, torch.device("cpu")) == kept and not checked  # cached


def test_a_tower_without_a_sample_here_is_not_checked_and_not_tried_each_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_fixed_samples: None
) -> None:
    from polymodal.data import audio as audio_io
    from tests.export.test_onnx_audio import AUDIO_CNN, _save

    backend = polymodal.load(_save(tmp_path / "clap", AUDIO_CNN), precision="fp32").backend
    checked: list[str] = []
    monkeypatch.setattr(tower_precision, "_worst_cosine", lambda b, modality, *a: checked.append(modality) or 0.5)
    tried: list[bool] = []

    def no_soundfile() -> None:
        tried.append(True)
        raise ImportError("reading sounds needs soundfile")

    monkeypatch.setattr(audio_io, "_soundfile", no_soundfile)
    assert set(choose_tower_precisions(backend, AUTO_BF16, torch.device("cpu"))) == {"text"}
    assert checked == ["text"] and tried
    tried.clear()
    assert set(choose_tower_precisions(backend, AUTO_BF16, torch.device("cpu"))) == {"text"} and not tried
