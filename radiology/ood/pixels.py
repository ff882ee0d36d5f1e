"""The pixel check: a film's layout and orientation, from a 16x16 thumbnail of the model input."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from radiology.ood.encoding import _decode, _encode

THUMB_SIDE = 16  # the pixel check's thumbnail
ORIENTATION_FIT_MAX = 4000  # training images the orientation check is fitted on, at most


def thumbnails(small: np.ndarray, side: int = THUMB_SIDE) -> np.ndarray:
    """Box-filtered ``side`` x ``side`` thumbnails, each shifted and scaled to zero mean and unit spread.

    Args:
        small: uint8 array of shape (h, w) or (N, h, w).
        side: the thumbnail's side.

    Returns:
        float32 array of shape (N, side * side).
    """
    images = np.asarray(small, dtype=np.uint8)
    images = images[None] if images.ndim == 2 else images
    if not len(images):
        return np.zeros((0, side * side), np.float32)
    t = np.stack([np.asarray(Image.fromarray(i).resize((side, side), Image.BOX), np.float32) for i in images])
    t -= t.mean(axis=(1, 2), keepdims=True)
    t /= np.maximum(t.std(axis=(1, 2), keepdims=True), 1.0)
    return t.reshape(len(t), -1)


def _wrong_way_views(t: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Upright views of square thumbnails (as is, mirrored) and wrong ones (upside down, rotated 90 either way)."""
    mirrored = t[:, :, ::-1]
    upright = [t, mirrored]
    wrong = [v for u in upright for v in (u[:, ::-1], np.rot90(u, 1, (1, 2)), np.rot90(u, 3, (1, 2)))]
    return upright, wrong


@dataclass(frozen=True)
class PixelStats:
    """What the training films look like as 16x16 thumbnails, and which way up they are.

    Attributes:
        mean: float32 array of shape (D,), the mean thumbnail (D = side * side).
        precision: float32 array of shape (D, D), the inverse of the (Ledoit-Wolf shrunk) covariance.
        orientation_weights: float32 array of shape (D,), a logistic regression for "rotated or upside down".
        orientation_bias: its intercept.
        layout_threshold: the Mahalanobis distance above which a thumbnail is unlike a chest film.
        orientation_threshold: the probability of "rotated or upside down" above which the image is flagged.
        side: the thumbnail's side.
    """

    mean: np.ndarray
    precision: np.ndarray
    orientation_weights: np.ndarray
    orientation_bias: float
    layout_threshold: float = 1.0
    orientation_threshold: float = 1.0
    side: int = THUMB_SIDE

    @classmethod
    def fit(cls, pixels: np.ndarray, *, seed: int = 0) -> PixelStats:
        """Fits both checks on upright training images (uint8, shape (N, h, w)); thresholds are left at 1."""
        from sklearn.covariance import LedoitWolf
        from sklearn.linear_model import LogisticRegression

        t = thumbnails(pixels)
        mean = t.mean(axis=0)
        precision = np.linalg.pinv(LedoitWolf().fit(t).covariance_, hermitian=True)
        if len(t) > ORIENTATION_FIT_MAX:
            t = t[np.random.default_rng(seed).choice(len(t), ORIENTATION_FIT_MAX, replace=False)]
        upright, wrong = _wrong_way_views(t.reshape(-1, THUMB_SIDE, THUMB_SIDE))
        x = np.concatenate([v.reshape(len(v), -1) for v in upright + wrong])
        y = np.repeat([0] * len(upright) + [1] * len(wrong), len(t))
        lr = LogisticRegression(C=1.0, max_iter=2000, class_weight="balanced").fit(x, y)
        return cls(
            mean.astype(np.float32),
            precision.astype(np.float32),
            lr.coef_[0].astype(np.float32),
            float(lr.intercept_[0]),
        )

    def raw(self, small: np.ndarray) -> dict[str, np.ndarray]:
        """Unscaled scores of uint8 images (h, w) or (N, h, w): layout distance and orientation probability."""
        t = thumbnails(small, self.side)
        d = t - self.mean
        layout = np.sqrt(np.maximum(np.einsum("nd,nd->n", d @ self.precision, d, dtype=np.float64), 0.0))
        logit = np.clip(t.astype(np.float64) @ self.orientation_weights + self.orientation_bias, -50, 50)
        return {"layout": layout, "orientation": 1.0 / (1.0 + np.exp(-logit))}

    def scores(self, small: np.ndarray) -> dict[str, np.ndarray]:
        """Both scores divided by their thresholds: above 1 is out of distribution."""
        raw = self.raw(small)
        return {
            "layout": raw["layout"] / self.layout_threshold,
            "orientation": raw["orientation"] / self.orientation_threshold,
        }

    def to_dict(self) -> dict:
        """JSON-ready data; the arrays are base64 float32."""
        return {
            "side": self.side,
            "mean": _encode(self.mean),
            "precision": _encode(self.precision),
            "orientation_weights": _encode(self.orientation_weights),
            "orientation_bias": self.orientation_bias,
            "layout_threshold": self.layout_threshold,
            "orientation_threshold": self.orientation_threshold,
        }

    @classmethod
    def from_dict(cls, data: dict) -> PixelStats:
        """Builds the statistics from :meth:`to_dict` output.

        Raises:
            KeyError, TypeError or ValueError: the data is malformed.
        """
        stats = cls(
            _decode(data["mean"]),
            _decode(data["precision"]),
            _decode(data["orientation_weights"]),
            float(data["orientation_bias"]),
            float(data["layout_threshold"]),
            float(data["orientation_threshold"]),
            int(data["side"]),
        )
        d = stats.side**2
        shapes = (stats.mean.shape, stats.precision.shape, stats.orientation_weights.shape)
        if shapes != ((d,), (d, d), (d,)) or not min(stats.layout_threshold, stats.orientation_threshold) > 0:
            raise ValueError(f"inconsistent pixel statistics: side {stats.side}, shapes {shapes}")
        return stats
