"""Tests for radiology.model: the flat VGG16 graph, saving with metadata, and safe loading."""

import warnings

import keras
import numpy as np
import pytest

from radiology.errors import ModelLoadError
from radiology.model import (
    GRADCAM_LAYER,
    ModelMetadata,
    build_model,
    compile_model,
    load_model,
    predict_images,
    read_checkpoint_state,
    read_metadata,
    save_checkpoint,
    save_model,
)
from radiology.preprocess import PreprocessSpec
from tests.factories import keras2_notebook_h5, xray


@pytest.fixture(scope="module")
def model():
    """An untrained model of the real architecture."""
    return build_model(weights="none", seed=0)


def test_architecture_matches_the_notebook(model):
    """Flat graph: block5_conv3 is top level; head is GlobalMaxPool, Dense 512, Dropout 0.5, Dense 3 softmax."""
    names = [layer.name for layer in model.layers]
    assert GRADCAM_LAYER in names and "vgg16" not in names
    head = model.layers[-4:]
    assert [type(layer).__name__ for layer in head] == ["GlobalMaxPooling2D", "Dense", "Dropout", "Dense"]
    assert head[1].units == 512 and head[1].activation.__name__ == "relu" and head[2].rate == 0.5
    assert head[3].units == 3 and head[3].activation.__name__ == "softmax"
    vgg = [layer for layer in model.layers if layer.name.startswith("block")]
    assert len(vgg) == 18 and [layer.trainable for layer in vgg].count(True) == 6
    assert all(layer.trainable for layer in vgg[-6:])
    assert model.input_shape == (None, 224, 224, 3)


def test_trainable_layers_is_configurable():
    """trainable_layers=100 trains every VGG16 layer; 0 freezes them all."""
    all_on = build_model(weights="none", trainable_layers=100, augment=False)
    assert all(layer.trainable for layer in all_on.layers if layer.name.startswith("block"))
    none_on = build_model(weights="none", trainable_layers=0, augment=False)
    assert not any(layer.trainable for layer in none_on.layers if layer.name.startswith("block"))


def test_augmentation_is_active_only_in_training(model):
    """The flip and rotation layers change the input in training mode and never at inference."""
    x = np.random.default_rng(0).random((2, 224, 224, 3)).astype("float32")
    augment = keras.Model(model.input, model.get_layer("augment_rotate").output)
    assert np.allclose(augment(x, training=False), x)
    assert not np.allclose(augment(x, training=True), x)


def test_compile_uses_adam_amsgrad(model):
    """The optimizer is Adam(1e-4, amsgrad) by default."""
    compile_model(model)
    assert type(model.optimizer).__name__ == "Adam" and model.optimizer.amsgrad
    assert float(model.optimizer.learning_rate) == pytest.approx(1e-4)


def test_save_load_roundtrip_keeps_metadata_and_predictions(model, tmp_path):
    """A saved model loads with its metadata and gives the same probabilities."""
    meta = ModelMetadata(train_config={"epochs": 1}, data_fingerprint="abc", name="t")
    path = save_model(model, tmp_path / "m.keras", meta)
    loaded = load_model(path)
    assert loaded.metadata.class_names == ("covid", "normal", "pneumonia")
    assert loaded.metadata.train_config == {"epochs": 1} and loaded.metadata.data_fingerprint == "abc"
    assert loaded.metadata.gradcam_layer == GRADCAM_LAYER and not loaded.warnings
    img = xray(size=(300, 260))
    from radiology.model import LoadedModel

    expected = predict_images(LoadedModel(model, meta, ""), [img])
    assert np.allclose(predict_images(loaded, [img]), expected, atol=1e-5)
    assert not list(tmp_path.glob(".tmp-*"))


def test_legacy_h5_without_metadata_loads_with_a_warning(model, tmp_path):
    """An HDF5 model with no metadata, like the notebook's best_model.h5, loads with the notebook's spec."""
    path = tmp_path / "best_model.h5"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        keras.saving.save_model(model, path)
    loaded = load_model(path)
    assert loaded.metadata.assumed and loaded.metadata.class_names == ("covid", "normal", "pneumonia")
    assert loaded.metadata.preprocess.rescale == 1 / 255
    assert any("no metadata" in w for w in loaded.warnings)


def test_lambda_layer_is_refused(tmp_path):
    """A model file containing a Lambda layer is refused before anything is deserialised."""
    inp = keras.Input((4,))
    out = keras.layers.Lambda(lambda t: t * 2)(inp)
    path = tmp_path / "evil.keras"
    keras.Model(inp, out).save(path)
    with pytest.raises(ModelLoadError, match="Lambda"):
        load_model(path)


