"""Tests for radiology.explain: fused Grad-CAM against tf-keras-vis, the other methods, overlays."""

import logging

import numpy as np
import pytest

from radiology.errors import ModelLoadError
from radiology.explain import (
    COARSE_CELLS,
    METHOD_HELP,
    METHODS,
    Explainer,
    cam_grid,
    finer_layers,
    grid_note,
    jet_colorscale,
    layer_grid,
    overlay,
)
from radiology.model import LoadedModel, ModelMetadata, predict_images
from radiology.preprocess import PreprocessSpec, preprocess
from tests.factories import xray


@pytest.fixture(scope="module")
def explainer(tiny_model):
    return Explainer(tiny_model)


def test_fused_gradcam_matches_tf_keras_vis(explainer, tiny_model):
    """The one-pass Grad-CAM gives the model's probabilities and the same map as tf-keras-vis Gradcam."""
    img = xray(3, size=(180, 200))
    ex = explainer.explain(img, method="Grad-CAM")
    assert np.allclose(ex.probs, predict_images(tiny_model, [img])[0], atol=1e-4)
    assert ex.label == int(np.argmax(ex.probs)) and ex.cam.shape == (224, 224)
    reference = explainer.vis_cam(preprocess(img, tiny_model.metadata.preprocess), ex.label, "Grad-CAM")
    if reference.std() > 0:
        assert np.corrcoef(ex.cam.ravel(), reference.ravel())[0, 1] > 0.98
    assert 0 <= ex.cam.min() and ex.cam.max() <= 1


@pytest.mark.parametrize("method", [m for m in METHODS if m != "Grad-CAM"])
def test_other_methods(explainer, method):
    """Grad-CAM++, ScoreCAM and LayerCAM return a normalised map at input size."""
    ex = explainer.explain(xray(4), method=method)
    assert ex.method == method and ex.cam.shape == (224, 224)
    assert np.isfinite(ex.cam).all() and 0 <= ex.cam.min() and ex.cam.max() <= 1


def test_shared_model_is_not_modified(explainer, tiny_model):
    """Explaining leaves the shared model's softmax output in place."""
    explainer.explain(xray(5), method="Grad-CAM++")
    assert tiny_model.model.layers[-1].activation.__name__ == "softmax"


def _small_model(head: str) -> LoadedModel:
    """A 32x32 model with a conv layer ``cam`` and a head that is a chain, a branch or has a sigmoid output."""
    import keras

    x = keras.Input((32, 32, 3))
    h = keras.layers.Conv2D(4, 3, padding="same", name="cam")(x)
    h = keras.layers.GlobalAveragePooling2D()(h)
    if head == "branch":
        h = keras.layers.Add()([keras.layers.Dense(4)(h), keras.layers.Dense(4)(h)])
    out = keras.layers.Dense(3, activation="sigmoid" if head == "sigmoid" else "softmax")(h)
    spec = PreprocessSpec(height=32, width=32)
    return LoadedModel(keras.Model(x, out), ModelMetadata(preprocess=spec, gradcam_layer="cam"), f"{head}.keras")


def test_fused_path_is_decided_at_construction(explainer):
    """The trained VGG16 model takes the fused path, whose function is built once and reused."""
    assert explainer.fused_unavailable is None
    explainer.explain(xray(6))
    fused = explainer._fused
    assert fused is not None
    explainer.explain(xray(7))
    assert explainer._fused is fused


