"""The VGG16 transfer model of the original notebook, and saving and loading it with its metadata.

The classifier is one flat functional graph: augmentation layers, the VGG16 conv layers, then
GlobalMaxPooling2D, Dense 512 ReLU, Dropout 0.5 and Dense softmax. ``block5_conv3`` is a
top-level layer, which Grad-CAM needs. Only Keras 3 APIs are used, so the same code runs on the
TensorFlow and JAX backends.
"""

from __future__ import annotations

import json
import warnings
import zipfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from radiology import CLASS_NAMES
from radiology.augment import build_augmentation
from radiology.errors import ModelLoadError
from radiology.fsutil import atomic_path
from radiology.jobs import now
from radiology.preprocess import PreprocessSpec, to_model_input
from radiology.pretrained import fetch_imagenet

GRADCAM_LAYER = "block5_conv3"
METADATA_ENTRY = "radiology.json"
UNSAFE_LAYERS = ("Lambda", "TFOpLambda")


@dataclass
class ModelMetadata:
    """What travels with a model's weights so label order and preprocessing never drift.

    Attributes:
        class_names: class names in output order.
        preprocess: the preprocessing spec of the inputs.
        gradcam_layer: the conv layer Grad-CAM explains.
        train_config: the config the model was trained with, as data.
        data_fingerprint: hash of the training data's file list and splits.
        created: ISO timestamp of saving.
        name: a short human name.
        assumed: True when the file had no metadata and the notebook's spec was assumed.
        weights_dtype: how the weights are stored: ``float32``, or ``float16`` for half-size files;
            they are always computed in float32 after loading.
        ood: the out-of-distribution gate's feature statistics (``radiology.ood.FeatureStats.to_dict``),
            or None for a model fitted before the gate existed.
        temperature: the temperature fitted on the validation split (``radiology.calibration``), applied to
            every probability the model gives; None when none was fitted, which means T = 1.
    """

    class_names: tuple[str, ...] = CLASS_NAMES
    preprocess: PreprocessSpec = field(default_factory=PreprocessSpec)
    gradcam_layer: str = GRADCAM_LAYER
    train_config: dict = field(default_factory=dict)
    data_fingerprint: str | None = None
    created: str | None = None
    name: str = ""
    assumed: bool = False
    weights_dtype: str = "float32"
    ood: dict | None = None
    temperature: float | None = None

    def to_dict(self) -> dict:
        """Returns the metadata as JSON-ready data."""
        d = asdict(self)
        d["class_names"] = list(self.class_names)
        d["preprocess"] = self.preprocess.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelMetadata:
        """Builds metadata from :meth:`to_dict` output."""
        names = tuple(d.get("class_names") or CLASS_NAMES)
        return cls(
            class_names=names,
            preprocess=PreprocessSpec.from_dict(d.get("preprocess", {})),
            gradcam_layer=d.get("gradcam_layer", GRADCAM_LAYER),
            train_config=dict(d.get("train_config", {})),
            data_fingerprint=d.get("data_fingerprint"),
            created=d.get("created"),
            name=d.get("name", ""),
            assumed=bool(d.get("assumed", False)),
            weights_dtype=d.get("weights_dtype", "float32"),
            ood=d.get("ood"),
            temperature=d.get("temperature"),
        )


@dataclass
class LoadedModel:
    """A loaded Keras model with its metadata and any warnings raised while loading."""

    model: object
    metadata: ModelMetadata
    path: str
    warnings: list[str] = field(default_factory=list)

    def calibrated(self, probs: np.ndarray) -> np.ndarray:
        """The model's raw probabilities of shape (N, C) or (C,) with its temperature applied."""
        from radiology.calibration import apply_temperature

        return apply_temperature(probs, self.metadata.temperature)


def _vgg16(x, weights):
    import keras

    if weights == "imagenet":
        fetch_imagenet()  # a failed download as a ModelLoadError that says what to do, not Keras' bare Exception
    try:
        return keras.applications.VGG16(include_top=False, weights=weights, input_tensor=x)
    except (OSError, ValueError) as exc:  # a missing or bad weights file
        raise ModelLoadError(f"cannot load VGG16 weights from {weights}: {exc}") from exc


