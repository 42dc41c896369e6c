import pytest

from polymodal.metrics import normalize_answer, vqa_accuracy, vqa_score


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Two", "2"),  # number word -> digit, lowercased
        ("the dog", "dog"),  # articles dropped
        ("A red, blue and white flag", "red blue and white flag"),  # ", " next to a space: deleted
        ("yes/no", "yes no"),  # "/" not next to a space: becomes a space
        ("dont", "don’t"),  # official contraction table (curly apostrophe, as published)
        ("10,000", "10000"),  # digit,digit comma in text: marks deleted, not spaced
        ("3.5", "3.5"),  # a period before a digit survives
        ("end.", "end"),  # other periods are stripped
        ("  ten\tdogs\n", "10 dogs"),
    ],
)
def test_normalize_answer_follows_official_rules(raw: str, expected: str) -> None:
    assert normalize_answer(raw) == expected


def test_accuracy_worked_examples() -> None:
    ten = ["no"] * 10
    # 0 of 10 agree: every leave-one-out subset has 0 matches -> 0.
    assert vqa_accuracy("yes", ten) == 0.0
    # 3 of 10 agree. Leaving out one of the 3 matching annotators (3 subsets): 2 matches -> 2/3.
    # Leaving out one of the 7 others (7 subsets): 3 matches -> min(3/3, 1) = 1.
    # Mean: (3 * 2/3 + 7 * 1) / 10 = 9/10 = 0.9.
    assert vqa_accuracy("yes", ["yes"] * 3 + ["no"] * 7) == pytest.approx(0.9)
    # 1 of 10 agrees: (1 * 0/3 + 9 * 1/3) / 10 = 0.3.
    assert vqa_accuracy("yes", ["yes"] + ["no"] * 9) == pytest.approx(0.3)
    # 2 of 10 agree: (2 * 1/3 + 8 * 2/3) / 10 = (2/3 + 16/3) / 10 = 0.6.
    assert vqa_accuracy("yes", ["yes"] * 2 + ["no"] * 8) == pytest.approx(0.6)
    # 4 or more agree: every subset keeps >= 3 matches -> 1.
    assert vqa_accuracy("yes", ["yes"] * 4 + ["no"] * 6) == 1.0


def test_accuracy_normalises_both_sides() -> None:
    # "Two" and "2" and "two." all normalise to "2": 3 matches of 10 -> 0.9 as above.
    gts = ["2", "two", "Two."] + ["3"] * 7
    assert vqa_accuracy("two", gts) == pytest.approx(0.9)


def test_score_overall_and_per_question_type() -> None:
    gts = {
        1: ["yes"] * 10,
        2: ["2"] * 3 + ["3"] * 7,
        3: ["red"] * 10,
    }
    preds = {1: "yes", 2: "two", 3: "blue"}
    types = {1: "is the", 2: "how many", 3: "what color"}
    result = vqa_score(preds, gts, types)
    # Per question: 1.0, 0.9, 0.0 -> overall 1.9 / 3.
    assert result["overall"] == pytest.approx(1.9 / 3)
    assert result["per_type"] == pytest.approx({"is the": 1.0, "how many": 0.9, "what color": 0.0})
    assert result["per_question"][2] == pytest.approx(0.9)


def test_missing_prediction_is_named() -> None:
    with pytest.raises(ValueError, match=r"question ids \[7\]"):
        vqa_score({}, {7: ["yes"] * 10})
