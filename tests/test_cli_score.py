"""``polymodal score captions|vqa`` through the real typer app."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from polymodal.cli.main import app
from polymodal.metrics import score_captions, vqa_score

runner = CliRunner()


def _write(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data))
    return path


def test_score_captions_matches_the_metric_functions(tmp_path: Path) -> None:
    coco = {
        "images": [{"id": i} for i in (1, 2, 3)],
        "annotations": [
            {"image_id": 1, "caption": "a red circle"},
            {"image_id": 1, "caption": "one red circle on grey"},
            {"image_id": 2, "caption": "two blue squares"},
            {"image_id": 2, "caption": "a pair of squares"},
            {"image_id": 3, "caption": "a star"},
        ],
    }
    preds = [{"image_id": 1, "caption": "a red circle"}, {"image_id": 2, "caption": "blue squares"}]
    refs_path, preds_path = _write(tmp_path / "refs.json", coco), _write(tmp_path / "preds.json", preds)
    result = runner.invoke(
        app, ["score", "captions", str(refs_path), str(preds_path), "--no-meteor", "--resamples", "100", "--json"]
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    expected = score_captions(coco, preds, with_meteor=False)
    assert payload["n_images"] == 2
    assert payload["metrics"]["BLEU-1"] == pytest.approx(expected["Bleu_1"])
    assert payload["metrics"]["CIDEr-D"] == pytest.approx(expected["CIDEr"])
    assert payload["metrics"]["ROUGE-L"] == pytest.approx(expected["ROUGE_L"])
    assert set(payload["ci95"]) == {"BLEU-4", "ROUGE-L", "CIDEr-D"}
    table = runner.invoke(
        app, ["score", "captions", str(refs_path), str(preds_path), "--no-meteor", "--resamples", "10"]
    )
    assert table.exit_code == 0 and "CIDEr-D" in table.stdout and "95% CI" in table.stdout


def test_score_captions_names_the_bad_entry(tmp_path: Path) -> None:
    refs = _write(tmp_path / "refs.json", [{"image_id": 1, "caption": "a"}])
    preds = _write(tmp_path / "preds.json", [{"image_id": 1, "caption": "a"}, {"id": 2, "caption": "b"}])
    result = runner.invoke(app, ["score", "captions", str(refs), str(preds), "--json"])
    assert result.exit_code == 1
    error = json.loads(result.stdout)["error"]
    assert str(preds) in error and "entry[1]" in error and "missing 'image_id'" in error


def test_score_vqa_overall_and_per_answer_type(tmp_path: Path) -> None:
    anns = [
        {"question_id": 1, "answers": [{"answer": "yes"}] * 10, "answer_type": "yes/no"},
        {"question_id": 2, "answers": [{"answer": "2"}] * 4 + [{"answer": "3"}] * 6, "answer_type": "number"},
        {"question_id": 3, "answers": [{"answer": "red"}] * 10, "answer_type": "other"},
    ]
    preds = [
        {"question_id": 1, "answer": "yes"},
        {"question_id": 2, "answer": "two"},
        {"question_id": 3, "answer": "blue"},
    ]
    ann_path = _write(tmp_path / "ann.json", {"annotations": anns})
    result = runner.invoke(app, ["score", "vqa", str(ann_path), str(_write(tmp_path / "p.json", preds)), "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    expected = vqa_score(
        {p["question_id"]: p["answer"] for p in preds},
        {a["question_id"]: [x["answer"] for x in a["answers"]] for a in anns},
        {a["question_id"]: a["answer_type"] for a in anns},
    )
    assert payload["metrics"]["vqa_accuracy"] == pytest.approx(expected["overall"])
    assert payload["per_answer_type"] == pytest.approx(expected["per_type"])
    lo, hi = payload["ci95"]["vqa_accuracy"]
    assert lo <= payload["metrics"]["vqa_accuracy"] <= hi
    missing = runner.invoke(app, ["score", "vqa", str(ann_path), str(_write(tmp_path / "q.json", preds[:2]))])
    assert missing.exit_code == 1 and "question_id 3" in missing.output


def test_score_vqa_resamples_each_images_questions_together(tmp_path: Path) -> None:
    """30 images of 5 questions each, an image's questions all right or all wrong: the interval is the cluster
    bootstrap's over images (as `eval` computes it), wider than resampling questions one by one."""
    from polymodal.evaluate.scoring import grouped_bootstrap_ci

    anns, preds = [], []
    for image in range(30):
        for k in range(5):
            qid = image * 5 + k
            anns.append({"question_id": qid, "image_id": image, "answers": [{"answer": "yes"}] * 10})
            preds.append({"question_id": qid, "answer": "yes" if image % 3 else "no"})
    ann_path, pred_path = _write(tmp_path / "ann.json", {"annotations": anns}), _write(tmp_path / "p.json", preds)
    result = runner.invoke(app, ["score", "vqa", str(ann_path), str(pred_path), "--json", "--resamples", "200"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    hits = [1.0 if p["answer"] == "yes" else 0.0 for p in preds]
    images = [a["image_id"] for a in anns]
    assert payload["n_images"] == 30
    assert payload["ci95"]["vqa_accuracy"] == pytest.approx(list(grouped_bootstrap_ci(hits, images, n_resamples=200)))
    per_question = grouped_bootstrap_ci(hits, n_resamples=200)
    lo, hi = payload["ci95"]["vqa_accuracy"]
    assert hi - lo > 1.5 * (per_question[1] - per_question[0])
    shown = runner.invoke(app, ["score", "vqa", str(ann_path), str(pred_path), "--resamples", "200"])
    assert "intervals resample the 30 images" in shown.stdout
