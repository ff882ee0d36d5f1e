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

from radiology.ood.encoding import _decode, _encode
from radiology.ood.extract import FEATURE_LAYERS, feature_layer, feature_model, predict_with_features
from radiology.ood.features import PERCENTILE, FeatureStats, fit_stats, load_stats
from radiology.ood.fit import fit_for_model, store_stats
from radiology.ood.gate import (
    HEADLINE,
    REASONS,
    UNAVAILABLE,
    OODResult,
    assess,
    gate_decoded,
    predict_checked,
    summary,
    verdict,
)
from radiology.ood.inputs import (
    DETAIL_SIDE,
    LATERAL_VIEWS,
    MAX_ASPECT,
    MAX_BLANK,
    MAX_COLOURFULNESS,
    MAX_ROUGHNESS,
    MIN_DETAIL,
    MIN_SIDE,
    MIN_SPREAD,
    XRAY_MODALITIES,
    _detail,
    header_reason,
    input_reason,
)
from radiology.ood.pixels import ORIENTATION_FIT_MAX, THUMB_SIDE, PixelStats, _wrong_way_views, thumbnails

__all__ = [
    "DETAIL_SIDE",
    "FEATURE_LAYERS",
    "HEADLINE",
    "LATERAL_VIEWS",
    "MAX_ASPECT",
    "MAX_BLANK",
    "MAX_COLOURFULNESS",
    "MAX_ROUGHNESS",
    "MIN_DETAIL",
    "MIN_SIDE",
    "MIN_SPREAD",
    "ORIENTATION_FIT_MAX",
    "PERCENTILE",
    "REASONS",
    "THUMB_SIDE",
    "UNAVAILABLE",
    "XRAY_MODALITIES",
    "FeatureStats",
    "OODResult",
    "PixelStats",
    "_decode",
    "_detail",
    "_encode",
    "_wrong_way_views",
    "assess",
    "feature_layer",
    "feature_model",
    "fit_for_model",
    "fit_stats",
    "gate_decoded",
    "header_reason",
    "input_reason",
    "load_stats",
    "predict_checked",
    "predict_with_features",
    "store_stats",
    "summary",
    "thumbnails",
    "verdict",
]
