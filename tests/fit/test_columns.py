"""Column kinds and problems read from a table's content, with their reasons and overrides."""

from __future__ import annotations

import math

import pytest

from polymodal.fit.columns import (
    Problem,
    as_number,
    class_name,
    describe_column,
    detect_problem,
    is_missing,
    label_values,
    warn_of_label_copies,
)


@pytest.mark.parametrize(
    ("values", "kind"),
    [
        (["a.png", "b.JPG", "c.webp", None], "image"),
        (["x/1.flac", "x/2.wav", "x/3.mp3"], "audio"),
        (["clip.mp4", "other.webm"], "video"),
        ([1, 2.5, "3", None, ""], "numeric"),
        (["red", "blue", "red", "green"] * 10, "categorical"),
        (["the red circle is above the blue square", "a small green star", "nothing at all here"], "text"),
        ([None, "", "  "], "ignore"),
        ([[1, 2], [3]], "ignore"),
    ],
)
def test_kinds_are_read_from_the_values(values: list, kind: str) -> None:
    info = describe_column("col", values)
    assert info.kind == kind, info.reason
    assert info.reason


def test_identifiers_are_ignored_and_overrides_win() -> None:
    ids = [f"row{i:04d}" for i in range(100)]
    assert describe_column("anything", ids).kind == "ignore"
    assert describe_column("id", list(range(100))).kind == "ignore"
    assert describe_column("id", list(range(100)), "categorical").kind == "categorical"
    assert describe_column("id", list(range(100)), "categorical").reason == "given"
    with pytest.raises(ValueError, match="unknown kind 'picture'"):
        describe_column("x", ["a.png"], "picture")


def test_many_distinct_short_strings_are_text_and_missing_is_counted() -> None:
    words = [f"word{i} more" for i in range(80)] + [None] * 5
    info = describe_column("title", words)
    assert (info.kind, info.missing, info.distinct) == ("text", 5, 80)


def test_problems_follow_the_label() -> None:
    assert detect_problem("y", ["cat", "dog", "cat"]).kind == "binary"
    multi = detect_problem("y", [3, 1, 2, 10, 2])
    assert (multi.kind, multi.classes) == ("multiclass", ("1", "2", "3", "10"))  # numeric order, not "10" < "2"
    assert detect_problem("y", [0.5, 1.25, 3.0]).kind == "regression"
    assert detect_problem("y", list(range(100))).kind == "regression"  # many distinct integers
    tags = detect_problem("y", [["a", "b"], ["b"], ["c"]])
    assert (tags.kind, tags.classes) == ("multilabel", ("a", "b", "c"))
    assert detect_problem("y", [1, 2, 1], "regression").kind == "regression"


def test_problem_errors_are_clear() -> None:
    with pytest.raises(ValueError, match="single class 'a'"):
        detect_problem("y", ["a", "a"])
    with pytest.raises(ValueError, match="has no values"):
        detect_problem("y", [None, ""])
    with pytest.raises(ValueError, match="regression needs numbers"):
        detect_problem("y", ["a", "b"], "regression")
    with pytest.raises(ValueError, match="binary needs 2 classes"):
        detect_problem("y", ["a", "b", "c"], "binary")


def test_missing_markers_and_a_few_bad_numbers_keep_a_column_numeric() -> None:
    values = [str(i) for i in range(40)] + ["NA", "n/a", "null", "?", "oops"]
    info = describe_column("price", values)
    assert (info.kind, info.missing) == ("numeric", 4), info.reason
    assert info.reason == "98% of values are numbers"


def test_value_helpers() -> None:
    assert is_missing(float("nan")) and is_missing(" ") and not is_missing(0)
    assert as_number("2.5") == 2.5 and as_number("inf") is None and as_number(True) == 1.0
    assert class_name(1.0) == "1" and class_name("1") == "1" and class_name(True) == "true"
    assert label_values("a|b|a") == ["a", "b"] and label_values(["x", None]) == ["x"]
    assert math.isclose(as_number(" 3 "), 3.0)


def test_numeric_looking_label_strings_are_one_class() -> None:
    # A CSV cell is a string: "2.0" (a float column written out) and "2" must be the same class, as 2.0 and 2 are.
    assert [class_name(v) for v in ("1", "1.0", " 2.0 ", 2.0, "1.50")] == ["1", "1", "2", "2", "1.5"]
    assert class_name("red") == "red" and class_name("12345678901234567890") == "12345678901234567890"
    # Codes are not numbers written out: a zero-padded code, an exponent or a digit separator stays as written.
    assert [class_name(v) for v in ("007", "7", "1e3", "1_000")] == ["007", "7", "1e3", "1_000"]


