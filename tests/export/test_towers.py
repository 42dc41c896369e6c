"""A model's embedding towers run from its ONNX export where onnxruntime measures faster: same embeddings, choices
made from the timings and the check, an export of another model refused."""

from __future__ import annotations

import base64
import contextlib
import io
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

import polymodal
from polymodal.data.video import Clip
from polymodal.export import ExportError, export_onnx
from polymodal.export import towers as export_towers
from polymodal.export.source import NotExportable
from polymodal.export.towers import ExportTowers
from polymodal.export.variants import chosen_elsewhere, this_machine
from polymodal.serve import create_app
from tests.export.test_onnx import _images, _save_polymodal_clip

pytest.importorskip("onnxruntime")
TEXTS = ["a red circle", "a small blue square left of a big green triangle", "cat", "two green triangles"]


@pytest.fixture(scope="module")
def clip_and_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("towers")
    model_dir = _save_polymodal_clip(root / "clip")
    export_onnx(model_dir, root / "onnx", quantize=False)
    return model_dir, root / "onnx"


@pytest.fixture
def rates(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[float]]:
    """Items/s the timing returns, in call order (PyTorch, then onnxruntime, per tower)."""
    given: list[float] = []
    monkeypatch.setattr(export_towers, "_best_rate", lambda fn, items: given.pop(0))
    yield given
    assert not given, "every rate given was used"


def test_towers_from_the_export_embed_as_the_model_does(clip_and_export: tuple[Path, Path]) -> None:
    model_dir, export = clip_and_export
    plain = polymodal.load(model_dir, precision="fp32")
    served = polymodal.load(model_dir, precision="fp32", export=export, export_towers="all")
    assert isinstance(served.backend, ExportTowers) and served.backend.onnx_modalities == {"image", "text"}
    assert {m: c.runtime for m, c in served.tower_runtimes.items()} == {"image": "onnx", "text": "onnx"}
    for choice in served.tower_runtimes.values():
        assert choice.variant == "fp32" and choice.cosine_min > 0.9999
        assert choice.torch_items_per_second > 0 and choice.onnx_items_per_second > 0
    images = _images(5)
    np.testing.assert_allclose(served.embed_image(images), plain.embed_image(images), atol=1e-5)
    np.testing.assert_allclose(served.embed_text(TEXTS), plain.embed_text(TEXTS), atol=1e-5)
    # clips go through the image tower per frame: from the export too
    clips = [Clip(frames=images, times=[0.25 * i for i in range(5)], duration=1.25, rate=4.0)]
    np.testing.assert_allclose(served.embed_video(clips), plain.embed_video(clips), atol=1e-5)
    # the rest of the model is the model's
    assert served.capabilities == plain.capabilities and served.embed_dim == plain.embed_dim


def test_a_corpus_through_the_export_is_tokenized_once_by_the_export(clip_and_export: tuple[Path, Path]) -> None:
    model_dir, export = clip_and_export
    served = polymodal.load(model_dir, precision="fp32", export=export, export_towers="all", batch_size=2)
    plain = polymodal.load(model_dir, precision="fp32", batch_size=2)
    embedder = served.backend.embedder
    encoded: list[str] = []
    real = embedder.tokenizer.encode_many

    def counted(texts: list[str], max_length: int) -> list[list[int]]:
        encoded.extend(texts)
        return real(texts, max_length)

    embedder.tokenizer.encode_many = counted
    by_pytorch: list[str] = []
    served.backend.backend.saved.text.tokenizer.encode_many = lambda texts, n: by_pytorch.extend(texts) or []
    corpus = [f"{text} {i}" for i, text in enumerate(TEXTS * 3)]  # 12 texts: sorted by length into batches of 2+
    np.testing.assert_allclose(served.embed_text(corpus), plain.embed_text(corpus), atol=1e-5)
    assert sorted(encoded) == sorted(corpus)  # counted by the export's tokenizer, then found again per batch
    assert not by_pytorch  # the model's own tokenizer is not run for the length sort
    assert served.backend.text_lengths(corpus) == [len(ids) for ids in real(corpus, embedder.max_length)]


def test_auto_takes_the_export_only_where_it_is_faster_by_the_margin(
    clip_and_export: tuple[Path, Path], rates: list[float]
) -> None:
    model_dir, export = clip_and_export
    rates += [100.0, 200.0]  # image: 2x faster in onnxruntime on the sample, clearly
    rates += [100.0, 105.0, 100.0, 104.0]  # text: 1.05x (under the 1.1x margin), a close call: and in a batch
    model = polymodal.load(model_dir, precision="fp32", export=export)
    image, text = model.tower_runtimes["image"], model.tower_runtimes["text"]
    assert (image.runtime, image.onnx_items_per_second, image.torch_items_per_second) == ("onnx", 200.0, 100.0)
    assert image.reason.startswith("faster here: 200 against 100 items/s in PyTorch (calls of 8)")
    assert text.runtime == "torch" and "not 1.1x faster" in text.reason
    assert "the faster of calls of" in text.reason and "and 32 for each" in text.reason
    assert isinstance(model.backend, ExportTowers) and model.backend.onnx_modalities == {"image"}
    rates += [100.0, 90.0, 100.0, 90.0] * 2  # slower everywhere, in both call sizes: the plain backend, unwrapped
    slower = polymodal.load(model_dir, precision="fp32", export=export)
    assert not isinstance(slower.backend, ExportTowers)
    assert {c.runtime for c in slower.tower_runtimes.values()} == {"torch"}


