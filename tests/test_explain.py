"""Tests for radiology.explain: fused Grad-CAM against tf-keras-vis, the other methods, overlays."""

import numpy as np
import pytest

from radiology.explain import METHODS, Explainer, overlay
from radiology.model import predict_images
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
    from radiology.preprocess import preprocess

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
    from radiology.preprocess import preprocess

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
    assert ex.features.shape == (512,) and ex.ood.score == pytest.approx(float(stats.scores(ex.features[None])[0]))


def test_other_methods_are_gated_too(explainer):
    """The tf-keras-vis methods predict with the features in one call and carry the gate's verdict."""
    ex = explainer.explain(xray(7, size=(256, 256)), method="LayerCAM", colourfulness=50.0)
    assert ex.features.shape == (512,) and ex.ood.flag and ex.ood.reason.startswith("colour image")
