"""Benchmarks on small files written here in each standard layout, checked against slow per-item references."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from polymodal.backends import load_backend
from polymodal.data.readers import read_manifest
from polymodal.evaluate import passes, scoring
from polymodal.evaluate.benchmarks import BENCHMARKS
from polymodal.evaluate.context import EvalContext
from polymodal.evaluate.results import dump_results, load_results
from polymodal.evaluate.runner import run_eval
from polymodal.fsutil import hash_directory, hash_files
from polymodal.metrics import vqa_accuracy

from .test_cifar import write_cifar


def _samples(shapes_dir: Path) -> list:
    return list(read_manifest(shapes_dir / "test.jsonl")) + list(read_manifest(shapes_dir / "test_novel.jsonl"))


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


def test_imagefolder_zero_shot_matches_per_image_reference(tmp_path: Path, shapes_dir: Path, models: dict) -> None:
    root = tmp_path / "folder"
    for s in _samples(shapes_dir)[:12]:
        cls = root / s.metadata["label"]["shape"].replace(" ", "_")
        cls.mkdir(parents=True, exist_ok=True)
        shutil.copy(s.image, cls / Path(s.image).name)
    (root / "red_heart").mkdir()  # a class with no images still gets a prompt
    shutil.copy(_samples(shapes_dir)[12].image, root / "red_heart" / "x.png")
    doc = run_eval(str(models["clip"]), "imagefolder", data=root, templates="simple", n_resamples=50)
    (result,) = doc.results
    backend = load_backend(models["clip"])
    classes = sorted(p.name for p in root.iterdir())
    class_emb = torch.stack([_unit(backend.embed_text([f"a photo of a {c.replace('_', ' ')}."])[0]) for c in classes])
    correct, n = 0, 0
    for k, c in enumerate(classes):
        for path in sorted((root / c).iterdir()):
            emb = backend.embed_images([Image.open(path).convert("RGB")])[0]
            correct += int((class_emb @ emb).argmax()) == k
            n += 1
    assert result.benchmark == "imagefolder" and result.split == "all" and result.headline == "accuracy"
    assert result.metrics["accuracy"] == pytest.approx(correct / n)
    confusion = result.details.confusion
    assert confusion.classes == [c.replace("_", " ") for c in classes]
    assert sum(map(sum, confusion.matrix)) == n
    assert np.trace(np.array(confusion.matrix)) == correct
    assert result.examples[0].image.startswith(str(root)) and len(result.examples) == min(16, n)
    # Every image read is in the dataset hash.
    assert doc.provenance.data.hash == hash_files(list(root.rglob("*.png")), root=root)


def test_cifar10_and_provenance(tmp_path: Path, models: dict) -> None:
    write_cifar(tmp_path, "cifar10", [0, 1, 2, 3, 4, 5, 6, 7])
    doc = run_eval(str(models["clip"]), ["cifar10"], data=tmp_path, n_resamples=50, command="polymodal eval x")
    (result,) = doc.results
    assert result.split == "test" and 0 <= result.metrics["accuracy"] <= 1 and "top5_accuracy" in result.metrics
    assert len(result.details.confusion.classes) == 10 and result.examples[0].image is None  # pixels, no file
    prov = doc.provenance
    assert prov.model_hash == hash_directory(models["clip"])
    folder = tmp_path / "cifar-10-batches-bin"
    assert prov.data.hash == hash_files([folder / "batches.meta.txt", folder / "test_batch.bin"], root=tmp_path)
    assert set(prov.versions) == {"polymodal", "torch", "transformers", "numpy"} and prov.versions["torch"]
    assert prov.command == "polymodal eval x" and prov.seed == 0
    path = dump_results(doc, tmp_path / "out" / "r.json")
    assert load_results(path) == doc  # the file round-trips through the schema


def _karpathy(tmp_path: Path, shapes_dir: Path) -> Path:
    root = tmp_path / "flickr"
    (root / "flickr30k-images").mkdir(parents=True)
    images = []
    for i, s in enumerate(_samples(shapes_dir)):
        name = f"{i:04d}.png"
        shutil.copy(s.image, root / "flickr30k-images" / name)
        sentences = [{"raw": c} for c in (s.text * 5)[:5]]  # five captions per image, as in Flickr30k
        images.append({"filename": name, "imgid": i, "split": "test" if i < 15 else "train", "sentences": sentences})
    (root / "dataset_flickr30k.json").write_text(json.dumps({"dataset": "flickr30k", "images": images}))
    return root


def test_flickr30k_retrieval_matches_full_similarity_reference(tmp_path: Path, shapes_dir: Path, models: dict) -> None:
    root = _karpathy(tmp_path, shapes_dir)
    (result,) = run_eval(str(models["clip"]), "flickr30k", data=root, n_resamples=50).results
    entries = [e for e in json.loads((root / "dataset_flickr30k.json").read_text())["images"] if e["split"] == "test"]
    backend = load_backend(models["clip"])
    img = torch.cat(
        [backend.embed_images([Image.open(root / "flickr30k-images" / e["filename"]).convert("RGB")]) for e in entries]
    ).numpy()
    texts = [s["raw"].strip() for e in entries for s in e["sentences"]]
    owner = np.repeat(np.arange(len(entries)), 5)
    txt = torch.cat([backend.embed_text([t]) for t in texts]).numpy()
    sims = img @ txt.T  # (N_img, N_txt), the full matrix
    t2i = np.array([1 + np.sum(sims[:, j] > sims[owner[j], j] + 1e-6) for j in range(len(texts))])
    i2t = np.array(
        [min(1 + np.sum(sims[i] > sims[i, j] + 1e-6) for j in np.flatnonzero(owner == i)) for i in range(len(entries))]
    )
    for k in (1, 5, 10):
        assert result.metrics[f"t2i_R@{k}"] == pytest.approx(np.mean(t2i <= k))
        assert result.metrics[f"i2t_R@{k}"] == pytest.approx(np.mean(i2t <= k))
        assert result.details.recall_at_k["i2t"][str(k)] == result.metrics[f"i2t_R@{k}"]
    assert result.headline == "t2i_R@1" and set(result.ci95) >= {"t2i_R@1", "i2t_R@1"}
    example = result.examples[0]
    assert len(example.retrieved) == 3 and example.retrieved[0].score >= example.retrieved[1].score


def test_vqav2_matches_per_question_reference_and_drops_modalities(
    tmp_path: Path, shapes_dir: Path, models: dict
) -> None:
    root = tmp_path / "vqa"
    (root / "val2014").mkdir(parents=True)
    questions, annotations = [], []
    kinds = {"exists": "yes/no", "count": "number"}
    for image_id, s in enumerate(_samples(shapes_dir)[:6], start=1):
        Image.open(s.image).convert("RGB").save(root / "val2014" / f"COCO_val2014_{image_id:012d}.jpg", quality=95)
        for j, qa in enumerate(s.qa[:4]):
            qid = image_id * 100 + j
            questions.append({"image_id": image_id, "question": qa.question, "question_id": qid})
            answers = [{"answer": qa.answer}] * 7 + [{"answer": "yes"}] * 3  # ten annotators, some disagreeing
            annotations.append(
                {
                    "question_id": qid,
                    "image_id": image_id,
                    "answers": answers,
                    "answer_type": kinds.get(qa.type, "other"),
                    "question_type": qa.type,
                }
            )
    (root / "v2_OpenEnded_mscoco_val2014_questions.json").write_text(json.dumps({"questions": questions}))
    (root / "v2_mscoco_val2014_annotations.json").write_text(json.dumps({"annotations": annotations}))
    (result,) = run_eval(str(models["vqa"]), "vqav2", data=root, with_robustness=True, n_resamples=50).results
    backend = load_backend(models["vqa"])
    accs, by_type = [], {}
    for q, a in zip(questions, annotations):
        image = Image.open(root / "val2014" / f"COCO_val2014_{q['image_id']:012d}.jpg").convert("RGB")
        pred = backend.answer([image], [q["question"]])[0]
        acc = vqa_accuracy(pred, [x["answer"] for x in a["answers"]])
        accs.append(acc)
        by_type.setdefault(a["answer_type"], []).append(acc)
    assert result.metrics["vqa_accuracy"] == pytest.approx(np.mean(accs))
    assert result.details.per_question_type == pytest.approx({t: np.mean(v) for t, v in by_type.items()})
    rob = result.robustness
    assert rob.metric == "vqa_accuracy" and rob.missing_modality["none"] == result.metrics["vqa_accuracy"]
    assert set(rob.missing_modality) == {"none", "image", "text"}
    assert set(rob.corruptions) == {"gaussian_noise", "blur", "jpeg"}
    assert all(
        list(c) == ["0", "1", "2", "3", "4", "5"] and c["0"] == result.metrics["vqa_accuracy"]
        for c in rob.corruptions.values()
    )


def test_statements_without_the_image_ignore_the_image(shapes_dir: Path, models: dict) -> None:
    ctx = EvalContext(model=str(models["fusion"]), data=shapes_dir, n_resamples=20)
    task = BENCHMARKS["shapes-statements"].load(ctx, "test")
    black = lambda img, i: Image.new("RGB", img.size)  # noqa: E731
    dropped = task.score(None, "image", False).metrics["accuracy"]
    assert task.score(black, "image", False).metrics["accuracy"] == dropped  # image absent: pixels cannot matter
    full = task.score(None, None, True)
    assert full.examples and full.ci95["accuracy"][0] <= full.metrics["accuracy"] <= full.ci95["accuracy"][1]
    assert task.drops == ("image", "text")
    # Per statement type: each type's accuracy, and the overall figure is their statement-weighted mean.
    types = [st.type for s in read_manifest(shapes_dir / "test.jsonl", strict=True) for st in s.statements]
    counts = {t: types.count(t) for t in set(types)}
    per_type = full.details.per_statement_type
    assert set(per_type) == set(counts) and {"exists", "position", "count"} <= set(per_type)
    assert all(full.metrics[f"accuracy_{t}"] == v for t, v in per_type.items())
    weighted = sum(per_type[t] * n for t, n in counts.items()) / len(types)
    assert weighted == pytest.approx(full.metrics["accuracy"])


def test_shapes_suites_on_both_splits(shapes_dir: Path, models: dict) -> None:
    doc = run_eval(str(models["clip"]), "shapes-zeroshot,shapes-retrieval", data=shapes_dir, n_resamples=50)
    assert [(r.benchmark, r.split) for r in doc.results] == [
        ("shapes-zeroshot", "test"),
        ("shapes-zeroshot", "test_novel"),
        ("shapes-retrieval", "test"),
        ("shapes-retrieval", "test_novel"),
    ]
    zs = doc.results[0]
    assert {"accuracy", "color_accuracy", "shape_accuracy"} <= set(zs.metrics)
    assert len(zs.details.confusion.classes) == 64
    (cap,) = run_eval(
        str(models["caption"]), "shapes-caption", data=shapes_dir, splits=["test"], meteor=False, n_resamples=20
    ).results
    assert cap.headline == "CIDEr-D" and {"BLEU-4", "ROUGE-L", "CIDEr-D"} <= set(cap.metrics)
    assert cap.examples[0].prediction is not None and cap.examples[0].reference
    (vqa,) = run_eval(str(models["vqa"]), "shapes-vqa", data=shapes_dir, splits=["test"], n_resamples=20).results
    assert set(vqa.details.per_question_type) <= {"color", "shape", "count", "exists", "position", "relation"}
    assert len(vqa.details.per_question_type) >= 4


def test_clear_errors(tmp_path: Path, shapes_dir: Path, models: dict) -> None:
    with pytest.raises(ValueError, match="unknown benchmark.*imagenet.*choose from"):
        run_eval(str(models["clip"]), "imagenet")
    with pytest.raises(ValueError, match="needs --data PATH"):
        run_eval(str(models["clip"]), "cifar10")
    with pytest.raises(ValueError, match="shapes-caption needs a model that can caption.*can: embed"):
        run_eval(str(models["clip"]), "shapes-caption", data=shapes_dir)
    with pytest.raises(FileNotFoundError, match="test.jsonl: no such file"):
        run_eval(str(models["clip"]), "shapes-retrieval", data=tmp_path)


def test_each_result_counts_what_its_headline_averages(shapes_dir: Path, models: dict) -> None:
    samples = list(read_manifest(shapes_dir / "test.jsonl"))
    expected = {
        ("caption", "shapes-caption"): (len(samples), "images"),
        ("vqa", "shapes-vqa"): (sum(len(s.qa) for s in samples), "questions"),
        ("fusion", "shapes-statements"): (sum(len(s.statements) for s in samples), "statements"),
    }
    for (kind, benchmark), (n, unit) in expected.items():
        (result,) = run_eval(str(models[kind]), benchmark, data=shapes_dir, splits=["test"], n_resamples=20).results
        assert (result.n, result.unit) == (n, unit), benchmark


def test_ineligible_benchmarks_are_skipped_until_none_can_run(shapes_dir: Path, models: dict) -> None:
    doc = run_eval(str(models["clip"]), "shapes-caption,shapes-retrieval", data=shapes_dir, n_resamples=20)
    assert [(r.benchmark, r.split) for r in doc.results] == [
        ("shapes-retrieval", "test"),
        ("shapes-retrieval", "test_novel"),
    ]
    assert [(s.benchmark, s.split) for s in doc.skipped] == [
        ("shapes-caption", "test"),
        ("shapes-caption", "test_novel"),
    ]
    assert "needs a model that can caption" in doc.skipped[0].reason
    with pytest.raises(ValueError, match=r"nothing could run: shapes-caption \(test\): .*; shapes-vqa \(test\): "):
        run_eval(str(models["clip"]), "shapes-caption,shapes-vqa", data=shapes_dir, splits=["test"])


def test_cis_resample_the_items_of_one_image_together(
    shapes_dir: Path, models: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Captions, questions and statements about one image are one unit of the bootstrap (a cluster bootstrap)."""
    calls: list[tuple[int, int]] = []  # (items, distinct groups) of each interval

    def spy(values, groups=None, **kw):  # type: ignore[no-untyped-def]
        calls.append((len(values), len(set(range(len(values)) if groups is None else groups))))
        return real(values, groups, **kw)

    real = scoring.grouped_bootstrap_ci
    monkeypatch.setattr(passes, "grouped_bootstrap_ci", spy)
    monkeypatch.setattr(scoring, "grouped_bootstrap_ci", spy)
    samples = list(read_manifest(shapes_dir / "test.jsonl"))
    for kind, benchmark, per_image in [
        ("clip", "shapes-retrieval", [len(s.text) for s in samples]),
        ("vqa", "shapes-vqa", [len(s.qa) for s in samples]),
        ("fusion", "shapes-statements", [len(s.statements) for s in samples]),
    ]:
        calls.clear()
        (result,) = run_eval(str(models[kind]), benchmark, data=shapes_dir, splits=["test"], n_resamples=20).results
        assert sum(per_image) > len(samples)  # several items per image
        assert (sum(per_image), len(samples)) in calls, benchmark  # the headline's items, grouped by image
        assert result.n == sum(per_image)
