"""Tests for radiology.augment: the flip and rotation in the model and on the host."""

import numpy as np

from radiology.augment import augment_on_host
from radiology.preprocess import PreprocessSpec
from tests.factories import xray
from training.data import batches


def test_host_augmentation_flips_and_rotates_within_15_degrees():
    """Host augmentation keeps shape and dtype, changes images, and never rotates past 15 degrees."""
    images = np.stack([xray(i, size=(64, 64)) for i in range(16)])
    out = augment_on_host(images, np.random.default_rng(0))
    assert out.shape == images.shape and out.dtype == np.uint8
    assert not np.array_equal(out, images)
    bar = np.zeros((1, 101, 101), np.uint8)
    bar[0, 50, :] = 255  # a horizontal line through the centre
    for seed in range(20):
        rotated = augment_on_host(bar, np.random.default_rng(seed))[0]
        rows = np.nonzero(rotated[:, 95] > 60)[0]  # where the line crosses near the right edge
        assert len(rows) and np.abs(rows - 50).max() <= np.tan(np.radians(15)) * 45 + 2


def test_loader_with_host_augmentation_is_reproducible_and_keeps_labels():
    """Batches augmented on the host are the same for the same seed, differ between epochs, keep labels."""
    pixels = np.stack([xray(i, size=(32, 32)) for i in range(10)])
    labels = np.arange(10) % 3
    spec = PreprocessSpec(height=32, width=32)
    a = batches(pixels, labels, spec, 4, seed=1, host_augment=True)
    b = batches(pixels, labels, spec, 4, seed=1, host_augment=True)
    xa, ya = a[0]
    xb, yb = b[0]
    assert np.array_equal(xa, xb) and np.array_equal(ya, yb)
    assert xa.shape == (4, 32, 32, 3)
    a.on_epoch_end()
    assert not np.array_equal(a[0][0], xa)
    plain = batches(pixels, labels, spec, 4, seed=None)
    assert np.array_equal(plain[0][1], labels[:4])
