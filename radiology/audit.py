"""The trust audit: how faithful each explanation is to the model, and whether the model reads the lungs.

**Faithfulness** (the deletion and insertion metrics of RISE, Petsiuk et al., BMVC 2018). The pixels of the
model input are removed in order of a map's saliency, most salient first, in :data:`STEPS` equal steps, each
removed pixel replaced by a blurred copy of the image (σ = 5 px at 224 px, as RISE, scaled to the input);
the probability of the class predicted on the full image is tracked. The area under that curve, over the
fraction removed from 0 to 1, is the deletion score: lower means the map found what the prediction rests
on. Insertion goes the other way, from the blurred image to the full one: higher is better. Every CAM method
of the app is scored on the same images beside two baselines: a random map on the CAM's own grid (upsampled
as the CAMs are, so it is as coarse as they are) and a centre prior. A method whose insertion minus deletion
is not above the random map's, by a paired bootstrap 95% interval, is no better than random.

**Shortcuts.** :data:`THORAX_BOX` is a central box that covers the lung fields of a frontal film (checked on
the mean film of each source and class of cxr3's training split: both lung fields lie inside it, and the
strips outside hold the shoulders, the corners, side markers and burned-in text). With the box replaced by
the image's mean only the borders are left (``borders_only``); with everything outside it replaced, only the
thorax (``thorax_only``). A model that reads the lungs should fall to chance on the borders. The audit also
measures the share of each class's Grad-CAM inside the box, against the box's share of the image, and how
well the source collection can be told from the model's own pooled features (``confounding.predict_source``).

Everything here returns plain data; ``radiology.charts`` draws it and the pages show it.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from radiology import confounding, metrics, ood
from radiology.cache import DecodedImages
from radiology.datasets import Sample
from radiology.evaluation import labelled_pixels
from radiology.explain import SCORECAM_MAX_N
from radiology.fsutil import atomic_folder, read_json, write_json_atomic
from radiology.model import LoadedModel, predict_images
from radiology.preprocess import to_model_input

STEPS = 20  # removal steps of a deletion or insertion curve: 21 points from 0 to 1
BLUR_SIGMA = 5 / 224  # RISE blurs with a Gaussian of σ = 5 px at 224 px; a fraction of the side here
N_IMAGES = 90  # images of the faithfulness sample: 30 per class
BASELINES = ("random", "centre")
BATCH = 64  # model inputs per forward pass
SCORECAM_INPUTS = SCORECAM_MAX_N + 1  # model inputs of one ScoreCAM map: its masked copies and the prediction
N_BOOT = 1000
ROOM = 0.3  # below this fall from the full to the blurred image, the verdict says the curves have little room
AUDITS_DIR = "audits"
AUDIT_FILE = "audit.json"


@dataclass(frozen=True)
class Box:
    """A box given as fractions of the image's height (top, bottom) and width (left, right)."""

    top: float
    bottom: float
    left: float
    right: float

    @property
    def area(self) -> float:
        """The share of the image inside the box."""
        return (self.bottom - self.top) * (self.right - self.left)


# the lung fields of a frontal film; see the module docstring for how it was checked
THORAX_BOX = Box(top=0.10, bottom=0.90, left=0.10, right=0.90)


def thorax_mask(height: int, width: int, *, box: Box = THORAX_BOX) -> np.ndarray:
    """Where the box lies in an image of the given size.

    Returns:
        bool array of shape (height, width), True inside the box.

    Raises:
        ValueError: the box is not inside the unit square or is empty.
    """
    if not (0 <= box.top < box.bottom <= 1 and 0 <= box.left < box.right <= 1):
        raise ValueError(f"a box needs 0 <= top < bottom <= 1 and 0 <= left < right <= 1, got {box}")
    mask = np.zeros((height, width), bool)
    mask[round(box.top * height) : round(box.bottom * height), round(box.left * width) : round(box.right * width)] = 1
    return mask


def _fill(pixels: np.ndarray, replace: np.ndarray) -> np.ndarray:
    """Images with the pixels where ``replace`` is True set to each image's own mean."""
    pixels = np.asarray(pixels)
    means = np.round(pixels.reshape(len(pixels), -1).mean(axis=1)).astype(pixels.dtype)
    return np.where(replace[None], means[:, None, None], pixels)


def borders_only(pixels: np.ndarray, *, box: Box = THORAX_BOX) -> np.ndarray:
    """Images with the thorax box replaced by each image's mean, so that only the borders are left.

    Args:
        pixels: uint8 array of shape (N, H, W).
        box: the box to remove.

    Returns:
        uint8 array of shape (N, H, W).
    """
    pixels = np.asarray(pixels)
    return _fill(pixels, thorax_mask(*pixels.shape[1:3], box=box))