def test_bad_model_files(tmp_path):
    """A missing file, a non-model file and a wrong output size raise ModelLoadError."""
    with pytest.raises(ModelLoadError, match="not found"):
        load_model(tmp_path / "none.keras")
    (tmp_path / "junk.keras").write_bytes(b"junk")
    with pytest.raises(ModelLoadError, match="not a Keras model"):
        load_model(tmp_path / "junk.keras")
    inp = keras.Input((8,))
    keras.Model(inp, keras.layers.Dense(2, activation="softmax")(inp)).save(tmp_path / "two.keras")
    with pytest.raises(ModelLoadError, match="expected 3 outputs"):
        load_model(tmp_path / "two.keras")


def test_imagenet_download_failure_says_where_to_put_the_file(monkeypatch):
    """Without network, the ImageNet path names the weights file and where to place it."""

    def offline(*args, **kwargs):
        raise OSError("URL fetch failure: no network")

    monkeypatch.setattr(keras.utils, "get_file", offline)  # what radiology.pretrained.fetch_imagenet calls
    with pytest.raises(ModelLoadError, match="vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"):
        build_model(weights="imagenet")


def test_weights_from_a_keras_model_are_copied(model, tmp_path):
    """weights=PATH.keras starts from that model's weights."""
    path = save_model(model, tmp_path / "start.keras", ModelMetadata())
    again = build_model(weights=str(path), augment=False)
    assert np.allclose(
        again.get_layer("block5_conv3").get_weights()[0], model.get_layer("block5_conv3").get_weights()[0]
    )


def test_saved_model_of_a_compiled_model_has_no_optimizer_state(tmp_path):
    """save_model writes the weights only, even for a compiled model that has trained (no Adam slots)."""
    import zipfile

    import h5py

    small = build_model(spec=PreprocessSpec(height=32, width=32), weights="none", augment=False, seed=0)
    compile_model(small)
    small.train_on_batch(np.zeros((2, 32, 32, 3), np.float32), np.array([0, 1]))
    path = save_model(small, tmp_path / "m.keras", ModelMetadata())
    with zipfile.ZipFile(path) as zf, h5py.File(zf.open("model.weights.h5"), "r") as weights:
        assert "optimizer" not in weights


def test_checkpoint_keeps_optimizer_state_and_training_state(tmp_path):
    """save_checkpoint keeps the Adam slots and step count, and the training state it was given."""
    spec = PreprocessSpec(height=32, width=32)
    x, y = np.random.default_rng(0).random((4, 32, 32, 3)).astype(np.float32), np.array([0, 1, 2, 0])
    first = build_model(spec=spec, weights="none", augment=False, seed=0)
    compile_model(first)
    first.train_on_batch(x, y)
    first.train_on_batch(x, y)
    path = save_checkpoint(first, tmp_path / "last.keras", ModelMetadata(preprocess=spec), {"epoch": 3, "best": 0.5})
    again = build_model(spec=spec, weights="none", augment=False, seed=1)
    compile_model(again)
    again.optimizer.build(again.trainable_variables)
    again.load_weights(path)
    assert int(again.optimizer.iterations.numpy()) == 2
    for a, b in zip(first.optimizer.variables, again.optimizer.variables):
        assert np.array_equal(a.numpy(), b.numpy()), a.path
    assert read_checkpoint_state(path) == {"epoch": 3, "best": 0.5}
    assert load_model(path).metadata.preprocess == spec
    with pytest.raises(ModelLoadError, match="no training checkpoint in"):
        read_checkpoint_state(save_model(first, tmp_path / "m.keras", ModelMetadata()))


def test_weights_from_a_run_folder_at_another_size(tmp_path):
    """weights=RUN_DIR starts a 64 px model from a run's 32 px model.keras: every layer with weights is copied."""
    small = build_model(spec=PreprocessSpec(height=32, width=32), weights="none", seed=0)
    run = tmp_path / "run"
    save_model(small, run / "model.keras", ModelMetadata(preprocess=PreprocessSpec(height=32, width=32)))
    large = build_model(spec=PreprocessSpec(height=64, width=64), weights=str(run), seed=1)
    assert large.input_shape == (None, 64, 64, 3)
    for layer in small.layers:
        for a, b in zip(layer.get_weights(), large.get_layer(layer.name).get_weights()):
            assert np.array_equal(a, b), layer.name


def test_mixed_precision_model_is_saved_in_float32(tmp_path):
    """A model built under mixed_bfloat16 is saved computing in float32, so any CPU runs it at full speed."""
    keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    try:
        mixed = build_model(weights="none", augment=False)
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    assert mixed.get_layer("block5_conv3").compute_dtype == "bfloat16"
    loaded = load_model(save_model(mixed, tmp_path / "m.keras", ModelMetadata()))
    assert loaded.model.get_layer("block5_conv3").compute_dtype == "float32"