def build_model(
    *,
    spec: PreprocessSpec | None = None,
    num_classes: int = len(CLASS_NAMES),
    weights: str | None = "imagenet",
    trainable_layers: int = 6,
    augment: bool = True,
    dropout: float = 0.5,
    seed: int | None = None,
):
    """Builds the notebook's classifier as one flat functional graph.

    Args:
        spec: preprocessing spec giving the input shape; the notebook's by default.
        num_classes: number of softmax outputs.
        weights: ``"imagenet"``, ``None``/``"none"``, or a path to VGG16 weights, to a ``.keras``
            model or to a run folder holding ``model.keras``, whose layers are copied by name. No layer's
            weights depend on the input size, so a model trained at another size starts this one.
        trainable_layers: how many of the VGG16 layers, counted from its end, stay trainable;
            the notebook keeps 6. A number at least the layer count trains every layer.
        augment: whether the flip and rotation layers are part of the model.
        dropout: dropout rate of the head.
        seed: seed of the augmentation and dropout layers.

    Returns:
        an uncompiled ``keras.Model``.

    Raises:
        ModelLoadError: the weights cannot be loaded or downloaded.
    """
    import keras

    spec = spec or PreprocessSpec()
    if trainable_layers < 0:
        raise ValueError(f"trainable_layers must be >= 0, got {trainable_layers}")
    inputs = keras.Input(spec.input_shape, name="image")
    x = inputs
    if augment:
        for layer in build_augmentation(seed=seed):
            x = layer(x)
    copy_from = None
    if weights in (None, "none", "None"):
        weights = None
    elif weights != "imagenet" and Path(weights).is_dir():
        copy_from, weights = str(Path(weights) / "model.keras"), None
    elif weights != "imagenet" and str(weights).endswith(".keras"):
        copy_from, weights = weights, None
    base = _vgg16(x, weights)
    vgg_layers = [layer for layer in base.layers if layer.name.startswith("block")]
    for i, layer in enumerate(vgg_layers):
        layer.trainable = i >= len(vgg_layers) - trainable_layers
    x = keras.layers.GlobalMaxPooling2D(name="global_max_pool")(base.output)
    x = keras.layers.Dense(512, activation="relu", name="dense_512")(x)
    x = keras.layers.Dropout(dropout, seed=seed, name="dropout")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="predictions", dtype="float32")(x)
    model = keras.Model(inputs, outputs, name="vgg16_transfer")
    if copy_from:
        copy_weights(load_model(copy_from).model, model)
    return model


def copy_weights(source, target) -> int:
    """Copies weights layer by layer where names and shapes match; returns the layer count copied."""
    copied = 0
    for layer in target.layers:
        try:
            other = source.get_layer(layer.name)
        except ValueError:
            continue
        ws, wt = other.get_weights(), layer.get_weights()
        if ws and len(ws) == len(wt) and all(a.shape == b.shape for a, b in zip(ws, wt)):
            layer.set_weights(ws)
            copied += 1
    return copied


def compile_model(model, *, learning_rate: float = 1e-4, amsgrad: bool = True, jit_compile="auto") -> None:
    """Compiles with the notebook's optimizer: Adam with amsgrad, sparse categorical cross-entropy."""
    import keras

    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate, amsgrad=amsgrad),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        jit_compile=jit_compile,
    )