def thorax_only(pixels: np.ndarray, *, box: Box = THORAX_BOX) -> np.ndarray:
    """Images with everything outside the thorax box replaced by each image's mean (see :func:`borders_only`)."""
    pixels = np.asarray(pixels)
    return _fill(pixels, ~thorax_mask(*pixels.shape[1:3], box=box))


def blurred(x: np.ndarray, *, sigma: float) -> np.ndarray:
    """The blurred copy that removed pixels are replaced with: a Gaussian blur of each channel.

    Args:
        x: float32 array of shape (N, H, W, C), model inputs.
        sigma: the Gaussian's standard deviation in pixels.

    Returns:
        float32 array of shape (N, H, W, C).
    """
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(np.asarray(x, np.float32), sigma=(0, sigma, sigma, 0)).astype(np.float32)


def saliency_ranks(saliency: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each pixel's place in the removal order: 0 for the most salient; ties broken at random.

    Args:
        saliency: float array of shape (H, W).
        rng: the generator that breaks ties (a flat map is then a random order, never a raster scan).

    Returns:
        int array of shape (H, W), a permutation of 0 … H·W − 1.
    """
    flat = np.asarray(saliency, np.float64).ravel()
    order = np.lexsort((rng.random(flat.size), -flat))
    ranks = np.empty(flat.size, np.int64)
    ranks[order] = np.arange(flat.size)
    return ranks.reshape(np.shape(saliency))


def random_map(shape: tuple[int, int], grid: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """The random baseline: uniform noise on the CAM's grid, upsampled to ``shape`` as the CAMs are.

    Returns:
        float32 array of shape ``shape``, values in [0, 1].
    """
    from scipy.ndimage import zoom

    cells = rng.random(grid)
    up = zoom(cells, (shape[0] / grid[0], shape[1] / grid[1]), order=1)
    lo, hi = up.min(), up.max()
    return ((up - lo) / (hi - lo) if hi > lo else np.zeros(shape)).astype(np.float32)


def centre_map(shape: tuple[int, int]) -> np.ndarray:
    """The centre-prior baseline: 1 at the image centre, falling with the distance from it.

    Returns:
        float32 array of shape ``shape``, values in [0, 1].
    """
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    d = np.hypot((yy + 0.5) / shape[0] - 0.5, (xx + 0.5) / shape[1] - 0.5)
    return (1 - d / d.max()).astype(np.float32)


def auc(curve) -> float:
    """The area under a curve sampled at equal steps from 0 to 1 (trapezoids)."""
    y = np.asarray(curve, np.float64)
    if len(y) < 2:
        raise ValueError(f"a curve needs two points or more, got {len(y)}")
    return float((y[:-1] + y[1:]).sum() / (2 * (len(y) - 1)))


def curves(
    predict,
    x: np.ndarray,
    blur: np.ndarray,
    saliencies,
    label: int,
    *,
    steps: int = STEPS,
    rng,
    batch_size: int = BATCH,
) -> tuple[np.ndarray, np.ndarray, int]:
    """The deletion and insertion curves of several maps of one image, from a few batched model calls.

    The first and last points are the full and the blurred image, the same for every map, so they are
    predicted once; the ``2 · maps · (steps − 1)`` copies between go through the model in batches.

    Args:
        predict: ``predict(x)`` gives probabilities of shape (N, C) for model inputs of shape (N, H, W, C).
        x: float32 array of shape (H, W, C), the image as the model takes it.
        blur: float32 array of shape (H, W, C), its blurred copy.
        saliencies: float arrays of shape (H, W), one per map.
        label: the class whose probability is tracked (the one predicted on the full image).
        steps: removal steps; each curve has ``steps + 1`` points.
        rng: the generator that breaks ties between equally salient pixels.
        batch_size: copies per model call.

    Returns:
        ``(deletion, insertion, calls)``: float arrays of shape (maps, steps + 1) and the model calls made.
    """
    if steps < 2:
        raise ValueError(f"a curve needs 2 steps or more, got {steps}")
    pixels = x.shape[0] * x.shape[1]
    counts = np.round(np.arange(1, steps) * pixels / steps).astype(np.int64)
    ranks = [saliency_ranks(s, rng) for s in saliencies]
    copies = []
    for r in ranks:
        for n in counts:  # deletion: the n most salient pixels blurred
            copies.append(np.where((r < n)[..., None], blur, x))
        for n in counts:  # insertion: only the n most salient pixels sharp
            copies.append(np.where((r < n)[..., None], x, blur))
    batch = np.stack([x, blur, *copies]).astype(np.float32)
    probs, calls = [], 0
    for start in range(0, len(batch), batch_size):
        probs.append(np.asarray(predict(batch[start : start + batch_size]))[:, label])
        calls += 1
    p = np.concatenate(probs)
    full, empty, inner = p[0], p[1], p[2:].reshape(len(ranks), 2, steps - 1)
    deletion = np.concatenate([np.full((len(ranks), 1), full), inner[:, 0], np.full((len(ranks), 1), empty)], axis=1)
    insertion = np.concatenate([np.full((len(ranks), 1), empty), inner[:, 1], np.full((len(ranks), 1), full)], axis=1)
    return deletion, insertion, calls


def _mean_ci(values: np.ndarray, rng: np.random.Generator, n_boot: int = N_BOOT) -> list[float]:
    """The percentile bootstrap 95% interval of a mean; ``[None, None]`` for fewer than two values."""
    values = np.asarray(values, np.float64)
    if len(values) < 2:
        return [None, None]
    means = values[rng.integers(0, len(values), (n_boot, len(values)))].mean(axis=1)
    return [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]


def summarise(
    deletion: dict[str, np.ndarray], insertion: dict[str, np.ndarray], *, n_boot: int = N_BOOT, seed: int = 0
) -> dict[str, dict]:
    """Scores each map from its curves, and compares it with the random map on the same images.

    Args:
        deletion: per map name, float array of shape (n, steps + 1): one deletion curve per image.
        insertion: the same for insertion. Must hold ``"random"`` to compare with.
        n_boot: bootstrap resamples for the intervals.
        seed: seed of the bootstrap.

    Returns:
        per map: ``deletion_auc`` and ``insertion_auc`` (means over images) with their 95% intervals
        (``*_ci``), ``score`` (insertion minus deletion, higher is better), ``n``, the mean curves
        (``deletion_curve``, ``insertion_curve``), and, for every map but the random one, ``vs_random``: the
        paired differences from the random map (positive is better) with their intervals, and
        ``better_than_random``: whether the interval of the score's difference lies above 0.
    """
    rng = np.random.default_rng(seed)
    aucs = {
        name: (np.array([auc(c) for c in deletion[name]]), np.array([auc(c) for c in insertion[name]]))
        for name in deletion
    }
    out = {}
    for name, (d, i) in aucs.items():
        row = {
            "deletion_auc": float(d.mean()),
            "deletion_ci": _mean_ci(d, rng, n_boot),
            "insertion_auc": float(i.mean()),
            "insertion_ci": _mean_ci(i, rng, n_boot),
            "score": float((i - d).mean()),
            "n": int(len(d)),
            "deletion_curve": [float(v) for v in np.mean(deletion[name], axis=0)],
            "insertion_curve": [float(v) for v in np.mean(insertion[name], axis=0)],
        }
        if name != "random" and "random" in aucs:
            rd, ri = aucs["random"]
            diff = (i - d) - (ri - rd)
            ci = _mean_ci(diff, rng, n_boot)
            row["vs_random"] = {
                "deletion": float((rd - d).mean()),
                "deletion_ci": _mean_ci(rd - d, rng, n_boot),
                "insertion": float((i - ri).mean()),
                "insertion_ci": _mean_ci(i - ri, rng, n_boot),
                "score": float(diff.mean()),
                "score_ci": ci,
            }
            row["better_than_random"] = bool(ci[0] is not None and ci[0] > 0)
        out[name] = row
    return out


def stratified_sample(labels, n: int, *, seed: int = 0) -> np.ndarray:
    """About ``n`` indices with the classes as equal as the data allows (30 of each of 3 classes for 90).

    A class with fewer images than its share gives them all, and the others make up the difference.

    Args:
        labels: int array of shape (N,), class indices.
        n: how many to draw; all of them when ``n`` is at least N.
        seed: seed of the draw.

    Returns:
        sorted int array of indices.

    Raises:
        ValueError: ``n`` is below 1.
    """
    if n < 1:
        raise ValueError(f"the sample needs 1 image or more, got n={n}")
    labels = np.asarray(labels)
    if n >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    pools = {k: list(rng.permutation(np.flatnonzero(labels == k))) for k in np.unique(labels)}
    chosen: list[int] = []
    while len(chosen) < n:  # one from each class in turn, so the classes stay as equal as they can
        for k in sorted(pools):
            if pools[k] and len(chosen) < n:
                chosen.append(int(pools[k].pop()))
    return np.array(sorted(chosen))


def inputs_per_image(steps: int = STEPS, maps: int = 6) -> int:
    """Model inputs the curves of one image cost: the full and blurred image, and each map's inner steps twice."""
    return 2 + 2 * maps * (steps - 1)


def _predictor(loaded: LoadedModel):
    def predict(x):
        return loaded.calibrated(np.asarray(loaded.model.predict_on_batch(x), np.float32))

    return predict


def faithfulness(
    loaded: LoadedModel,
    pixels: np.ndarray,
    *,
    methods=None,
    steps: int = STEPS,
    seed: int = 0,
    n_boot: int = N_BOOT,
    progress=None,
) -> dict:
    """Deletion and insertion scores of every CAM method and both baselines on some images.

    Args:
        loaded: the model, explained on its metadata's Grad-CAM layer as the app explains it.
        pixels: uint8 array of shape (N, H, W) at the model's input size.
        methods: CAM methods (``radiology.explain.METHODS`` by default).
        steps: removal steps per curve.
        seed: seed of the random map and of the tie-breaking.
        n_boot: bootstrap resamples for the intervals.
        progress: optional ``progress(phase, done, total)``.

    Returns:
        ``{"methods": {method: scores}, "baselines": {"random": scores, "centre": scores}, "ranking",
        "full_probability", "blurred_probability", "n", "steps", "blur_sigma_px", "layer", "tracked", "cost"}``,
        scores as :func:`summarise` gives them, ``ranking`` the methods best first by score, the mean
        probability of the predicted class on the full and on the wholly blurred images (where every curve
        starts and ends), and ``cost`` the seconds and model calls spent.
    """
    from radiology.explain import METHODS, Explainer, cam_grid

    methods = tuple(methods or METHODS)
    report = progress or (lambda *a: None)
    spec = loaded.metadata.preprocess
    x = to_model_input(pixels, spec)
    predict = _predictor(loaded)
    labels = np.concatenate([predict(x[s : s + BATCH]).argmax(axis=1) for s in range(0, len(x), BATCH)])
    explainer = Explainer(loaded)
    maps, map_seconds = {}, {}
    chunk = 8  # ScoreCAM makes max_N masked copies of each image in the chunk
    for method in methods:
        start, parts = time.perf_counter(), []
        for s in range(0, len(x), chunk):
            report(f"explaining with {method}", s, len(x))
            parts.append(explainer.cams(x[s : s + chunk], method, labels=labels[s : s + chunk]))
        maps[method] = np.concatenate(parts)
        map_seconds[method] = time.perf_counter() - start
    rng = np.random.default_rng(seed)
    grid = cam_grid(loaded)
    shape = (spec.height, spec.width)
    maps["random"] = np.stack([random_map(shape, grid, rng) for _ in range(len(x))])
    maps["centre"] = np.repeat(centre_map(shape)[None], len(x), axis=0)
    sigma = BLUR_SIGMA * max(shape)
    blur = blurred(x, sigma=sigma)
    names = [*methods, *BASELINES]
    deletion = {name: [] for name in names}
    insertion = {name: [] for name in names}
    start, calls = time.perf_counter(), 0
    for i in range(len(x)):
        report("deletion and insertion curves", i, len(x))
        d, s, c = curves(predict, x[i], blur[i], [maps[m][i] for m in names], int(labels[i]), steps=steps, rng=rng)
        calls += c
        for k, name in enumerate(names):
            deletion[name].append(d[k])
            insertion[name].append(s[k])
    curve_seconds = time.perf_counter() - start
    report("deletion and insertion curves", len(x), len(x))
    scores = summarise(
        {k: np.array(v) for k, v in deletion.items()}, {k: np.array(v) for k, v in insertion.items()}, n_boot=n_boot
    )
    for method in methods:
        scores[method]["map_seconds_per_image"] = map_seconds[method] / max(len(x), 1)
    inputs = len(x) * inputs_per_image(steps, len(names))
    return {
        "methods": {m: scores[m] for m in methods},
        "baselines": {b: scores[b] for b in BASELINES},
        "ranking": sorted(methods, key=lambda m: -scores[m]["score"]),
        # the curves' room: every curve runs between these two, so close values leave little to tell maps apart
        "full_probability": scores["random"]["deletion_curve"][0],
        "blurred_probability": scores["random"]["deletion_curve"][-1],
        "n": len(x),
        "steps": steps,
        "blur_sigma_px": round(sigma, 3),
        "layer": loaded.metadata.gradcam_layer,
        "tracked": "the calibrated probability of the class predicted on the full image",
        "cost": {
            "map_seconds": round(sum(map_seconds.values()), 2),
            "curve_seconds": round(curve_seconds, 2),
            "model_inputs": inputs,
            "model_calls": calls,
            "calls_per_image": calls / max(len(x), 1),
            "curve_seconds_per_image": round(curve_seconds / max(len(x), 1), 3),
            "inputs_per_second": round(inputs / curve_seconds, 2) if curve_seconds else None,
        },
    }


def masked_scores(labels, probs, class_names) -> dict:
    """Accuracy with its 95% Wilson interval, recall per class and the share of each predicted class.

    Args:
        labels: int array of shape (N,), true class indices.
        probs: float array of shape (N, C).
        class_names: the C class names.

    Returns:
        ``{"accuracy", "accuracy_ci", "balanced_accuracy", "recall": {class: r}, "predicted": {class: share}}``;
        a class without images has recall None.
    """
    labels, pred = np.asarray(labels), np.asarray(probs).argmax(axis=1)
    correct = int((pred == labels).sum())
    recall = {
        c: (float(np.mean(pred[labels == k] == k)) if np.any(labels == k) else None) for k, c in enumerate(class_names)
    }
    present = [r for r in recall.values() if r is not None]
    return {
        "accuracy": correct / len(labels),
        "accuracy_ci": metrics.wilson_interval(correct, len(labels)),
        "balanced_accuracy": float(np.mean(present)),
        "recall": recall,
        "predicted": {c: float(np.mean(pred == k)) for k, c in enumerate(class_names)},
    }


def cam_share_inside(cams: np.ndarray, *, box: Box = THORAX_BOX) -> np.ndarray:
    """The share of each map's mass inside the box.

    Args:
        cams: float array of shape (N, H, W), non-negative.
        box: the box.

    Returns:
        float array of shape (N,); NaN for a map that is zero everywhere.
    """
    cams = np.asarray(cams, np.float64)
    inside = thorax_mask(*cams.shape[1:3], box=box)
    total = cams.sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, cams[:, inside].sum(axis=1) / total, np.nan)


