"""Evaluation metrics as pure functions of (labels, probabilities). Charts live in charts.py.

Every function takes integer labels of shape (N,) and probabilities of shape (N, C) and returns
plain data (dicts, lists, floats), so it can be stored as JSON and drawn later.
"""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm

from radiology import CLASS_NAMES


def _check(labels, probs, class_names):
    labels = np.asarray(labels, dtype=int)
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[0] != labels.shape[0]:
        raise ValueError(f"expected probabilities of shape ({labels.shape[0]}, C), got {probs.shape}")
    if probs.shape[1] != len(class_names):
        raise ValueError(f"expected {len(class_names)} classes, got {probs.shape[1]}: {list(class_names)}")
    return labels, probs


def accuracy(labels, probs) -> float:
    """Fraction of argmax predictions equal to the labels."""
    labels, probs = np.asarray(labels), np.asarray(probs)
    return float(np.mean(probs.argmax(axis=1) == labels)) if len(labels) else float("nan")


def classification_report(labels, probs, class_names=CLASS_NAMES) -> dict:
    """scikit-learn's classification report as data: per class and averages, precision/recall/f1/support."""
    labels, probs = _check(labels, probs, class_names)
    return skm.classification_report(
        labels,
        probs.argmax(axis=1),
        labels=list(range(len(class_names))),
        target_names=list(class_names),
        output_dict=True,
        zero_division=0,
    )


def confusion(labels, probs, class_names=CLASS_NAMES) -> dict:
    """Confusion matrix, raw counts and row-normalised (rows are true classes)."""
    labels, probs = _check(labels, probs, class_names)
    cm = skm.confusion_matrix(labels, probs.argmax(axis=1), labels=list(range(len(class_names))))
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=float), where=rows > 0)
    return {"labels": list(class_names), "matrix": cm.tolist(), "normalized": norm.round(4).tolist()}


def roc_pr_curves(labels, probs, class_names=CLASS_NAMES) -> dict:
    """One-vs-rest ROC and precision-recall curves with their AUCs, per class.

    Returns:
        ``{class: {"roc": {"fpr", "tpr", "auc"}, "pr": {"precision", "recall", "auc"}}}``; AUCs are
        None for a class absent from the labels or present in all of them.
    """
    labels, probs = _check(labels, probs, class_names)
    out = {}
    for k, name in enumerate(class_names):
        y = labels == k
        if y.all() or not y.any():
            out[name] = {"roc": {"fpr": [], "tpr": [], "auc": None}, "pr": {"precision": [], "recall": [], "auc": None}}
            continue
        fpr, tpr, _ = skm.roc_curve(y, probs[:, k])
        precision, recall, _ = skm.precision_recall_curve(y, probs[:, k])
        out[name] = {
            "roc": {"fpr": fpr.round(5).tolist(), "tpr": tpr.round(5).tolist(), "auc": float(skm.auc(fpr, tpr))},
            "pr": {
                "precision": precision.round(5).tolist(),
                "recall": recall.round(5).tolist(),
                "auc": float(skm.average_precision_score(y, probs[:, k])),
            },
        }
    return out


def calibration(labels, probs, *, bins: int = 10) -> dict:
    """Reliability bins of the top-class confidence and the expected calibration error (ECE).

    Returns:
        ``{"ece", "bins": [{"lower", "upper", "count", "confidence", "accuracy"}]}``; empty bins
        have None for confidence and accuracy.
    """
    labels, probs = np.asarray(labels, dtype=int), np.asarray(probs, dtype=np.float64)
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    out, ece = [], 0.0
    for b in range(bins):
        mask = which == b
        n = int(mask.sum())
        c = float(conf[mask].mean()) if n else None
        a = float(correct[mask].mean()) if n else None
        if n:
            ece += n / len(labels) * abs(a - c)
        out.append({"lower": float(edges[b]), "upper": float(edges[b + 1]), "count": n, "confidence": c, "accuracy": a})
    return {"ece": float(ece) if len(labels) else float("nan"), "bins": out}


def bootstrap_ci(
    labels, probs, class_names=CLASS_NAMES, *, n_boot: int = 1000, level: float = 0.95, seed: int = 0
) -> dict:
    """Percentile bootstrap confidence intervals for accuracy, macro F1 and recall per class.

    Returns:
        ``{"level", "accuracy": [lo, hi], "macro_f1": [lo, hi], "recall": {class: [lo, hi]}}``.
    """
    labels, probs = _check(labels, probs, class_names)
    pred = probs.argmax(axis=1)
    rng = np.random.default_rng(seed)
    n, k = len(labels), len(class_names)
    acc, f1 = np.empty(n_boot), np.empty(n_boot)
    rec = np.full((n_boot, k), np.nan)
    for b in range(n_boot):
        idx = rng.integers(0, n, n)
        y, p = labels[idx], pred[idx]
        acc[b] = np.mean(y == p)
        f1[b] = skm.f1_score(y, p, labels=list(range(k)), average="macro", zero_division=0)
        for c in range(k):
            m = y == c
            if m.any():
                rec[b, c] = np.mean(p[m] == c)
    q = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]

    def interval(x):
        x = x[~np.isnan(x)]
        return [float(v) for v in np.percentile(x, q)] if len(x) else [None, None]

    return {
        "level": level,
        "accuracy": interval(acc),
        "macro_f1": interval(f1),
        "recall": {name: interval(rec[:, c]) for c, name in enumerate(class_names)},
    }


def evaluate(labels, probs, class_names=CLASS_NAMES, *, n_boot: int = 1000) -> dict:
    """Every metric of this module in one JSON-ready dict."""
    labels, probs = _check(labels, probs, class_names)
    report = classification_report(labels, probs, class_names)
    return {
        "n": int(len(labels)),
        "class_names": list(class_names),
        "accuracy": accuracy(labels, probs),
        "macro_f1": float(report["macro avg"]["f1-score"]),
        "report": report,
        "confusion": confusion(labels, probs, class_names),
        "curves": roc_pr_curves(labels, probs, class_names),
        "calibration": calibration(labels, probs),
        "ci": bootstrap_ci(labels, probs, class_names, n_boot=n_boot),
    }


def wilson_interval(successes: int, n: int, *, level: float = 0.95) -> list[float | None]:
    """The Wilson score interval of a proportion, which holds for small counts where a bootstrap degenerates.

    Returns:
        ``[lo, hi]``, or ``[None, None]`` when ``n`` is 0.
    """
    if n == 0:
        return [None, None]
    from scipy.stats import norm

    z = float(norm.ppf(0.5 + level / 2))
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [float(max(0.0, centre - half)), float(min(1.0, centre + half))]


def accuracy_by_group(labels, probs, groups) -> dict[str, dict]:
    """Accuracy, its 95% Wilson interval (``ci``) and count per group, for example per source collection."""
    labels, probs, groups = np.asarray(labels), np.asarray(probs), np.asarray(groups)
    out = {}
    for g in sorted(set(groups.tolist())):
        mask = groups == g
        correct = int((probs[mask].argmax(axis=1) == labels[mask]).sum())
        n = int(mask.sum())
        out[str(g)] = {"n": n, "accuracy": correct / n, "ci": wilson_interval(correct, n)}
    return out
