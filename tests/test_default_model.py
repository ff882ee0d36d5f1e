"""Tests of the shipped default model in models/default: it loads safely, is complete, and predicts at once."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from radiology import CLASS_NAMES, registry

BUNDLE = Path(__file__).resolve().parent.parent / "models" / "default"
MAX_BYTES = 35 * 2**20


@pytest.fixture(scope="module")
def shipped():
    """The bundled model, loaded through the safe path the app uses."""
    from radiology.model import load_model

    return load_model(BUNDLE / "model.keras")


def test_model_file_is_small_and_float16(shipped):
    """The model file is at most 35 MB and stores float16 weights."""
    assert (BUNDLE / "model.keras").stat().st_size <= MAX_BYTES
    assert shipped.metadata.weights_dtype == "float16"
    assert not shipped.warnings


def test_metadata_is_complete(shipped):
    """Class names, input size, Grad-CAM layer, temperature and the gate's statistics travel with the weights."""
    from radiology import calibration, ood

    meta = shipped.metadata
    assert meta.class_names == CLASS_NAMES
    assert meta.preprocess.height == meta.preprocess.width == meta.train_config["image_size"]
    assert meta.gradcam_layer == "block5_conv3"
    assert calibration.BOUNDS[0] < meta.temperature < calibration.BOUNDS[1]
    stats = ood.load_stats(meta)
    assert stats is not None and stats.means.shape[0] == len(CLASS_NAMES)
    assert meta.train_config["data"] == "cxr3" and meta.data_fingerprint


def test_predicts_a_generated_image(shipped):
    """A generated film gets a calibrated probability per class, summing to one."""
    from radiology.model import predict_images
    from tests.factories import xray

    probs = predict_images(shipped, [xray(3, size=(300, 260))])
    assert probs.shape == (1, 3)
    assert np.isclose(probs.sum(), 1.0, atol=1e-4)
    raw = predict_images(shipped, [xray(3, size=(300, 260))], calibrated=False)
    assert not np.allclose(raw, probs), "the temperature must change the probabilities"


def test_is_active_with_no_run(tmp_path, monkeypatch):
    """With an empty runs folder, the bundled model is the active one."""
    monkeypatch.setattr(registry, "BUNDLED_DIR", BUNDLE.resolve())
    run = registry.active_run(tmp_path)
    assert run is not None and run.id == registry.BUNDLED_ID and run.state == "succeeded"
    assert run.card["limits"] and run.metrics["split"] == "test"


def test_metrics_match_predictions():
    """metrics.json's accuracy and confusion matrix are those of predictions.csv, whose paths are relative."""
    metrics = json.loads((BUNDLE / "metrics.json").read_text())
    rows = list(csv.DictReader((BUNDLE / "predictions.csv").open()))
    assert len(rows) == metrics["n"] == sum(map(sum, metrics["confusion"]["matrix"]))
    assert all(not r["path"].startswith("/") and ".." not in r["path"] for r in rows)
    assert np.mean([r["label"] == r["predicted"] for r in rows]) == pytest.approx(metrics["accuracy"])
    assert metrics["data_root"] == "cxr3"
    agreement = np.mean([r["predicted"] == r["predicted_float32"] for r in rows])
    assert metrics["float16_agreement"] == pytest.approx(agreement) and agreement >= 0.995
    lo, hi = metrics["ci"]["accuracy"]
    assert lo <= metrics["accuracy"] <= hi


def test_card_and_history_cover_every_phase():
    """history.csv holds every phase, and the card names each phase's command and the measured test accuracy."""
    history = list(csv.DictReader((BUNDLE / "history.csv").open()))
    phases = sorted({int(r["phase"]) for r in history})
    assert phases == list(range(1, len(phases) + 1)) and len(phases) >= 3
    card = (BUNDLE / "MODEL_CARD.md").read_text()
    assert card.count("nice -n 19 python -m training --data cxr3") == len(phases)
    metrics = json.loads((BUNDLE / "metrics.json").read_text())
    assert f"accuracy {metrics['accuracy']:.3f}" in card