def source_from_features(features: np.ndarray, sources, groups, labels, class_names, *, seed: int = 0) -> dict | None:
    """How well the source collection is predicted from the model's features, overall and within each class.

    Within a class, the source cannot be told through the label: a high balanced accuracy there means the
    features carry the hospital itself.

    Args:
        features: float array of shape (N, D), the model's pooled features.
        sources: the source of each image, None where unknown.
        groups: the patient group of each image (folds keep groups together).
        labels: int array of shape (N,), class indices.
        class_names: the class names.
        seed: seed of the draw and the folds.

    Returns:
        :func:`radiology.confounding.predict_source`'s result plus ``within_class`` (class to the same, for
        classes with two sources of 20 images or more), or None when fewer than two sources have 20 images.
    """
    sources = [s or None for s in sources]

    def measure(rows) -> dict | None:
        chosen = confounding.choose_by_source([sources[i] for i in rows], seed=seed)
        if chosen is None:
            return None
        picked = [rows[i] for i in chosen]
        return confounding.predict_source(
            features[picked], [sources[i] for i in picked], [groups[i] for i in picked], standardize=True, seed=seed
        )

    overall = measure(list(range(len(sources))))
    if overall is None or not features.shape[1]:
        return None
    within = {c: measure(list(np.flatnonzero(np.asarray(labels) == k))) for k, c in enumerate(class_names)}
    return {**overall, "within_class": {c: v for c, v in within.items() if v is not None}}


