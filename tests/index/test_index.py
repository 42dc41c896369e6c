"""The index library: build/search against a brute-force reference, remove (real and tombstoned), add,
model identity checks, and resuming an interrupted build (injected failure and a real SIGKILL)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from polymodal.index import (
    AUTO_APPROXIMATE_THRESHOLD,
    AUTO_IVF_THRESHOLD,
    IndexParams,
    ModelMismatchError,
    VectorIndex,
    add_to_index,
    build_index,
    open_for_search,
    search_image,
    store,
)
from polymodal.index.kinds import apply_search_params, new_index, resolve_type
from polymodal.index.vector_index import WORK_DIR
from tests.index.fixtures import clip_model, image_folder, other_clip, tiny_clip, write_caption_manifest, write_images  # noqa: F401

REPO = Path(__file__).resolve().parents[2]


def snapshot(path: Path) -> tuple[list[int], list[dict], np.ndarray]:
    with VectorIndex.open(path) as idx:
        ids = store.all_ids(idx.conn)
        items = idx.items(ids)
        return ids, [items[i].to_dict() for i in ids], idx.vectors(ids)


def reference_search(model, paths: list[Path], query: np.ndarray, k: int) -> list[tuple[str, float]]:
    """Brute force: embed every image, cosine against the query, sort."""
    emb = model.embed_image([str(p) for p in paths])  # (N, D)
    scores = emb @ query
    order = np.argsort(-scores, kind="stable")[:k]
    return [(str(paths[i].resolve()), float(scores[i])) for i in order]


def test_flat_build_matches_brute_force_and_logs_skipped(tmp_path: Path, image_folder: Path, clip_model) -> None:
    out = tmp_path / "idx"
    result = build_index(image_folder, out, clip_model, chunk_size=5)
    assert (result.added, result.skipped, result.type) == (12, 2, "flat")
    assert not (out / WORK_DIR).exists(), "the finished directory replaces the work directory"
    skipped = [json.loads(line) for line in (out / "skipped.jsonl").read_text().splitlines()]
    assert sorted(Path(s["path"]).name for s in skipped) == ["broken.png", "empty.jpg"]
    assert sorted(s["kind"] for s in skipped) == ["empty_file", "not_an_image"]
    assert all(s["path"] in s["reason"] for s in skipped), "the reason names the file"
    meta = json.loads((out / "index.json").read_text())
    assert meta["identity"] == clip_model.identity and meta["embed_dim"] == 128 and meta["metric"] == "inner_product"
    assert meta["counts"] == {"image": 12, "text": 0}

    good = sorted(image_folder.glob("img*.png"))
    query = clip_model.embed_image(str(good[3]))[0]
    with VectorIndex.open(out) as idx:
        hits = idx.search(query, k=5)[0]
    expected = reference_search(clip_model, good, query, 5)
    assert [h.path for h in hits] == [p for p, _ in expected]
    np.testing.assert_allclose([h.score for h in hits], [s for _, s in expected], atol=1e-5)
    assert hits[0].path == str(good[3].resolve()) and hits[0].score == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf", "ivfpq", "ivfpq-rerank"])
def test_each_type_finds_the_exact_neighbours_of_clustered_vectors(kind: str) -> None:
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((20, 32)).astype(np.float32)
    base = (centres[rng.integers(0, 20, 2000)] + 0.3 * rng.standard_normal((2000, 32))).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    queries = base[:50] + 0.01
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    params = IndexParams(type=kind, nbits=8, pq_m=16, nprobe=64, ef_search=64)
    index = new_index(kind, 32, params, train=base)
    index.add_with_ids(base, np.arange(2000, dtype=np.int64) + 100)  # ids are ours, not positions
    apply_search_params(index, kind, params)
    _, found = index.search(queries, 10)
    truth = np.argsort(-(queries @ base.T), axis=1)[:, :10] + 100  # (50, 10)
    recall = np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth)])
    assert recall >= {"flat": 1.0, "hnsw": 0.95, "ivf": 0.95, "ivfpq": 0.5, "ivfpq-rerank": 0.95}[kind]


def test_auto_type_switches_at_the_threshold() -> None:
    assert resolve_type("auto", AUTO_APPROXIMATE_THRESHOLD - 1) == "flat"
    assert resolve_type("auto", AUTO_APPROXIMATE_THRESHOLD) == "ivfpq-rerank"
    assert resolve_type("auto", AUTO_IVF_THRESHOLD - 1) == "ivfpq-rerank"
    assert resolve_type("auto", AUTO_IVF_THRESHOLD) == "ivf"
    with pytest.raises(ValueError, match="index type must be one of"):
        IndexParams(type="annoy")


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_remove_by_id_and_path(tmp_path: Path, image_folder: Path, clip_model, kind: str) -> None:
    out = tmp_path / "idx"
    build_index(image_folder, out, clip_model, params=IndexParams(type=kind))
    ids_before, _, vectors_before = snapshot(out)
    good = sorted(image_folder.glob("img*.png"))
    query = clip_model.embed_image(str(good[0]))[0]
    with VectorIndex.open(out) as idx:
        first = idx.search(query, k=12)[0]
        removed, missing = idx.remove([first[0].id, str(good[5]), 999, str(tmp_path / "nope.png")])
    assert sorted(removed) == sorted([first[0].id, next(h.id for h in first if h.path == str(good[5].resolve()))])
    assert missing == [999, str(tmp_path / "nope.png")]
    with VectorIndex.open(out) as idx:
        after = idx.search(query, k=10)[0]
        info = idx.info()
    # The rest keep their order and scores; HNSW keeps the vectors (tombstones), flat and ivf delete them.
    assert [h.id for h in after] == [h.id for h in first if h.id not in removed][:10]
    assert info["items"] == 10
    assert (info["vectors"], info["tombstones"]) == ((12, 2) if kind == "hnsw" else (10, 0))
    ids_after, _, vectors_after = snapshot(out)  # the survivors' vectors are still found by id, unchanged
    keep = [ids_before.index(i) for i in ids_after]
    np.testing.assert_array_equal(vectors_after, vectors_before[keep])


def test_a_link_is_an_item_of_its_own(tmp_path: Path, clip_model) -> None:
    """A symlink in the folder is indexed under its own path (not twice under its target's), and removing it
    leaves the target's item."""
    folder = tmp_path / "pics"
    (target,) = write_images(folder, 1)
    link = folder / "link.png"
    link.symlink_to(target.name)
    out = tmp_path / "idx"
    build_index(folder, out, clip_model)
    _, items, _ = snapshot(out)
    root = folder.resolve()  # the walked folder, resolved; the files in it keep their names
    assert sorted(i["path"] for i in items) == [str(root / "img000.png"), str(root / "link.png")]
    with VectorIndex.open(out) as idx:
        removed, missing = idx.remove([str(link)])
        assert len(removed) == 1 and not missing
        assert [i.path for i in idx.items(store.all_ids(idx.conn)).values()] == [str(root / "img000.png")]


def test_add_skips_what_is_indexed_and_continues_ids(tmp_path: Path, clip_model) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    write_images(a, 4)
    write_images(b, 3, seed=5, prefix="new")
    out = tmp_path / "idx"
    build_index(a, out, clip_model, model_ref=str(clip_model.backend.saved.path))
    for p in sorted(a.glob("*.png"))[:2]:
        (b / p.name).write_bytes(p.read_bytes())  # b now also holds two images of a, by content but not path
    result = add_to_index(out, a, clip_model)
    assert (result.added, result.already_indexed) == (0, 4)
    result = add_to_index(out, b, clip_model)
    assert (result.added, result.items) == (5, 9)
    ids, items, _ = snapshot(out)
    assert ids == list(range(9))
    assert [Path(it["path"]).parent.name for it in items] == ["a"] * 4 + ["b"] * 5


def test_texts_from_manifest_and_image_to_text_search(tmp_path: Path, clip_model) -> None:
    manifest = write_caption_manifest(tmp_path / "ds")
    out = tmp_path / "idx"
    result = build_index(manifest, out, clip_model, texts=True)
    assert result.added == 6 + 12 and result.skipped == 1
    assert "missing.png" in (out / "skipped.jsonl").read_text()
    with VectorIndex.open(out) as idx:
        texts = [it for it in idx.items(store.all_ids(idx.conn)).values() if it.kind == "text"]
        query = clip_model.embed_image(str(tmp_path / "ds/images/img002.png"))[0]
        hits = idx.search(query, k=4, kind="text")[0]
    assert len(texts) == 12 and all(h.kind == "text" for h in hits)
    emb = clip_model.embed_text([t.text for t in texts])
    expected = sorted(zip((emb @ query).tolist(), [t.text for t in texts]), reverse=True)[:4]
    np.testing.assert_allclose([h.score for h in hits], [s for s, _ in expected], atol=1e-5)


def test_another_model_is_refused_naming_both(tmp_path: Path, image_folder: Path, clip_model, other_clip: Path) -> None:
    out = tmp_path / "idx"
    build_index(image_folder, out, clip_model, model_ref=str(clip_model.backend.saved.path))
    with pytest.raises(ModelMismatchError) as err:
        open_for_search(out, other_clip)
    assert "clip-other" in str(err.value) and str(clip_model.backend.saved.path) in str(err.value)
    with pytest.raises(ModelMismatchError):
        add_to_index(out, image_folder, str(other_clip))
    index, model = open_for_search(out)  # the recorded model
    with index:
        assert search_image(index, model, str(sorted(image_folder.glob("img*.png"))[0]), k=1)[0][0].score > 0.999


def test_build_refuses_to_overwrite_an_index(tmp_path: Path, image_folder: Path, clip_model) -> None:
    out = tmp_path / "idx"
    build_index(image_folder, out, clip_model)
    with pytest.raises(FileExistsError, match="index add"):
        build_index(image_folder, out, clip_model)
    assert build_index(image_folder, out, clip_model, overwrite=True).added == 12


class Interrupt(Exception):
    pass


def test_injected_failure_resumes_to_the_same_index(tmp_path: Path, image_folder: Path, clip_model) -> None:
    clean, resumed = tmp_path / "clean", tmp_path / "resumed"
    build_index(image_folder, clean, clip_model, chunk_size=3)

    def fail_after_two(n: int) -> None:
        if n == 1:
            raise Interrupt

    with pytest.raises(Interrupt):
        build_index(image_folder, resumed, clip_model, chunk_size=3, on_chunk=fail_after_two)
    with pytest.raises(Exception, match="did not finish"):
        VectorIndex.open(resumed)
    seen: list[int] = []
    result = build_index(image_folder, resumed, clip_model, chunk_size=3, on_chunk=seen.append)
    assert (result.chunks, result.resumed_chunks) == (5, 2) and seen == [2, 3, 4]
    a, b = snapshot(clean), snapshot(resumed)
    assert a[0] == b[0] and a[1] == b[1]
    np.testing.assert_allclose(a[2], b[2], atol=1e-6)
    assert (clean / "skipped.jsonl").read_text() == (resumed / "skipped.jsonl").read_text()


SLOW_BUILD = """
import sys, time
from polymodal.index import build_index

def stall(n):
    if n == 1:
        time.sleep(600)  # the parent SIGKILLs us here, with two chunks on disk

build_index(sys.argv[1], sys.argv[2], sys.argv[3], chunk_size=3, on_chunk=stall)
"""


def test_sigkill_mid_build_then_resume_equals_clean_build(
    tmp_path: Path, image_folder: Path, tiny_clip: Path, clip_model
) -> None:
    killed = tmp_path / "killed"
    script = tmp_path / "slow_build.py"
    script.write_text(SLOW_BUILD)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, str(script), str(image_folder), str(killed), str(tiny_clip)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    marker = killed / WORK_DIR / "chunk-000001.json"
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "build exited"
        assert time.monotonic() < deadline, "the build never wrote its second chunk"
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "index.json").exists()
    result = build_index(image_folder, killed, clip_model, chunk_size=3, model_ref=str(tiny_clip))
    assert result.resumed_chunks == 2
    clean = tmp_path / "clean"
    build_index(image_folder, clean, clip_model, chunk_size=3, model_ref=str(tiny_clip))
    a, b = snapshot(clean), snapshot(killed)
    assert a[0] == b[0] and a[1] == b[1]
    np.testing.assert_allclose(a[2], b[2], atol=1e-6)
