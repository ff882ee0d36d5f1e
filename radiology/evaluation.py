"""Evaluating a model on dataset samples: predictions per image, metrics, and their files."""

from __future__ import annotations

import csv
import os
import tempfile
from pathlib import Path

import numpy as np

from radiology import metrics, ood
from radiology.cache import DecodedImages
from radiology.datasets import Sample
from radiology.model import LoadedModel
from radiology.preprocess import to_model_input
from radiology.registry import write_json_atomic


def predict_decoded(loaded: LoadedModel, pixels: np.ndarray, *, batch_size: int = 64) -> np.ndarray:
    """Probabilities for already resized images.

    Args:
        loaded: the model and its metadata.
        pixels: uint8 array of shape (N, H, W) at the model's input size.
        batch_size: images per forward pass.

    Returns:
        float32 array of shape (N, C).
    """
    spec = loaded.metadata.preprocess
    out = [
        np.asarray(loaded.model.predict_on_batch(to_model_input(pixels[i : i + batch_size], spec)), dtype=np.float32)
        for i in range(0, len(pixels), batch_size)
    ]
    return np.concatenate(out) if out else np.zeros((0, len(loaded.metadata.class_names)), np.float32)


def evaluate_samples(
    loaded: LoadedModel, samples: list[Sample], decoded: DecodedImages, *, root: str | Path, n_boot: int = 1000
) -> tuple[dict, list[dict]]:
    """Predicts the readable samples and computes every metric.

    Args:
        loaded: the model to evaluate.
        samples: the labelled files, for example a test split.
        decoded: decoded images that include those files, at the model's input size.
        root: the dataset root; prediction rows give paths relative to it.
        n_boot: bootstrap resamples for the confidence intervals.

    Returns:
        the metrics dict (see ``metrics.evaluate``, plus ``by_source``, ``skipped`` and ``ood``, the
        share flagged by the out-of-distribution gate) and one prediction row per image: path, label,
        predicted, source, a probability per class, ``in_distribution`` and ``ood_score``.

    Raises:
        ValueError: no sample is readable, or a label is not among the model's classes.
    """
    names = list(loaded.metadata.class_names)
    index = decoded.index()
    kept = [s for s in samples if decoded.ok[index[s.path]]]
    if not kept:
        raise ValueError(f"no readable images to evaluate among {len(samples)} files")
    unknown = {s.label for s in kept} - set(names)
    if unknown:
        raise ValueError(f"labels {sorted(unknown)} are not among the model's classes {names}")
    rows_at = [index[s.path] for s in kept]
    pixels = np.stack([decoded.pixels[i] for i in rows_at])
    probs, features = ood.predict_with_features(loaded, pixels)  # one pass gives both
    gate = ood.gate_decoded(loaded, pixels, decoded.sizes[rows_at], features)
    labels = np.array([names.index(s.label) for s in kept])
    result = metrics.evaluate(labels, probs, names, n_boot=n_boot)
    result["skipped"] = len(samples) - len(kept)
    sources = [s.source or "unknown" for s in kept]
    result["by_source"] = metrics.accuracy_by_group(labels, probs, sources)
    result["ood"] = ood.summary(gate)
    root = Path(root)
    rows = [
        {
            "path": Path(s.path).relative_to(root).as_posix(),
            "label": s.label,
            "predicted": names[int(p.argmax())],
            "source": s.source or "",
            **{f"p_{c}": round(float(v), 6) for c, v in zip(names, p)},
            "in_distribution": not g.flag,
            "ood_score": "" if g.score is None else round(g.score, 4),
        }
        for s, p, g in zip(kept, probs, gate)
    ]
    return result, rows


def write_evaluation(run_dir: str | Path, result: dict, rows: list[dict]) -> None:
    """Writes ``metrics.json`` and ``predictions.csv`` into a run folder, each atomically."""
    run_dir = Path(run_dir)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".csv", dir=run_dir)
    try:
        with os.fdopen(fd, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, run_dir / "predictions.csv")
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    write_json_atomic(run_dir / "metrics.json", result)


def metrics_from_predictions(rows: list[dict], class_names) -> tuple[np.ndarray, np.ndarray]:
    """Labels and probabilities back from prediction rows, for recomputing metrics."""
    names = list(class_names)
    labels = np.array([names.index(r["label"]) for r in rows], dtype=int)
    probs = np.array([[float(r[f"p_{c}"]) for c in names] for r in rows], dtype=np.float64)
    return labels, probs


def misclassified(rows: list[dict], class_names, *, limit: int = 12) -> list[dict]:
    """Prediction rows whose prediction is wrong, most confident mistakes first.

    Each returned row gains ``confidence``: the probability given to the wrong prediction.
    """
    wrong = [
        {**r, "confidence": float(r[f"p_{r['predicted']}"])}
        for r in rows
        if r["label"] != r["predicted"] and r["predicted"] in class_names
    ]
    return sorted(wrong, key=lambda r: -r["confidence"])[:limit]


def summary_row(run_id: str, result: dict) -> dict:
    """Headline numbers of one evaluation, for tables that compare runs."""
    ci = result.get("ci", {})
    row = {
        "run": run_id,
        "images": result.get("n"),
        "accuracy": result.get("accuracy"),
        "accuracy 95% CI": "–".join(f"{v:.3f}" for v in ci.get("accuracy", []) if v is not None),
        "macro F1": result.get("macro_f1"),
        "ECE": result.get("calibration", {}).get("ece"),
    }
    for name in result.get("class_names", []):
        row[f"recall {name}"] = result.get("report", {}).get(name, {}).get("recall")
    return row
