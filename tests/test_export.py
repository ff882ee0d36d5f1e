"""Tests for radiology.export: a run's model as a .keras file with metadata, or as a TensorFlow SavedModel."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from radiology import registry
from radiology.__main__ import main
from radiology.errors import ModelLoadError
from radiology.export import export_keras, export_savedmodel
from radiology.imports import import_model
from radiology.model import load_model, predict_images
from radiology.preprocess import resize, to_model_input
from tests.factories import xray

# Runs with TensorFlow alone, Keras blocked: a serving stack has no Keras and no code of this project.
SERVE = """
import sys
sys.modules["keras"] = sys.modules["tf_keras"] = None  # any import of Keras now fails
import numpy as np
import tensorflow as tf
model = tf.saved_model.load(sys.argv[1])
serve = model.signatures["serving_default"]
spec = serve.structured_input_signature[1]["images"]
out = serve(images=tf.constant(np.load(sys.argv[2])))["probabilities"].numpy()
np.save(sys.argv[3], out)
print(list(spec.shape), spec.dtype.name, any(m is not None for k, m in sys.modules.items() if k.startswith("keras")))
"""


@pytest.fixture(scope="module")
def notebook_run(notebook_h5, tmp_path_factory):
    """The notebook's Keras 2 model imported with a non-default class order."""
    runs = tmp_path_factory.mktemp("export") / "runs"
    return import_model(notebook_h5, runs_dir=runs, class_names=["normal", "pneumonia", "covid"])


def test_savedmodel_serves_the_app_probabilities_with_tensorflow_alone(notebook_run, tmp_path):
    """The SavedModel, loaded by TensorFlow without Keras, returns the app's probabilities within 1e-5."""
    out = export_savedmodel(notebook_run, tmp_path / "served")
    assert (out / "assets" / "class_names.txt").read_text().split() == ["normal", "pneumonia", "covid"]
    meta = json.loads((out / "assets" / "radiology.json").read_text())
    assert meta["class_names"] == ["normal", "pneumonia", "covid"]
    loaded = load_model(notebook_run.model_path)
    spec = loaded.metadata.preprocess
    images = [xray(i, size=(260 + 10 * i, 240), level=60 + 40 * i) for i in range(3)]
    x = to_model_input(np.stack([resize(img, spec) for img in images]), spec)
    np.save(tmp_path / "x.npy", x)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run(
        [sys.executable, "-c", SERVE, str(out), str(tmp_path / "x.npy"), str(tmp_path / "p.npy")],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the signature takes a float32 batch at the model's input size, and Keras was never imported
    assert proc.stdout.strip().splitlines()[-1] == "[None, 224, 224, 3] float32 False", proc.stdout
    served = np.load(tmp_path / "p.npy")
    assert np.abs(served - predict_images(loaded, images)).max() < 1e-5


def test_keras_export_carries_the_metadata(notebook_run, tmp_path):
    """The .keras export loads with the run's class order, and an existing destination is refused."""
    out = export_keras(notebook_run, tmp_path / "model.keras")
    assert load_model(out).metadata.class_names == ("normal", "pneumonia", "covid")
    with pytest.raises(ModelLoadError, match="already exists"):
        export_keras(notebook_run, out)
    with pytest.raises(ModelLoadError, match="must end in .keras, got model.h5"):
        export_keras(notebook_run, tmp_path / "model.h5")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.keras"]


def test_cli_export(notebook_run, tmp_path, capsys, monkeypatch):
    """python -m radiology export RUN --format keras writes the file; an unknown run exits 2."""
    monkeypatch.setenv("RADIOLOGY_RUNS_DIR", str(notebook_run.dir.parent))
    out = tmp_path / "exported.keras"
    assert main(["export", notebook_run.id, "--format", "keras", "--out", str(out)]) == 0
    assert f"exported run {notebook_run.id} as keras" in capsys.readouterr().out
    assert load_model(out).metadata.class_names == ("normal", "pneumonia", "covid")
    assert main(["export", "no-such-run", "--format", "savedmodel"]) == 2
    assert "no run 'no-such-run'" in capsys.readouterr().err
    registry.set_active(notebook_run, notebook_run.dir.parent)
    assert main(["export", "active", "--format", "keras", "--out", str(tmp_path / "active.keras")]) == 0


def test_savedmodel_without_tensorflow_is_an_error(tmp_path, monkeypatch):
    """On an install without TensorFlow (JAX only) the SavedModel export fails with a message, not a traceback."""
    monkeypatch.setitem(sys.modules, "tensorflow", None)
    with pytest.raises(ModelLoadError, match="needs TensorFlow"):
        export_savedmodel(registry.load_run(tmp_path), tmp_path / "out")