def shortcut(
    loaded: LoadedModel,
    pixels: np.ndarray,
    labels,
    *,
    sources=None,
    groups=None,
    box: Box = THORAX_BOX,
    seed: int = 0,
    progress=None,
) -> dict:
    """The shortcut audit of a model on labelled images.

    Args:
        loaded: the model.
        pixels: uint8 array of shape (N, H, W) at the model's input size.
        labels: int array of shape (N,), class indices.
        sources: the source collection of each image, or None where unknown.
        groups: the patient group of each image (for the folds of the source classifier).
        box: the thorax box.
        seed: seed of the source classifier's folds.
        progress: optional ``progress(phase, done, total)``.

    Returns:
        ``{"n", "chance", "box", "full", "borders_only", "thorax_only"`` (each :func:`masked_scores`),
        ``"cam_inside_thorax"`` (class to the mean share of its Grad-CAM inside the box, the Grad-CAM of the
        predicted class), ``"cam_inside_thorax_n"``, ``"source_from_features"`` (see
        :func:`source_from_features`, None where it cannot be measured)}``.
    """
    from radiology.explain import Explainer

    report = progress or (lambda *a: None)
    names = list(loaded.metadata.class_names)
    labels = np.asarray(labels)
    n = len(labels)
    report("predicting the full images", 0, 3)
    full, features = ood.predict_with_features(loaded, pixels)
    report("predicting the borders only", 1, 3)
    borders = predict_images(loaded, borders_only(pixels, box=box))
    report("predicting the thorax only", 2, 3)
    thorax = predict_images(loaded, thorax_only(pixels, box=box))
    explainer = Explainer(loaded)
    spec = loaded.metadata.preprocess
    shares = []
    for s in range(0, n, BATCH):
        report("Grad-CAM inside the thorax", s, n)
        part = to_model_input(pixels[s : s + BATCH], spec)
        shares.append(cam_share_inside(explainer.cams(part, "Grad-CAM", labels=full[s : s + BATCH].argmax(1)), box=box))
    shares = np.concatenate(shares) if shares else np.zeros(0)
    inside, inside_n = {}, {}
    for k, c in enumerate(names):
        values = shares[(labels == k) & np.isfinite(shares)]
        inside[c] = float(values.mean()) if len(values) else None
        inside_n[c] = int(len(values))
    sources = list(sources) if sources is not None else [None] * n
    groups = list(groups) if groups is not None else [str(i) for i in range(n)]
    report("predicting the source from the features", 0, 1)
    source = source_from_features(features, sources, groups, labels, names, seed=seed)
    return {
        "n": n,
        "chance": 1 / len(names),
        "majority": float(np.bincount(labels, minlength=len(names)).max() / n),
        "box": {**asdict(box), "area": box.area, "fill": "the image's mean"},
        "full": masked_scores(labels, full, names),
        "borders_only": masked_scores(labels, borders, names),
        "thorax_only": masked_scores(labels, thorax, names),
        "cam_inside_thorax": inside,
        "cam_inside_thorax_n": inside_n,
        "source_from_features": source,
    }


