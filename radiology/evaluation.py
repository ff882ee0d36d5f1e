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
from radiology.registry import EVALUATIONS_DIR, Run

PROGRESS_CHUNK = 256  # images predicted between two progress reports
SMALL_SAMPLE = 30  # below this many images a percentile bootstrap of a proportion is unreliable: Wilson instead
SPLIT_NAMES = {"test": "test split", "val": "validation split", "train": "training split", "all": "all images"}


def labelled_pixels(
    loaded: LoadedModel, decoded: DecodedImages, samples: list[Sample], *, purpose: str
) -> tuple[list[Sample], np.ndarray, np.ndarray]:
    """The readable ones of ``samples``, their pixels and their labels as indices of the model's classes.

    Args:
        loaded: the model whose class order the labels follow.
        decoded: decoded images holding the samples.
        samples: labelled samples.
        purpose: what the images are for, in the error message ("evaluate", "audit").

    Returns:
        the readable samples, uint8 array of shape (N, H, W) and int array of shape (N,).

    Raises:
        EvaluationError: no sample is readable, or a label is not among the model's classes.
    """
    names = list(loaded.metadata.class_names)
    kept, pixels = decoded.readable(samples)
    if not kept:
        raise EvaluationError(f"no readable images to {purpose} among {len(samples)} files")
    unknown = {s.label for s in kept} - set(names)
    if unknown:
        raise EvaluationError(f"labels {sorted(unknown)} are not among the model's classes {names}")
    return kept, pixels, np.array([names.index(s.label) for s in kept])


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
    kept, pixels, labels = labelled_pixels(loaded, decoded, samples, purpose="evaluate")
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


def misclassified(rows: list[dict], class_names, *, limit: int | None = 12) -> list[dict]:
    """Prediction rows whose prediction is wrong, most confident mistakes first.

    Each returned row gains ``confidence``: the probability given to the wrong prediction. ``limit=None``
    keeps every mistake.
    """
    wrong = [
        {**r, "confidence": float(r[f"p_{r['predicted']}"])}
        for r in rows
        if r["label"] != r["predicted"] and r["predicted"] in class_names
    ]
    return sorted(wrong, key=lambda r: -r["confidence"])[:limit]


def proportion_interval(successes: int, n: int, bootstrap: list | None) -> tuple[list[float | None], str]:
    """The 95% interval to show for a proportion such as accuracy or a class's recall.

    The stored percentile bootstrap is kept where it is informative. On fewer than ``SMALL_SAMPLE`` images, or
    where it collapsed to one value (6 images all right give "1.000-1.000"), the Wilson score interval is used
    instead: it holds for small counts and never has zero width.

    Args:
        successes: how many were right.
        n: how many there were.
        bootstrap: the stored bootstrap interval ``[lo, hi]``, or None.

    Returns:
        ``([lo, hi], method)`` with method ``"bootstrap"`` or ``"Wilson"``; ``([None, None], "none")`` when n is 0.
    """
    if not n:
        return [None, None], "none"
    lo, hi = bootstrap if bootstrap and len(bootstrap) == 2 else (None, None)
    if n < SMALL_SAMPLE or lo is None or hi is None or hi - lo < 1e-9:
        return metrics.wilson_interval(successes, n), "Wilson"
    return [float(lo), float(hi)], "bootstrap"


def interval_text(interval: list[float | None], method: str, *, digits: int = 3) -> str:
    """An interval as text, "0.541–1.000 (Wilson)"; empty for a missing one."""
    if None in interval or not interval:
        return ""
    return "–".join(f"{v:.{digits}f}" for v in interval) + (f" ({method})" if method == "Wilson" else "")


def accuracy_interval(result: dict) -> tuple[list[float | None], str]:
    """The accuracy's 95% interval and its method (see :func:`proportion_interval`) for an evaluation result."""
    n = result.get("n") or 0
    return proportion_interval(round((result.get("accuracy") or 0) * n), n, result.get("ci", {}).get("accuracy"))


def recall_intervals(result: dict) -> dict[str, tuple[list[float | None], str]]:
    """Each class's recall interval and method (see :func:`proportion_interval`), from the report's support."""
    report, stored = result.get("report", {}), result.get("ci", {}).get("recall", {})
    out = {}
    for name in result.get("class_names", []):
        row = report.get(name, {})
        support = int(row.get("support") or 0)
        out[name] = proportion_interval(round((row.get("recall") or 0) * support), support, stored.get(name))
    return out


def macro_f1_interval_text(result: dict) -> str:
    """The macro F1's bootstrap interval as text, or why there is none: F1 is no proportion, so no Wilson."""
    lo, hi = result.get("ci", {}).get("macro_f1") or (None, None)
    n = result.get("n") or 0
    if lo is None or hi is None or n < SMALL_SAMPLE or hi - lo < 1e-9:
        return f"no 95% CI: {n} images are too few for a bootstrap"
    return f"95% CI {lo:.3f} – {hi:.3f}"


