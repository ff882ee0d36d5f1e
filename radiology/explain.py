"""Grad-CAM explanations: a fused one-pass Grad-CAM, and the tf-keras-vis CAM methods.

This is the one TensorFlow-specific module. It never modifies the model it is given: the fused
path builds its own sub-model over the same layers, and tf-keras-vis works on a clone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from PIL import Image

from radiology import ood
from radiology.errors import ModelLoadError
from radiology.images import DicomHeader
from radiology.model import LoadedModel
from radiology.preprocess import resize, to_model_input

METHODS = ("Grad-CAM", "Grad-CAM++", "ScoreCAM", "LayerCAM")
SCORECAM_MAX_N = 16  # ScoreCAM costs one forward pass per channel kept; 16 keeps it interactive on a CPU
# What each method shows and what it costs, for the people choosing one.
METHOD_HELP = {
    "Grad-CAM": (
        "Where the features that raised the predicted class lie: each feature map of the layer is weighted by the "
        "average gradient of the class score. Cost: none beyond the prediction (one fused pass); the fastest."
    ),
    "Grad-CAM++": (
        "Like Grad-CAM, with weights from higher-order gradients that share the credit among several regions of the "
        "class, so a second lesion shows too. Cost: a second model pass with gradients; about twice Grad-CAM."
    ),
    "ScoreCAM": (
        f"Which feature maps, used as masks on the image, raise the class score most: no gradients, often a cleaner "
        f"map. Cost: one forward pass for each of the {SCORECAM_MAX_N} strongest maps; the slowest, "
        f"about {SCORECAM_MAX_N + 1}x Grad-CAM."
    ),
    "LayerCAM": (
        "Weights every cell by its own positive gradient instead of one weight per feature map: finer-grained "
        "detail within the region. Cost: a second model pass with gradients; about twice Grad-CAM."
    ),
}
COARSE_CELLS = 10  # a map fewer cells across than this outlines only a region, not a structure (224 px gives 14)

log = logging.getLogger(__name__)


@dataclass
class Explanation:
    """A prediction with its class activation map.

    Attributes:
        probs: float32 array of shape (C,), class probabilities.
        label: index of the predicted class.
        cam: float32 array of shape (H, W) at the model's input size, values in [0, 1].
        method: the CAM method that made ``cam``.
        features: float32 array of shape (D,), the penultimate features of the same forward pass.
        ood: the out-of-distribution gate's verdict.
        layer: the convolution layer the map was made on; empty when unknown.
    """

    probs: np.ndarray
    label: int
    cam: np.ndarray
    method: str
    features: np.ndarray | None = None
    ood: ood.OODResult | None = None
    layer: str = ""


def _normalize(cam: np.ndarray) -> np.ndarray:
    cam = np.nan_to_num(np.asarray(cam, dtype=np.float32))
    lo, hi = cam.min(), cam.max()
    return (cam - lo) / (hi - lo) if hi > lo else np.zeros_like(cam)


class Explainer:
    """Predicts and explains images for one loaded model.

    Build it once per model (it compiles a function and clones the model for tf-keras-vis on
    first use), then call :meth:`explain` per image.
    """

    def __init__(self, loaded: LoadedModel, *, vis_model: LoadedModel | None = None):
        """Args:
        loaded: the model that predicts and makes the fused Grad-CAM (possibly a bf16 copy).
        vis_model: the float32 model tf-keras-vis explains; ``loaded`` when not given.

        Raises:
            ModelLoadError: the model has no Grad-CAM layer, or not the one its metadata names.
        """
        self.loaded = loaded
        self.vis_model = vis_model or loaded
        self.layer = loaded.metadata.gradcam_layer
        if not self.layer:
            raise ModelLoadError(f"model {loaded.path} has no convolution layer for Grad-CAM")
        names = [layer.name for layer in loaded.model.layers]
        if self.layer not in names:
            raise ModelLoadError(f"model {loaded.path} has no layer {self.layer!r} for Grad-CAM")
        #: why the fused one-pass Grad-CAM does not apply to this model, or None when it does
        self.fused_unavailable = _fused_unavailable(loaded.model, self.layer)
        if self.fused_unavailable:
            log.info("model %s: %s; Grad-CAM runs through tf-keras-vis", loaded.path, self.fused_unavailable)
        self._fused = None
        self._fused_at: dict[str, object] = {}  # fused functions for layers other than the metadata's
        self._unfused_at: dict[str, str | None] = {self.layer: self.fused_unavailable}
        self._layer_names = set(names)
        self._vis: dict[str, object] = {}
        self.ood_stats = ood.load_stats(loaded.metadata)  # parsed once: the precision matrix is large
        self.feature_layer = self.ood_stats.layer if self.ood_stats else ood.feature_layer(loaded.model)

    def _build_fused(self, layer: str | None = None):
        import keras
        import tensorflow as tf

        layer = layer or self.layer
        model = self.loaded.model
        features = keras.Model(model.inputs, model.get_layer(layer).output)
        names = [x.name for x in model.layers]
        *body, last = model.layers[names.index(layer) + 1 :]

        @tf.function(reduce_retracing=True)
        def run(x):
            # The conv base runs outside the tape: only the small head is differentiated, so the
            # gradients cost next to nothing on top of the forward pass.
            maps = features(x, training=False)
            with tf.GradientTape() as tape:
                tape.watch(maps)
                h = maps
                pooled = tf.zeros((tf.shape(maps)[0], 0), tf.float32)
                for step in body:
                    h = step(h, training=False)
                    if step.name == self.feature_layer:
                        pooled = tf.cast(h, tf.float32)  # the gate's features, from this same pass
                logits = tf.matmul(tf.cast(h, last.kernel.dtype), last.kernel) + last.bias
                label = tf.argmax(logits, axis=-1)
                score = tf.gather(logits, label, batch_dims=1)
            grads = tape.gradient(score, maps)
            weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
            cam = tf.nn.relu(tf.reduce_sum(weights * maps, axis=-1))
            return tf.nn.softmax(tf.cast(logits, tf.float32)), label, tf.cast(cam, tf.float32), pooled

        return run

    def _gradcam_fused(self, x: np.ndarray, layer: str) -> Explanation:
        if layer == self.layer:
            if self._fused is None:
                self._fused = self._build_fused()
            run = self._fused
        else:
            if layer not in self._fused_at:
                self._fused_at[layer] = self._build_fused(layer)
            run = self._fused_at[layer]
        probs, label, cam, pooled = run(x)
        features = pooled.numpy()[0] if pooled.shape[-1] else None
        return Explanation(
            self.loaded.calibrated(probs.numpy()[0]),
            int(label.numpy()[0]),
            self._expand(cam.numpy()[0]),
            "Grad-CAM",
            features=features,
            layer=layer,
        )

    def _fusable(self, layer: str) -> bool:
        if layer not in self._unfused_at:
            self._unfused_at[layer] = _fused_unavailable(self.loaded.model, layer)
        return self._unfused_at[layer] is None

    def _expand(self, cam: np.ndarray) -> np.ndarray:
        """Upsamples a layer-sized CAM to the input size as tf-keras-vis does (linear spline zoom)."""
        from scipy.ndimage import zoom

        spec = self.loaded.metadata.preprocess
        return _normalize(zoom(cam, (spec.height / cam.shape[0], spec.width / cam.shape[1]), order=1))

    def _vis_method(self, method: str):
        if method not in self._vis:
            from tf_keras_vis.gradcam import Gradcam
            from tf_keras_vis.gradcam_plus_plus import GradcamPlusPlus
            from tf_keras_vis.layercam import Layercam
            from tf_keras_vis.scorecam import Scorecam
            from tf_keras_vis.utils.model_modifiers import ReplaceToLinear

            cls = {"Grad-CAM": Gradcam, "Grad-CAM++": GradcamPlusPlus, "ScoreCAM": Scorecam, "LayerCAM": Layercam}[
                method
            ]
            self._vis[method] = cls(self.vis_model.model, model_modifier=ReplaceToLinear(), clone=True)
        return self._vis[method]

    def _vis_kwargs(self, method: str, layer: str) -> dict:
        kwargs = {"penultimate_layer": layer}
        if method == "ScoreCAM":  # a layer with fewer channels than the cap keeps them all (tf-keras-vis refuses more)
            kwargs["max_N"] = min(SCORECAM_MAX_N, int(self.loaded.model.get_layer(layer).output.shape[-1]))
        return kwargs

    def vis_cam(self, x: np.ndarray, label: int, method: str, *, layer: str | None = None) -> np.ndarray:
        """A CAM from tf-keras-vis for model input ``x`` of shape (1, H, W, C) and class ``label``, on ``layer``
        (default: the metadata's Grad-CAM layer)."""
        from tf_keras_vis.utils.scores import CategoricalScore

        cam = self._vis_method(method)(CategoricalScore([label]), x, **self._vis_kwargs(method, layer or self.layer))
        return _normalize(np.asarray(cam)[0])

    def cams(self, x: np.ndarray, method: str, *, labels=None) -> np.ndarray:
        """The maps the app shows, for a batch of model inputs at once, on the metadata's Grad-CAM layer.

        Grad-CAM runs fused where it can (it explains the predicted class); the other methods, and Grad-CAM
        of a model whose head cannot be fused, run through tf-keras-vis with one score per image.

        Args:
            x: float32 array of shape (N, H, W, C), model inputs.
            method: one of ``METHODS``.
            labels: the class to explain per image, int array of shape (N,); the predicted classes when None.
                The fused Grad-CAM always explains the predicted class.

        Returns:
            float32 array of shape (N, H, W), each map scaled to [0, 1].

        Raises:
            ValueError: an unknown method.
        """
        if method not in METHODS:
            raise ValueError(f"unknown CAM method {method!r}, expected one of {METHODS}")
        if method == "Grad-CAM" and self._fusable(self.layer):
            if self._fused is None:
                self._fused = self._build_fused()
            _, _, cam, _ = self._fused(x)
            return np.stack([self._expand(c) for c in cam.numpy()])
        from tf_keras_vis.utils.scores import CategoricalScore

        if labels is None:
            labels = np.argmax(np.asarray(self.vis_model.model.predict_on_batch(x)), axis=-1)
        kwargs = self._vis_kwargs(method, self.layer)
        cam = self._vis_method(method)(CategoricalScore([int(k) for k in labels]), x, **kwargs)
        return np.stack([_normalize(c) for c in np.asarray(cam).reshape(len(x), *x.shape[1:3])])

    def explain(
        self,
        gray: np.ndarray,
        *,
        method: str = "Grad-CAM",
        colourfulness: float | None = None,
        header: DicomHeader | None = None,
        layer: str | None = None,
    ) -> Explanation:
        """Predicts one image, explains the predicted class, and gates it as out-of-distribution or not.

        Grad-CAM runs fused: one pass gives the probabilities, the penultimate features, the
        activations of the CAM layer and their gradients. The other methods predict (with the
        features) first, then call tf-keras-vis.

        Args:
            gray: uint8 array of shape (H, W).
            method: one of ``METHODS``.
            colourfulness: of the decoded colour image (``images.decode_with_colour``), for the gate's
                colour check; None skips that check.
            header: the file's DICOM header (``images.dicom_header``), for the gate's modality and view check;
                None when the file is not DICOM.
            layer: the convolution layer to explain on, such as one of :func:`finer_layers`; None for the
                metadata's Grad-CAM layer.

        Returns:
            the explanation, with the CAM at the model's input size and the gate's verdict.

        Raises:
            ValueError: an unknown method or layer.
        """
        if method not in METHODS:
            raise ValueError(f"unknown CAM method {method!r}, expected one of {METHODS}")
        layer = layer or self.layer
        if layer not in self._layer_names:
            raise ValueError(
                f"unknown layer {layer!r} for the CAM, expected a layer of the model such as {self.layer!r}"
            )
        spec = self.loaded.metadata.preprocess
        small = resize(gray, spec)
        x = to_model_input(small, spec)
        if method == "Grad-CAM" and self._fusable(layer):
            explanation = self._gradcam_fused(x, layer)
        else:
            if self.feature_layer:
                p, f = ood.feature_model(self.loaded.model, self.feature_layer).predict_on_batch(x)
                probs, features = np.asarray(p)[0], np.asarray(f, dtype=np.float32).reshape(-1)
            else:
                probs, features = np.asarray(self.loaded.model.predict_on_batch(x))[0], None
            probs = self.loaded.calibrated(probs)
            label = int(np.argmax(probs))
            cam = self.vis_cam(x, label, method, layer=layer)
            explanation = Explanation(probs, label, cam, method, features=features, layer=layer)
        explanation.ood = ood.assess(
            gray, small, explanation.features, self.ood_stats, colourfulness=colourfulness, header=header
        )
        return explanation


def _fused_unavailable(model, layer: str) -> str | None:
    """Why the layers after ``layer`` cannot be run as the fused Grad-CAM's head, or None if they can.

    The fused path differentiates a plain chain of layers ending in a Dense softmax whose logits it
    computes itself; anything else (branches, shared layers, another output activation) goes to tf-keras-vis.
    """
    layers = list(model.layers)
    start = [x.name for x in layers].index(layer)
    tail = layers[start + 1 :]
    if not tail:
        return f"no layers after {layer}"
    last = tail[-1]
    if getattr(last, "kernel", None) is None or getattr(last, "bias", None) is None:
        return f"the last layer {last.name} is not a Dense layer with a bias"
    activation = getattr(getattr(last, "activation", None), "__name__", None)
    if activation != "softmax":
        return f"the last layer {last.name} has activation {activation!r}, not softmax"
    for previous, current in zip(layers[start:], tail):
        nodes = getattr(current, "_inbound_nodes", [])
        parents = [t._keras_history[0] for t in nodes[0].input_tensors] if len(nodes) == 1 else None
        if parents != [previous]:
            return f"the layers after {layer} are not a plain chain (at {current.name})"
    return None


def cam_grid(loaded: LoadedModel) -> tuple[int, int]:
    """The (rows, columns) of the Grad-CAM layer's cells: the map's real resolution before it is upsampled.

    Raises:
        ModelLoadError: the model has no layer by its metadata's Grad-CAM name.
    """
    try:
        return layer_grid(loaded, loaded.metadata.gradcam_layer)
    except ValueError as exc:
        raise ModelLoadError(
            f"model {loaded.path} has no layer {loaded.metadata.gradcam_layer!r} for Grad-CAM"
        ) from exc


def finer_layers(loaded: LoadedModel, *, most: int = 2) -> list[str]:
    """Convolution layers that give a finer map than the metadata's Grad-CAM layer, coarsest first.

    For each grid larger than the Grad-CAM layer's, the last convolution at that grid (``block4_conv3`` at
    input/8 and ``block3_conv3`` at input/4 for VGG16). Their features are less specific to the class, so
    they are offered, not chosen.

    Args:
        loaded: the model.
        most: how many to return at most.

    Returns:
        layer names; empty for a model whose Grad-CAM layer is already its finest convolution.
    """
    rows = cam_grid(loaded)[0]
    by_grid: dict[int, str] = {}
    for layer in loaded.model.layers:
        shape = getattr(layer, "output", None)
        shape = getattr(shape, "shape", None)
        if getattr(layer, "kernel", None) is None or shape is None or len(shape) != 4 or shape[1] is None:
            continue
        if int(shape[1]) > rows:
            by_grid[int(shape[1])] = layer.name  # the last convolution at each grid
    return [by_grid[g] for g in sorted(by_grid)][:most]


def layer_grid(loaded: LoadedModel, layer: str) -> tuple[int, int]:
    """The (rows, columns) of any convolution layer's output, as :func:`cam_grid` for the Grad-CAM layer."""
    shape = loaded.model.get_layer(layer).output.shape
    return int(shape[1]), int(shape[2])


def grid_note(grid: tuple[int, int], input_shape: tuple[int, ...]) -> str:
    """Says what one cell of a CAM covers, and that the map is coarse when it has few cells.

    Args:
        grid: (rows, columns) of the CAM layer, from :func:`cam_grid`.
        input_shape: the model's input shape, (H, W, C).

    Returns:
        e.g. "The map has 4×4 cells, each 16×16 pixels of the 64×64 model input: coarse, it outlines a region…".
    """
    (rows, cols), (h, w) = grid, input_shape[:2]
    note = f"The map has {rows}×{cols} cells, each {h // rows}×{w // cols} pixels of the {h}×{w} model input"
    if min(rows, cols) < COARSE_CELLS:
        return (
            note + f": coarse, it outlines a region, not a structure (a 224-pixel model gives 14×14; fewer than "
            f"{COARSE_CELLS} across is coarse)."
        )
    return note + "."


def jet_colorscale(steps: int = 9) -> list[list]:
    """The overlay's colour map as a Plotly colour scale: ``[[value, "rgb(r,g,b)"], ...]`` from 0 to 1."""
    values = np.linspace(0, 1, steps)
    return [[float(v), "rgb({},{},{})".format(*c)] for v, c in zip(values, _jet(values[None])[0])]


def _jet(values: np.ndarray) -> np.ndarray:
    """The jet colormap: float array in [0, 1] of shape (H, W) to uint8 RGB of shape (H, W, 3)."""
    v = np.clip(values, 0, 1)[..., None]
    rgb = np.clip(1.5 - np.abs(4 * v - np.array([3.0, 2.0, 1.0])), 0, 1)
    return (rgb * 255).astype(np.uint8)


def overlay(gray: np.ndarray, cam: np.ndarray, *, alpha: float = 0.4) -> np.ndarray:
    """Blends a CAM, coloured with jet, over a grayscale image at the image's own size.

    Args:
        gray: uint8 array of shape (H, W).
        cam: float array of shape (h, w) with values in [0, 1], any size.
        alpha: opacity of the heatmap, 0 shows only the image.

    Returns:
        uint8 array of shape (H, W, 3).
    """
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be within [0, 1], got {alpha}")
    h, w = gray.shape
    cam = np.asarray(Image.fromarray(np.asarray(cam, dtype=np.float32)).resize((w, h), Image.BILINEAR))
    base = np.repeat(gray[..., None], 3, axis=-1).astype(np.float32)
    heat = _jet(cam).astype(np.float32)
    return np.clip((1 - alpha) * base + alpha * heat, 0, 255).astype(np.uint8)