def audit_samples(
    loaded: LoadedModel,
    samples: list[Sample],
    decoded: DecodedImages,
    *,
    n: int = N_IMAGES,
    shortcut_n: int | None = None,
    steps: int = STEPS,
    methods=None,
    seed: int = 0,
    progress=None,
) -> dict:
    """The whole audit of a model on dataset samples: faithfulness on a stratified sample, shortcuts on all.

    Args:
        loaded: the model.
        samples: the labelled files, for example a test split.
        decoded: their decoded images at the model's input size.
        n: images of the faithfulness sample.
        shortcut_n: images of the shortcut audit, a stratified sample as well; None for every readable one.
        steps: removal steps per curve.
        methods: CAM methods to score (all of the app's by default).
        seed: seed of the samples, the random map and the folds.
        progress: optional ``progress(phase, done, total)``.

    Returns:
        ``{"faithfulness": …, "shortcut": …, "class_names", "seconds"}`` (see :func:`faithfulness` and
        :func:`shortcut`).

    Raises:
        EvaluationError: no sample is readable, or a label is not among the model's classes.
    """
    names = list(loaded.metadata.class_names)
    kept, pixels, labels = labelled_pixels(loaded, decoded, samples, purpose="audit")
    start = time.perf_counter()
    pick = stratified_sample(labels, n, seed=seed)
    faithful = faithfulness(loaded, pixels[pick], methods=methods, steps=steps, seed=seed, progress=progress)
    faithful["seconds"] = round(time.perf_counter() - start, 1)
    middle = time.perf_counter()
    rows = np.arange(len(kept)) if shortcut_n is None else stratified_sample(labels, shortcut_n, seed=seed)
    found = shortcut(
        loaded,
        pixels[rows],
        labels[rows],
        sources=[kept[i].source for i in rows],
        groups=[kept[i].group or kept[i].path for i in rows],
        seed=seed,
        progress=progress,
    )
    found["seconds"] = round(time.perf_counter() - middle, 1)
    return {
        "class_names": names,
        "faithfulness": faithful,
        "shortcut": found,
        "skipped": len(samples) - len(kept),
        "seconds": round(time.perf_counter() - start, 1),
    }


