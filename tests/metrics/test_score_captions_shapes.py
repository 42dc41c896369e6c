"""score_captions takes COCO format only; parallel lists (the other scorers' shape) are refused saying what it takes."""

from __future__ import annotations

import pytest

from polymodal.metrics import score_captions

TAKES = (
    "score_captions takes COCO format: refs a captions JSON path or {'annotations': [{'image_id', 'caption'}, ...]}, "
    "preds [{'image_id', 'caption'}, ...]; "
)
COCO = {"annotations": [{"image_id": 0, "caption": "a red circle"}]}


@pytest.mark.parametrize(
    ("refs", "preds", "named"),
    [
        ([["a red circle", "a circle"]], ["a red circle"], "refs is a list"),  # parallel lists
        ({0: ["a red circle"]}, [{"image_id": 0, "caption": "a red circle"}], "refs is a dict without 'annotations'"),
        (COCO, {0: "a red circle"}, "preds is a dict"),
        (COCO, ["a red circle"], "preds[0] is a str"),
    ],
)
def test_other_shapes_are_refused_naming_the_expected_ones(refs, preds, named: str) -> None:  # noqa: ANN001
    with pytest.raises(TypeError) as refused:
        score_captions(refs, preds, with_meteor=False)
    assert str(refused.value) == TAKES + named


def test_coco_format_still_scores() -> None:
    scores = score_captions(COCO, [{"image_id": 0, "caption": "A red circle."}], with_meteor=False)
    assert scores["ROUGE_L"] == 1.0 and set(scores) == {"Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L", "CIDEr"}
