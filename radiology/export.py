"""Exporting a run's model for a serving stack: a ``.keras`` file or a TensorFlow SavedModel.

The SavedModel path is TensorFlow-specific, like :mod:`radiology.explain`: its serving signature
``serving_default`` takes ``images``, a float32 batch of shape (N, H, W, C) already preprocessed as
the model's metadata says (resized, grayscale replicated to RGB, times ``rescale``: 1/255 for the
notebook), and returns ``probabilities`` of shape (N, classes), calibrated with the model's temperature.
The class names in output order are in ``assets/class_names.txt``, one a line, and the whole metadata in
``assets/radiology.json``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from radiology.errors import ModelLoadError
from radiology.fsutil import atomic_path
from radiology.model import copy_weights, load_model
from radiology.registry import Run

SIGNATURE = "serving_default"
CLASS_NAMES_ASSET = "class_names.txt"
METADATA_ASSET = "radiology.json"


def _fresh(out: str | Path) -> Path:
    out = Path(out).resolve()
    if out.exists():
        raise ModelLoadError(f"{out} already exists; choose another --out or remove it")
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


def _model_of(run: Run) -> Path:
    if not run.has_model:
        raise ModelLoadError(f"run {run.id} has no model file ({run.model_path})")
    return run.model_path


def export_keras(run: Run, out: str | Path) -> Path:
    """Copies a run's ``model.keras``, which carries its metadata, to ``out``, atomically.

    Args:
        run: a run with a model.
        out: the ``.keras`` file to write; it must not exist.

    Returns:
        the path written.

    Raises:
        ModelLoadError: the run has no model, ``out`` exists or does not end in ``.keras``.
    """
    source = _model_of(run)
    out = _fresh(out)
    if out.suffix != ".keras":
        raise ModelLoadError(f"a Keras export must end in .keras, got {out.name}")
    with atomic_path(out) as tmp:
        shutil.copyfile(source, tmp)
    return out


def export_savedmodel(run: Run, out: str | Path) -> Path:
    """Writes a run's model as a TensorFlow SavedModel with a serving signature and its class names.

    The folder is built under a temporary name beside ``out`` and renamed, so ``out`` appears complete
    or not at all.

    Args:
        run: a run with a model.
        out: the SavedModel folder to write; it must not exist.

    Returns:
        the folder written.

    Raises:
        ModelLoadError: the run has no model, its model cannot be loaded, ``out`` exists, or TensorFlow is
            not installed.
    """
    try:
        import tensorflow as tf
    except ImportError as exc:  # a JAX-only install
        raise ModelLoadError(f"a SavedModel export needs TensorFlow, which is not installed here ({exc})") from exc

    loaded = load_model(_model_of(run))
    out = _fresh(out)
    meta = loaded.metadata
    staging = Path(tempfile.mkdtemp(prefix=".tmp-savedmodel-", dir=out.parent))
    try:
        extra = staging / "extra"
        extra.mkdir()
        (extra / CLASS_NAMES_ASSET).write_text("".join(f"{n}\n" for n in meta.class_names))
        (extra / METADATA_ASSET).write_text(json.dumps(meta.to_dict(), indent=2))
        assets = [extra / CLASS_NAMES_ASSET, extra / METADATA_ASSET]
        model = _without_augmentation(loaded.model)
        module = _serving_module(model, meta.preprocess.input_shape, assets, temperature=meta.temperature)
        saved = staging / "model"
        tf.saved_model.save(module, str(saved), signatures={SIGNATURE: module.serve})
        os.rename(saved, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def _without_augmentation(model):
    """A copy of ``model`` whose augmentation layers, the identity at inference, are Identity layers.

    A trained run's flip and rotation layers hold random-number state that a SavedModel signature cannot
    capture; the copy computes the same probabilities without it.
    """
    import keras

    if not any(layer.name.startswith("augment_") for layer in model.layers):
        return model

    def clone(layer):
        if layer.name.startswith("augment_"):
            return keras.layers.Identity(name=layer.name)
        return layer.__class__.from_config(layer.get_config())

    copy = keras.models.clone_model(keras.Model(model.inputs, model.outputs, name=model.name), clone_function=clone)
    copy_weights(model, copy)
    return copy


def _serving_module(model, input_shape: tuple[int, int, int], assets: list[Path], *, temperature: float | None):
    import tensorflow as tf

    inverse = 1.0 / (temperature or 1.0)

    class Serving(tf.Module):
        """The model behind one signature; the assets are tracked so they are copied into ``assets/``."""

        def __init__(self):
            super().__init__()
            self.model = model
            self.assets = [tf.saved_model.Asset(str(p)) for p in assets]

        @tf.function(input_signature=[tf.TensorSpec((None, *input_shape), tf.float32, name="images")])
        def serve(self, images):
            probs = tf.cast(self.model(images, training=False), tf.float32)
            if inverse != 1.0:  # the temperature of radiology.calibration, inside the served graph
                probs = tf.nn.softmax(tf.math.log(tf.maximum(probs, 1e-12)) * inverse)
            return {"probabilities": probs}

    return Serving()