def by_source_note(result: dict) -> str | None:
    """Why accuracy per data source is not shown for an evaluation, or None when it is (two or more sources)."""
    by_source = result.get("by_source")
    if by_source is None:
        return "This evaluation predates accuracy per source: evaluate the run again to see it."
    known = [s for s in by_source if s != "unknown"]
    if not known:
        return (
            "The images have no source: the dataset folder has no manifest.csv with a source column, "
            "so accuracy per source cannot be shown."
        )
    if len(by_source) == 1:
        return f"Every image comes from one source, {known[0]}: there is no other to compare it with."
    return None


def by_source_rows(by_source: dict[str, dict]) -> list[dict]:
    """Accuracy per source (``metrics.accuracy_by_group``) as display rows with the interval as text."""
    return [
        {
            "source": name,
            "images": g["n"],
            "accuracy": f"{g['accuracy']:.1%}",
            "95% CI (Wilson)": interval_text(g.get("ci") or [None, None], "bootstrap", digits=3),
        }
        for name, g in by_source.items()
    ]


def summary_row(run_id: str, result: dict) -> dict:
    """Headline numbers of one evaluation, for tables that compare runs."""
    row = {
        "run": run_id,
        "images": result.get("n"),
        "accuracy": result.get("accuracy"),
        "accuracy 95% CI": interval_text(*accuracy_interval(result)) if result.get("n") else "",
        "macro F1": result.get("macro_f1"),
        "ECE": result.get("calibration", {}).get("ece"),
    }
    for name in result.get("class_names", []):
        row[f"recall {name}"] = result.get("report", {}).get(name, {}).get("recall")
    return row


PERCENT_KEYS = ("accuracy", "recall")  # shown as percentages; the other numbers with three decimals


def comparison_table(rows: list[dict]) -> list[dict]:
    """Summary rows (:func:`summary_row`) of several runs turned into one row per metric, every cell text.

    Text cells keep a table of mixed numbers and intervals displayable (a column of floats and strings is
    refused by Arrow) and readable ("0.054%" rather than 0.0005431903733147947).

    Returns:
        ``[{"metric": name, run_id: text, ...}, ...]`` in the summary's order.
    """
    metrics_ = [k for k in rows[0] if k != "run"] if rows else []
    for row in rows[1:]:
        metrics_ += [k for k in row if k != "run" and k not in metrics_]
    return [{"metric": key, **{row["run"]: _cell(key, row.get(key)) for row in rows}} for key in metrics_]


def _cell(key: str, value) -> str:
    if value is None or value == "":
        return "–"
    if isinstance(value, str):
        return value
    if key == "images":
        return f"{int(value):,}"
    if key.startswith(PERCENT_KEYS):
        return f"{value:.1%}"
    return f"{value:.3f}"


def _accuracies_by_split(run: Run) -> dict[tuple[str, str], dict]:
    """A run's evaluations by the images they measured, ``(data fingerprint, split)``: the training-time test
    first, then the newest of each other. An evaluation that names no fingerprint cannot be matched and is left
    out; the training-time test of an older run is matched by its model's fingerprint, whose test split it is.
    """
    from radiology.errors import ModelLoadError
    from radiology.model import read_metadata

    found: dict[tuple[str, str], dict] = {}
    for record in run.evaluations():
        m = record.metrics
        fingerprint = m.get("data_fingerprint")
        if fingerprint is None and record.id == "training" and run.has_model:
            try:
                fingerprint = read_metadata(run.model_path).data_fingerprint
            except ModelLoadError:
                fingerprint = None
        if fingerprint and m.get("split") and m.get("accuracy") is not None:
            found.setdefault((fingerprint, m["split"]), m)
    return found


def worse_on_the_same_images(candidate: Run, reference: Run) -> str | None:
    """Why promoting ``candidate`` in place of ``reference`` needs a confirmation, or None when it does not.

    It does when the two were measured on the same images (the same split of the same data, by fingerprint)
    and ``candidate``'s accuracy was lower there; runs never measured on the same images are not compared.

    Returns:
        the comparison in one sentence, naming both accuracies and the images, or None.
    """
    theirs = _accuracies_by_split(reference)
    for key, mine in _accuracies_by_split(candidate).items():
        other = theirs.get(key)
        if other is not None and mine["accuracy"] < other["accuracy"]:
            split = SPLIT_NAMES.get(key[1], key[1])
            return (
                f"run {candidate.id} measured {mine['accuracy']:.1%} accuracy on the {split} of "
                f"{mine.get('data_root', 'the same data')} ({mine.get('n', '?')} images), below the "
                f"{other['accuracy']:.1%} of {reference.id} on the same images"
            )
    return None
