"""Scoring with CIs agrees with the verified metric functions; file readers name file and entry."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from polymodal.data.errors import BadSampleError
from polymodal.evaluate.score_files import load_caption_preds, load_caption_refs, load_vqa_preds, load_vqa_refs
from polymodal.evaluate.scoring import caption_scores, grouped_bootstrap_ci, vqa_scores
from polymodal.metrics import bootstrap_ci, score_captions, vqa_score

REFS = {
    1: ["A red circle on the left.", "a small red circle", "red circle, grey background"],
    2: ["Two blue squares.", "a pair of blue squares", "blue squares side by side"],
    3: ["a green triangle above a star", "green triangle and a star", "a star below a green triangle"],
    4: ["an empty grey picture", "nothing but grey", "a plain grey background"],
}
PREDS = {1: "a red circle", 2: "two blue squares", 3: "a green star", 4: "a grey background"}


def test_caption_scores_match_score_captions() -> None:
    coco = {"annotations": [{"image_id": k, "caption": c} for k, cs in REFS.items() for c in cs]}
    reference = score_captions(coco, [{"image_id": k, "caption": v} for k, v in PREDS.items()], with_meteor=False)
    metrics, ci, per_image = caption_scores(REFS, PREDS, seed=1, n_resamples=300)
    for n in range(1, 5):
        assert metrics[f"BLEU-{n}"] == pytest.approx(reference[f"Bleu_{n}"], abs=1e-12)
    assert metrics["ROUGE-L"] == pytest.approx(reference["ROUGE_L"], abs=1e-12)
    assert metrics["CIDEr-D"] == pytest.approx(reference["CIDEr"], abs=1e-12)
    assert set(per_image) == set(PREDS)
    for name in ("ROUGE-L", "CIDEr-D", "BLEU-4"):
        low, high = ci[name]
        assert low <= high
    assert ci["CIDEr-D"][0] <= metrics["CIDEr-D"] <= ci["CIDEr-D"][1]
    assert caption_scores(REFS, PREDS, seed=1, n_resamples=300)[1] == ci  # seeded: same CIs


def test_caption_bleu_interval_equals_recomputing_bleu_on_every_resample() -> None:
    """The BLEU-4 interval sums per-caption statistics; it must equal a full BLEU pass per resample."""
    from polymodal.metrics import bleu, bootstrap_ci, tokenize

    preds = dict(reversed(list(PREDS.items())))  # an insertion order unlike the references'
    _, ci, _ = caption_scores(REFS, preds, seed=3, n_resamples=200)
    keys = list(preds)
    tok_refs = {i: [tokenize(r) for r in REFS[k]] for i, k in enumerate(keys)}
    tok_preds = {i: tokenize(preds[k]) for i, k in enumerate(keys)}

    def recomputed(idx) -> float:
        return bleu(
            {j: tok_refs[int(i)] for j, i in enumerate(idx)}, {j: tok_preds[int(i)] for j, i in enumerate(idx)}
        )[3]

    expected = bootstrap_ci(recomputed, n_items=len(keys), n_resamples=200, seed=3)
    assert ci["BLEU-4"] == pytest.approx(expected, abs=1e-12) and expected[0] < expected[1]


def test_vqa_scores_match_official_formula_and_exact_mode() -> None:
    answers = {1: ["yes"] * 10, 2: ["2"] * 2 + ["3"] * 8, 3: ["red"] * 3 + ["blue"] * 7, 4: ["cat"] * 10}
    types = {1: "yes/no", 2: "number", 3: "other", 4: "other"}
    preds = {1: "Yes", 2: "two", 3: "red", 4: "dog"}
    metrics, ci, per_type, per_q = vqa_scores(preds, answers, types, n_resamples=200)
    official = vqa_score(preds, answers, types)
    assert metrics["vqa_accuracy"] == pytest.approx(official["overall"])
    assert per_type == pytest.approx(official["per_type"])
    # Leave-one-annotator-out: 2 matches -> (2 * 1/3 + 8 * 2/3) / 10; 3 matches -> (3 * 2/3 + 7) / 10.
    assert per_q[2] == pytest.approx(0.6) and per_q[3] == pytest.approx(0.9)
    assert metrics["vqa_accuracy_other"] == pytest.approx(0.45)
    assert ci["vqa_accuracy"][0] <= metrics["vqa_accuracy"] <= ci["vqa_accuracy"][1]
    # One reference answer: exact match after normalisation ("Two" == "2").
    exact, _, _, per_q_exact = vqa_scores({1: "Two", 2: "no"}, {1: ["2"], 2: ["yes"]}, exact=True, n_resamples=10)
    assert per_q_exact == {1: 1.0, 2: 0.0} and exact["vqa_accuracy"] == 0.5


def _write(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data))
    return path


def test_caption_files_accept_both_reference_forms_and_name_bad_entries(tmp_path: Path) -> None:
    as_list = [{"image_id": 1, "caption": "a"}, {"image_id": 1, "caption": "b"}, {"image_id": 2, "caption": "c"}]
    refs = load_caption_refs(_write(tmp_path / "list.json", as_list))
    assert refs == load_caption_refs(_write(tmp_path / "coco.json", {"images": [], "annotations": as_list}))
    assert refs == {1: ["a", "b"], 2: ["c"]}
    bad = _write(tmp_path / "preds.json", [{"image_id": 1, "caption": "x"}, {"caption": "y"}])
    with pytest.raises(BadSampleError) as err:
        load_caption_preds(bad, refs)
    assert str(bad) in str(err.value) and "entry[1]" in str(err.value) and "missing 'image_id'" in str(err.value)
    unknown = _write(tmp_path / "unknown.json", [{"image_id": 9, "caption": "x"}])
    with pytest.raises(BadSampleError, match=r"entry\[0\]: image_id 9 has no reference captions"):
        load_caption_preds(unknown, refs)
    with pytest.raises(BadSampleError, match=r"annotations\[0\].*caption must be a string"):
        load_caption_refs(_write(tmp_path / "r.json", {"annotations": [{"image_id": 1, "caption": 5}]}))


def test_vqa_files_name_bad_entries(tmp_path: Path) -> None:
    ann = {
        "annotations": [
            {"question_id": 10, "answers": [{"answer": "yes"}], "answer_type": "yes/no", "image_id": 7},
            {"question_id": 11, "answers": [{"answer": "2"}], "answer_type": "number"},
        ]
    }
    answers, types, images = load_vqa_refs(_write(tmp_path / "ann.json", ann))
    assert answers == {10: ["yes"], 11: ["2"]} and types == {10: "yes/no", 11: "number"} and images == {10: 7}
    with pytest.raises(BadSampleError, match="holds questions but no answers"):
        load_vqa_refs(_write(tmp_path / "q.json", {"questions": []}))
    short = _write(tmp_path / "p.json", [{"question_id": 10, "answer": "yes"}])
    with pytest.raises(BadSampleError, match="no answer for 1 annotated question.*11"):
        load_vqa_preds(short, answers)
    twice = _write(tmp_path / "p2.json", [{"question_id": 10, "answer": "yes"}, {"question_id": 10, "answer": "no"}])
    with pytest.raises(BadSampleError, match=r"entry\[1\]: question_id 10 is answered twice"):
        load_vqa_preds(twice, answers)


def test_groups_of_one_are_the_item_bootstrap() -> None:
    values = (np.random.default_rng(0).random(211) < 0.3).astype(float)
    item = bootstrap_ci(values, n_resamples=300, seed=4)
    assert grouped_bootstrap_ci(values, n_resamples=300, seed=4) == item
    assert grouped_bootstrap_ci(values, [f"image{i}" for i in range(211)], n_resamples=300, seed=4) == item


def test_items_of_one_image_are_resampled_together() -> None:
    # 30 images of 7 captions each; an image's captions all hit or all miss, as correlated captions do.
    rng = np.random.default_rng(1)
    per_image = (rng.random(30) < 0.4).astype(float)
    values, images = np.repeat(per_image, 7), np.repeat(np.arange(30), 7)
    order = rng.permutation(len(values))  # groups need not be contiguous
    values, images = values[order], images[order]
    item = bootstrap_ci(values, n_resamples=1000, seed=0)
    cluster = grouped_bootstrap_ci(values, images, n_resamples=1000, seed=0)
    assert cluster[1] - cluster[0] > 2 * (item[1] - item[0])  # about sqrt(7) wider: 30 units, not 210
    # Equal groups of equal items: exactly the bootstrap of one value per image.
    by_image = grouped_bootstrap_ci(np.repeat(per_image, 7), np.repeat(np.arange(30), 7), n_resamples=1000, seed=0)
    assert by_image == pytest.approx(bootstrap_ci(per_image, n_resamples=1000, seed=0))
    with pytest.raises(ValueError, match="210 values but 3 groups"):
        grouped_bootstrap_ci(values, [0, 1, 2])


def test_vqa_questions_about_one_image_are_resampled_together() -> None:
    answers = {q: ["yes"] * 10 for q in range(40)}
    preds = {q: "yes" if (q // 4) % 2 else "no" for q in range(40)}  # 10 images of 4 questions, all right or wrong
    images = {q: q // 4 for q in range(40)}
    metrics, ci, _, _ = vqa_scores(preds, answers, exact=True, n_resamples=500)
    grouped_metrics, grouped, _, _ = vqa_scores(preds, answers, exact=True, n_resamples=500, groups=images)
    assert grouped_metrics == metrics  # the point estimate does not change
    width = ci["vqa_accuracy"][1] - ci["vqa_accuracy"][0]
    assert grouped["vqa_accuracy"][1] - grouped["vqa_accuracy"][0] > 1.5 * width
