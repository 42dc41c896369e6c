"""The export's runtime variants: int8 beside fp32, each measured (speed and cosine to PyTorch fp32 on a fixed
calibration sample, cosine on a held-out check set) and recorded, the default chosen from those figures and loaded by
the runtime; session options; old exports."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from polymodal.cli.main import app
from polymodal.export import ExportError, OnnxEmbedder, export_onnx
from polymodal.export.onnx import MANIFEST_FILE, PARTS, choose_again
from polymodal.export.variants import (
    CHECK_FILE,
    COSINE_FLOOR,
    SAMPLE_FILE,
    SPEEDUP_MARGIN,
    TIE_MARGIN,
    choose_variants,
    cosines,
    load_check,
    load_sample,
    pick,
)
from polymodal.interop import clip_features
from tests.export import assert_held_out
from tests.interop.tiny import save_tiny_clip

onnxruntime = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny HF CLIP checkpoint and its export (both towers, int8 variants, default chosen here)."""
    root = tmp_path_factory.mktemp("variants")
    save_tiny_clip(root / "clip")
    export_onnx(root / "clip", root / "onnx")
    return root / "clip", root / "onnx"


def _copy(directory: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(directory, tmp_path / directory.name))


def test_each_variant_is_measured_against_pytorch_and_the_default_follows_the_rule(exported: tuple[Path, Path]) -> None:
    clip_dir, out = exported
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    samples = load_sample(out)
    import transformers as t

    clip = t.CLIPModel.from_pretrained(clip_dir, local_files_only=True).eval()
    for modality in ("image", "text"):
        entry = manifest[PARTS[modality]]
        assert set(entry["variants"]) == {"fp32", "int8", "int8-avx2", "int8-mixed", "int8-block"}
        assert entry["variants"]["fp32"]["file"] == entry["file"]
        for variant in ("int8", "int8-avx2", "int8-mixed", "int8-block"):
            assert entry["variants"][variant]["quantized_nodes"] > 0
            assert (out / entry["variants"][variant]["file"]).is_file()
        feeds, want = samples[modality]
        assert len(want) == 8  # the fixed sample: 8 images or texts
        # The sample's reference embeddings are PyTorch fp32's (here, transformers' own CLIPModel).
        inputs = {k: torch.from_numpy(v) for k, v in feeds.items()}
        with torch.no_grad():
            torch_embeds = F.normalize(clip_features(clip, **inputs), dim=-1).numpy()
        np.testing.assert_allclose(want, torch_embeds, atol=1e-5)
        # The recorded cosines are the variant's own on that sample and on the held-out check batches, whose
        # references are PyTorch's too.
        check = load_check(out)[modality]
        with torch.no_grad():
            first = F.normalize(clip_features(clip, **{k: torch.from_numpy(v) for k, v in check[0][0].items()}), dim=-1)
        np.testing.assert_allclose(check[0][1], first.numpy(), atol=1e-5)
        for variant, figures in entry["variants"].items():
            session = OnnxEmbedder(out, variant=variant).sessions[modality]
            got = session.run(None, feeds)[0]
            assert figures["cosine_min"] == pytest.approx(float(cosines(got, want).min()), abs=1e-5)
            assert figures["items_per_second"] > 0
            held = np.concatenate([cosines(session.run(None, f)[0], w) for f, w in check])
            assert figures["heldout_cosine_min"] == pytest.approx(float(held.min()), abs=1e-5)
            assert figures["heldout_cosine_mean"] == pytest.approx(float(held.mean()), abs=1e-5)
        assert entry["default"] == pick(entry["variants"])
    assert_held_out(out)
    assert OnnxEmbedder(out).variants == {m: manifest[PARTS[m]]["default"] for m in ("image", "text")}
    choice = manifest["variant_choice"]
    assert choice["forced"] is None and choice["threads"] >= 1 and str(COSINE_FLOOR) in choice["rule"]