def ranked_methods(audit: dict | None, methods) -> tuple[list[str], set[str]]:
    """The CAM methods ordered by measured faithfulness, and those no better than the random map.

    Args:
        audit: an audit result, or None for a model never audited.
        methods: the methods to order (the app's); those the audit did not score keep their order, last.

    Returns:
        ``(ordered, no_better)``; without an audit the methods as given and an empty set.
    """
    scored = ((audit or {}).get("faithfulness") or {}).get("methods") or {}
    ranked = sorted((m for m in methods if m in scored), key=lambda m: -scored[m]["score"])
    ordered = ranked + [m for m in methods if m not in scored]
    return ordered, {m for m in ranked if not scored[m].get("better_than_random", False)}


def method_order_note(audit: dict | None) -> str:
    """Says how the CAM methods are ordered for a model: by its audit's faithfulness, or not audited.

    Args:
        audit: the model's newest audit (:func:`latest_audit`), or None.
    """
    if not audit:
        return (
            "Not audited: the methods are in their usual order. The trust audit on the Evaluation page measures "
            "which of them are faithful to this model."
        )
    f = audit["faithfulness"]
    when = f", {audit['evaluated'][:10]}" if audit.get("evaluated") else ""
    text = (
        f"Most faithful first, as measured for this model (insertion − deletion AUC on {f['n']} images of its "
        f"trust audit{when}, on {f['layer']})."
    )
    no_better = [m for m in f["ranking"] if not f["methods"][m].get("better_than_random")]
    if no_better:
        text += f" No better than a random map: {', '.join(no_better)}."
    return text