def test_a_close_call_on_the_sample_is_timed_again_in_calls_of_the_batch_size(
    clip_and_export: tuple[Path, Path], rates: list[float]
) -> None:
    """8 images are not what a model embeds at a time: where the sample's rates come close to the margin, each
    runtime counts at its faster of the two call sizes."""
    model_dir, export = clip_and_export
    rates += [100.0, 95.0, 120.0, 150.0]  # image: slower on 8 images, 1.25x faster in calls of 16
    rates += [100.0, 400.0]  # text: clearly faster, not timed again
    model = polymodal.load(model_dir, precision="fp32", export=export, batch_size=16)
    image = model.tower_runtimes["image"]
    assert (image.runtime, image.torch_items_per_second, image.onnx_items_per_second) == ("onnx", 120.0, 150.0)
    assert "(the faster of calls of 8 and 16 for each)" in image.reason
    assert "calls of 8)" in model.tower_runtimes["text"].reason
    rates += [100.0, 95.0, 100.0, 300.0]  # a batch no larger than the sample: nothing more to time
    small = polymodal.load(model_dir, precision="fp32", export=export, batch_size=8, export_towers="all")
    assert small.tower_runtimes["image"].onnx_items_per_second == 95.0


def test_an_export_that_strays_is_not_taken_and_one_of_another_model_is_refused(
    clip_and_export: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, rates: list[float]
) -> None:
    model_dir, export = clip_and_export
    plain = polymodal.load(model_dir, precision="fp32")
    rng = np.random.default_rng(0)
    real = export_towers.OnnxEmbedder.embed

    def nudged(self: object, modality: str, refs: list) -> np.ndarray:  # type: ignore[type-arg]
        out = real(self, modality, refs)  # type: ignore[arg-type]
        return out + rng.normal(0, 0.02, out.shape).astype(np.float32)  # cosine about 0.99-0.999 at this width

    monkeypatch.setattr(export_towers.OnnxEmbedder, "embed", nudged)
    rates += [100.0, 300.0, 100.0, 300.0]
    model = polymodal.load(model_dir, precision="fp32", export=export)
    for choice in model.tower_runtimes.values():
        assert choice.runtime == "torch" and "strays from fp32" in choice.reason
        assert export_towers.SAME_MODEL_COSINE <= choice.cosine_min < export_towers.COSINE_FLOOR
        assert choice.torch_cosine_min > 0.9999  # PyTorch in fp32 is the reference itself
    monkeypatch.setattr(
        export_towers.OnnxEmbedder,
        "embed",
        lambda self, modality, refs: rng.normal(size=(len(refs), plain.embed_dim)).astype(np.float32),
    )
    with pytest.raises(ExportError, match=r"its image tower is not this model's: cosine"):
        polymodal.load(model_dir, precision="fp32", export=export)


def test_an_export_no_further_from_fp32_than_pytorch_in_its_precision_is_taken(
    clip_and_export: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, rates: list[float]
) -> None:
    """bf16 autocast moves a conv tower's embeddings further from fp32 than the floor allows an export's variant: a
    variant as close to fp32 as that is no loss."""
    model_dir, export = clip_and_export
    backend = polymodal.load(model_dir, precision="fp32").backend
    embedder = export_towers.OnnxEmbedder(export)
    rng = np.random.default_rng(0)
    in_precision = []

    @contextlib.contextmanager
    def lossy_precision(modality: str) -> Iterator[None]:
        in_precision.append(True)
        yield
        in_precision.pop()

    class Lossy:  # the model: its embeddings under lossy_precision stray further from fp32 than the export's
        def __getattr__(self, name: str) -> object:
            return getattr(backend, name)

        def embed(self, modality: str, refs: list) -> torch.Tensor:  # type: ignore[type-arg]
            out = export_towers.embed(backend, modality, refs)
            return out + (torch.from_numpy(rng.normal(0, 0.05, out.shape)).float() if in_precision else 0)

    def nudged(modality: str, refs: list) -> np.ndarray:  # type: ignore[type-arg]
        out = export_towers.OnnxEmbedder.embed(embedder, modality, refs)
        return out + rng.normal(0, 0.01, out.shape).astype(np.float32)

    monkeypatch.setattr(embedder, "embed", nudged)
    rates += [100.0, 200.0]
    choice = export_towers.choose_tower_runtime(Lossy(), embedder, "image", "auto", lossy_precision)  # type: ignore[arg-type]
    assert choice.cosine_min < export_towers.COSINE_FLOOR and choice.torch_cosine_min < choice.cosine_min
    assert choice.runtime == "onnx" and choice.reason.startswith("faster here")