def test_the_rule_keeps_fp32_unless_a_variant_is_accurate_and_clearly_faster() -> None:
    def figures(int8: tuple[float, float], block: tuple[float, float] = (0, 0)) -> dict[str, dict[str, float]]:
        """(items/s, worst cosine) of int8 and int8-block beside fp32 at 10 items/s."""
        rates = {"fp32": (10, 1.0), "int8": int8, "int8-block": block}
        return {name: {"items_per_second": rate, "cosine_min": cos} for name, (rate, cos) in rates.items()}

    assert pick(figures((30, COSINE_FLOOR), (20, 1.0))) == "int8"
    assert pick(figures((30, COSINE_FLOOR - 1e-4), (20, 0.9999))) == "int8-block"  # the fastest that is accurate
    assert pick(figures((30, COSINE_FLOOR - 1e-4))) == "fp32"  # fast but not accurate enough
    assert pick(figures((10 * SPEEDUP_MARGIN * 0.99, 1.0))) == "fp32"  # accurate but within timing noise
    assert pick({"fp32": {"items_per_second": 10, "cosine_min": 1.0}}) == "fp32"
    held_out = figures((30, 1.0), (20, 1.0))
    held_out["int8"]["heldout_cosine_min"] = COSINE_FLOOR - 1e-4  # accurate on the sample only
    held_out["int8-block"]["heldout_cosine_min"] = COSINE_FLOOR
    assert pick(held_out) == "int8-block"
    # Two accurate variants within timing noise of each other: the more accurate one (int8 beside int8-avx2 on a
    # CPU whose int8 does not saturate); a clearly faster one still wins.
    rates = {"fp32": (10, 1.0), "int8": (30, 0.9995), "int8-avx2": (30 * TIE_MARGIN, 0.9993)}
    assert pick({n: {"items_per_second": r, "cosine_min": c} for n, (r, c) in rates.items()}) == "int8"
    rates["int8-avx2"] = (30 * TIE_MARGIN * 1.01, 0.9993)
    assert pick({n: {"items_per_second": r, "cosine_min": c} for n, (r, c) in rates.items()}) == "int8-avx2"


