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
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedGroupKFold, cross_val_predict

    index = decoded.index()
    readable = [s for s in samples if s.source and decoded.ok[index[s.path]]]
    counts = Counter(s.source for s in readable)
    kept_sources = sorted(src for src, n in counts.items() if n >= min_images)
    if len(kept_sources) < 2:
        return None
    rng = np.random.default_rng(seed)
    chosen = []
    for src in kept_sources:
        group = [s for s in readable if s.source == src]
        chosen += [group[i] for i in sorted(rng.permutation(len(group))[:per_source])]
    x = _thumbnails(np.stack([decoded.pixels[index[s.path]] for s in chosen]))
    y = np.array([kept_sources.index(s.source) for s in chosen])
    groups = np.array([s.group or s.path for s in chosen])
    folds = StratifiedGroupKFold(n_splits=5, shuffle=True, random_state=seed)
    model = LogisticRegression(max_iter=300, C=0.1)
    pred = cross_val_predict(model, x, y, groups=groups, cv=folds)
    recalls = {src: float(np.mean(pred[y == k] == k)) for k, src in enumerate(kept_sources)}
    return {
        "balanced_accuracy": float(np.mean(list(recalls.values()))),
        "chance": 1 / len(kept_sources),
        "n": int(len(y)),
        "sources": {src: {"n": int(counts[src]), "recall": recalls[src]} for src in kept_sources},
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