@pytest.mark.parametrize(
    ("head", "reason"), [("branch", "not a plain chain"), ("sigmoid", "activation 'sigmoid', not softmax")]
)
def test_heads_the_fused_path_cannot_run_go_to_tf_keras_vis(head, reason, caplog):
    """A branched head or a non-softmax output is detected at construction, logged, and explained by tf-keras-vis."""
    loaded = _small_model(head)
    with caplog.at_level(logging.INFO, logger="radiology.explain"):
        ex = Explainer(loaded)
    assert reason in ex.fused_unavailable
    assert any(reason in r.getMessage() and loaded.path in r.getMessage() for r in caplog.records)
    out = ex.explain(xray(8), method="Grad-CAM")
    assert ex._fused is None and out.cam.shape == (32, 32)
    expected = np.asarray(loaded.model.predict_on_batch(preprocess(xray(8), loaded.metadata.preprocess)))[0]
    assert np.allclose(out.probs, expected, atol=1e-5)


def test_real_errors_in_the_fused_path_propagate(tiny_model, monkeypatch):
    """An error inside the fused Grad-CAM is raised, not swallowed by a silent fallback."""
    ex = Explainer(tiny_model)

    def broken(x):
        raise ValueError("shape mismatch inside the head")

    monkeypatch.setattr(ex, "_fused", broken)
    with pytest.raises(ValueError, match="shape mismatch inside the head"):
        ex.explain(xray(9), method="Grad-CAM")


def test_missing_gradcam_layer_is_refused():
    """A model without the layer its metadata names is refused at construction, naming the layer."""
    loaded = _small_model("chain")
    loaded.metadata.gradcam_layer = "block5_conv3"
    with pytest.raises(ModelLoadError, match="no layer 'block5_conv3'"):
        Explainer(loaded)


def test_unknown_method(explainer):
    """An unknown method names the valid ones."""
    with pytest.raises(ValueError, match="unknown CAM method 'SmoothGrad'"):
        explainer.explain(xray(), method="SmoothGrad")


def test_overlay_blends_at_image_size():
    """The overlay has the image's size; alpha 0 gives the image itself."""
    gray = xray(size=(50, 70))
    cam = np.random.default_rng(0).random((224, 224))
    out = overlay(gray, cam, alpha=0.5)
    assert out.shape == (50, 70, 3) and out.dtype == np.uint8
    assert np.array_equal(overlay(gray, cam, alpha=0.0)[..., 0], gray)
    with pytest.raises(ValueError, match="alpha"):
        overlay(gray, cam, alpha=2)


def test_fused_pass_gives_the_gate_its_features_in_one_model_call(explainer, tiny_model, monkeypatch):
    """Grad-CAM, probabilities and the gate's features come from one forward pass: 13 conv ops, no other call."""
    from radiology import ood
    from radiology.preprocess import preprocess, resize

    img = xray(6, size=(256, 256))
    explainer.explain(img)  # traces the fused function

    def forbidden(*args, **kwargs):
        raise AssertionError("a second model call")

    monkeypatch.setattr(tiny_model.model, "predict_on_batch", forbidden)
    monkeypatch.setattr(ood, "feature_model", forbidden)
    ex = explainer.explain(img)
    x = preprocess(img, tiny_model.metadata.preprocess)
    graph = explainer._fused.get_concrete_function(x).graph
    convs = [op for op in graph.get_operations() if op.type == "Conv2D"]
    assert len(convs) == 13  # VGG16's 13 convolutions, run once
    stats = ood.load_stats(tiny_model.metadata)
    scores = stats.all_scores(ex.features[None], resize(img, tiny_model.metadata.preprocess)[None])
    assert ex.features.shape == (512,) and ex.ood.score == pytest.approx(max(float(v[0]) for v in scores.values()))


def test_other_methods_are_gated_too(explainer):
    """The tf-keras-vis methods predict with the features in one call and carry the gate's verdict."""
    ex = explainer.explain(xray(7, size=(256, 256)), method="LayerCAM", colourfulness=50.0)
    assert ex.features.shape == (512,) and ex.ood.flag and ex.ood.reason.startswith("colour image")


def test_every_method_says_what_it_shows_and_costs():
    """Each CAM method has help text naming its cost."""
    assert set(METHOD_HELP) == set(METHODS)
    assert all("Cost:" in text for text in METHOD_HELP.values())