class _DriftingSession:
    """An onnxruntime session standing in for a variant tuned to its own calibration data: its embeddings are the
    real ones on the calibration ``sample`` and perturbed on every other input."""

    def __init__(self, session: object, sample: dict[str, np.ndarray]) -> None:
        self.session, self.sample = session, sample

    def run(self, outputs: None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        (got,) = self.session.run(outputs, feeds)  # type: ignore[attr-defined]
        if feeds.keys() == self.sample.keys() and all(np.array_equal(feeds[k], self.sample[k]) for k in feeds):
            return [got]
        return [got + np.random.RandomState(0).normal(0, 0.2, got.shape).astype(got.dtype)]


@pytest.mark.parametrize("drift", [False, True])
def test_a_variant_accurate_only_on_its_calibration_sample_is_not_chosen(
    exported: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, drift: bool
) -> None:
    import polymodal.export.variants as variants

    out = _copy(exported[1], tmp_path)
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    for part in ("image_encoder", "text_encoder"):  # fp32 and int8-avx2 (accurate on CPUs with and without VNNI)
        for variant in ("int8", "int8-mixed", "int8-block"):
            (out / manifest[part]["variants"][variant]["file"]).unlink()
    samples = load_sample(out)
    real_session, real_measure = variants.make_session, variants.measure

    def session(path: Path, threads: int, optimization: str = "all", spinning: bool = True) -> object:
        # The variants take turns: a spinning session's threads would take the cores from the next one's run.
        assert not spinning
        real = real_session(path, threads, spinning=spinning)
        return (
            _DriftingSession(real, samples[path.name.split("_", 1)[0]][0]) if drift and ".int8" in path.name else real
        )

    def measure(*args: object, **kwargs: object) -> dict[str, dict[str, float]]:
        measured = real_measure(*args, **kwargs)  # type: ignore[arg-type]
        for name, rate in (("fp32", 10.0), ("int8-avx2", 30.0)):  # int8 clearly faster: only accuracy rules it out
            measured[name]["items_per_second"] = rate
        return measured

    monkeypatch.setattr(variants, "make_session", session)
    monkeypatch.setattr(variants, "measure", measure)
    chosen = choose_variants(out, manifest, PARTS, threads=1)
    for part in ("image_encoder", "text_encoder"):
        int8 = chosen[part]["variants"]["int8-avx2"]
        assert int8["cosine_min"] >= COSINE_FLOOR  # on the calibration sample it holds either way
        if drift:
            assert int8["heldout_cosine_min"] < COSINE_FLOOR and chosen[part]["default"] == "fp32"
        else:
            assert int8["heldout_cosine_min"] >= COSINE_FLOOR and chosen[part]["default"] == "int8-avx2"
    assert "held-out" in chosen["variant_choice"]["rule"]


def test_a_forced_default_is_loaded_and_the_runtime_can_override_it(
    exported: tuple[Path, Path], tmp_path: Path
) -> None:
    out = _copy(exported[1], tmp_path)
    result = CliRunner().invoke(app, ["export", str(out), "--choose", "--default", "int8", "--json"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    assert json.loads(result.stdout)["variant_choice"]["forced"] == "int8"
    assert all(manifest[part]["default"] == "int8" for part in ("image_encoder", "text_encoder"))
    pixels = np.random.RandomState(0).randn(3, 3, 32, 32).astype(np.float32)
    int8_session = onnxruntime.InferenceSession(
        str(out / "image_encoder.int8.onnx"), providers=["CPUExecutionProvider"]
    )
    fp32_session = onnxruntime.InferenceSession(str(out / "image_encoder.onnx"), providers=["CPUExecutionProvider"])
    default = OnnxEmbedder(out)
    assert default.variants == {"image": "int8", "text": "int8"}
    np.testing.assert_allclose(
        default.embed_pixels(pixels), int8_session.run(None, {"pixel_values": pixels})[0], atol=1e-6
    )
    overridden = OnnxEmbedder(out, variant="fp32")
    np.testing.assert_allclose(
        overridden.embed_pixels(pixels), fp32_session.run(None, {"pixel_values": pixels})[0], atol=1e-6
    )

    manifest = choose_again(out, default="fp32")
    assert OnnxEmbedder(out).variants == {"image": "fp32", "text": "fp32"}
    assert manifest["image_encoder"]["variants"]["int8"]["quantized_nodes"] > 0  # kept from the export
    with pytest.raises(
        ExportError, match="default variant 'int4': choose auto or one of fp32, int8, int8-avx2, int8-mixed, int8-block"
    ):
        choose_again(out, default="int4")


def test_session_options_threads_optimization_and_batches(exported: tuple[Path, Path]) -> None:
    out = exported[1]
    basic = OnnxEmbedder(out, threads=1, optimization="basic", variant="fp32", batch_size=2)
    options = basic.sessions["image"].get_session_options()
    assert options.intra_op_num_threads == 1 and options.inter_op_num_threads == 1
    assert options.graph_optimization_level == onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC
    full = OnnxEmbedder(out, threads=2, variant="fp32")
    assert full.sessions["text"].get_session_options().graph_optimization_level == (
        onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    )
    assert full.sessions["text"].get_session_options().intra_op_num_threads == 2
    pixels = np.random.RandomState(1).randn(5, 3, 32, 32).astype(np.float32)
    np.testing.assert_allclose(basic.embed_pixels(pixels), full.embed_pixels(pixels), atol=1e-5)  # 3 runs vs 1
    texts = ["a red circle", "a small blue square left of a big green triangle", "cat"]
    np.testing.assert_allclose(basic.embed_text(texts), full.embed_text(texts), atol=1e-5)
    with pytest.raises(ExportError, match="optimization 'max': choose one of disable, basic, extended, all"):
        OnnxEmbedder(out, optimization="max")
    with pytest.raises(
        ExportError, match="variant 'fp16': choose one of fp32, int8, int8-avx2, int8-mixed, int8-block"
    ):
        OnnxEmbedder(out, variant="fp16")
    with pytest.raises(ExportError, match="batch_size 0"):
        OnnxEmbedder(out, batch_size=0)


def test_sessions_follow_the_thread_budget_of_the_calling_thread(
    exported: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without ``threads`` each run takes torch's thread count then (a server's budget changes with the load); the
    sessions of the latest two counts are kept, so a budget that moves back and forth builds none again."""
    from polymodal.export import runtime

    builds: list[tuple[str, int]] = []
    real = runtime.make_session

    def recording(path: Path, threads: int, *args: object) -> object:
        builds.append((path.name, threads))
        return real(path, threads, *args)

    monkeypatch.setattr(runtime, "make_session", recording)
    out = exported[1]
    before = torch.get_num_threads()
    pixels = np.random.RandomState(2).randn(3, 3, 32, 32).astype(np.float32)
    try:
        torch.set_num_threads(2)
        embedder = OnnxEmbedder(out, variant="fp32")
        assert sorted(builds) == [("image_encoder.onnx", 2), ("text_encoder.onnx", 2)]  # at load
        expected = embedder.embed_pixels(pixels)
        torch.set_num_threads(1)
        np.testing.assert_allclose(embedder.embed_pixels(pixels), expected, atol=1e-5)
        assert builds[2:] == [("image_encoder.onnx", 1)] and embedder.threads == 1  # the run built and used it
        torch.set_num_threads(2)
        embedder.embed_pixels(pixels)
        torch.set_num_threads(1)
        embedder.embed_pixels(pixels)
        assert len(builds) == 3  # both counts kept: nothing built again
        torch.set_num_threads(3)
        embedder.embed_pixels(pixels)
        assert builds[3:] == [("image_encoder.onnx", 3)]
        torch.set_num_threads(2)  # the least recently used count (2) made room for 3
        embedder.embed_pixels(pixels)
        assert builds[4:] == [("image_encoder.onnx", 2)]
        assert embedder.image_session.get_session_options().intra_op_num_threads == 2
        fixed = OnnxEmbedder(out, threads=2, variant="fp32")
        torch.set_num_threads(1)
        fixed.embed_pixels(pixels)
        assert fixed.threads == 2 and builds[5:] == [("image_encoder.onnx", 2), ("text_encoder.onnx", 2)]
    finally:
        torch.set_num_threads(before)


def test_a_session_is_built_once_while_other_runs_go_on(
    exported: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A budget change under load: the first run at the new count builds its session (0.2-1 s for a ViT-B/32 tower);
    a run at a count that has its session does not wait for that, and a second run at the new count waits for the
    same build instead of building its own."""
    import threading

    from polymodal.export import runtime

    real, release, builds = runtime.make_session, threading.Event(), []

    def slow_at_three(path: Path, threads: int, *args: object) -> object:
        builds.append(threads)
        if threads == 3:
            assert release.wait(30)
        return real(path, threads, *args)

    monkeypatch.setattr(runtime, "make_session", slow_at_three)
    embedder = OnnxEmbedder(exported[1], variant="fp32", threads=2)
    pixels = np.random.RandomState(3).randn(2, 3, 32, 32).astype(np.float32)
    got: list[object] = []
    workers = [threading.Thread(target=lambda: got.append(embedder._session("image", 3))) for _ in range(2)]
    for worker in workers:
        worker.start()
    for _ in range(3000):  # until the build at 3 has started (at most 30 s)
        if 3 in builds:
            break
        threading.Event().wait(0.01)
    assert embedder.embed_pixels(pixels).shape[0] == 2  # at 2 threads: not held up by the build at 3
    release.set()
    for worker in workers:
        worker.join(30)
    assert builds.count(3) == 1 and len(got) == 2 and got[0] is got[1]


def test_an_export_without_variants_still_loads(exported: tuple[Path, Path], tmp_path: Path) -> None:
    out = _copy(exported[1], tmp_path)
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    manifest.pop("variant_choice")
    for part in ("image_encoder", "text_encoder"):
        for variant in ("int8", "int8-avx2", "int8-mixed", "int8-block"):
            (out / manifest[part]["variants"][variant]["file"]).unlink()
        manifest[part].pop("variants"), manifest[part].pop("default")
    (out / SAMPLE_FILE).unlink()
    (out / MANIFEST_FILE).write_text(json.dumps(manifest))

    old = OnnxEmbedder(out)
    assert old.variants == {"image": "fp32", "text": "fp32"}
    want = OnnxEmbedder(exported[1], variant="fp32").embed_text(["a cat", "a dog"])
    np.testing.assert_allclose(old.embed_text(["a cat", "a dog"]), want, atol=1e-6)
    with pytest.raises(ExportError, match="has no int8 variant of image_encoder \\(it has fp32\\)"):
        OnnxEmbedder(out, variant="int8")
    with pytest.raises(ExportError, match=f"no {SAMPLE_FILE}; export again"):
        choose_again(out)


def test_an_export_without_a_check_set_is_chosen_on_its_sample(exported: tuple[Path, Path], tmp_path: Path) -> None:
    out = _copy(exported[1], tmp_path)
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    for part in ("image_encoder", "text_encoder"):
        manifest[part].pop("check_set")
        for figures in manifest[part]["variants"].values():
            for key in ("heldout_cosine_min", "heldout_cosine_mean", "heldout_rows"):
                figures.pop(key)
    (out / CHECK_FILE).unlink()
    (out / MANIFEST_FILE).write_text(json.dumps(manifest))

    assert OnnxEmbedder(out).variants == {m: manifest[PARTS[m]]["default"] for m in ("image", "text")}
    again = choose_again(out)
    assert f"no {CHECK_FILE}: an older export" in again["variant_choice"]["rule"]
    for part in ("image_encoder", "text_encoder"):
        assert not any("heldout_rows" in figures for figures in again[part]["variants"].values())
        assert again[part]["default"] == pick(again[part]["variants"])


def test_user_check_texts_and_images_join_the_held_out_set(exported: tuple[Path, Path], tmp_path: Path) -> None:
    from PIL import Image

    from polymodal.export.check import SAMPLE_TEXTS

    texts = tmp_path / "texts.txt"
    texts.write_text(f"a user's query\n\n{SAMPLE_TEXTS[0]}\nanother one, 42\n", encoding="utf-8")
    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):
        Image.new("RGB", (20 + i, 30), (60 * i, 10, 200)).save(images / f"{i}.png")
    (images / "notes.txt").write_text("not an image")
    result = CliRunner().invoke(
        app,
        [
            "export",
            str(exported[0]),
            "--out",
            str(tmp_path / "o"),
            "--no-quantize",
            "--check-texts",
            str(texts),
            "--check-images",
            str(images),
        ],
    )
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "o" / MANIFEST_FILE).read_text())
    built_in = json.loads((exported[1] / MANIFEST_FILE).read_text())
    # the calibration text in the file is left out: it would not be held out
    assert manifest["text_encoder"]["check_set"]["user_rows"] == 2
    assert manifest["image_encoder"]["check_set"]["user_rows"] == 3
    for part, extra in (("text_encoder", 2), ("image_encoder", 3)):
        assert manifest[part]["check_set"]["rows"] == built_in[part]["check_set"]["rows"] + extra
    assert_held_out(tmp_path / "o")
    assert "held-out worst" in result.output and "(held-out check set: " in result.output


