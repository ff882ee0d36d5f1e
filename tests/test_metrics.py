"""Tests for radiology.metrics: pure functions of labels and probabilities."""

import numpy as np
import pytest

from radiology import metrics

NAMES = ("covid", "normal", "pneumonia")


def _data():
    labels = np.array([0, 0, 1, 1, 2, 2])
    probs = np.array(
        [[0.9, 0.05, 0.05], [0.2, 0.7, 0.1], [0.1, 0.8, 0.1], [0.1, 0.6, 0.3], [0.1, 0.1, 0.8], [0.3, 0.3, 0.4]]
    )
    return labels, probs


def test_accuracy_and_report():
    """Accuracy and per-class recall match a hand count (one covid image is called normal)."""
    labels, probs = _data()
    assert metrics.accuracy(labels, probs) == pytest.approx(5 / 6)
    report = metrics.classification_report(labels, probs, NAMES)
    assert report["covid"]["recall"] == 0.5 and report["normal"]["precision"] == pytest.approx(2 / 3)
    assert report["pneumonia"]["support"] == 2


def test_confusion_raw_and_normalised():
    """Rows are true classes; the normalised rows sum to 1."""
    labels, probs = _data()
    cm = metrics.confusion(labels, probs, NAMES)
    assert cm["matrix"] == [[1, 1, 0], [0, 2, 0], [0, 0, 2]]
    assert np.allclose(np.sum(cm["normalized"], axis=1), 1)


def test_roc_pr_perfect_and_absent_class():
    """Perfectly separated classes have AUC 1; a class absent from the labels has AUC None."""
    labels = np.array([0, 0, 1, 1])
    probs = np.array([[0.9, 0.1, 0], [0.8, 0.2, 0], [0.2, 0.8, 0], [0.1, 0.9, 0]])
    curves = metrics.roc_pr_curves(labels, probs, NAMES)
    assert curves["covid"]["roc"]["auc"] == 1.0 and curves["covid"]["pr"]["auc"] == 1.0
    assert curves["pneumonia"]["roc"]["auc"] is None


def test_calibration_ece():
    """A model that says 0.9 and is right 9 times in 10 has ECE 0; one right half the time has 0.4."""
    probs = np.tile([0.9, 0.05, 0.05], (10, 1))
    assert metrics.calibration(np.array([0] * 9 + [1]), probs)["ece"] == pytest.approx(0.0, abs=1e-9)
    assert metrics.calibration(np.array([0] * 5 + [1] * 5), probs)["ece"] == pytest.approx(0.4)
    bins = metrics.calibration(np.array([0] * 5 + [1] * 5), probs)["bins"]
    assert sum(b["count"] for b in bins) == 10 and bins[8]["count"] == 10


def test_bootstrap_ci_contains_estimate_and_is_seeded():
    """The 95% intervals contain the point estimate and repeat for the same seed."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 300)
    probs = rng.dirichlet([1, 1, 1], 300)
    probs[np.arange(200), labels[:200]] += 2
    probs /= probs.sum(1, keepdims=True)
    ci = metrics.bootstrap_ci(labels, probs, NAMES, n_boot=200)
    acc = metrics.accuracy(labels, probs)
    assert ci["accuracy"][0] < acc < ci["accuracy"][1]
    assert all(lo <= hi for lo, hi in ci["recall"].values())
    assert ci == metrics.bootstrap_ci(labels, probs, NAMES, n_boot=200)


def test_evaluate_and_shape_errors():
    """evaluate bundles everything; wrong shapes raise with the expected and actual counts."""
    labels, probs = _data()
    out = metrics.evaluate(labels, probs, NAMES, n_boot=50)
    assert set(out) >= {"accuracy", "report", "confusion", "curves", "calibration", "ci", "macro_f1"}
    with pytest.raises(ValueError, match="expected 3 classes, got 2"):
        metrics.evaluate(labels, probs[:, :2], NAMES)


def test_accuracy_by_group():
    """Accuracy is reported per group with counts and a Wilson interval that holds for small counts."""
    labels, probs = _data()
    out = metrics.accuracy_by_group(labels, probs, ["a", "a", "b", "b", "b", "b"])
    assert {g: (v["n"], v["accuracy"]) for g, v in out.items()} == {"a": (2, 0.5), "b": (4, 1.0)}
    lo, hi = out["b"]["ci"]
    assert 0.45 < lo < 0.55 and hi == 1.0  # 4 of 4 right is no proof of 100%


def test_wilson_interval_matches_the_textbook():
    """The Wilson interval of 8 of 10 is 0.490-0.943 (95%); of 0 images it is undefined."""
    lo, hi = metrics.wilson_interval(8, 10)
    assert round(lo, 3) == 0.490 and round(hi, 3) == 0.943
    assert metrics.wilson_interval(0, 0) == [None, None]
