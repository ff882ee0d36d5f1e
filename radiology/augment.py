"""The notebook's augmentation, horizontal flip and rotation of up to 15 degrees, in two places.

* In the model, as Keras preprocessing layers that are active only in training (the default).
* On the host, in the data loader's worker threads, on uint8 images with Pillow: for backends where
  Keras' ``RandomRotation`` is slow. On the JAX backend its ``affine_transform`` made a small training
  step many times slower (``bench/bench_augment.py``); ``bench/bench_train.py`` measures both placements.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

MAX_DEGREES = 15.0


def build_augmentation(*, seed: int | None = None) -> list:
    """Keras layers: horizontal flip, then rotation of up to 15 degrees, nearest-edge fill as ImageDataGenerator."""
    import keras

    return [
        keras.layers.RandomFlip("horizontal", seed=seed, name="augment_flip"),
        keras.layers.RandomRotation(MAX_DEGREES / 360, fill_mode="nearest", seed=seed, name="augment_rotate"),
    ]


def augment_on_host(
    images: np.ndarray,
    rng: np.random.Generator,
    *,
    max_degrees: float = MAX_DEGREES,
    within: tuple[int, int] | None = None,
) -> np.ndarray:
    """Flips half the images horizontally and rotates each by a random angle, on the CPU.

    Args:
        images: uint8 array of shape (N, H, W).
        rng: the random generator of the loader.
        max_degrees: largest rotation either way.
        within: ``(start, total)`` when ``images`` are images ``start`` to ``start + N`` of a batch of
            ``total``: the draws are made for the whole batch and sliced, so each image gets the flip and
            angle it gets when the whole batch is augmented at once (a process of a distributed run
            augments only its slice).

    Returns:
        uint8 array of shape (N, H, W); the input is not modified.
    """
    start, total = within if within is not None else (0, len(images))
    if not 0 <= start <= total - len(images):
        raise ValueError(f"images {start} to {start + len(images)} are not within a batch of {total}")
    out = np.empty_like(images)
    part = slice(start, start + len(images))
    flips = (rng.random(total) < 0.5)[part]
    angles = rng.uniform(-max_degrees, max_degrees, total)[part]
    for i, (image, flip, angle) in enumerate(zip(images, flips, angles)):
        pil = Image.fromarray(image[:, ::-1] if flip else image)
        out[i] = np.asarray(pil.rotate(float(angle), resample=Image.BILINEAR, fillcolor=int(image.mean())))
    return out
