"""Tests for radiology.confidence: the "no confident prediction" threshold."""

import pytest

from radiology import confidence

NAMES = ("covid", "normal", "pneumonia")


def test_a_flat_prediction_is_not_confident():
    """33.3 / 33.4 / 33.3 is below the top-probability threshold, and the reason names the class and numbers."""
    verdict = confidence.assess([0.333, 0.334, 0.333], NAMES)
    assert not verdict.confident and verdict.top == pytest.approx(0.334)
    assert verdict.reason == "the top class, normal, has 33.4%, below the 50% a confident prediction needs"


def test_a_close_call_is_not_confident():
    """A top class above 50% that leads the runner-up by less than the margin is not confident."""
    verdict = confidence.assess([0.52, 0.06, 0.42], NAMES)
    assert not verdict.confident and verdict.margin == pytest.approx(0.10)
    assert verdict.reason.startswith("covid (52.0%) leads pneumonia (42.0%) by 10.0 points, less than the 15")


def test_a_clear_prediction_is_confident_at_the_thresholds():
    """A prediction exactly at both thresholds is confident and has no reason."""
    top = confidence.MIN_TOP_PROBABILITY
    verdict = confidence.assess([top, top - confidence.MIN_MARGIN, 1 - 2 * top + confidence.MIN_MARGIN], NAMES)
    assert verdict.confident and verdict.reason == ""
    assert confidence.assess([0.05, 0.9, 0.05], NAMES).confident


def test_probabilities_must_match_the_classes():
    """A probability count other than the class count is refused with both numbers."""
    with pytest.raises(ValueError, match=r"expected 3 probabilities, one per class .*, got 2"):
        confidence.assess([0.5, 0.5], NAMES)
