"""Is this a chest X-ray? An out-of-distribution gate in front of every prediction.

Three layers, all cheap:

* input checks on the decoded image, before the model: colour, implausible size or aspect ratio,
  a nearly constant or mostly blank image, pure noise, a smooth gradient;
* a feature check that rides on the prediction's own forward pass: the penultimate features (after
  GlobalMaxPooling2D) are modelled at training time by class-conditional Gaussians with one shared
  covariance, and an image is scored by its Mahalanobis distance to the nearest class mean
  (Lee et al., NeurIPS 2018, without input preprocessing);
* a pixel check on a 16x16 thumbnail of the model input, fitted on the same training images: a
  Gaussian of the thumbnails (a film's layout) and a logistic regression that tells upright films
  from the same films rotated or upside down (the model is trained with flips and small rotations,
  so its features barely notice an upside-down film).

Each score is divided by its threshold (above 1 is out of distribution), and the thresholds are set
together on the validation split so that 99% of real validation X-rays pass all of them.

The statistics travel inside the model file (``ModelMetadata.ood``). A model without them still
gets the input checks and says :data:`UNAVAILABLE`.
"""

from __future__ import annotations

import base64
import weakref
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image

from radiology.errors import ModelLoadError
from radiology.images import DicomHeader
from radiology.model import LoadedModel, update_metadata
from radiology.preprocess import resize, to_model_input

UNAVAILABLE = "out-of-distribution check unavailable for this model"
HEADLINE = "This does not look like a frontal chest X-ray"
PERCENTILE = 99.0
MIN_SIDE = 100  # below this a film keeps no readable anatomy; cxr3's shorter side is 224
MAX_ASPECT = 2.5  # chest films are near square: cxr3 is within 2.3:1
MAX_COLOURFULNESS = 15.0  # Hasler-Süsstrunk: below 15 is "not colourful"; a grayscale radiograph is 0
MIN_SPREAD = 6.0  # gray-level standard deviation of the model-size image; cxr3 at least 13
MAX_BLANK = 0.45  # share of pixels within +-2 levels of the most common one (a page); above it: 0.1% of cxr3
MAX_ROUGHNESS = 0.6  # mean neighbour difference over the spread: ~1 for white noise, cxr3 at most 0.33
DETAIL_SIDE = 32
MIN_DETAIL = 0.08  # mean |Laplacian| over the spread at 32x32: smooth gradients 0-0.03, cxr3 at least 0.11
THUMB_SIDE = 16  # the pixel check's thumbnail
ORIENTATION_FIT_MAX = 4000  # training images the orientation check is fitted on, at most
REASONS = {
    "features": "its features are unlike the training X-rays",
    "layout": "its layout is unlike a chest film's",
    "orientation": "it looks rotated or upside down",
}
FEATURE_LAYERS = ("GlobalMaxPooling2D", "GlobalAveragePooling2D", "Flatten")
XRAY_MODALITIES = ("CR", "DX", "DR")  # computed and digital radiography ("DR" is not standard but is written)
LATERAL_VIEWS = ("LL", "RL", "LAT", "LATERAL")  # DICOM ViewPosition values of a side view


@dataclass(frozen=True)
class OODResult:
    """The gate's verdict on one image.

    Attributes:
        flag: True when the image does not look like a frontal chest X-ray.
        score: the feature score, the Mahalanobis distance divided by the model's threshold (above 1
            is out of distribution); None when the model has no statistics.
        reason: why the image was flagged; :data:`UNAVAILABLE` when it passed the input checks but the
            model has no statistics; empty when it passed both checks.
    """

    flag: bool
    score: float | None
    reason: str

    @property
    def available(self) -> bool:
        """Whether the feature check ran."""
        return self.score is not None

    def to_dict(self) -> dict:
        """JSON-ready: ``{"flag": bool, "score": float | None, "reason": str}``."""
        return {"flag": self.flag, "score": None if self.score is None else round(self.score, 4), "reason": self.reason}

    @property
    def message(self) -> str:
        """The warning shown to a user: "This does not look like a frontal chest X-ray (reason, score 3.10)"."""
        score = "" if self.score is None else f", score {self.score:.2f}"
        return f"{HEADLINE} ({self.reason}{score})"


