"""Temperature scaling: one number, fitted on the validation split, that makes probabilities honest.

A network trained with cross-entropy is often over- or under-confident. Dividing its logits by a
temperature T (Guo et al., 2017) keeps every predicted label and changes only how sure the
probabilities say it is. The temperature is fitted by minimising the negative log-likelihood on the
validation split, stored in the model's metadata, and applied by :func:`apply_temperature` wherever
a probability leaves the model. A model without one (imported, or trained before calibration
existed) keeps T = 1: its probabilities are the softmax as trained.
"""

from __future__ import annotations

import numpy as np

from radiology import metrics

EPS = 1e-12
BOUNDS = (0.05, 20.0)  # temperatures outside these mean a broken model, not a calibration


def apply_temperature(probs: np.ndarray, temperature: float | None) -> np.ndarray:
    """Rescales softmax probabilities as if the logits had been divided by ``temperature``.

    ``softmax(log p / T)`` equals ``softmax(z / T)`` for ``p = softmax(z)``, so the temperature can be
    applied to the probabilities the model returns, without its logits.

    Args:
        probs: float array of shape (N, C) or (C,), rows summing to 1.
        temperature: T > 0; None or 1 returns ``probs`` unchanged.

    Returns:
        float32 array of the same shape.
    """
    probs = np.asarray(probs, dtype=np.float32)
    if temperature is None or temperature == 1.0:
        return probs
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    z = np.log(np.clip(probs.astype(np.float64), EPS, 1.0)) / temperature
    z -= z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


def nll(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of the true classes.

    Args:
        probs: float array of shape (N, C).
        labels: int array of shape (N,).
    """
    probs = np.asarray(probs, dtype=np.float64)
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(labels)), labels], EPS, 1.0))))


def fit_temperature(probs: np.ndarray, labels: np.ndarray) -> float:
    """The temperature that minimises the negative log-likelihood of ``labels``.

    Args:
        probs: uncalibrated float array of shape (N, C), for example of the validation split.
        labels: int array of shape (N,).

    Returns:
        T within :data:`BOUNDS`.

    Raises:
        ValueError: no rows, or fewer than two classes present.
    """
    labels = np.asarray(labels)
    if len(labels) == 0 or len(labels) != len(probs):
        raise ValueError(f"expected as many labels as probability rows, got {len(labels)} and {len(probs)}")
    if len(np.unique(labels)) < 2:
        raise ValueError(f"a temperature needs at least two classes among the labels, got {np.unique(labels)}")
    from scipy.optimize import minimize_scalar

    # log T keeps the search symmetric: T = 0.5 and T = 2 are equally far from 1
    found = minimize_scalar(
        lambda log_t: nll(apply_temperature(probs, float(np.exp(log_t))), labels),
        bounds=tuple(np.log(BOUNDS)),
        method="bounded",
        options={"xatol": 1e-4},
    )
    return round(float(np.exp(found.x)), 4)


def report(raw: np.ndarray, labels: np.ndarray, temperature: float | None) -> dict:
    """ECE and negative log-likelihood before and after the temperature, for ``metrics.json``.

    Args:
        raw: uncalibrated float array of shape (N, C).
        labels: int array of shape (N,).
        temperature: the model's temperature, or None when it has none.

    Returns:
        ``temperature`` (1.0 when none), ``fitted`` (whether the model has one), and ``ece_before``,
        ``ece_after``, ``nll_before``, ``nll_after``.
    """
    after = apply_temperature(raw, temperature)
    return {
        "temperature": float(temperature or 1.0),
        "fitted": temperature is not None,
        "ece_before": metrics.calibration(labels, raw)["ece"],
        "ece_after": metrics.calibration(labels, after)["ece"],
        "nll_before": nll(raw, labels),
        "nll_after": nll(after, labels),
    }


def report_rows(report: dict) -> list[dict]:
    """A :func:`report` as two table rows (ECE and negative log-likelihood), before and after the temperature."""
    after = f"after (T = {report['temperature']:.3g})"
    return [
        {"measure": "expected calibration error", "before (T = 1)": report["ece_before"], after: report["ece_after"]},
        {"measure": "negative log-likelihood", "before (T = 1)": report["nll_before"], after: report["nll_after"]},
    ]


def describe(temperature: float | None) -> str:
    """The temperature in words, for pages and command lines."""
    if temperature is None:
        return "not calibrated: no temperature was fitted for this model, so T = 1 (the softmax as trained)"
    return f"calibrated with temperature T = {temperature:.3g}, fitted on the validation split"
