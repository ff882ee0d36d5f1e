"""When a prediction is a decision: the "no confident prediction" threshold on calibrated probabilities.

A model that answers 33.3% / 33.4% / 33.4% has not chosen a class, yet its argmax reads like one. A
prediction counts as confident only when its calibrated top probability reaches ``MIN_TOP_PROBABILITY``
and leads the runner-up by at least ``MIN_MARGIN``; otherwise the app shows "no confident prediction".
The README documents both numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MIN_TOP_PROBABILITY = 0.5  # below this, the other classes together are at least as likely as the top one
MIN_MARGIN = 0.15  # below this lead over the runner-up, two classes are too close to call


@dataclass(frozen=True)
class Confidence:
    """Whether one prediction is confident, and why not.

    Attributes:
        confident: True when the top probability and its lead both reach their thresholds.
        top: the top (calibrated) probability.
        margin: the top probability minus the runner-up's; the top probability for a one-class model.
        reason: why the prediction is not confident, in words; empty when it is.
    """

    confident: bool
    top: float
    margin: float
    reason: str


def assess(probs, class_names) -> Confidence:
    """Says whether a prediction is confident enough to be shown as a decision.

    Args:
        probs: float array of shape (C,), calibrated class probabilities.
        class_names: the C class names, in output order.

    Returns:
        the verdict, with the reason naming the classes and numbers when it is not confident.

    Raises:
        ValueError: ``probs`` is not one probability per class name.
    """
    probs = np.asarray(probs, dtype=np.float64).reshape(-1)
    if len(probs) != len(class_names) or not len(probs):
        raise ValueError(
            f"expected {len(class_names)} probabilities, one per class {list(class_names)}, got {len(probs)}"
        )
    order = np.argsort(probs)[::-1]
    top = float(probs[order[0]])
    second = float(probs[order[1]]) if len(probs) > 1 else 0.0
    margin = top - second
    if top < MIN_TOP_PROBABILITY:
        reason = (
            f"the top class, {class_names[order[0]]}, has {top:.1%}, "
            f"below the {MIN_TOP_PROBABILITY:.0%} a confident prediction needs"
        )
    elif margin < MIN_MARGIN:
        reason = (
            f"{class_names[order[0]]} ({top:.1%}) leads {class_names[order[1]]} ({second:.1%}) by "
            f"{margin * 100:.1f} points, less than the {MIN_MARGIN * 100:.0f} a confident prediction needs"
        )
    else:
        reason = ""
    return Confidence(not reason, top, margin, reason)