def _pct(value: float) -> str:
    return f"{value:.0%}"


def verdict(audit: dict) -> list[str]:
    """The audit in plain sentences, the first about the borders, for the page and the model card.

    A share is said to be above chance only when its 95% Wilson interval lies above the larger of chance and
    the most frequent class's share (predicting that class on every image scores as much).
    """
    s, f = audit["shortcut"], audit["faithfulness"]
    chance, floor = s["chance"], max(s["chance"], s.get("majority", s["chance"]))
    lines = []
    b = s["borders_only"]
    if (b["accuracy_ci"][0] or 0) > floor:
        lines.append(
            f"From the borders alone this model still gets {_pct(b['accuracy'])} right (chance {_pct(chance)}, "
            f"full image {_pct(s['full']['accuracy'])}): it uses more than the lungs."
        )
    else:
        lines.append(
            f"From the borders alone it gets {_pct(b['accuracy'])} right, no better than chance ({_pct(chance)}): "
            "the borders by themselves do not carry its decisions."
        )
    t = s["thorax_only"]
    lines.append(
        f"From the thorax alone it gets {_pct(t['accuracy'])} right (full image {_pct(s['full']['accuracy'])})"
        + (": the lungs carry most of it." if t["accuracy"] >= b["accuracy"] else ", less than from the borders.")
    )
    inside = {c: v for c, v in s["cam_inside_thorax"].items() if v is not None}
    area = s["box"]["area"]
    outside = [c for c, v in inside.items() if v < area]
    if inside:
        shares = ", ".join(f"{c} {_pct(v)}" for c, v in inside.items())
        lines.append(
            f"Share of the Grad-CAM inside the thorax box: {shares} (the box is {_pct(area)} of the image)"
            + (
                f"; for {', '.join(outside)} the map falls outside the lungs more than a map blind to place would."
                if outside
                else "."
            )
        )
    src = s.get("source_from_features")
    if src:
        lines.append(
            f"The model's own features tell the source collection apart with {_pct(src['balanced_accuracy'])} "
            f"balanced accuracy (chance {_pct(src['chance'])})"
            + (
                ": they encode the hospital, not only the disease."
                if src["balanced_accuracy"] > 2 * src["chance"]
                else "."
            )
        )
    full, gone = f.get("full_probability"), f.get("blurred_probability")
    if full is not None and gone is not None and full - gone < ROOM:
        lines.append(
            f"Blurring the whole image only lowers the probability of the predicted class from {_pct(full)} to "
            f"{_pct(gone)}: the model decides from coarse structure that a blur keeps, so deletion and insertion "
            "have little room to tell the maps apart."
        )
    best = f["ranking"][0] if f.get("ranking") else None
    no_better = [m for m in f["ranking"] if not f["methods"][m].get("better_than_random")]
    if best:
        lines.append(
            f"Most faithful explanation: {best} (insertion − deletion {f['methods'][best]['score']:.3f}, random map "
            f"{f['baselines']['random']['score']:.3f})."
            + (f" No better than a random map: {', '.join(no_better)}." if no_better else "")
        )
    return lines


def save_audit(run_dir: str | Path, audit_id: str, result: dict) -> Path:
    """Stores an audit of a run as ``RUN/audits/ID/audit.json``; the folder appears whole or not at all.

    Returns:
        the audit's folder.
    """
    target = Path(run_dir) / AUDITS_DIR / audit_id
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_folder(target) as tmp:
        write_json_atomic(tmp / AUDIT_FILE, {**result, "id": audit_id})
    return target


