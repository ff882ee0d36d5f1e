"""Evaluating a model on dataset samples: predictions per image, metrics, and their files."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from radiology import calibration, metrics, ood
from radiology.cache import DecodedImages
from radiology.datasets import Sample
from radiology.errors import EvaluationError
from radiology.fsutil import atomic_write_text, write_json_atomic
from radiology.model import LoadedModel, predict_images

PROGRESS_CHUNK = 256  # images predicted between two progress reports


def evaluate_samples(
    loaded: LoadedModel,
    samples: list[Sample],
    decoded: DecodedImages,
    *,
    root: str | Path,
    n_boot: int = 1000,
    progress=None,
) -> tuple[dict, list[dict]]:
    """Predicts the readable samples and computes every metric.

    Args:
        loaded: the model to evaluate.
        samples: the labelled files, for example a test split.
        decoded: decoded images that include those files, at the model's input size.
        root: the dataset root; prediction rows give paths relative to it.
        n_boot: bootstrap resamples for the confidence intervals.
        progress: optional callable ``progress(done, total)`` as images are predicted.

    Returns:
        the metrics dict (see ``metrics.evaluate``, on the calibrated probabilities, plus ``temperature``,
        the calibration before and after the model's temperature, ``by_source``, ``skipped`` and ``ood``,
        the share flagged by the out-of-distribution gate) and one prediction row per image: path, label,
        predicted, source, a probability per class, ``in_distribution`` and ``ood_score``.

    Raises:
        EvaluationError: no sample is readable, or a label is not among the model's classes.
    """
    names = list(loaded.metadata.class_names)
    index = decoded.index()
    kept = [s for s in samples if decoded.ok[index[s.path]]]
    if not kept:
        raise EvaluationError(f"no readable images to evaluate among {len(samples)} files")
    unknown = {s.label for s in kept} - set(names)
    if unknown:
        raise EvaluationError(f"labels {sorted(unknown)} are not among the model's classes {names}")
    rows_at = [index[s.path] for s in kept]
    pixels = decoded.pixels[rows_at]
    stats = ood.load_stats(loaded.metadata)  # parsed once, not per chunk
    layer = stats.layer if stats else ood.feature_layer(loaded.model)
    probs, features = [], []
    for start in range(0, len(kept), PROGRESS_CHUNK):
        part = pixels[start : start + PROGRESS_CHUNK]
        p, f = ood.predict_with_features(loaded, part, layer=layer, calibrated=False)  # one pass gives both
        probs.append(p)
        features.append(f)
        if progress is not None:
            progress(start + len(part), len(kept))
    raw, features = np.concatenate(probs), np.concatenate(features)
    probs = loaded.calibrated(raw)
    gate = ood.gate_decoded(loaded, pixels, decoded.sizes[rows_at], features)
    labels = np.array([names.index(s.label) for s in kept])
    result = metrics.evaluate(labels, probs, names, n_boot=n_boot)
    result["temperature"] = calibration.report(raw, labels, loaded.metadata.temperature)
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


def bf16_agreement(loaded: LoadedModel, samples: list[Sample], decoded: DecodedImages) -> float | None:
    """Label agreement of the model's bf16 copy with float32 on the readable samples, or None without bf16.

    The app predicts in bf16 only where this agreement, stored in ``metrics.json``, is high enough.
    """
    from radiology.inference import bf16_copy, bf16_supported, label_agreement

    if not bf16_supported():
        return None
    index = decoded.index()
    pixels = np.stack([decoded.pixels[index[s.path]] for s in samples if decoded.ok[index[s.path]]])
    return label_agreement(predict_images(loaded, pixels), predict_images(bf16_copy(loaded), pixels))


def write_evaluation(run_dir: str | Path, result: dict, rows: list[dict]) -> None:
    """Writes ``metrics.json`` and ``predictions.csv`` into a run folder, each atomically."""
    run_dir = Path(run_dir)
    buf = io.StringIO(newline="")
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(run_dir / "predictions.csv", buf.getvalue())
    write_json_atomic(run_dir / "metrics.json", result)


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


def by_source_rows(by_source: dict[str, dict]) -> list[dict]:
    """Accuracy per source collection as table rows, with the 95% interval in words."""
    return [
        {
            "source": name,
            "images": v["n"],
            "accuracy": round(v["accuracy"], 3),
            "95% CI": "–".join(f"{x:.3f}" for x in v["ci"]) if v.get("ci") and None not in v["ci"] else "",
        }
        for name, v in by_source.items()
    ]


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
