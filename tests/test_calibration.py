"""Tests for radiology.calibration: temperature scaling, fitted and applied wherever probabilities leave the model."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from radiology import calibration
from radiology.model import load_model, predict_images, update_metadata
from tests.factories import xray


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _overconfident(n=3000, true_t=2.5, seed=0):
    """Labels drawn from softmax(z / true_t) but probabilities reported as softmax(z): overconfident by true_t."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 4, size=(n, 3))
    honest = _softmax(z / true_t)
    labels = np.array([rng.choice(3, p=p) for p in honest])
    return _softmax(z).astype(np.float32), labels


def test_apply_temperature_matches_dividing_the_logits():
    """softmax(log p / T) equals softmax(z / T) and keeps every predicted label."""
    z = np.random.default_rng(1).normal(0, 3, size=(50, 3))
    p = _softmax(z)
    for t in (0.5, 1.7, 4.0):
        got = calibration.apply_temperature(p, t)
        assert np.allclose(got, _softmax(z / t), atol=1e-5)
        assert (got.argmax(1) == p.argmax(1)).all()
    assert calibration.apply_temperature(p, None) is not None
    assert np.allclose(calibration.apply_temperature(p, None), p, atol=1e-7)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        calibration.apply_temperature(p, 0.0)


def test_fit_temperature_recovers_an_overconfident_models_temperature():
    """A model overconfident by T = 2.5 gets a fitted temperature near 2.5, with lower NLL and ECE."""
    probs, labels = _overconfident()
    t = calibration.fit_temperature(probs, labels)
    assert 2.1 < t < 2.9
    r = calibration.report(probs, labels, t)
    assert r["nll_after"] < r["nll_before"] and r["ece_after"] < r["ece_before"] / 2
    assert r["fitted"] and r["temperature"] == t


def test_fit_temperature_refuses_one_class():
    """A temperature needs two classes among the labels."""
    with pytest.raises(ValueError, match="at least two classes"):
        calibration.fit_temperature(np.full((4, 3), 1 / 3), np.zeros(4, int))


def test_report_without_temperature_says_so():
    """A model with no temperature reports T = 1, not fitted, and equal before/after figures."""
    probs, labels = _overconfident(n=300)
    r = calibration.report(probs, labels, None)
    assert r == {**r, "temperature": 1.0, "fitted": False}
    assert r["ece_before"] == r["ece_after"]
    assert "T = 1" in calibration.describe(None) and "T = 2.5" in calibration.describe(2.5)


def test_trained_run_carries_a_temperature_and_reports_calibration(tiny_run):
    """The trainer fits a temperature on val into model.keras; metrics.json has ECE and NLL before and after."""
    meta = load_model(tiny_run / "model.keras").metadata
    assert meta.temperature is not None and calibration.BOUNDS[0] <= meta.temperature <= calibration.BOUNDS[1]
    report = json.loads((tiny_run / "metrics.json").read_text())["temperature"]
    assert report["temperature"] == pytest.approx(meta.temperature)
    assert {"ece_before", "ece_after", "nll_before", "nll_after"} <= set(report)


def test_temperature_applies_to_predictions_and_explanations(tiny_run, tmp_path):
    """predict_images and the explainer both return the calibrated probabilities."""
    from radiology.explain import Explainer

    shutil.copy(tiny_run / "model.keras", tmp_path / "model.keras")
    loaded = update_metadata(load_model(tmp_path / "model.keras"), tmp_path / "model.keras", temperature=3.0)
    images = [xray(seed=i) for i in range(3)]
    raw = predict_images(loaded, images, calibrated=False)
    calibrated = predict_images(load_model(tmp_path / "model.keras"), images)
    assert np.allclose(calibrated, calibration.apply_temperature(raw, 3.0), atol=1e-5)
    explained = Explainer(loaded).explain(images[0]).probs
    assert np.allclose(explained, calibrated[0], atol=1e-4)


def test_calibrate_cli_fits_and_stores_a_temperature(tiny_run, tmp_path):
    """`python -m radiology calibrate` stores a temperature and prints ECE and NLL before and after."""
    run = shutil.copytree(tiny_run, tmp_path / "run")
    update_metadata(load_model(run / "model.keras"), run / "model.keras", temperature=None)
    data = json.loads((run / "config.json").read_text())["data"]
    out = subprocess.run(
        [sys.executable, "-m", "radiology", "calibrate", "--model", str(run), "--data", data, "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert "(was none, T = 1)" in out.stdout and "val: ECE" in out.stdout
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    assert load_model(run / "model.keras").metadata.temperature == pytest.approx(figures["temperature"])
    assert figures["val"]["nll_after"] <= figures["val"]["nll_before"] + 1e-9


def test_savedmodel_export_applies_the_temperature(tiny_run, tmp_path):
    """The SavedModel's probabilities are the calibrated ones the app shows."""
    tf = pytest.importorskip("tensorflow")
    from radiology.export import export_savedmodel
    from radiology.preprocess import resize, to_model_input
    from radiology.registry import load_run

    run = shutil.copytree(tiny_run, tmp_path / "run")
    loaded = update_metadata(load_model(run / "model.keras"), run / "model.keras", temperature=2.0)
    out = export_savedmodel(load_run(run), tmp_path / "saved")
    gray = xray(seed=3)
    x = to_model_input(resize(gray, loaded.metadata.preprocess)[None], loaded.metadata.preprocess)
    served = tf.saved_model.load(str(out)).signatures["serving_default"](images=tf.constant(x))["probabilities"]
    assert np.allclose(served.numpy(), predict_images(loaded, [gray]), atol=1e-4)