def test_bad_export_arguments_are_clear_errors(clip_and_export: tuple[Path, Path], tmp_path: Path) -> None:
    model_dir, export = clip_and_export
    with pytest.raises(ValueError, match="towers must be one of auto, all, got 'some'"):
        polymodal.load(model_dir, export=export, export_towers="some")
    with pytest.raises(ExportError, match="no export.json; not an ONNX export directory"):
        polymodal.load(model_dir, export=tmp_path)
    with pytest.raises(ExportError, match="nope: no such export directory"):
        polymodal.load(model_dir, export=tmp_path / "nope")
    manifest = json.loads((export / "export.json").read_text())
    del manifest["image_encoder"], manifest["text_encoder"]  # an export with none of the model's towers
    (tmp_path / "export.json").write_text(json.dumps(manifest))
    with pytest.raises(ExportError, match=r"its towers \(\) are none of the model's \(image, text\)"):
        polymodal.load(model_dir, export=tmp_path)


def test_health_says_where_each_tower_runs(clip_and_export: tuple[Path, Path], rates: list[float]) -> None:
    model_dir, export = clip_and_export
    rates += [100.0, 200.0, 100.0, 100.0, 100.0, 100.0]  # text: a tie, timed again in a batch: still a tie
    model = polymodal.load(model_dir, precision="fp32", export=export)
    with TestClient(create_app(model)) as client:
        towers = client.get("/health").json()["runtime"]["towers"]
        assert towers["image"]["runtime"] == "onnx" and towers["image"]["variant"] == "fp32"
        assert towers["text"]["runtime"] == "torch" and "not 1.1x faster" in towers["text"]["reason"]
        images = [Image.new("RGB", (40, 40), (200, 30, 30)), Image.new("RGB", (40, 40), (30, 30, 200))]
        encoded = []
        for image in images:
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            encoded.append(base64.b64encode(buffer.getvalue()).decode())
        body = client.post("/embed", json={"texts": TEXTS, "images": encoded}).json()
        np.testing.assert_allclose(body["image_embeddings"], model.embed_image(images), atol=1e-5)
        np.testing.assert_allclose(body["text_embeddings"], model.embed_text(TEXTS), atol=1e-5)


def test_index_build_embeds_through_the_export_and_says_so(clip_and_export: tuple[Path, Path], tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from polymodal.cli.main import app
    from polymodal.index import VectorIndex

    model_dir, export = clip_and_export
    images = _images(6)
    for i, image in enumerate(images):
        image.save(tmp_path / f"{i}.png")
    args = ["index", "build", str(tmp_path), "--model", str(model_dir), "--export", str(export)]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "idx"), "--no-tune", "--precision", "fp32"])
    assert result.exit_code == 0, result.output
    assert "image tower in onnxruntime: asked for" not in result.output  # auto: timed, not forced
    assert "image tower in " in result.output and "items/s in PyTorch" in result.output
    with VectorIndex.open(tmp_path / "idx") as index:
        assert len(index) == 6


def test_serve_with_an_export_says_where_each_tower_runs(
    clip_and_export: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import uvicorn
    from typer.testing import CliRunner

    from polymodal.cli.main import app

    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: None)
    model_dir, export = clip_and_export
    args = ["serve", "--model", str(model_dir), "--export", str(export), "--precision", "fp32"]
    shown = CliRunner().invoke(app, [*args, "--export-towers", "all"])
    assert shown.exit_code == 0, shown.output
    assert "image tower in onnxruntime: asked for" in shown.stdout and "text tower in onnxruntime" in shown.stdout
    summary = json.loads(CliRunner().invoke(app, [*args, "--json"]).stdout)
    assert set(summary["tower_runtimes"]) == {"image", "text"}
    assert {c["runtime"] for c in summary["tower_runtimes"].values()} <= {"onnx", "torch"}
    wrong = CliRunner().invoke(app, ["serve", "--model", str(model_dir), "--export", str(tmp_path)])
    assert wrong.exit_code == 1 and "no export.json; not an ONNX export directory" in wrong.output
    assert "Traceback" not in wrong.output