def test_bad_check_inputs_are_refused_naming_the_file(exported: tuple[Path, Path], tmp_path: Path) -> None:
    clip = str(exported[0])

    def export(*options: str) -> str:
        result = CliRunner().invoke(app, ["export", clip, "--out", str(tmp_path / "o"), *options])
        assert result.exit_code == 1 and "Traceback" not in result.output
        assert not (tmp_path / "o").exists()
        return " ".join(result.output.split())

    (tmp_path / "blank.txt").write_text("\n  \n")
    assert "blank.txt: no texts (give one per line)" in export("--check-texts", str(tmp_path / "blank.txt"))
    (tmp_path / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    assert "latin1.txt: check texts must be UTF-8" in export("--check-texts", str(tmp_path / "latin1.txt"))
    assert "missing.txt: check texts file not found" in export("--check-texts", str(tmp_path / "missing.txt"))
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    assert "broken.jpg" in export("--check-images", str(tmp_path / "images"))
    result = CliRunner().invoke(app, ["export", str(exported[1]), "--choose", "--check-texts", "x.txt"])
    assert result.exit_code == 2 and "need the model" in result.output


def test_no_quantize_writes_fp32_only(exported: tuple[Path, Path], tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["export", str(exported[0]), "--out", str(tmp_path / "o"), "--no-quantize", "--json"]
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert sorted(payload["files"]) == [
        CHECK_FILE,
        "export.json",
        "image_encoder.onnx",
        SAMPLE_FILE,
        "text_encoder.onnx",
    ]
    assert payload["image_encoder"]["default"] == "fp32" and set(payload["image_encoder"]["variants"]) == {"fp32"}
    result = CliRunner().invoke(app, ["export", str(exported[0])])
    assert result.exit_code == 2 and "give --out DIR to export, or --choose" in result.output


def test_a_variant_the_quantiser_cannot_build_is_left_out_with_the_reason(
    exported: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import polymodal.export.onnx as onnx_export

    shutil.copy(exported[1] / "image_encoder.onnx", tmp_path / "image_encoder.onnx")

    def unsupported(source: Path, target: Path, feeds: dict[str, np.ndarray]) -> int:
        raise NotImplementedError("no kernel for this graph")

    monkeypatch.setitem(onnx_export.QUANTIZERS, "int8-block", unsupported)
    entry = {"file": "image_encoder.onnx"}
    onnx_export._quantize(tmp_path, entry, load_sample(exported[1])["image"][0])
    assert (
        set(entry["variants"]) == {"int8", "int8-avx2", "int8-mixed"}
        and (tmp_path / "image_encoder.int8.onnx").is_file()
    )
    assert entry["variants_not_built"] == {"int8-block": "NotImplementedError: no kernel for this graph"}


def test_int8_mixed_smooths_in_the_weights_and_keeps_narrowing_matmuls_in_blocks(
    exported: tuple[Path, Path], tmp_path: Path
) -> None:
    import onnx

    from polymodal.export.variants import _is_narrowing, _smooth, _weight_nodes

    out = exported[1]
    feeds = load_sample(out)["image"][0]
    fp32_file = out / "image_encoder.onnx"
    model, nodes = _weight_nodes(fp32_file, ("MatMul",))
    weights = {init.name: init for init in model.graph.initializer}
    by_name = {node.name: node for node in model.graph.node}
    gemms = [node for node in model.graph.node if node.op_type == "Gemm" and node.input[1] in weights]
    narrowing = {n for n in nodes if _is_narrowing(weights[by_name[n].input[1]])}
    assert narrowing and len(narrowing) < len(nodes)  # the MLP down-projections
    # Smoothing alone rescales activations and weights against each other: the fp32 function is unchanged.
    _smooth(model, [by_name[n] for n in nodes if n not in narrowing], feeds)
    onnx.save(model, str(tmp_path / "smoothed.onnx"))
    inverse_scales = [i for i in model.graph.initializer if i.name.endswith("_inverse_scale")]
    assert inverse_scales and not all(np.allclose(onnx.numpy_helper.to_array(i), 1) for i in inverse_scales)
    smoothed = onnxruntime.InferenceSession(str(tmp_path / "smoothed.onnx"), providers=["CPUExecutionProvider"])
    original = onnxruntime.InferenceSession(str(fp32_file), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(smoothed.run(None, feeds)[0], original.run(None, feeds)[0], atol=1e-5)
    # The built variant: the narrowing MatMuls and the Gemm (projection head) as 8-bit blocks, the other weight
    # MatMuls per-channel int8.
    mixed = onnx.load(str(out / "image_encoder.int8-mixed.onnx"))
    ops = [node.op_type for node in mixed.graph.node]
    assert ops.count("MatMulNBits") == len(narrowing) + len(gemms)
    assert ops.count("MatMulInteger") + ops.count("DynamicQuantizeMatMul") == len(nodes) - len(narrowing)


def test_int8_mixed_is_recorded_and_chosen_when_it_is_the_fastest_accurate_variant(
    exported: tuple[Path, Path], tmp_path: Path
) -> None:
    out = exported[1]
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    figures = manifest["text_encoder"]["variants"]["int8-mixed"]
    assert figures["file"] == "text_encoder.int8-mixed.onnx" and figures["cosine_min"] >= COSINE_FLOOR
    rates = {"fp32": (10, 1.0), "int8": (30, COSINE_FLOOR - 1e-3), "int8-mixed": (25, 0.9995), "int8-block": (18, 1.0)}
    assert pick({n: {"items_per_second": r, "cosine_min": c} for n, (r, c) in rates.items()}) == "int8-mixed"
    copy = _copy(out, tmp_path)
    choose_again(copy, default="int8-mixed")
    texts = ["a red circle", "cat"]
    chosen = OnnxEmbedder(copy)
    assert chosen.variants == {"image": "int8-mixed", "text": "int8-mixed"}
    np.testing.assert_allclose(
        chosen.embed_text(texts), OnnxEmbedder(out, variant="int8-mixed").embed_text(texts), atol=1e-6
    )


def _avx2_int8_matmul(activations: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """uint8 (rows, inner) x int8 (inner, output) as AVX2's vpmaddubsw + vpmaddwd compute it: the products of inner
    positions 2i and 2i+1 summed and clamped to int16, then the pairs summed in int32."""
    a = np.pad(activations.astype(np.int64), ((0, 0), (0, activations.shape[1] % 2)))  # the kernel pads k with 0
    w = np.pad(weights.astype(np.int64), ((0, len(weights) % 2), (0, 0)))
    pairs = np.einsum("rip,iop->rio", a.reshape(len(a), -1, 2), w.reshape(-1, 2, w.shape[1]).transpose(0, 2, 1))
    return np.clip(pairs, -32768, 32767).sum(axis=1)


@pytest.mark.parametrize("inner", [64, 63])
def test_int8_avx2_weights_cannot_saturate_avx2_pair_sums_and_int8_weights_can(inner: int) -> None:
    from polymodal.export.variants import PAIR_LIMIT, _pair_safe_scale

    rng = np.random.RandomState(0)
    weight = rng.standard_t(4, size=(inner, 48)).astype(np.float32)  # heavy tails: large neighbours of like sign
    weight[:, 0] = 0.0  # an all-zero column keeps a usable scale
    weight[:, 1] = np.resize([0.5, -0.5], inner)  # alternating signs: no pair can overflow, so int8's own scale
    weight[-1, 2] = 50.0  # an odd inner dimension's last weight pairs with the kernel's zero padding
    activations = rng.randint(0, 256, size=(200, inner))
    activations[:4] = 255  # the worst case for positive pairs
    scale = _pair_safe_scale(weight)
    plain = np.abs(weight).max(axis=0) / 127
    assert scale[0] == 1.0 and scale[1] == pytest.approx(plain[1]) and np.all(scale >= plain - 1e-9)
    safe = np.clip(np.round(weight / scale), -127, 127).astype(np.int8)
    pairs = np.pad(safe.astype(int), ((0, inner % 2), (0, 0))).reshape(-1, 2, safe.shape[1])
    like = pairs[:, 0] * pairs[:, 1] > 0
    assert np.abs(pairs).sum(axis=1)[like].max() <= PAIR_LIMIT + 1
    exact = activations.astype(np.int64) @ safe.astype(np.int64)
    np.testing.assert_array_equal(_avx2_int8_matmul(activations, safe), exact)
    # The same matrix at int8's per-channel scale overflows: the emulation would catch a scale that is too narrow.
    int8 = np.clip(np.round(weight / np.where(plain > 0, plain, 1.0)), -127, 127).astype(np.int8)
    assert np.any(_avx2_int8_matmul(activations, int8) != activations.astype(np.int64) @ int8.astype(np.int64))


def test_the_int8_avx2_variant_holds_pair_safe_weights_and_tracks_fp32(exported: tuple[Path, Path]) -> None:
    import onnx
    from onnx import numpy_helper

    from polymodal.export.variants import PAIR_LIMIT

    out = exported[1]
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    for modality in ("image", "text"):
        entry = manifest[PARTS[modality]]
        graph = onnx.load(str(out / entry["variants"]["int8-avx2"]["file"])).graph
        inits = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
        weights = [inits[n.input[1]] for n in graph.node if n.op_type == "MatMulInteger" and n.input[1] in inits]
        assert len(weights) == entry["variants"]["int8-avx2"]["quantized_nodes"] > 0
        fp32 = {
            init.name: numpy_helper.to_array(init) for init in onnx.load(str(out / entry["file"])).graph.initializer
        }
        for n in graph.node:
            if n.op_type != "MatMulInteger" or n.input[1] not in inits:
                continue
            w = inits[n.input[1]]
            padded = np.vstack([w, np.zeros((len(w) % 2, w.shape[1]), w.dtype)]).astype(int).reshape(-1, 2, w.shape[1])
            like = padded[:, 0] * padded[:, 1] > 0
            assert np.abs(padded).sum(axis=1)[like].max(initial=0) <= PAIR_LIMIT + 1
            # The rewritten weights and scales still represent the fp32 weights to half a step.
            name = n.input[1].removesuffix("_quantized")
            scale = inits[f"{name}_scale"]
            assert np.all(np.abs(w * scale - fp32[name]) <= scale / 2 + 1e-6)
            assert not np.any(inits[f"{name}_zero_point"])
        figures = entry["variants"]["int8-avx2"]
        assert min(figures["cosine_min"], figures["heldout_cosine_min"]) > 0.99
        # int8-mixed's per-channel int8 weights (smoothed, so larger) are pair-safe too.
        mixed = onnx.load(str(out / entry["variants"]["int8-mixed"]["file"])).graph
        inits = {init.name: numpy_helper.to_array(init) for init in mixed.initializer}
        weights = [inits[n.input[1]] for n in mixed.node if n.op_type == "MatMulInteger" and n.input[1] in inits]
        assert weights
        for w in weights:
            padded = np.vstack([w, np.zeros((len(w) % 2, w.shape[1]), w.dtype)]).astype(int).reshape(-1, 2, w.shape[1])
            like = padded[:, 0] * padded[:, 1] > 0
            assert np.abs(padded).sum(axis=1)[like].max(initial=0) <= PAIR_LIMIT + 1


def test_timing_runs_each_variant_for_at_least_its_rounds_and_the_minimum_time() -> None:
    import time

    from polymodal.export.variants import MAX_TIMED_ROUNDS, MIN_TIMED_SECONDS, measure

    class Session:
        def __init__(self, seconds: float) -> None:
            self.seconds, self.runs = seconds, 0

        def run(self, outputs: None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
            self.runs += 1
            time.sleep(self.seconds)
            return [np.ones((2, 4), np.float32)]

    want = np.ones((2, 4), np.float32)
    instant = {"fp32": Session(0.0)}
    measure(instant, {}, want, rounds=3)
    assert instant["fp32"].runs == 1 + MAX_TIMED_ROUNDS  # the warm-up, then rounds up to the cap
    # Each variant stops once it has its rounds and its time: a slow one is not kept running by a fast one.
    mixed = {"fp32": Session(MIN_TIMED_SECONDS / 2.5), "int8": Session(0.0)}
    figures = measure(mixed, {}, want, rounds=3)
    assert mixed["fp32"].runs == 1 + 3 and figures["fp32"]["timed_runs"] == 3
    assert mixed["int8"].runs == 1 + MAX_TIMED_ROUNDS and figures["int8"]["timed_runs"] == MAX_TIMED_ROUNDS
    assert figures["fp32"]["cosine_min"] == pytest.approx(1.0)


def test_an_export_chosen_on_another_machine_says_so_when_loaded(
    exported: tuple[Path, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from polymodal.export.variants import chosen_elsewhere, this_machine

    out = _copy(exported[1], tmp_path)
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    assert manifest["variant_choice"]["machine"] == this_machine()
    assert chosen_elsewhere(manifest) is None
    with caplog.at_level("WARNING", logger="polymodal.export.runtime"):
        OnnxEmbedder(out)
    assert "another machine" not in caplog.text
    manifest["variant_choice"]["machine"] = "AMD EPYC 7B13 (avx2 fma)"
    (out / MANIFEST_FILE).write_text(json.dumps(manifest))
    with caplog.at_level("WARNING", logger="polymodal.export.runtime"):
        OnnxEmbedder(out)
        OnnxEmbedder(out, variant="fp32")  # a variant asked for by name: nothing to warn about
    assert caplog.text.count("chosen on another machine (AMD EPYC 7B13 (avx2 fma)); `polymodal export") == 1
    assert f"{out} --choose" in caplog.text
    forced = {**manifest, "variant_choice": {**manifest["variant_choice"], "forced": "fp32"}}
    for part in ("image_encoder", "text_encoder"):
        forced[part] = {**manifest[part], "default": "fp32"}
    assert chosen_elsewhere(forced) is None  # chosen by hand: nothing to choose again
    forced["text_encoder"] = {**manifest["text_encoder"], "default": "int8"}  # the forced one missing there
    assert chosen_elsewhere(forced) == "AMD EPYC 7B13 (avx2 fma)"
    choose_again(out)
    assert chosen_elsewhere(json.loads((out / MANIFEST_FILE).read_text())) is None


def test_the_exporters_notes_are_dropped_without_setting_up_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    """The quantisers log to the root logger (so Python sets up logging for the whole process) and one calls
    ``logging.basicConfig(level=INFO)`` on import: inside ``without_notes`` their notes are dropped, nothing else,
    and the process's logging is as it was afterwards."""
    import logging

    from polymodal.export.source import without_notes

    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])  # as in a script that set up no logging
    monkeypatch.setattr(root, "level", logging.WARNING)
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    noisy = logging.getLogger("tests.noisy")
    noisy.addHandler(Keep())
    monkeypatch.setattr(noisy, "level", logging.DEBUG)
    with without_notes("tests.noisy", "Please consider", below=logging.WARNING):
        logging.basicConfig(level=logging.INFO)  # a no-op here
        assert root.handlers == [logging.lastResort] and root.level == logging.WARNING
        noisy.info("skip to quantize node_1 ...")
        noisy.warning("Please consider to run pre-processing before quantization.")
        noisy.warning("a weight has NaNs")
    noisy.info("after: kept")
    assert seen == ["a weight has NaNs", "after: kept"]
    assert root.handlers == [] and root.level == logging.WARNING


def test_overlapping_exports_keep_the_stand_in_handler_until_the_last_leaves(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two exports in threads: the first to leave must not take the root logger's stand-in handler from the other
    (whose library's ``logging.basicConfig`` would then set up logging for the whole process)."""
    import logging
    from contextlib import ExitStack

    from polymodal.export.source import without_notes

    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    first, second = ExitStack(), ExitStack()
    first.enter_context(without_notes("tests.first"))
    second.enter_context(without_notes("tests.second"))
    first.close()  # left first, while the second is still inside
    assert root.handlers == [logging.lastResort]
    second.close()
    assert root.handlers == []
    # A process with its own handler keeps it, and gets no stand-in.
    own = logging.NullHandler()
    monkeypatch.setattr(root, "handlers", [own])
    with without_notes("tests.first"):
        assert root.handlers == [own]
    assert root.handlers == [own]