def save_model(model, path: str | Path, metadata: ModelMetadata, *, weights_dtype: str = "float32") -> Path:
    """Saves a model as ``.keras`` with its metadata inside the same file, atomically.

    The file is written under a temporary name and renamed, so a crash or a full disk never
    leaves a half-written model at ``path``. The saved model computes in float32 whatever
    precision it was trained in, and carries no optimizer state.

    Args:
        model: the Keras model.
        path: the ``.keras`` file to write.
        metadata: what travels with the weights; ``created`` and ``weights_dtype`` are filled in.
        weights_dtype: ``float32``, or ``float16`` to store the weights at half the size.

    Returns:
        ``path``.

    Raises:
        OSError: the file cannot be written; ``path`` is then left as it was.
    """
    path = Path(path)
    if path.suffix != ".keras":
        raise ValueError(f"expected a .keras path, got {path.name}")
    if weights_dtype not in ("float32", "float16"):
        raise ValueError(f"weights_dtype must be float32 or float16, got {weights_dtype!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = replace(metadata, created=now(), weights_dtype=weights_dtype)
    with atomic_path(path) as tmp:
        # an uncompiled copy: no optimizer slots in the file (a third of its size)
        cast_model(model, weights_dtype).save(tmp)
        with zipfile.ZipFile(tmp, "a") as zf:
            zf.writestr(METADATA_ENTRY, json.dumps(metadata.to_dict(), indent=2))
    return path


def update_metadata(loaded: LoadedModel, path: str | Path, **changes) -> LoadedModel:
    """Re-saves a model file with some metadata fields changed; returns the model with the new metadata.

    The weights are rewritten unchanged (in their stored precision); the file is replaced atomically.

    Args:
        loaded: the model as loaded.
        path: the ``.keras`` file to write, usually ``loaded.path``.
        **changes: metadata fields to set, such as ``ood`` or ``temperature``.
    """
    metadata = replace(loaded.metadata, **changes)
    save_model(loaded.model, path, metadata, weights_dtype=loaded.metadata.weights_dtype)
    return LoadedModel(loaded.model, metadata, str(path), list(loaded.warnings))


CHECKPOINT_STATE_ENTRY = "training_state.json"


def save_checkpoint(model, path: str | Path, metadata: ModelMetadata, state: dict) -> Path:
    """Saves a training checkpoint: the compiled model with its optimizer state, metadata and ``state``, atomically.

    Unlike :func:`save_model`, the optimizer's slots are kept, so training can go on from here.

    Args:
        model: the compiled Keras model being trained.
        path: the ``.keras`` file to write.
        metadata: what travels with the weights.
        state: JSON-ready training state (epoch, best score, schedule, history) stored in the same file.

    Returns:
        ``path``.

    Raises:
        OSError: the file cannot be written; ``path`` is then left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        model.save(tmp)
        with zipfile.ZipFile(tmp, "a") as zf:
            zf.writestr(METADATA_ENTRY, json.dumps(replace(metadata, created=now()).to_dict(), indent=2))
            zf.writestr(CHECKPOINT_STATE_ENTRY, json.dumps(state))
    return path


def read_checkpoint_state(path: str | Path) -> dict:
    """The training state stored by :func:`save_checkpoint`.

    Raises:
        ModelLoadError: the file is missing or holds no training state.
    """
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as zf:
            return json.loads(zf.read(CHECKPOINT_STATE_ENTRY))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise ModelLoadError(f"no training checkpoint in {path}: {exc}") from exc


def cast_model(model, dtype: str, *, keep_float32: tuple[str, ...] = ()):
    """An uncompiled copy of ``model`` whose layers compute in ``dtype``, with the same weights.

    Args:
        model: a functional Keras model.
        dtype: ``float32``, ``bfloat16`` or another Keras dtype policy name.
        keep_float32: names of layers that stay in float32.
    """
    import keras

    def clone(layer):
        config = layer.get_config()
        if "dtype" in config and not isinstance(layer, keras.layers.InputLayer):
            config["dtype"] = "float32" if layer.name in keep_float32 else dtype
        return layer.__class__.from_config(config)

    # clone an uncompiled view: clone_model compiles the copy like a compiled source, with optimizer slots
    # that save_model would then write (three times the file) and inference never uses
    view = keras.Model(model.inputs, model.outputs, name=model.name)
    copy = keras.models.clone_model(view, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy


def _model_config(path: Path) -> tuple[dict | None, dict | None]:
    """Reads the architecture config and our metadata without building the model."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            config = json.loads(zf.read("config.json")) if "config.json" in names else None
            meta = json.loads(zf.read(METADATA_ENTRY)) if METADATA_ENTRY in names else None
        return config, meta
    import h5py

    with h5py.File(path, "r") as f:
        raw = f.attrs.get("model_config")
        meta = f.attrs.get(METADATA_ENTRY)
    if isinstance(raw, bytes):
        raw = raw.decode()
    if isinstance(meta, bytes):
        meta = meta.decode()
    return (json.loads(raw) if raw else None), (json.loads(meta) if meta else None)


def read_metadata(path: str | Path) -> ModelMetadata:
    """A model file's metadata, read without building the model (a file without any reads as assumed).

    Unlike :func:`load_model`, this does not check the graph or fill in what the file leaves out (the
    input size, the Grad-CAM layer), so it is for reading what travels with the weights: the training
    config, the data fingerprint, the class names.

    Raises:
        ModelLoadError: the file is missing or is not a model file.
    """
    path = Path(path)
    _, meta = _read_model_file(path)
    return ModelMetadata.from_dict(meta) if meta is not None else ModelMetadata(name=path.stem, assumed=True)


def _read_model_file(path: Path) -> tuple[dict | None, dict | None]:
    """The architecture config and our metadata of a model file, or ModelLoadError naming what is wrong."""
    if not path.is_file():
        raise ModelLoadError(f"model file not found: {path}")
    try:
        return _model_config(path)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise ModelLoadError(f"not a Keras model file: {path.name} ({exc})") from exc


def _layer_classes(config) -> set[str]:
    found = set()
    if isinstance(config, dict):
        if "class_name" in config:
            found.add(config["class_name"])
        for v in config.values():
            found |= _layer_classes(v)
    elif isinstance(config, list):
        for v in config:
            found |= _layer_classes(v)
    return found


def load_model(path: str | Path, *, class_names: tuple[str, ...] | None = None) -> LoadedModel:
    """Loads a model with Keras' safe mode and returns it with its metadata.

    A model without metadata, such as the notebook's ``best_model.h5``, still loads: the notebook's
    spec is assumed (classes covid/normal/pneumonia, 224x224, rescale 1/255) with a warning. When the
    metadata names no Grad-CAM layer, or one the model lacks, its last convolution layer is used.

    Args:
        path: a ``.keras`` or HDF5 model file.
        class_names: class names in output order, replacing those of the file or the assumed ones.

    Raises:
        ModelLoadError: the file is missing, unreadable, holds code (Lambda layers), or its output
            does not match its class names.
    """
    import keras

    path = Path(path)
    config, meta = _read_model_file(path)
    unsafe = _layer_classes(config) & set(UNSAFE_LAYERS)
    if unsafe:
        raise ModelLoadError(
            f"refusing {path.name}: it contains {', '.join(sorted(unsafe))} layers, which run arbitrary code"
        )
    notes = []
    if meta is None:
        metadata = ModelMetadata(name=path.stem, assumed=True)
        notes.append(
            f"{path.name} carries no metadata: assuming the notebook's spec ("
            + (f"classes {'/'.join(CLASS_NAMES)} in this order, " if class_names is None else "")
            + "pixels rescaled by 1/255, the model's own input size)"
        )
    else:
        metadata = ModelMetadata.from_dict(meta)
    if class_names is not None:
        metadata.class_names = tuple(class_names)
        notes.append(f"class order set on loading: {', '.join(metadata.class_names)}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:  # Keras raises many types for one cause: an incompatible file
        model = _notebook_from_h5(path) if meta is None and not zipfile.is_zipfile(path) else None
        if model is None:
            raise ModelLoadError(f"cannot load {path.name}: {exc}") from exc
        notes.append(f"{path.name} nests VGG16 as one layer; its weights were loaded into the flat notebook graph")
    if metadata.weights_dtype != "float32":
        model = cast_model(model, "float32")  # half-size storage, full-precision compute
    n_out = model.output_shape[-1]
    if n_out != len(metadata.class_names):
        raise ModelLoadError(f"expected {len(metadata.class_names)} outputs for {metadata.class_names}, got {n_out}")
    shape = model.input_shape
    if not isinstance(shape, tuple) or len(shape) != 4:
        raise ModelLoadError(f"expected one image input of shape (batch, height, width, channels), got {shape}")
    if meta is None:
        metadata.preprocess = PreprocessSpec(height=shape[1] or 224, width=shape[2] or 224, channels=shape[3] or 3)
    layer_names = {layer.name for layer in model.layers}
    if metadata.gradcam_layer not in layer_names:
        wanted = metadata.gradcam_layer or "no layer"
        metadata.gradcam_layer = last_conv_layer(model)
        notes.append(
            f"the metadata names {wanted} for Grad-CAM, which is not a top-level layer; "
            f"Grad-CAM uses {metadata.gradcam_layer or 'nothing'}"
        )
    return LoadedModel(model, metadata, str(path), notes)


def last_conv_layer(model) -> str:
    """The name of the model's last top-level 2D convolution layer, or an empty string when it has none."""
    convs = [layer.name for layer in model.layers if type(layer).__name__.endswith("Conv2D")]
    return convs[-1] if convs else ""


def _notebook_from_h5(path: Path):
    """The notebook's architecture as one flat graph, with the weights of a Keras 2 HDF5 file, or None.

    Keras 2 models built as ``Sequential([VGG16(...), GlobalMaxPooling2D(), ...])`` nest VGG16 as one
    layer, and Keras 3 cannot rebuild them. Their VGG16 weights are found by layer name
    (``block1_conv1/kernel:0``...), the head's in file order; every shape must match.
    """
    import h5py

    def text(value):
        return value.decode() if isinstance(value, bytes) else str(value)

    weights: list[tuple[str, np.ndarray]] = []
    try:
        with h5py.File(path, "r") as f:
            group = f["model_weights"] if "model_weights" in f else f
            for layer_name in group.attrs["layer_names"]:
                layer = group[text(layer_name)]
                weights += [(text(n), np.asarray(layer[text(n)])) for n in layer.attrs["weight_names"]]
    except (OSError, KeyError, ValueError):
        return None
    model = build_model(weights=None, augment=False)
    rest = list(weights)
    for layer in model.layers:
        if not layer.weights:
            continue
        if layer.name.startswith("block"):
            mine = [(n, a) for n, a in rest if n.split("/")[-2:-1] == [layer.name]]
            mine.sort(key=lambda item: "bias" in item[0])  # kernel, then bias
        else:
            mine = [item for item in rest if not item[0].split("/")[-2].startswith("block")][: len(layer.weights)]
        rest = [item for item in rest if all(item is not m for m in mine)]
        arrays = [a for _, a in mine]
        if [a.shape for a in arrays] != [tuple(w.shape) for w in layer.weights]:
            return None
        layer.set_weights(arrays)
    return model


def predict_images(loaded: LoadedModel, images, *, batch_size: int = 32, calibrated: bool = True) -> np.ndarray:
    """Class probabilities for grayscale images: the one prediction function of the app, CLI and trainer.

    Args:
        loaded: the model and its metadata.
        images: uint8 arrays of shape (H, W), any size (a list), or one uint8 array of shape (N, H, W);
            images already at the model's input size are used as they are.
        batch_size: images per forward pass.
        calibrated: apply the model's temperature; False gives the softmax as trained.

    Returns:
        float32 array of shape (N, num_classes), columns in ``metadata.class_names`` order.
    """
    from radiology.preprocess import resize

    spec = loaded.metadata.preprocess
    out = []
    for start in range(0, len(images), batch_size):
        batch = np.stack([resize(img, spec) for img in images[start : start + batch_size]])
        out.append(np.asarray(loaded.model.predict_on_batch(to_model_input(batch, spec)), dtype=np.float32))
    if not out:
        return np.zeros((0, len(loaded.metadata.class_names)), np.float32)
    probs = np.concatenate(out)
    return loaded.calibrated(probs) if calibrated else probs