def test_auto_exports_the_model_once_into_the_cache_and_reuses_it(
    clip_and_export: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    model_dir, _ = clip_and_export
    monkeypatch.setenv("POLYMODAL_CACHE_DIR", str(tmp_path / "cache"))
    with caplog.at_level("WARNING", logger=export_towers.__name__):
        first = polymodal.load(model_dir, precision="fp32", export="auto", export_towers="all")
    assert "towers to ONNX once" in caplog.text
    (made,) = [
        path for path in (tmp_path / "cache" / "exports").iterdir() if path.is_dir()
    ]  # beside it, the export's lock
    assert (made / "export.json").is_file() and set(first.tower_runtimes) == {"image", "text"}
    assert {c.runtime for c in first.tower_runtimes.values()} == {"onnx"}

    def no_second_export(*args: object, **kwargs: object) -> None:
        raise AssertionError("exported again")

    monkeypatch.setattr(export_towers, "export_onnx", no_second_export)
    again = polymodal.load(model_dir, precision="fp32", export="auto", export_towers="all")
    assert isinstance(again.backend, ExportTowers)
    assert [path for path in (tmp_path / "cache" / "exports").iterdir() if path.is_dir()] == [made]
    images = _images(3)
    np.testing.assert_allclose(again.embed_image(images), first.embed_image(images), atol=1e-6)
    # A cache shared with another machine (or used under an ISA cap): its variants are chosen again for this one.
    manifest = json.loads((made / "export.json").read_text())
    manifest["variant_choice"]["machine"] += " with CPUID masked to AVX2"
    (made / "export.json").write_text(json.dumps(manifest))
    caplog.clear()
    with caplog.at_level("WARNING", logger=export_towers.__name__):
        polymodal.load(model_dir, precision="fp32", export="auto", export_towers="all")
    assert "variants again for this machine (they were chosen on " in caplog.text and "masked to AVX2)" in caplog.text
    rechosen = json.loads((made / "export.json").read_text())["variant_choice"]
    assert rechosen["machine"] == this_machine() and chosen_elsewhere({"variant_choice": rechosen}) is None


def test_auto_keeps_pytorch_with_the_reason_when_the_model_cannot_be_exported(
    clip_and_export: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    model_dir, _ = clip_and_export
    monkeypatch.setenv("POLYMODAL_CACHE_DIR", str(tmp_path / "cache"))

    def fails(*args: object, **kwargs: object) -> None:
        raise NotExportable("the dynamo ONNX exporter cannot export the image tower (x)")

    monkeypatch.setattr(export_towers, "export_onnx", fails)
    with caplog.at_level("WARNING", logger=export_towers.__name__):
        model = polymodal.load(model_dir, precision="fp32", export="auto")
    assert (
        "cannot export" in caplog.text and "the dynamo ONNX exporter cannot export the image tower (x)" in caplog.text
    )
    assert not isinstance(model.backend, ExportTowers) and set(model.tower_runtimes) == {"image", "text"}
    for choice in model.tower_runtimes.values():
        assert choice.runtime == "torch"
        assert choice.reason == "no ONNX export: the dynamo ONNX exporter cannot export the image tower (x)"

    def not_again(*args: object, **kwargs: object) -> None:
        raise AssertionError("the export was tried again")

    monkeypatch.setattr(export_towers, "export_onnx", not_again)  # the model cannot be: remembered, not retried
    again = polymodal.load(model_dir, precision="fp32", export="auto")
    (reason,) = {c.reason for c in again.tower_runtimes.values()}
    assert reason.startswith(choice.reason) and reason.endswith(".failed: delete it to try again)")
    with pytest.raises(ExportError, match="cannot export .*: the dynamo ONNX exporter"):
        polymodal.load(model_dir, precision="fp32", export="auto", export_towers="all")


def test_a_failure_of_this_machine_or_moment_is_not_remembered(
    clip_and_export: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    model_dir, _ = clip_and_export
    monkeypatch.setenv("POLYMODAL_CACHE_DIR", str(tmp_path / "cache"))
    tries: list[int] = []

    def disk_full(*args: object, **kwargs: object) -> None:
        tries.append(1)
        raise ExportError("cannot export the image tower: No space left on device; nothing written")

    monkeypatch.setattr(export_towers, "export_onnx", disk_full)
    for _ in range(2):
        model = polymodal.load(model_dir, precision="fp32", export="auto")
        assert {c.runtime for c in model.tower_runtimes.values()} == {"torch"}
    assert len(tries) == 2  # tried again at the next load


def test_auto_on_a_model_without_embedding_towers_says_so_and_exports_nothing(
    tiny_captioner_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("POLYMODAL_CACHE_DIR", str(tmp_path / "cache"))
    with caplog.at_level("WARNING", logger=export_towers.__name__):
        model = polymodal.load(tiny_captioner_dir, precision="fp32", export="auto")
    assert model.tower_runtimes == {} and "has no embedding towers to export" in caplog.text
    assert "towers to ONNX once" not in caplog.text and not (tmp_path / "cache" / "exports").exists()
