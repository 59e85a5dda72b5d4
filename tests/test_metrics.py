"""The numpy metrics against scikit-learn as an oracle, on random labels with missing classes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import metrics as sk

from pricenet.run.metrics import classification_report, confusion_matrix


@st.composite
def labelled(draw) -> tuple[np.ndarray, np.ndarray, int]:
    """(y_true, y_pred, K): K in 2..6, 1..60 rows, drawn from a random subset of the classes."""
    k = draw(st.integers(2, 6))
    true_classes = draw(st.lists(st.integers(0, k - 1), min_size=1, max_size=k, unique=True))
    pred_classes = draw(st.lists(st.integers(0, k - 1), min_size=1, max_size=k, unique=True))
    n = draw(st.integers(1, 60))
    y_true = draw(st.lists(st.sampled_from(true_classes), min_size=n, max_size=n))
    y_pred = draw(st.lists(st.sampled_from(pred_classes), min_size=n, max_size=n))
    return np.array(y_true, dtype=np.int64), np.array(y_pred, dtype=np.int64), k


@settings(max_examples=300, deadline=None)
@given(labelled())
def test_report_matches_scikit_learn(case):
    y_true, y_pred, k = case
    labels = list(range(k))
    report = classification_report(y_true, y_pred, k)

    assert report["accuracy"] == pytest.approx(sk.accuracy_score(y_true, y_pred))
    assert report["confusion_matrix"] == sk.confusion_matrix(y_true, y_pred, labels=labels).tolist()
    precision, recall, f1, support = sk.precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0.0
    )
    for c in labels:
        row = report["per_class"][str(c)]
        assert row["precision"] == pytest.approx(precision[c])
        assert row["recall"] == pytest.approx(recall[c])
        assert row["f1"] == pytest.approx(f1[c])
        assert row["support"] == support[c]
    # scikit-learn's default (labels=None) averages over the classes in y_true or y_pred.
    assert report["macro_f1"] == pytest.approx(
        sk.f1_score(y_true, y_pred, average="macro", zero_division=0.0)
    )
    assert report["macro_f1_all_classes"] == pytest.approx(
        sk.f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0.0)
    )
    assert report["classes_present"] == sorted(set(y_true) | set(y_pred))


def test_seeded_loop_on_larger_vectors_matches_scikit_learn():
    rng = np.random.default_rng(13)
    for _ in range(50):
        k = int(rng.integers(2, 7))
        n = int(rng.integers(100, 2000))
        y_true = rng.integers(0, k, n)
        # a prediction that is right most of the time, wrong at random otherwise
        y_pred = np.where(rng.random(n) < 0.7, y_true, rng.integers(0, k, n))
        report = classification_report(y_true, y_pred, k)
        assert report["macro_f1"] == pytest.approx(sk.f1_score(y_true, y_pred, average="macro"))
        assert report["accuracy"] == pytest.approx(sk.accuracy_score(y_true, y_pred))


def test_two_classes_of_four_do_not_halve_macro_f1():
    """The review's case: classes 0 and 3 only, 4 of 500 wrong."""
    y_true = np.array([0] * 250 + [3] * 250)
    y_pred = y_true.copy()
    y_pred[:4] = 3
    report = classification_report(y_true, y_pred, 4)
    assert report["accuracy"] == pytest.approx(0.992)
    assert report["macro_f1"] == pytest.approx(0.992, abs=1e-3)
    assert report["macro_f1_all_classes"] == pytest.approx(0.496, abs=1e-3)
    assert report["classes_present"] == [0, 3]


def test_no_rows_scores_zero_and_lists_no_class():
    empty = np.array([], dtype=np.int64)
    report = classification_report(empty, empty, 4)
    assert (report["accuracy"], report["macro_f1"], report["macro_f1_all_classes"]) == (0, 0, 0)
    assert report["classes_present"] == []
    assert report["confusion_matrix"] == [[0] * 4] * 4


@pytest.mark.parametrize(
    ("y_true", "y_pred", "message"),
    [
        ([0, 4], [0, 1], "y_true holds values outside the classes 0..3"),
        ([0, 1], [-1, 1], "y_pred holds values outside the classes 0..3"),
        ([0, 1.5], [0, 1], "y_true holds values outside"),
        ([0, 1, 2], [0, 1], "differ in length: 3 != 2"),
    ],
)
def test_labels_outside_the_classes_are_refused(y_true, y_pred, message):
    with pytest.raises(ValueError, match=message):
        confusion_matrix(np.array(y_true), np.array(y_pred), 4)
