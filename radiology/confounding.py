"""Shortcut risk: how well the source collection of an image can be told from its pixels alone.

When one class comes mostly from one hospital or one age group, a classifier can score by recognising
the source instead of the disease (DeGrave et al., Nature Machine Intelligence 2021). If a simple
linear model on small thumbnails predicts the source well, that shortcut is open.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from radiology.cache import DecodedImages
from radiology.datasets import Sample

THUMB = 32


def _thumbnails(pixels: np.ndarray) -> np.ndarray:
    """(N, H, W) uint8 to (N, THUMB*THUMB) float32 features, each image standardised."""
    out = np.stack(
        [np.asarray(Image.fromarray(p).resize((THUMB, THUMB), Image.BILINEAR), np.float32).ravel() for p in pixels]
    )
    out -= out.mean(axis=1, keepdims=True)
    out /= out.std(axis=1, keepdims=True) + 1e-6
    return out


def source_predictability(
    samples: list[Sample], decoded: DecodedImages, *, per_source: int = 600, min_images: int = 20, seed: int = 0
) -> dict | None:
    """Cross-validated balanced accuracy of a logistic regression predicting the source from 32x32 thumbnails.

    Folds keep each patient group together when groups are known. Sources with fewer than
    ``min_images`` readable images are left out; at most ``per_source`` images of each are used.

    Returns:
        ``{"balanced_accuracy", "chance", "sources": {name: {"n", "recall"}}, "n"}``, or None when fewer
        than two sources qualify.
    """
    index = decoded.index()
    readable = [s for s in samples if s.source and decoded.ok[index[s.path]]]
    chosen = choose_by_source([s.source for s in readable], per_source=per_source, min_images=min_images, seed=seed)
    if chosen is None:
        return None
    picked = [readable[i] for i in chosen]
    x = _thumbnails(np.stack([decoded.pixels[index[s.path]] for s in picked]))
    counts = Counter(s.source for s in readable)
    return predict_source(x, [s.source for s in picked], [s.group or s.path for s in picked], counts=counts, seed=seed)


def choose_by_source(sources: list, *, per_source: int = 600, min_images: int = 20, seed: int = 0) -> list[int] | None:
    """Which items to use for predicting the source: at most ``per_source`` of each source that has ``min_images``.

    Args:
        sources: the source of each item; None or empty for unknown.
        per_source: the most items of one source kept, drawn at random (seeded).
        min_images: the fewest items a source needs to be kept.
        seed: seed of the draw.

    Returns:
        indices into ``sources``, source by source (sorted by name), or None when fewer than two sources qualify.
    """
    counts = Counter(s for s in sources if s)
    kept = sorted(src for src, n in counts.items() if n >= min_images)
    if len(kept) < 2:
        return None
    rng = np.random.default_rng(seed)
    chosen = []
    for src in kept:
        members = [i for i, s in enumerate(sources) if s == src]
        chosen += [members[i] for i in sorted(rng.permutation(len(members))[:per_source])]
    return chosen


def predict_source(
    features: np.ndarray,
    sources: list[str],
    groups: list[str],
    *,
    counts=None,
    standardize: bool = False,
    seed: int = 0,
) -> dict:
    """Cross-validated balanced accuracy of a logistic regression predicting the source from any features.

    The one source classifier of the project: the Dataset page and the model card run it on thumbnails
    (:func:`source_predictability`), the trust audit on the model's own pooled features.

    Args:
        features: float array of shape (N, D), one row per image.
        sources: the source of each image (two sources or more).
        groups: the patient group of each image; the five folds keep a group together.
        counts: images per source to report as ``n`` (default: those in ``sources``).
        standardize: scale every feature to zero mean and unit variance inside each fold first, for features
            on different scales such as a network's activations.
        seed: seed of the folds.

    Returns:
        ``{"balanced_accuracy", "chance", "n", "sources": {name: {"n", "recall"}}}``.

    Raises:
        ValueError: fewer than two sources, or not one source and group per row.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedGroupKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    names = sorted(set(sources))
    if len(names) < 2:
        raise ValueError(f"predicting the source needs two sources or more, got {names}")
    if not len(features) == len(sources) == len(groups):
        raise ValueError(
            f"expected one source and group per row: {len(features)} rows, {len(sources)} sources, {len(groups)} groups"
        )
    x = np.asarray(features, dtype=np.float32)
    y = np.array([names.index(s) for s in sources])
    folds = StratifiedGroupKFold(n_splits=5, shuffle=True, random_state=seed)
    model = LogisticRegression(max_iter=300, C=0.1)
    if standardize:
        model = make_pipeline(StandardScaler(), model)
    pred = cross_val_predict(model, x, y, groups=np.asarray(groups), cv=folds)
    recalls = {src: float(np.mean(pred[y == k] == k)) for k, src in enumerate(names)}
    counts = counts or Counter(sources)
    return {
        "balanced_accuracy": float(np.mean(list(recalls.values()))),
        "chance": 1 / len(names),
        "n": int(len(y)),
        "sources": {src: {"n": int(counts[src]), "recall": recalls[src]} for src in names},
    }


def unmeasured_reason(root: str | Path, samples: list[Sample], decoded: DecodedImages, *, min_images: int = 20) -> str:
    """Why :func:`source_predictability` has nothing to measure in a dataset, in words a user can act on.

    Args:
        root: the dataset folder, where a ``manifest.csv`` would be.
        samples: the dataset's samples.
        decoded: their decoded images; unreadable ones do not count.
        min_images: the readable images a source needs, as in :func:`source_predictability`.

    Returns:
        the reason, for example "this folder has no manifest.csv with a source column…".
    """
    if not (Path(root) / "manifest.csv").is_file():
        return (
            "this folder has no manifest.csv with a source column, so the images' sources are unknown: add one "
            "with 'file' and 'source' columns to measure the shortcut risk"
        )
    index = decoded.index()
    counts = Counter(s.source for s in samples if s.source and decoded.ok[index[s.path]])
    if not counts:
        return "manifest.csv gives no source for any readable image: it needs a 'source' column with values"
    if len(counts) == 1:
        return f"every image with a source comes from {next(iter(counts))}: there is no second source to tell apart"
    listed = ", ".join(f"{src} ({n})" for src, n in counts.most_common())
    return f"fewer than two sources have {min_images} or more readable images: {listed}"
