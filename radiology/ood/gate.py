"""The gate's verdict: the input checks and the model's scores combined into one result per image."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from radiology.images import DicomHeader
from radiology.model import LoadedModel
from radiology.ood.extract import predict_with_features
from radiology.ood.features import FeatureStats, load_stats
from radiology.ood.inputs import input_reason
from radiology.preprocess import resize

UNAVAILABLE = "out-of-distribution check unavailable for this model"
HEADLINE = "This does not look like a frontal chest X-ray"
REASONS = {
    "features": "its features are unlike the training X-rays",
    "layout": "its layout is unlike a chest film's",
    "orientation": "it looks rotated or upside down",
}


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