def test_a_predictor_saved_with_labels_as_written_still_reads_them() -> None:
    """Before labels were normalised a CSV's "1.0" was class "1.0": its rows still find that class, not a miss."""
    from polymodal.fit.predictor import unknown_classes
    from polymodal.fit.search import encode_targets

    saved = Problem("multiclass", "y", ("1.0", "2.0", "3.0"))
    assert encode_targets(saved, ["2.0", "3.0", "1.0"]).y.tolist() == [1, 2, 0]
    assert unknown_classes(saved, ["2.0", "4"]) == ["4"]
    problem = detect_problem("y", ["1", "1.0", "2", "2.0", "3", "3.0"])
    assert (problem.kind, problem.classes) == ("multiclass", ("1", "2", "3"))
    assert label_values("1.0|2") == ["1", "2"]


def test_separated_label_strings_are_multilabel_but_ordinary_text_is_not() -> None:
    cells = ["blue|pink", "green|red|yellow", "red", "blue", "pink|red", "green", "yellow|blue"] * 5
    problem = detect_problem("y", cells)
    assert (problem.kind, problem.classes) == ("multilabel", ("blue", "green", "pink", "red", "yellow"))
    assert "split on" in problem.reason
    assert detect_problem("y", ["a;b", "b", "a"] * 5).kind == "multilabel"
    # Few cells with a separator, or free text holding one: still classes.
    assert detect_problem("y", ["cat", "dog", "cat|dog"] + ["cat", "dog"] * 10).kind == "multiclass"
    sentences = [f"the item {i} arrived broken | refund asked" for i in range(30)] + ["fine"] * 30
    assert detect_problem("y", sentences).kind == "multiclass"


def test_classes_that_look_like_mistakes_are_warned_of_but_kept() -> None:
    """' Positive ' beside 'positive' (case), and 'furious' once among 60 rows: each still a class (a label is what
    the user wrote), each named in a warning instead of silently learnt."""
    import warnings

    labels = ["positive"] * 30 + ["negative"] * 29 + [" Positive ", "furious"]
    with pytest.warns(UserWarning) as said:
        problem = detect_problem("y", labels)
    assert problem.classes == ("Positive", "furious", "negative", "positive")
    messages = [str(w.message) for w in said]
    assert any("differing only in case: 'Positive', 'positive'" in m for m in messages)
    assert any("2 class(es) of a single row among 61: 'Positive', 'furious'" in m for m in messages)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a small table's classes of one row each are no mistake
        detect_problem("y", ["a", "b", "c", "d"])


def test_columns_that_give_the_label_away_are_warned_of() -> None:
    """A column that is the label under another name or code scores perfectly in training and is usually not known
    when predicting: fit names it (and how to leave it out) but still uses it (it may be a legitimate key)."""
    import warnings

    import numpy as np

    rng = np.random.default_rng(0)
    labels = [str(v) for v in rng.choice(["spam", "ham"], 60)]
    noisy = [float(rng.normal()) + (1.0 if y == "spam" else 0.0) for y in labels]
    table = {
        "y": labels,
        "code": ["S" if y == "spam" else "H" for y in labels],  # the label recoded
        "flag": [1 if y == "spam" else 0 for y in labels],  # as numbers
        "score": noisy,  # informative, not a copy
        "colour": [str(v) for v in rng.choice(["red", "green", "blue"], 60)],
        "note": [f"message {i}" for i in range(60)],  # every value its own: a key, not the label
    }
    problem = detect_problem("y", labels)
    with pytest.warns(UserWarning) as said:
        warn_of_label_copies(problem, ["code", "flag", "score", "colour", "note"], table.__getitem__)
    messages = [str(w.message) for w in said]
    assert len(messages) == 2, messages
    assert messages[0].startswith("column 'code' gives the label 'y' away: each of its 2 values goes with one class")
    assert "--column code=ignore" in messages[0] and messages[1].startswith("column 'flag' gives")
    amounts = [float(v) for v in rng.normal(size=40)]
    regression = detect_problem("price", amounts)
    noise = [float(v) for v in rng.normal(size=40)]
    columns = {"price": amounts, "cents": [100 * v + 5 for v in amounts], "noise": noise}
    with pytest.warns(UserWarning, match="column 'cents' gives the label 'price' away: its numbers are the label's"):
        warn_of_label_copies(regression, ["cents", "noise"], columns.__getitem__)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # too few rows to tell
        warn_of_label_copies(problem, ["code"], {"y": labels[:10], "code": table["code"][:10]}.__getitem__)
