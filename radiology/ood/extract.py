"""The features the gate models, from the prediction's own forward pass."""

from __future__ import annotations

import weakref

import numpy as np

from radiology.model import LoadedModel
from radiology.ood.features import load_stats
from radiology.preprocess import to_model_input

FEATURE_LAYERS = ("GlobalMaxPooling2D", "GlobalAveragePooling2D", "Flatten")


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
    loaded: LoadedModel,
    pixels: np.ndarray,
    *,
    layer: str | None = None,
    batch_size: int = 64,
    calibrated: bool = True,
    progress=None,
) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and features of resized images, from one forward pass per batch.

    Args:
        loaded: the model and its metadata.
        pixels: uint8 array of shape (N, H, W) at the model's input size.
        layer: the feature layer; the stored statistics' layer, else the last global pooling layer.
        batch_size: images per forward pass.
        calibrated: apply the model's temperature to the probabilities; False gives the softmax as trained.
        progress: optional callable ``progress(done, total)`` told the images done after each batch.

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
    # looked up on the package, where callers and tests (monkeypatch) see it, as before the split
    from radiology import ood

    model = ood.feature_model(loaded.model, layer)
    spec = loaded.metadata.preprocess
    probs, feats = [], []
    for start in range(0, len(pixels), batch_size):
        p, f = model.predict_on_batch(to_model_input(pixels[start : start + batch_size], spec))
        probs.append(np.asarray(p, dtype=np.float32))
        feats.append(np.asarray(f, dtype=np.float32).reshape(len(p), -1))
        if progress is not None:
            progress(start + len(p), len(pixels))
    if not probs:
        return np.zeros((0, len(loaded.metadata.class_names)), np.float32), np.zeros((0, 0), np.float32)
    probs = np.concatenate(probs)
    return (loaded.calibrated(probs) if calibrated else probs), np.concatenate(feats)
