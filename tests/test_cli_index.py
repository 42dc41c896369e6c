"""``polymodal index build|add|tune|remove|info`` and ``polymodal search`` through the real typer app."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from polymodal.cli.main import app
from tests.index.fixtures import (  # noqa: F401
    clip_model,
    image_folder,
    other_clip,
    spread_vectors,
    tiny_clip,
    write_caption_manifest,
    write_images,
    write_vectors,
)

runner = CliRunner()


def invoke(*args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def built(tmp_path: Path, image_folder: Path, tiny_clip: Path) -> Path:
    out = tmp_path / "idx"
    result = invoke("index", "build", image_folder, "--model", tiny_clip, "--out", out, "--json", "--chunk-size", "5")
    assert result.exit_code == 0, result.output
    return out


def test_build_reports_counts_and_skips(built: Path, image_folder: Path, tmp_path: Path, tiny_clip: Path) -> None:
    info = json.loads(invoke("index", "info", built, "--json").stdout)
    assert info["counts"] == {"image": 12, "text": 0} and info["skipped"] == 2 and info["type"] == "flat"
    assert info["model"] == str(tiny_clip.resolve())
    # The human form says what was skipped and where the log is.
    result = invoke("index", "build", image_folder, "--model", tiny_clip, "--out", tmp_path / "again")
    assert result.exit_code == 0, result.output
    assert "indexed 12 items" in result.output and "skipped 2" in result.output and "skipped.jsonl" in result.output
    (broken,) = [line for line in result.output.splitlines() if "broken.png" in line]
    assert broken.count("broken.png") == 1, broken  # each example once, with its reason
    text = invoke("index", "info", built).output
    assert "flat" in text and "inner_product" in text


def test_search_text_matches_brute_force(built: Path, image_folder: Path, clip_model) -> None:
    result = invoke("search", built, "a red circle", "-k", "4", "--json")
    assert result.exit_code == 0, result.output
    hits = json.loads(result.stdout)
    paths = sorted(image_folder.glob("img*.png"))
    scores = clip_model.embed_image([str(p) for p in paths]) @ clip_model.embed_text("a red circle")[0]
    order = np.argsort(-scores)[:4]
    assert [h["rank"] for h in hits] == [1, 2, 3, 4]
    assert [h["path"] for h in hits] == [str(paths[i].resolve()) for i in order]
    np.testing.assert_allclose([h["score"] for h in hits], scores[order], atol=1e-5)
    table = invoke("search", built, "a red circle", "-k", "2").output
    assert "rank" in table and f"{hits[0]['score']:.4f}" in table
    assert Path(hits[0]["path"]).name in table.replace("\n", "").replace(" ", "")


def test_search_by_image_finds_itself(built: Path, image_folder: Path) -> None:
    query = sorted(image_folder.glob("img*.png"))[7]
    hits = json.loads(invoke("search", built, "--image", query, "-k", "1", "--json").stdout)
    assert hits[0]["path"] == str(query.resolve()) and hits[0]["score"] == pytest.approx(1.0, abs=1e-5)


def test_another_model_is_refused_before_it_loads(
    built: Path, other_clip: Path, image_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its files say it is another model: search and add refuse it at once, not after a long load."""

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("the other model was loaded before being refused")

    monkeypatch.setattr("polymodal.index.query.load", never)
    monkeypatch.setattr("polymodal.cli.index.load_model_or_fail", never)
    for args in (("search", built, "x"), ("index", "add", built, image_folder)):
        result = invoke(*args, "--model", other_clip)
        assert result.exit_code == 1 and "built with model" in result.output and "clip-other" in result.output


def test_search_errors_are_one_line(built: Path, other_clip: Path, tmp_path: Path) -> None:
    result = invoke("search", built, "x", "--model", other_clip)
    assert result.exit_code == 1 and "clip-other" in result.output and "built with model" in result.output
    assert "Traceback" not in result.output
    assert invoke("search", built).exit_code == 2
    result = invoke("search", tmp_path, "x")
    assert result.exit_code == 1 and "not an index directory" in result.output
    result = invoke("search", built, "--image", tmp_path / "nope.png")
    assert result.exit_code == 1 and "nope.png: no such file" in result.output


