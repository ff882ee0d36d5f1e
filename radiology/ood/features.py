"""The feature check: class-conditional Gaussians over the penultimate features, and their fitting."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from radiology.errors import ModelLoadError
from radiology.ood.encoding import _decode, _encode
from radiology.ood.pixels import PixelStats

PERCENTILE = 99.0


@dataclass(frozen=True)
class FeatureStats:
    """Class-conditional Gaussians with a shared covariance over one layer's features, and a threshold.

    Attributes:
        layer: the layer whose output is modelled, e.g. ``global_max_pool``.
        means: float32 array of shape (K, D), one mean per class seen in training.
        precision: float32 array of shape (D, D), the inverse of the shared (Ledoit-Wolf shrunk) covariance.
        threshold: the Mahalanobis distance at ``percentile`` on the threshold split.
        percentile: the share of threshold-split images that pass, in percent.
        threshold_split: ``val``, or ``train`` when there was no validation split.
        n_fit: images the Gaussians were fitted on.
        n_threshold: images the threshold was set on.
        pixels: the thumbnail checks fitted on the same images, or None (models fitted before they existed).
    """

    layer: str
    means: np.ndarray
    precision: np.ndarray
    threshold: float
    percentile: float = PERCENTILE
    threshold_split: str = "val"
    n_fit: int = 0
    n_threshold: int = 0
    pixels: PixelStats | None = None

    def distances(self, features: np.ndarray) -> np.ndarray:
        """Mahalanobis distance to the nearest class mean.

        Args:
            features: float array of shape (N, D).

        Returns:
            float64 array of shape (N,).
        """
        f = np.asarray(features, dtype=np.float32)
        if f.ndim != 2 or f.shape[1] != self.means.shape[1]:
            raise ValueError(f"expected features of shape (N, {self.means.shape[1]}), got {f.shape}")
        best = np.full(len(f), np.inf)
        for mean in self.means:
            d = f - mean
            best = np.minimum(best, np.einsum("nd,nd->n", d @ self.precision, d, dtype=np.float64))
        return np.sqrt(np.maximum(best, 0.0))

    def scores(self, features: np.ndarray) -> np.ndarray:
        """Distances divided by the threshold, float64 array of shape (N,): above 1 is out of distribution."""
        return self.distances(features) / self.threshold

    def all_scores(self, features: np.ndarray, small: np.ndarray) -> dict[str, np.ndarray]:
        """Every check's score, ``{"features": ..., "layout": ..., "orientation": ...}``, each of shape (N,).

        Args:
            features: float array of shape (N, D).
            small: uint8 array of shape (N, h, w), the same images at the model's input size.
        """
        scores = {"features": self.scores(features)}
        if self.pixels is not None:
            scores.update(self.pixels.scores(small))
        return scores

    def to_dict(self) -> dict:
        """JSON-ready data for ``ModelMetadata.ood``; the arrays are base64 float32."""
        return {
            "method": "mahalanobis",
            "layer": self.layer,
            "means": _encode(self.means),
            "precision": _encode(self.precision),
            "threshold": float(self.threshold),
            "percentile": float(self.percentile),
            "threshold_split": self.threshold_split,
            "n_fit": int(self.n_fit),
            "n_threshold": int(self.n_threshold),
            **({"pixels": self.pixels.to_dict()} if self.pixels is not None else {}),
        }

    @classmethod
    def from_dict(cls, data: dict) -> FeatureStats:
        """Builds the statistics from :meth:`to_dict` output.

        Raises:
            ModelLoadError: the data is not what :meth:`to_dict` writes.
        """
        if data.get("method") != "mahalanobis":
            raise ModelLoadError(f"unknown out-of-distribution method {data.get('method')!r}, expected 'mahalanobis'")
        try:
            means, precision = _decode(data["means"]), _decode(data["precision"])
            stats = cls(
                layer=str(data["layer"]),
                means=means,
                precision=precision,
                threshold=float(data["threshold"]),
                percentile=float(data.get("percentile", PERCENTILE)),
                threshold_split=str(data.get("threshold_split", "val")),
                n_fit=int(data.get("n_fit", 0)),
                n_threshold=int(data.get("n_threshold", 0)),
                pixels=PixelStats.from_dict(data["pixels"]) if data.get("pixels") else None,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelLoadError(f"malformed out-of-distribution statistics in the model's metadata: {exc}") from exc
        d = means.shape[-1]
        if means.ndim != 2 or precision.shape != (d, d) or not stats.threshold > 0:
            raise ModelLoadError(
                f"inconsistent out-of-distribution statistics: means {means.shape}, precision {precision.shape}, "
                f"threshold {stats.threshold}"
            )
        return stats


def load_stats(metadata) -> FeatureStats | None:
    """The feature statistics stored in a model's metadata, or None when it has none.

    Raises:
        ModelLoadError: the stored statistics are malformed.
    """
    return FeatureStats.from_dict(metadata.ood) if getattr(metadata, "ood", None) else None


def fit_stats(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    threshold_features: np.ndarray | None,
    *,
    layer: str,
    percentile: float = PERCENTILE,
    train_pixels: np.ndarray | None = None,
    threshold_pixels: np.ndarray | None = None,
) -> FeatureStats:
    """Fits class means and a shared covariance on training features, and the threshold on held-out ones.

    With ``train_pixels`` the thumbnail checks are fitted too, and all thresholds are set together: each
    check's score is first scaled by its own ``percentile``-th percentile, then all by the same factor,
    the ``percentile``-th percentile of the largest scaled score, so that ``percentile`` % of the
    held-out images pass every check.

    Args:
        train_features: float array of shape (N, D).
        train_labels: int array of shape (N,), class indices.
        threshold_features: float array of shape (M, D) from the validation split; None or empty to set
            the threshold on the training features instead (tighter: they were fitted on).
        layer: the layer the features come from.
        percentile: share of threshold images that should pass, in percent.
        train_pixels: uint8 array of shape (N, h, w), the training images at the model's input size; None
            to fit the feature check alone.
        threshold_pixels: uint8 array of shape (M, h, w), the images of ``threshold_features``.

    Returns:
        the statistics.

    Raises:
        ValueError: fewer than two training images, or labels not matching the features.
    """
    from sklearn.covariance import LedoitWolf

    f = np.asarray(train_features, dtype=np.float64)
    y = np.asarray(train_labels)
    if f.ndim != 2 or len(f) < 2 or len(y) != len(f):
        raise ValueError(f"expected at least 2 training features (N, D) and N labels, got {f.shape} and {y.shape}")
    if not 0 < percentile <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {percentile}")
    classes = np.unique(y)
    means = np.stack([f[y == c].mean(axis=0) for c in classes])
    centred = f - means[np.searchsorted(classes, y)]
    # Shrinkage keeps the covariance invertible: ReLU features have dead dimensions, and tiny datasets have N < D.
    covariance = LedoitWolf(assume_centered=True).fit(centred).covariance_
    precision = np.linalg.pinv(covariance, hermitian=True)
    held_out = threshold_features is not None and len(threshold_features) > 0
    pixels = PixelStats.fit(train_pixels) if train_pixels is not None else None
    stats = FeatureStats(layer, means.astype(np.float32), precision.astype(np.float32), 1.0, pixels=pixels)
    reference = np.asarray(threshold_features if held_out else f, dtype=np.float32)
    raw = {"features": stats.distances(reference)}
    if pixels is not None:
        raw.update(pixels.raw(threshold_pixels if held_out else train_pixels))
    own = {k: max(float(np.percentile(v, percentile)), 1e-6) for k, v in raw.items()}
    common = float(np.percentile(np.max([v / own[k] for k, v in raw.items()], axis=0), percentile))
    limit = {k: v * common for k, v in own.items()}
    if pixels is not None:
        pixels = replace(pixels, layout_threshold=limit["layout"], orientation_threshold=limit["orientation"])
    return replace(
        stats,
        threshold=limit["features"],
        percentile=float(percentile),
        threshold_split="val" if held_out else "train",
        n_fit=len(f),
        n_threshold=len(reference),
        pixels=pixels,
    )
