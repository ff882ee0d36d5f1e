"""Tests for radiology.inference: the bfloat16 copy and the choice of precision."""

import numpy as np
import pytest

from radiology import inference
from radiology.model import predict_images
from tests.factories import xray


def test_bf16_copy_keeps_weights_and_agrees(tiny_model):
    """The bf16 copy computes in bfloat16, keeps a float32 softmax, and gives nearly the same probabilities."""
    fast = inference.bf16_copy(tiny_model)
    assert fast.model.get_layer("block5_conv3").compute_dtype == "bfloat16"
    assert fast.model.get_layer("predictions").compute_dtype == "float32"
    assert fast.metadata is tiny_model.metadata
    pixels = np.stack([xray(i, size=(224, 224)) for i in range(4)])
    p32, p16 = predict_images(tiny_model, pixels), predict_images(fast, pixels)
    assert np.abs(p32 - p16).max() < 0.02 and np.allclose(p16.sum(1), 1, atol=1e-3)


def test_float32_without_agreement_or_support(tiny_model, monkeypatch):
    """Without a measured agreement, or on a CPU without bf16, the float32 model is kept."""
    model, reason = inference.choose_precision(tiny_model, None)
    assert model is tiny_model and reason.startswith("float32")
    model, reason = inference.choose_precision(tiny_model, 0.9)
    assert model is tiny_model
    monkeypatch.setattr(inference, "bf16_supported", lambda: False)
    model, reason = inference.choose_precision(tiny_model, 1.0)
    assert model is tiny_model and "no bfloat16" in reason


@pytest.mark.skipif(not inference.bf16_supported(), reason="this CPU has no bfloat16 instructions")
def test_bf16_chosen_only_when_faster(tiny_model, monkeypatch):
    """With agreement, bf16 is chosen when it times faster and refused when it does not."""
    timings = iter([0.2, 0.1])  # bf16 twice as fast
    monkeypatch.setattr(inference, "_time", lambda *a, **k: next(timings))
    fast, why = inference.choose_precision(tiny_model, 1.0)
    assert fast is not tiny_model and why.startswith("bfloat16 (2.0x faster")
    timings = iter([0.1, 0.2])  # float32 faster than bf16
    monkeypatch.setattr(inference, "_time", lambda *a, **k: next(timings))
    slow, why = inference.choose_precision(tiny_model, 1.0)
    assert slow is tiny_model and "not faster" in why


def test_run_records_bf16_agreement(tiny_run):
    """A run stores the bf16 label agreement of its test split where the CPU supports bf16."""
    import json

    metrics = json.loads((tiny_run / "metrics.json").read_text())
    if inference.bf16_supported():
        assert 0 <= metrics["bf16_agreement"] <= 1
    else:
        assert metrics["bf16_agreement"] is None