def test_remove_add_and_info(built: Path, image_folder: Path, tmp_path: Path) -> None:
    victim = sorted(image_folder.glob("img*.png"))[2]
    result = invoke("index", "remove", built, "0", victim, "--json")
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)["removed"]) == 2
    result = invoke("index", "remove", built, "0")
    assert result.exit_code == 1 and "not in the index: 0" in result.output
    hits = json.loads(invoke("search", built, "--image", victim, "-k", "12", "--json").stdout)
    assert len(hits) == 10 and str(victim.resolve()) not in {h["path"] for h in hits}

    more = tmp_path / "more"
    write_images(more, 3, seed=9, prefix="extra")
    result = invoke("index", "add", built, more, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["added"] == 3
    assert json.loads(invoke("index", "info", built, "--json").stdout)["counts"]["image"] == 13


def test_build_errors(built: Path, image_folder: Path, tiny_clip: Path, tmp_path: Path) -> None:
    result = invoke("index", "build", image_folder, "--model", tiny_clip, "--out", built)
    assert result.exit_code == 1 and "index add" in result.output
    result = invoke("index", "build", tmp_path / "missing", "--model", tiny_clip, "--out", tmp_path / "x")
    assert result.exit_code == 1 and "missing: no such file or directory" in result.output
    result = invoke("index", "build", image_folder, "--model", tiny_clip, "--out", tmp_path / "y", "--type", "annoy")
    assert result.exit_code == 2 and "index type must be one of" in result.output


def test_ctrl_c_then_rerun_resumes(
    image_folder: Path, tiny_clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import polymodal.index.build as build_mod

    real_save, saved = build_mod._save_chunk, []

    def save_then_interrupt(*args, **kwargs):  # type: ignore[no-untyped-def]
        real_save(*args, **kwargs)
        saved.append(args[1])
        if len(saved) == 2:
            raise KeyboardInterrupt

    out = tmp_path / "idx"
    monkeypatch.setattr(build_mod, "_save_chunk", save_then_interrupt)
    result = invoke("index", "build", image_folder, "--model", tiny_clip, "--out", out, "--chunk-size", "4")
    assert result.exit_code == 130 and "rerun the same command to resume" in result.output
    monkeypatch.setattr(build_mod, "_save_chunk", real_save)
    result = invoke("index", "build", image_folder, "--model", tiny_clip, "--out", out, "--chunk-size", "4", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["resumed_chunks"], report["chunks"], report["added"]) == (2, 4, 12)


def test_texts_and_image_to_text_search(tmp_path: Path, tiny_clip: Path) -> None:
    manifest = write_caption_manifest(tmp_path / "ds")
    out = tmp_path / "idx"
    result = invoke(
        "index", "build", manifest, "--model", tiny_clip, "--out", out, "--texts", "--type", "hnsw", "--json"
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["type"] == "hnsw"
    hits = json.loads(
        invoke(
            "search", out, "--image", tmp_path / "ds/images/img001.png", "--kind", "text", "-k", "3", "--json"
        ).stdout
    )
    assert len(hits) == 3 and all(h["kind"] == "text" and h["text"] for h in hits)
    info = json.loads(invoke("index", "info", out, "--json").stdout)
    assert info["counts"] == {"image": 6, "text": 12} and info["params"]["hnsw_m"] == 32


def test_an_index_built_from_a_loaded_model_object_records_where_to_load_it(
    tmp_path: Path,
    image_folder: Path,
    tiny_clip: Path,
    clip_model,
    other_clip: Path,  # noqa: ANN001
) -> None:
    from polymodal.index.build import build_index

    out = tmp_path / "from-object"
    build_index(image_folder, out, clip_model)  # a Model object, as a Python user would pass it
    assert json.loads(invoke("index", "info", out, "--json").stdout)["model"] == str(tiny_clip.resolve())
    result = invoke("search", out, "a red circle", "-k", "1", "--json")  # no --model: index.json says which
    assert result.exit_code == 0, result.output
    refused = invoke("search", out, "a red circle", "--model", other_clip)
    assert refused.exit_code != 0 and "rebuild" in refused.output


def test_build_tunes_reports_and_records_a_missed_target(tmp_path: Path, tiny_clip: Path) -> None:
    folder = tmp_path / "many"
    write_images(folder, 240)
    out = tmp_path / "idx"
    args = ("index", "build", folder, "--model", tiny_clip, "--out", out, "--type", "ivf")
    result = invoke(*args, "--max-latency-ms", "0.000001")
    assert result.exit_code == 0, result.output
    assert "tuning on 24 held-out vectors" in result.output and "ivf nlist=" in result.output
    assert "warning: recall@10 >= 0.95 at p50 <= 1e-06 ms not met; best trade-off" in result.output
    info = json.loads(invoke("index", "info", out, "--json").stdout)
    tuning = info["tuning"]
    assert not tuning["met"] and tuning["queries"] == 24 and tuning["tried"]
    assert info["params"]["nprobe"] == tuning["chosen"]["params"]["nprobe"]
    assert "not met" in invoke("index", "info", out).output

    result = invoke(*args, "--recall-target", "0.5", "--overwrite", "--json")
    assert result.exit_code == 0, result.output
    tuning = json.loads(result.stdout)["tuning"]
    assert tuning["met"] and tuning["chosen"]["recall"] >= 0.5 and tuning["recall_target"] == 0.5


def test_build_options_of_the_tuning(image_folder: Path, tiny_clip: Path, tmp_path: Path) -> None:
    base = ("index", "build", image_folder, "--model", tiny_clip, "--type", "ivf")
    result = invoke(*base, "--out", tmp_path / "a", "--nprobe", "4")
    assert result.exit_code == 2 and "--no-tune" in result.output
    result = invoke(*base, "--out", tmp_path / "b", "--recall-target", "1.5")
    assert result.exit_code == 2 and "recall target must be in (0, 1]" in result.output
    result = invoke(*base, "--out", tmp_path / "c", "--nprobe", "4", "--no-tune", "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(invoke("index", "info", tmp_path / "c", "--json").stdout)
    assert info["params"]["nprobe"] == 4 and info["tuning"] is None


def test_tune_re_tunes_an_existing_index_and_keeps_the_record(tmp_path: Path) -> None:
    from polymodal.index import IndexParams
    from polymodal.index.tuning import build_tuned

    vectors = spread_vectors(3000)
    out = write_vectors(tmp_path / "idx", vectors, build_tuned(vectors, IndexParams(type="ivf", nprobe=1), None))
    result = invoke("index", "tune", out, "--max-latency-ms", "1000000")
    assert result.exit_code == 0, result.output
    assert "measuring on 300 of 3,000 stored vectors as queries" in result.output
    assert "re-tuned to ivf nlist=" in result.output and "before: ivf nlist=" in result.output
    info = json.loads(invoke("index", "info", out, "--json").stdout)
    tuning = info["tuning"]
    assert tuning["by"] == "tune" and tuning["met"] and tuning["before"]["params"]["nprobe"] == 1
    assert info["params"]["nprobe"] == tuning["chosen"]["params"]["nprobe"] > 1
    assert tuning["chosen"]["recall"] > tuning["before"]["recall"]
    assert "re-tuned to" in invoke("index", "info", out).output

    result = invoke("index", "tune", out, "--max-latency-ms", "0.000001", "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert not record["met"] and record["recall_target"] == 0.95  # the recorded target, the bound given
    assert "needs a rebuild" in invoke("index", "info", out).output.replace("\n", " ")
    result = invoke("index", "tune", out, "--recall-target", "1.5")
    assert result.exit_code == 2 and "recall target must be in (0, 1]" in result.output
    result = invoke("index", "tune", tmp_path)
    assert result.exit_code == 1 and "not an index directory" in result.output


def test_add_measures_again_once_the_index_grew_by_a_fifth(tmp_path: Path, tiny_clip: Path) -> None:
    out = tmp_path / "idx"
    write_images(tmp_path / "first", 240)
    result = invoke("index", "build", tmp_path / "first", "--model", tiny_clip, "--out", out, "--type", "ivf", "--json")
    assert result.exit_code == 0, result.output
    built = json.loads(result.stdout)["tuning"]
    assert built["vectors"] == 240

    def add(n: int, seed: int, *flags: str) -> str:
        folder = tmp_path / f"more{seed}"
        write_images(folder, n, seed=seed, prefix=f"more{seed}-")
        result = invoke("index", "add", out, folder, *flags)
        assert result.exit_code == 0, result.output
        return result.output

    def record() -> dict:
        return json.loads(invoke("index", "info", out, "--json").stdout)["tuning"]

    assert "recall@10" not in add(30, 1) and record() == built  # 12.5%: nothing measured
    assert "recall@10" not in add(30, 2, "--no-tune") and record() == built  # 25%, but skipped
    output = add(1, 3)  # 301 vectors: more than a fifth past the 240 measured
    now = record()
    assert now["by"] == "add" and now["vectors"] == 301 and now["grown_from"] == 240 and now["measured"]
    assert "measuring on 30 of 301 stored vectors" in output
    assert "re-measured at 301 vectors (last measured at 240)" in output or "re-tuned to ivf" in output


def test_an_out_that_holds_an_index_is_refused_before_the_model_loads(
    built: Path, image_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import polymodal.cli.index as cli_index

    def no_load(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(cli_index, "load_model_or_fail", no_load)
    result = invoke("index", "build", image_folder, "--out", built)
    assert result.exit_code == 1 and "already holds an index" in result.output and "--overwrite" in result.output


def test_files_the_model_does_not_embed_are_counted_as_left_out(
    image_folder: Path, tiny_clip: Path, tmp_path: Path
) -> None:
    """An image-text model over a folder that also holds a sound: the sound is left out and said to be."""
    import shutil
    import wave

    folder = tmp_path / "mixed"
    shutil.copytree(image_folder, folder)
    with wave.open(str(folder / "birdsong.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16_000)
        w.writeframes(b"\x00\x00" * 1600)
    result = invoke("index", "build", folder, "--model", tiny_clip, "--out", tmp_path / "idx")
    assert result.exit_code == 0, result.output
    assert "left out 1 audio files: the model does not embed audio" in " ".join(result.output.split())
    as_json = invoke("index", "build", folder, "--model", tiny_clip, "--out", tmp_path / "idx2", "--json")
    assert json.loads(as_json.stdout)["not_embedded"] == {"audio": 1}
