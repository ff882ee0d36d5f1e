"""Tests for training.compute: the candidates, the timed choice that leaves no trace, the device in words."""

import numpy as np
import pytest

from training import compute
from training.compute import Compute, ComputeChoice


def test_device_description_names_backend_and_device(monkeypatch):
    """The device reads "TensorFlow on CPU (N cores)" here and names the GPU where there is one."""
    assert compute.device_description() == f"TensorFlow on CPU ({compute.cpu_count()} cores)"
    import keras

    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    monkeypatch.setattr(compute, "_gpu_names", lambda: ["NVIDIA H100 80GB HBM3"])
    assert compute.device_description() == "JAX on NVIDIA H100 80GB HBM3"


def test_mixed_precision_is_a_candidate_only_where_asked_and_supported(monkeypatch):
    """bfloat16 is timed only when asked for and the CPU has bf16 instructions; otherwise the note says why."""
    import radiology.inference as inference

    found, notes = compute.candidates(mixed_requested=False, augment_where="model", augment_on="auto")
    assert [c.label for c in found] == ["float32", "float32 + XLA (augmentation on the host)"] and not notes
    monkeypatch.setattr(inference, "bf16_supported", lambda: False)
    found, notes = compute.candidates(mixed_requested=True, augment_where="model", augment_on="auto")
    assert len(found) == 2 and "no bfloat16 instructions" in notes[0]
    monkeypatch.setattr(inference, "bf16_supported", lambda: True)
    found, _ = compute.candidates(mixed_requested=True, augment_where="model", augment_on="model")
    assert [c.label for c in found] == ["float32", "float32 + XLA", "mixed_bfloat16"]
    found, _ = compute.candidates(mixed_requested=False, augment_where=None, augment_on="auto")
    assert not any(c.host_augment for c in found)


def test_choice_keeps_the_fastest_and_leaves_the_model_as_built(tmp_path):
    """The winner of the timing is returned with the weights, seed states and optimizer it was built with;
    a candidate Keras cannot compile with XLA is dropped with a note."""
    import keras

    from radiology.model import build_model, compile_model
    from radiology.preprocess import PreprocessSpec
    from training.data import batches

    spec = PreprocessSpec(height=32, width=32)
    rng = np.random.default_rng(0)
    loader = batches(rng.integers(0, 255, (12, 32, 32), dtype=np.uint8), np.arange(12) % 3, spec, 4, seed=0)
    built = {}

    def make(c):
        keras.utils.set_random_seed(1)
        model = build_model(spec=spec, weights="none", augment=not c.host_augment, seed=1)
        compile_model(model, jit_compile=c.jit_compile)
        built[c] = [v.numpy() for v in model.variables]
        return model, loader

    choice, model = compute.choose_compute(make, 4, mixed_requested=False, augment_where="model", augment_on="auto")
    assert choice.compute.label in choice.images_per_s and choice.device
    assert all(np.array_equal(a, v.numpy()) for a, v in zip(built[choice.compute], model.variables))
    assert int(model.optimizer.iterations.numpy()) == 0
    assert all(not np.any(v.numpy()) for v in model.optimizer.variables if "momentum" in v.path)
    summary = choice.summary()
    assert summary.startswith(f"compute: {choice.compute.label}; timed float32 ")


def test_choice_cache_roundtrip(tmp_path):
    """A stored choice is read back marked as cached; a missing one reads as None."""
    choice = ComputeChoice(Compute("float32", True, True), {"float32": 9.3, "float32 + XLA": 13.6}, ["n"], "t", False)
    key = compute.choice_key({"image_size": 64})
    assert compute.load_choice(tmp_path, key) is None
    compute.store_choice(tmp_path, key, choice)
    again = compute.load_choice(tmp_path, key)
    assert again.cached and again.compute == choice.compute and again.images_per_s == choice.images_per_s
    assert "(cached from t)" in again.summary()
    assert compute.choice_key({"image_size": 64}) != compute.choice_key({"image_size": 96})


def test_forced_compute_refuses_unsupported_mixed_precision(monkeypatch):
    """compute=xla with bfloat16 asked on a CPU without it computes in float32 + XLA and says why."""
    import radiology.inference as inference

    monkeypatch.setattr(inference, "bf16_supported", lambda: False)
    choice = compute.forced_compute("xla", mixed_requested=True, host_augment=False)
    assert choice.compute == Compute("float32", True, False)
    assert "no bfloat16 instructions" in choice.summary()
    with pytest.raises(ValueError, match="compute must be one of auto, float32, xla, got 'gpu'"):
        from training.config import TrainConfig

        TrainConfig(data="x", compute="gpu")
