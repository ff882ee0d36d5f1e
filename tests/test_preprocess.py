"""Tests for radiology.preprocess: the one path from grayscale image to model input."""

import numpy as np

from radiology.preprocess import PreprocessSpec, preprocess, resize, to_model_input


def test_default_spec_is_the_notebooks():
    """The default spec is 224x224 RGB with rescale 1/255."""
    spec = PreprocessSpec()
    assert spec.input_shape == (224, 224, 3) and spec.rescale == 1 / 255


def test_preprocess_resizes_replicates_and_scales():
    """A grayscale image becomes a (1, 224, 224, 3) float batch in [0, 1] with equal channels."""
    gray = np.full((50, 80), 255, np.uint8)
    x = preprocess(gray, PreprocessSpec())
    assert x.shape == (1, 224, 224, 3) and x.dtype == np.float32
    assert np.allclose(x, 1.0)
    assert np.array_equal(x[..., 0], x[..., 2])


def test_spec_roundtrip_and_single_channel():
    """A spec survives to_dict/from_dict and a 1-channel spec gives 1 channel."""
    spec = PreprocessSpec(height=32, width=48, channels=1, rescale=1.0)
    assert PreprocessSpec.from_dict(spec.to_dict()) == spec
    x = to_model_input(resize(np.zeros((10, 10), np.uint8), spec), spec)
    assert x.shape == (1, 32, 48, 1)


def test_fit_within_keeps_aspect_and_small_images():
    """Large images shrink to the limit keeping their aspect ratio; small ones come back unchanged."""
    from radiology.preprocess import fit_within

    big = np.zeros((4000, 2000), np.uint8)
    assert fit_within(big, 1024).shape == (1024, 512)
    small = np.zeros((100, 50), np.uint8)
    assert fit_within(small, 1024) is small