def _encode(array: np.ndarray) -> dict:
    array = np.ascontiguousarray(array, dtype=np.float32)
    return {"dtype": "float32", "shape": list(array.shape), "base64": base64.b64encode(array.tobytes()).decode()}


def _decode(data: dict) -> np.ndarray:
    raw = base64.b64decode(data["base64"], validate=True)
    return np.frombuffer(raw, dtype=np.dtype(data["dtype"])).reshape(data["shape"]).astype(np.float32)


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


def feature_layer(model) -> str | None:
    """The name of the model's last global pooling (or flatten) layer, whose output the gate models."""
    found = [layer.name for layer in model.layers if type(layer).__name__ in FEATURE_LAYERS]
    return found[-1] if found else None


_FEATURE_MODELS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def feature_model(model, layer: str):
    """A model over the same layers with two outputs, (probabilities, features); built once per model.

    The shared model is not modified: the new one only reuses its layers.
    """
    cached = _FEATURE_MODELS.get(model)
    if cached is not None and cached[0] == layer:
        return cached[1]
    import keras

    both = keras.Model(model.inputs, [model.outputs[0], model.get_layer(layer).output])
    _FEATURE_MODELS[model] = (layer, both)
    return both


def predict_with_features(
    loaded: LoadedModel, pixels: np.ndarray, *, layer: str | None = None, batch_size: int = 64, calibrated: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and features of resized images, from one forward pass per batch.

    Args:
        loaded: the model and its metadata.
        pixels: uint8 array of shape (N, H, W) at the model's input size.
        layer: the feature layer; the stored statistics' layer, else the last global pooling layer.
        batch_size: images per forward pass.
        calibrated: apply the model's temperature to the probabilities; False gives the softmax as trained.

    Returns:
        float32 arrays of shapes (N, C) and (N, D).

    A model without a global pooling or flatten layer gives features of shape (N, 0).
    """
    if layer is None:  # parsing the stored statistics costs milliseconds: only when the caller did not say
        stats = load_stats(loaded.metadata)
        layer = stats.layer if stats else feature_layer(loaded.model)
    if layer is None:  # no pooled features to model: the input checks alone apply
        from radiology.model import predict_images

        probs = predict_images(loaded, pixels, batch_size=batch_size, calibrated=calibrated)
        return probs, np.zeros((len(probs), 0), np.float32)
    model = feature_model(loaded.model, layer)
    spec = loaded.metadata.preprocess
    probs, feats = [], []
    for start in range(0, len(pixels), batch_size):
        p, f = model.predict_on_batch(to_model_input(pixels[start : start + batch_size], spec))
        probs.append(np.asarray(p, dtype=np.float32))
        feats.append(np.asarray(f, dtype=np.float32).reshape(len(p), -1))
    if not probs:
        return np.zeros((0, len(loaded.metadata.class_names)), np.float32), np.zeros((0, 0), np.float32)
    probs = np.concatenate(probs)
    return (loaded.calibrated(probs) if calibrated else probs), np.concatenate(feats)


def header_reason(header: DicomHeader | None) -> str | None:
    """Why a DICOM header rules out a frontal chest X-ray: another modality, or a lateral view.

    Args:
        header: the file's header (``images.dicom_header``); None for a file that is not DICOM.

    Returns:
        the reason, such as "DICOM header says CT", or None when the header allows a frontal radiograph
        (a missing Modality or ViewPosition allows it).
    """
    if header is None:
        return None
    if header.modality is not None and header.modality not in XRAY_MODALITIES:
        return f"DICOM header says {header.modality}, not a radiograph ({'/'.join(XRAY_MODALITIES)})"
    if header.view_position in LATERAL_VIEWS:
        return f"DICOM header says view position {header.view_position}: a lateral view, not a frontal one"
    return None


def input_reason(
    shape: tuple[int, int],
    small: np.ndarray,
    *,
    colourfulness: float | None = None,
    header: DicomHeader | None = None,
) -> str | None:
    """The cheap checks on a decoded image, run before the model.

    Args:
        shape: (H, W) of the decoded image.
        small: uint8 array of shape (h, w), the image at the model's input size.
        colourfulness: of the decoded colour image (``images.decode_with_colour``); None when unknown.
        header: the DICOM header of the file (``images.dicom_header``); None when not DICOM or unknown.

    Returns:
        why the image is not a chest X-ray, or None when it passes.
    """
    told = header_reason(header)
    if told is not None:
        return told
    h, w = shape
    if min(h, w) < MIN_SIDE:
        return f"too small: {w}x{h} pixels, a chest film has at least {MIN_SIDE} on each side"
    aspect = max(h, w) / min(h, w)
    if aspect > MAX_ASPECT:
        return f"aspect ratio {aspect:.1f}:1, chest films are within {MAX_ASPECT:g}:1"
    if colourfulness is not None and colourfulness > MAX_COLOURFULNESS:
        return (
            f"colour image: colourfulness {colourfulness:.0f}, radiographs are grayscale, below {MAX_COLOURFULNESS:g}"
        )
    pixels = np.asarray(small, dtype=np.float32)
    spread = float(pixels.std())
    if spread < 0.5:
        return f"constant: gray-level spread {spread:.1f} of 255"
    # noise first: resizing averages white noise down to a small spread, but it stays rough
    roughness = float((np.abs(np.diff(pixels, axis=0)).mean() + np.abs(np.diff(pixels, axis=1)).mean()) / 2 / spread)
    if roughness > MAX_ROUGHNESS:
        return f"looks like noise: neighbouring pixels differ by {roughness:.2f}x the spread"
    if spread < MIN_SPREAD:
        return f"nearly constant: gray-level spread {spread:.1f} of 255"
    detail = _detail(small)
    if detail < MIN_DETAIL:
        return f"too smooth, like a gradient: fine detail {detail:.2f}, chest films have at least {MIN_DETAIL:g}"
    counts = np.bincount(np.asarray(small, dtype=np.uint8).ravel(), minlength=256)
    mode = int(counts.argmax())
    blank = counts[max(0, mode - 2) : mode + 3].sum() / small.size
    if blank > MAX_BLANK:
        return f"mostly blank: {blank:.0%} of the pixels have one gray level"
    return None


def _detail(small: np.ndarray) -> float:
    """Mean absolute Laplacian over the gray-level spread of a 32x32 thumbnail: ~0 for a smooth gradient."""
    t = np.asarray(Image.fromarray(np.asarray(small, np.uint8)).resize((DETAIL_SIDE,) * 2, Image.BOX), np.float32)
    laplacian = 4 * t[1:-1, 1:-1] - t[:-2, 1:-1] - t[2:, 1:-1] - t[1:-1, :-2] - t[1:-1, 2:]
    return float(np.abs(laplacian).mean() / max(float(t.std()), 1e-3))


def verdict(reason: str | None, scores: dict[str, float] | None) -> OODResult:
    """Combines the input check's reason and the checks' scores (see :meth:`FeatureStats.all_scores`).

    The result's score is the largest of them; the reason names the check it came from.
    """
    score = None
    if scores:
        check = max(scores, key=scores.get)
        score = float(scores[check])
    if reason is not None:
        return OODResult(True, score, reason)
    if score is None:
        return OODResult(False, None, UNAVAILABLE)
    if score > 1:
        return OODResult(True, score, REASONS[check])
    return OODResult(False, score, "")


def assess(
    gray: np.ndarray,
    small: np.ndarray,
    features: np.ndarray | None,
    stats: FeatureStats | None,
    *,
    colourfulness: float | None = None,
    header: DicomHeader | None = None,
) -> OODResult:
    """The gate's verdict on one image whose features came from its prediction's forward pass.

    Args:
        gray: uint8 array of shape (H, W), the decoded image.
        small: uint8 array of shape (h, w), the image at the model's input size.
        features: float array of shape (D,) or (1, D) of the stats' layer; None when not computed.
        stats: the model's statistics, or None.
        colourfulness: of the decoded colour image; None when unknown.
        header: the file's DICOM header; a non-radiograph modality or a lateral view is flagged whatever the model.
    """
    scores = None
    if stats is not None and features is not None:
        both = stats.all_scores(np.asarray(features).reshape(1, -1), small[None])
        scores = {k: float(v[0]) for k, v in both.items()}
    return verdict(input_reason(gray.shape, small, colourfulness=colourfulness, header=header), scores)


def predict_checked(
    loaded: LoadedModel,
    gray: np.ndarray,
    *,
    colourfulness: float | None = None,
    stats: FeatureStats | None = None,
    header: DicomHeader | None = None,
) -> tuple[np.ndarray, OODResult]:
    """Predicts one decoded image and gates it, in one forward pass.

    Args:
        loaded: the model and its metadata.
        gray: uint8 array of shape (H, W).
        colourfulness: of the decoded colour image (``images.decode_with_colour``); None when unknown.
        stats: the model's statistics, parsed once by the caller with :func:`load_stats`.
        header: the file's DICOM header (``images.dicom_header``); None when not DICOM.

    Returns:
        float32 probabilities of shape (C,) and the gate's verdict.
    """
    small = resize(gray, loaded.metadata.preprocess)
    probs, feats = predict_with_features(loaded, small[None], layer=stats.layer if stats else None)
    return probs[0], assess(gray, small, feats[0], stats, colourfulness=colourfulness, header=header)


def gate_decoded(loaded: LoadedModel, pixels: np.ndarray, sizes: np.ndarray, features: np.ndarray) -> list[OODResult]:
    """Verdicts for images from the decode cache, whose colour is unknown.

    Args:
        loaded: the model; its statistics are read from its metadata.
        pixels: uint8 array of shape (N, h, w) at the model's input size.
        sizes: int array of shape (N, 2), the decoded (H, W) of each image.
        features: float array of shape (N, D) from the same forward pass as the predictions.
    """
    stats = load_stats(loaded.metadata)
    scores = stats.all_scores(features, pixels) if stats is not None else {}
    return [
        verdict(input_reason(tuple(size), small), {k: float(v[i]) for k, v in scores.items()})
        for i, (small, size) in enumerate(zip(pixels, sizes))
    ]


def summary(results: list[OODResult]) -> dict:
    """The share of images flagged, for ``metrics.json``: counts per reason and whether features were checked."""
    flagged = [r for r in results if r.flag]
    reasons: dict[str, int] = {}
    for r in flagged:
        key = next((k for k, v in REASONS.items() if r.reason == v), r.reason.split(":")[0])
        reasons[key] = reasons.get(key, 0) + 1
    return {
        "available": bool(results) and all(r.available for r in results),
        "n": len(results),
        "flagged": len(flagged),
        "flagged_share": len(flagged) / len(results) if results else None,
        "by_reason": reasons,
    }


def fit_for_model(
    loaded: LoadedModel,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray | None,
    *,
    percentile: float = PERCENTILE,
    val_features: np.ndarray | None = None,
) -> FeatureStats:
    """Fits the gate's statistics on a model's training images and its thresholds on the validation images.

    Args:
        loaded: the model.
        x_train: uint8 array of shape (N, H, W) at the model's input size.
        y_train: int array of shape (N,), class indices in the model's output order.
        x_val: uint8 array of shape (M, H, W), or None.
        percentile: share of validation images that should pass, in percent.
        val_features: the features of ``x_val`` at :func:`feature_layer`, when the caller has them already.
    """
    layer = feature_layer(loaded.model)
    if layer is None:
        raise ModelLoadError(f"model {loaded.path} has no global pooling layer for the out-of-distribution check")
    _, f_train = predict_with_features(loaded, x_train, layer=layer)
    has_val = x_val is not None and len(x_val) > 0
    f_val = val_features
    if f_val is None and has_val:
        f_val = predict_with_features(loaded, x_val, layer=layer)[1]
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