@pytest.mark.parametrize("layout", ["flat", "nested"])
def test_keras2_notebook_h5_loads_and_predicts_the_same(tmp_path, layout):
    """A genuine Keras 2 best_model.h5 (flat, or Sequential with VGG16 nested) loads with the notebook's spec,
    exposes block5_conv3, and predicts what Keras 2 predicted."""
    pytest.importorskip("tf_keras")
    path = keras2_notebook_h5(tmp_path / "best_model.h5", layout=layout)
    loaded = load_model(path)
    assert loaded.metadata.assumed and loaded.metadata.gradcam_layer == GRADCAM_LAYER
    assert GRADCAM_LAYER in [layer.name for layer in loaded.model.layers]
    x = np.load(f"{path}.x.npy")
    expected = np.load(f"{path}.p.npy")
    assert np.abs(predict_images(loaded, list(x)) - expected).max() < 1e-4
    assert any("no metadata" in w for w in loaded.warnings)


def test_float16_storage_halves_the_file_and_matches(model, tmp_path):
    """Weights stored as float16 give a file half the size that loads computing in float32, within 0.01."""
    meta = ModelMetadata()
    full = save_model(model, tmp_path / "full.keras", meta)
    half = save_model(model, tmp_path / "half.keras", meta, weights_dtype="float16")
    assert half.stat().st_size < 0.55 * full.stat().st_size
    a, b = load_model(full), load_model(half)
    assert b.metadata.weights_dtype == "float16" and meta.created is None  # the caller's metadata is untouched
    assert b.model.get_layer("block5_conv3").compute_dtype == "float32"
    images = [xray(i, size=(224, 224)) for i in range(4)]
    assert np.abs(predict_images(a, images) - predict_images(b, images)).max() <= 0.01


def test_predict_images_takes_a_list_of_any_size_or_a_resized_stack(model):
    """A list of images of any size and a (N, 224, 224) stack of the same images, resized, predict the same."""
    from radiology.model import LoadedModel
    from radiology.preprocess import resize

    loaded = LoadedModel(model, ModelMetadata(), "")
    images = [xray(i, size=(150 + 10 * i, 200)) for i in range(3)]
    stack = np.stack([resize(img, loaded.metadata.preprocess) for img in images])
    by_list = predict_images(loaded, images, batch_size=2)
    assert by_list.shape == (3, 3) and by_list.dtype == np.float32
    assert np.allclose(predict_images(loaded, stack, batch_size=2), by_list, atol=1e-6)
    assert predict_images(loaded, np.zeros((0, 224, 224), np.uint8)).shape == (0, 3)


def test_a_model_without_an_image_input_is_refused(tmp_path):
    """A model with three outputs but a flat input is refused with its input shape named, not an IndexError."""
    inp = keras.Input((8,))
    keras.Model(inp, keras.layers.Dense(3, activation="softmax")(inp)).save(tmp_path / "flat.keras")
    with pytest.raises(ModelLoadError, match=r"expected one image input .* got \(None, 8\)"):
        load_model(tmp_path / "flat.keras")


def test_metadata_round_trips_through_a_dict():
    """from_dict(to_dict()) gives back every field, assumed and the gate's statistics included."""
    meta = ModelMetadata(
        ("a", "b"),
        PreprocessSpec(height=64, width=64),
        train_config={"seed": 7},
        data_fingerprint="f",
        created="t",
        name="n",
        assumed=True,
        weights_dtype="float16",
        ood={"layer": "x"},
        temperature=1.5,
    )
    assert ModelMetadata.from_dict(meta.to_dict()) == meta


def test_read_metadata_needs_no_model_build(model, tmp_path, monkeypatch):
    """read_metadata gives the saved metadata without Keras loading the model; a bare file reads as assumed."""
    meta = ModelMetadata(("x", "y", "z"), train_config={"seed": 7}, data_fingerprint="f")
    path = save_model(model, tmp_path / "m.keras", meta)
    monkeypatch.setattr(keras.saving, "load_model", lambda *a, **k: pytest.fail("built the model"))
    got = read_metadata(path)
    assert got.class_names == ("x", "y", "z") and got.train_config == {"seed": 7} and got.data_fingerprint == "f"
    with pytest.raises(ModelLoadError, match="model file not found"):
        read_metadata(tmp_path / "none.keras")
    (tmp_path / "bad.keras").write_bytes(b"not a zip")
    with pytest.raises(ModelLoadError, match="not a Keras model file"):
        read_metadata(tmp_path / "bad.keras")