def latest_audit(run_dir: str | Path, *, card: dict | None = None) -> dict | None:
    """The newest stored audit of a run, else the one its model card carries (the bundled model's), else None."""
    folder = Path(run_dir) / AUDITS_DIR
    if folder.is_dir():
        for d in sorted(folder.iterdir(), reverse=True):
            found = read_json(d / AUDIT_FILE) if not d.name.startswith(".") else None
            if isinstance(found, dict):
                return found
    trust = (card or {}).get("trust")
    return trust if isinstance(trust, dict) else None


def _interval(ci) -> str:
    return "" if not ci or ci[0] is None else f" ({ci[0]:.3f}–{ci[1]:.3f})"


def faithfulness_rows(faithfulness: dict) -> list[dict]:
    """The faithfulness table, one row per method (best first) then the baselines, every cell text.

    Returns:
        rows with ``map``, ``deletion AUC (95% CI)``, ``insertion AUC (95% CI)``, ``insertion − deletion``,
        ``against the random map`` and ``seconds per map``.
    """
    rows = []
    entries = [(m, faithfulness["methods"][m]) for m in faithfulness["ranking"]]
    entries += [(f"{b} map (baseline)", r) for b, r in faithfulness["baselines"].items()]
    for name, r in entries:
        if "better_than_random" not in r:
            against = "–"
        else:
            against = "better" if r["better_than_random"] else "no better than random"
            against += f", {r['vs_random']['score']:+.3f}{_interval(r['vs_random']['score_ci'])}"
        seconds = r.get("map_seconds_per_image")
        rows.append(
            {
                "map": name,
                "deletion AUC (95% CI)": f"{r['deletion_auc']:.3f}{_interval(r['deletion_ci'])}",
                "insertion AUC (95% CI)": f"{r['insertion_auc']:.3f}{_interval(r['insertion_ci'])}",
                "insertion − deletion": f"{r['score']:.3f}",
                "against the random map": against,
                "seconds per map": "–" if seconds is None else f"{seconds:.2f}",
            }
        )
    return rows


SHORTCUT_INPUTS = {"full": "full image", "borders_only": "borders only", "thorax_only": "thorax only"}


def shortcut_rows(shortcut: dict) -> list[dict]:
    """The shortcut table: accuracy (95% Wilson interval) and recall per class for each input, every cell text."""
    rows = []
    for key, label in SHORTCUT_INPUTS.items():
        r = shortcut[key]
        row = {"input": label, "accuracy (95% CI)": f"{r['accuracy']:.1%}{_percent_interval(r['accuracy_ci'])}"}
        row |= {f"recall {c}": "–" if v is None else f"{v:.1%}" for c, v in r["recall"].items()}
        rows.append(row)
    return rows


def _percent_interval(ci) -> str:
    return "" if not ci or ci[0] is None else f" ({ci[0]:.1%}–{ci[1]:.1%})"


def cam_rows(shortcut: dict) -> list[dict]:
    """The share of Grad-CAM inside the thorax box per class, beside the box's own share of the image."""
    area = shortcut["box"]["area"]
    return [
        {
            "class": c,
            "images": shortcut.get("cam_inside_thorax_n", {}).get(c),
            "Grad-CAM inside the box": "–" if v is None else f"{v:.1%}",
            "box share of the image": f"{area:.0%}",
        }
        for c, v in shortcut["cam_inside_thorax"].items()
    ]


def source_rows(source: dict) -> list[dict]:
    """Source from features as rows: all images first, then within each class (where two sources qualify)."""
    rows = [_source_row("all classes", source)]
    rows += [_source_row(f"within {c}", v) for c, v in source.get("within_class", {}).items()]
    return rows


def _source_row(scope: str, found: dict) -> dict:
    return {
        "images": scope,
        "sources": ", ".join(f"{s} ({v['recall']:.0%})" for s, v in found["sources"].items()),
        "balanced accuracy": f"{found['balanced_accuracy']:.1%}",
        "chance": f"{found['chance']:.1%}",
    }


def described(result: dict) -> str:
    """What an audit was measured on, in words: split, data, sample sizes, date and duration."""
    from radiology.evaluation import SPLIT_NAMES

    f, s = result["faithfulness"], result["shortcut"]
    split = SPLIT_NAMES.get(result.get("split"), result.get("split") or "unknown split")
    text = (
        f"{split} of {result.get('data_root', 'unknown data')}: faithfulness on {f['n']} images (stratified by "
        f"class, {f['steps']} steps, layer {f['layer']}), shortcuts on {s['n']} images"
    )
    if result.get("evaluated"):
        text += f", {result['evaluated'][:16].replace('T', ' ')} UTC"
    seconds = result.get("seconds")
    if seconds is not None:
        text += f", took {seconds:.0f} s" if seconds < 90 else f", took {seconds / 60:.0f} min"
    return text
