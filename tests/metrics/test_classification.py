import numpy as np
import pytest

from polymodal.metrics import accuracy, confusion_matrix, precision_recall_f1, top_k_accuracy

sklearn_metrics = pytest.importorskip("sklearn.metrics")


def _random_labels(seed: int, n: int = 200, n_classes: int = 6) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, n_classes, n)
    # Predictions never use class 5, and class 4 is rare in y_true: exercises zero_division=0.
    y_pred = rng.integers(0, n_classes - 1, n)
    y_true[y_true == 4] = rng.integers(0, 4, int((y_true == 4).sum()))
    y_true[0] = 4
    return y_true, y_pred


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("average", ["macro", "micro", "weighted"])
def test_precision_recall_f1_matches_sklearn(seed: int, average: str) -> None:
    y_true, y_pred = _random_labels(seed)
    ours = precision_recall_f1(y_true, y_pred, average=average)
    p, r, f, s = sklearn_metrics.precision_recall_fscore_support(y_true, y_pred, average=None, zero_division=0)
    np.testing.assert_allclose(ours.precision, p, atol=1e-12)
    np.testing.assert_allclose(ours.recall, r, atol=1e-12)
    np.testing.assert_allclose(ours.f1, f, atol=1e-12)
    np.testing.assert_array_equal(ours.support, s)
    ap, ar, af, _ = sklearn_metrics.precision_recall_fscore_support(y_true, y_pred, average=average, zero_division=0)
    assert ours.avg_precision == pytest.approx(ap, abs=1e-12)
    assert ours.avg_recall == pytest.approx(ar, abs=1e-12)
    assert ours.avg_f1 == pytest.approx(af, abs=1e-12)


@pytest.mark.parametrize("average", ["macro", "micro", "weighted"])
def test_explicit_labels_including_unseen_class_match_sklearn(average: str) -> None:
    y_true, y_pred = _random_labels(3)
    labels = [0, 2, 5, 7]  # 7 appears nowhere; 5 is never predicted
    ours = precision_recall_f1(y_true, y_pred, average=average, labels=labels)
    ap, ar, af, _ = sklearn_metrics.precision_recall_fscore_support(
        y_true, y_pred, average=average, labels=labels, zero_division=0
    )
    assert (ours.avg_precision, ours.avg_recall, ours.avg_f1) == pytest.approx((ap, ar, af), abs=1e-12)
    assert ours.precision[3] == 0.0 and ours.recall[3] == 0.0 and ours.f1[3] == 0.0


def test_string_labels_and_confusion_matrix_match_sklearn() -> None:
    y_true, y_pred = _random_labels(4)
    names = np.array(["cat", "dog", "emu", "fox", "gnu", "hen"])
    t, p = names[y_true], names[y_pred]
    np.testing.assert_array_equal(confusion_matrix(t, p), sklearn_metrics.confusion_matrix(t, p))
    labels = ["hen", "cat", "dog"]
    np.testing.assert_array_equal(
        confusion_matrix(t, p, labels=labels), sklearn_metrics.confusion_matrix(t, p, labels=labels)
    )
    assert accuracy(t, p) == pytest.approx(sklearn_metrics.accuracy_score(t, p))


@pytest.mark.parametrize("k", [1, 2, 5])
def test_top_k_accuracy_matches_sklearn(k: int) -> None:
    rng = np.random.default_rng(5)
    scores = rng.normal(size=(300, 7))  # continuous: no ties
    labels = rng.integers(0, 7, 300)
    expected = sklearn_metrics.top_k_accuracy_score(labels, scores, k=k, labels=np.arange(7))
    assert top_k_accuracy(scores, labels, k) == pytest.approx(expected)


def test_top_k_ties_count_against_the_label() -> None:
    scores = np.zeros((4, 3))  # every class ties
    assert top_k_accuracy(scores, [0, 1, 2, 0], k=2) == 0.0
    assert top_k_accuracy(scores, [0, 1, 2, 0], k=3) == 1.0


def test_shape_errors_are_explicit() -> None:
    with pytest.raises(ValueError, match="equal length"):
        accuracy([1, 2], [1])
    with pytest.raises(ValueError, match="average must be one of"):
        precision_recall_f1([1], [1], average="samples")  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", range(5))
def test_roc_auc_matches_sklearn_with_ties(seed: int) -> None:
    from polymodal.metrics import roc_auc

    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 2, 200)
    scores = np.round(rng.random(200) + 0.3 * truth, 1)  # rounded: many tied scores
    assert roc_auc(truth, scores) == pytest.approx(sklearn_metrics.roc_auc_score(truth, scores), abs=1e-12)


def test_roc_auc_needs_both_classes() -> None:
    from polymodal.metrics import roc_auc

    with pytest.raises(ValueError, match="both positive and negative"):
        roc_auc([1, 1, 1], [0.1, 0.2, 0.3])


def test_regression_metrics_match_sklearn() -> None:
    from polymodal.metrics import regression_metrics

    rng = np.random.default_rng(0)
    truth, pred = rng.normal(size=100), rng.normal(size=100)
    out = regression_metrics(truth, pred)
    assert out["rmse"] == pytest.approx(np.sqrt(sklearn_metrics.mean_squared_error(truth, pred)))
    assert out["mae"] == pytest.approx(sklearn_metrics.mean_absolute_error(truth, pred))
    assert out["r2"] == pytest.approx(sklearn_metrics.r2_score(truth, pred))
