"""Fitting the gate's statistics for a model and storing them in its file."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from radiology.errors import ModelLoadError
from radiology.model import LoadedModel, update_metadata
from radiology.ood.extract import feature_layer, predict_with_features
from radiology.ood.features import PERCENTILE, FeatureStats, fit_stats


def fit_for_model(
    loaded: LoadedModel,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray | None,
    *,
    percentile: float = PERCENTILE,
    val_features: np.ndarray | None = None,
    progress=None,
) -> FeatureStats:
    """Fits the gate's statistics on a model's training images and its thresholds on the validation images.

    Args:
        loaded: the model.
        x_train: uint8 array of shape (N, H, W) at the model's input size.
        y_train: int array of shape (N,), class indices in the model's output order.
        x_val: uint8 array of shape (M, H, W), or None.
        percentile: share of validation images that should pass, in percent.
        val_features: the features of ``x_val`` at :func:`feature_layer`, when the caller has them already.
        progress: optional callable ``progress(done, total)`` told the images passed through the model so far,
            training and validation images together.

    Raises:
        ModelLoadError: the model has no global pooling layer to take features from.
    """
    layer = feature_layer(loaded.model)
    if layer is None:
        raise ModelLoadError(f"model {loaded.path} has no global pooling layer for the out-of-distribution check")
    has_val = x_val is not None and len(x_val) > 0
    total = len(x_train) + (len(x_val) if has_val and val_features is None else 0)

    def report(offset):
        return None if progress is None else lambda done, _: progress(offset + done, total)

    _, f_train = predict_with_features(loaded, x_train, layer=layer, progress=report(0))
    f_val = val_features
    if f_val is None and has_val:
        f_val = predict_with_features(loaded, x_val, layer=layer, progress=report(len(x_train)))[1]
    return fit_stats(
        f_train,
        y_train,
        f_val,
        layer=layer,
        percentile=percentile,
        train_pixels=x_train,
        threshold_pixels=x_val if has_val else None,
    )


def store_stats(loaded: LoadedModel, path: str | Path, stats: FeatureStats) -> LoadedModel:
    """Re-saves a model file with the statistics in its metadata; returns the model with the new metadata."""
    return update_metadata(loaded, path, ood=stats.to_dict())
