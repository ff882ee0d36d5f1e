"""Cost of each augmentation in a training step, on the current Keras backend, side by side.

    KERAS_BACKEND=jax python -m bench.bench_augment
    KERAS_BACKEND=tensorflow python -m bench.bench_augment

A deliberately small model (one strided conv) so that the augmentation, not VGG16, dominates the step:
it finds which augmentation is the bottleneck on a backend. The host variant flips and rotates in the
loader with Pillow, as ``python -m training --augment-on host`` does.
"""

from __future__ import annotations

import time

import numpy as np

from bench.common import machine

N, BATCH = 256, 32


def _model(layers):
    import keras

    inp = keras.Input((224, 224, 3))
    h = inp
    for layer in layers:
        h = layer(h)
    h = keras.layers.GlobalMaxPooling2D()(keras.layers.Conv2D(4, 3, strides=4)(h))
    model = keras.Model(inp, keras.layers.Dense(3, activation="softmax")(h))
    model.compile("adam", "sparse_categorical_crossentropy")
    return model


def main() -> None:
    import keras

    from radiology.augment import MAX_DEGREES
    from radiology.preprocess import PreprocessSpec
    from training.data import batches

    print(f"machine: {machine()}")
    rng = np.random.default_rng(0)
    pixels = (rng.random((N, 224, 224)) * 255).astype(np.uint8)
    labels = rng.integers(0, 3, N)
    spec = PreprocessSpec()
    variants = {
        "no augmentation": ([], False),
        "RandomFlip": ([keras.layers.RandomFlip("horizontal")], False),
        "RandomRotation": ([keras.layers.RandomRotation(MAX_DEGREES / 360, fill_mode="nearest")], False),
        "RandomFlip + RandomRotation": (
            [
                keras.layers.RandomFlip("horizontal"),
                keras.layers.RandomRotation(MAX_DEGREES / 360, fill_mode="nearest"),
            ],
            False,
        ),
        "flip + rotation on the host": ([], True),
    }
    times = {}
    for name, (layers, host) in variants.items():
        model = _model(layers)
        data = batches(pixels, labels, spec, BATCH, seed=0, host_augment=host, workers=2)
        model.fit(data, epochs=1, verbose=0)  # compile
        start = time.perf_counter()
        model.fit(data, epochs=2, verbose=0)
        times[name] = (time.perf_counter() - start) / (2 * N / BATCH)
    base = times["no augmentation"]
    print(f"ms per training step of {BATCH} images, small model, backend {keras.backend.backend()}")
    for name, t in times.items():
        print(f"  {name:<30} {t * 1000:8.1f} ms   {t / base:5.2f}x")


if __name__ == "__main__":
    main()
