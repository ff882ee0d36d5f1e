"""Evaluating a model on dataset samples: predictions per image, metrics, and their files."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from radiology import calibration, metrics, ood
from radiology.cache import DecodedImages
from radiology.datasets import Sample
from radiology.errors import EvaluationError
from radiology.fsutil import atomic_folder, write_csv_atomic, write_json_atomic
from radiology.model import LoadedModel, predict_images
from radiology.registry import EVALUATIONS_DIR

PROGRESS_CHUNK = 256  # images predicted between two progress reports
SPLIT_NAMES = {"test": "test split", "val": "validation split", "train": "training split", "all": "all images"}


def evaluate_samples(
    loaded: LoadedModel,
    samples: list[Sample],
    decoded: DecodedImages,
    *,
    root: str | Path,
    n_boot: int = 1000,
    progress=None,
    bf16: bool = False,
) -> tuple[dict, list[dict]]:
    """Predicts the readable samples and computes every metric.

    Args:
        loaded: the model to evaluate.
        samples: the labelled files, for example a test split.
        decoded: decoded images that include those files, at the model's input size.
        root: the dataset root; prediction rows give paths relative to it.
        n_boot: bootstrap resamples for the confidence intervals.
        progress: optional callable ``progress(done, total)`` as images are predicted.
        bf16: also measure how often the model's bf16 copy agrees with float32 (``bf16_agreement``).

    Returns:
        the metrics dict (see ``metrics.evaluate``, on the calibrated probabilities, plus ``temperature``,
        the calibration before and after the model's temperature, ``by_source``, ``skipped`` and ``ood``,
        the share flagged by the out-of-distribution gate) and one prediction row per image: path, label,
        predicted, source, a probability per class, ``in_distribution`` and ``ood_score``.

    Raises:
        EvaluationError: no sample is readable, or a label is not among the model's classes.
    """
    names = list(loaded.metadata.class_names)
    kept, pixels = decoded.readable(samples)
    if not kept:
        raise EvaluationError(f"no readable images to evaluate among {len(samples)} files")
    unknown = {s.label for s in kept} - set(names)
    if unknown:
        raise EvaluationError(f"labels {sorted(unknown)} are not among the model's classes {names}")
    index = decoded.index()
    rows_at = [index[s.path] for s in kept]
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
    if bf16:
        result["bf16_agreement"] = bf16_agreement(loaded, pixels, raw)
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


def bf16_agreement(loaded: LoadedModel, pixels: np.ndarray, probs: np.ndarray) -> float | None:
    """Label agreement of the model's bf16 copy with its float32 predictions, or None where there is no bf16.

    The app predicts in bf16 only where this agreement, stored in ``metrics.json``, is high enough.

    Args:
        loaded: the model.
        pixels: uint8 array of shape (N, H, W), the images.
        probs: the float32 model's probabilities of those images, shape (N, C), as already computed.
    """
    from radiology.inference import bf16_copy, bf16_supported, label_agreement

    if not bf16_supported():
        return None
    return label_agreement(probs, predict_images(bf16_copy(loaded), pixels))


def write_evaluation(folder: str | Path, result: dict, rows: list[dict]) -> None:
    """Writes ``metrics.json`` and ``predictions.csv`` into a folder, each atomically.

    The run folder's own pair is the test evaluation made at training time, and only the trainer writes
    it; every later evaluation goes to a folder of its own (:func:`save_evaluation`).
    """
    folder = Path(folder)
    write_csv_atomic(folder / "predictions.csv", rows)
    write_json_atomic(folder / "metrics.json", result)


def save_evaluation(run_dir: str | Path, evaluation_id: str, result: dict, rows: list[dict]) -> Path:
    """Stores one evaluation of a run as ``RUN/evaluations/ID/`` (``metrics.json``, ``predictions.csv``).

    The folder appears whole or not at all; the run's training-time ``metrics.json`` is left as it is.

    Args:
        run_dir: the run folder.
        evaluation_id: the evaluation's id (``radiology.jobs.new_id``), its folder name.
        result: the metrics, naming what they were measured on (``data_root``, ``split``,
            ``split_matches_training``, ``training_overlap``, ``evaluated``, ``source``).
        rows: the prediction rows.

    Returns:
        the evaluation's folder.
    """
    target = Path(run_dir) / EVALUATIONS_DIR / evaluation_id
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_folder(target) as tmp:
        write_evaluation(tmp, {**result, "id": evaluation_id}, rows)
    return target


def measured_on(result: dict) -> str:
    """What an evaluation's numbers were measured on, in words, for labelling every number shown.

    For example ``test split of /data/cxr3 at training time, 300 images`` or ``validation split of
    /data/other, 120 images, 2026-12-02 13:05 UTC; 20 of its images were used in training``.
    """
    split = SPLIT_NAMES.get(result.get("split"), result.get("split") or "unknown split")
    text = f"{split} of {result.get('data_root', 'unknown data')}"
    if result.get("source") == "training" or (result.get("source") is None and not result.get("evaluated")):
        text += " at training time"
    text += f", {result.get('n', '?')} images"
    if result.get("source") == "training":
        return text
    if result.get("evaluated"):
        text += f", {result['evaluated'][:16].replace('T', ' ')} UTC"
    if result.get("source") == "fit-ood":
        text += " (after refitting the out-of-distribution gate)"
    if result.get("training_overlap") and not (result.get("split_matches_training") is True and split == "test split"):
        text += f"; {result['training_overlap']}"
    return text


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