def test_cam_grid_is_the_layers_cells(tiny_model):
    """The tiny model's block5_conv3 has input/16 cells across: 14x14 at 224 pixels, which is not coarse."""
    side = tiny_model.metadata.preprocess.height
    assert cam_grid(tiny_model) == (side // 16, side // 16)
    assert "coarse" not in grid_note(cam_grid(tiny_model), tiny_model.metadata.preprocess.input_shape)


def test_a_small_grid_is_called_coarse():
    """A 64-pixel model's 4x4 map is called coarse, with what one cell covers; 10 cells across are not coarse."""
    note = grid_note((4, 4), (64, 64, 3))
    assert note.startswith("The map has 4×4 cells, each 16×16 pixels of the 64×64 model input: coarse")
    assert "coarse" not in grid_note((COARSE_CELLS, COARSE_CELLS), (160, 160, 3))


def test_colour_scale_matches_the_overlay():
    """The colour bar's colours are the overlay's: a CAM ramp at full opacity gives the scale's colours."""
    scale = jet_colorscale(5)
    assert [v for v, _ in scale] == [0.0, 0.25, 0.5, 0.75, 1.0]
    ramp = np.array([[0.0, 0.25, 0.5, 0.75, 1.0]], np.float32)
    coloured = overlay(np.zeros((1, 5), np.uint8), ramp, alpha=1.0)[0]
    assert [f"rgb({r},{g},{b})" for r, g, b in coloured] == [c for _, c in scale]


def test_finer_layers_of_vgg16_and_a_map_on_one(explainer, tiny_model):
    """VGG16 offers block4_conv3 and block3_conv3 as finer layers; the fused Grad-CAM on block4_conv3 matches
    tf-keras-vis there, and the explanation names its layer."""
    assert finer_layers(tiny_model) == ["block4_conv3", "block3_conv3"]
    assert layer_grid(tiny_model, "block4_conv3") == (28, 28)
    img = xray(10, size=(180, 200))
    ex = explainer.explain(img, layer="block4_conv3")
    assert ex.layer == "block4_conv3" and ex.cam.shape == (224, 224)
    assert explainer.explain(img).layer == tiny_model.metadata.gradcam_layer
    reference = explainer.vis_cam(
        preprocess(img, tiny_model.metadata.preprocess), ex.label, "Grad-CAM", layer="block4_conv3"
    )
    if reference.std() > 0:
        assert np.corrcoef(ex.cam.ravel(), reference.ravel())[0, 1] > 0.98
    assert explainer.explain(img, method="LayerCAM", layer="block4_conv3").layer == "block4_conv3"
    with pytest.raises(ValueError, match="unknown layer 'no_such_conv'"):
        explainer.explain(img, layer="no_such_conv")


@pytest.mark.parametrize("method", METHODS)
def test_batched_cams_match_one_image_at_a_time(method):
    """Explainer.cams gives, for a batch, the maps each image gets alone (fused Grad-CAM and tf-keras-vis)."""
    loaded = _small_model("chain")
    explainer = Explainer(loaded)
    x = preprocess(xray(8, size=(32, 32)), loaded.metadata.preprocess)
    x = np.concatenate([x, preprocess(xray(9, size=(32, 32)), loaded.metadata.preprocess)])
    labels = np.argmax(loaded.model.predict_on_batch(x), axis=-1)
    batch = explainer.cams(x, method)
    assert batch.shape == (2, 32, 32) and 0 <= batch.min() and batch.max() <= 1
    for i in range(2):
        alone = explainer.vis_cam(x[i : i + 1], int(labels[i]), method)
        if alone.std() > 0 and batch[i].std() > 0:
            assert np.corrcoef(batch[i].ravel(), alone.ravel())[0, 1] > 0.98, method
    with pytest.raises(ValueError, match="unknown CAM method 'Saliency'"):
        explainer.cams(x, "Saliency")
